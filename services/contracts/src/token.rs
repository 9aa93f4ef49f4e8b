//! Access tokens: EdDSA (Ed25519) JWTs.
//!
//! Only the user service holds a signing key; every other service verifies
//! with public keys looked up by `kid`, so keys can rotate: serve the new and
//! the old public key side by side until old tokens expire.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims parley puts in a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (hex ObjectId).
    pub sub: String,
    /// The user's email.
    pub email: String,
    /// The user's display name.
    pub name: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// Who issued it ([`TokenScope::issuer`]; a token without one is refused).
    #[serde(default)]
    pub iss: String,
    /// Who it is for ([`TokenScope::audience`]; a token without one is refused).
    #[serde(default)]
    pub aud: String,
    /// The user's token generation when it was issued: a logout moves the
    /// generation on, and tokens of an older one are refused (see
    /// `parley_common::revocation`). Claim `gen`.
    #[serde(default, rename = "gen")]
    pub generation: u64,
}

/// The `iss` parley's tokens carry when `PARLEY_TOKEN_ISSUER` is unset.
pub const DEFAULT_ISSUER: &str = "parley-user";
/// The `aud` parley's tokens carry when `PARLEY_TOKEN_AUDIENCE` is unset.
pub const DEFAULT_AUDIENCE: &str = "parley";

/// Who issues tokens and who they are for: the user service signs with
/// these, every service checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
}

impl Default for TokenScope {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
        }
    }
}

impl TokenScope {
    /// The variables [`TokenScope::from_env`] reads (user and chat).
    pub const ENV: &'static [parley_runtime::config::VarDoc] = &[
        parley_runtime::config::VarDoc::new(
            "PARLEY_TOKEN_ISSUER",
            DEFAULT_ISSUER,
            "`iss` of tokens: the user service signs it, the others require it (the same value everywhere)",
        ),
        parley_runtime::config::VarDoc::new(
            "PARLEY_TOKEN_AUDIENCE",
            DEFAULT_AUDIENCE,
            "`aud` of tokens: tokens meant for anything else are refused (the same value everywhere)",
        ),
    ];

    /// Reads `PARLEY_TOKEN_ISSUER` and `PARLEY_TOKEN_AUDIENCE`.
    pub fn from_env(
        env: &parley_runtime::config::Env,
    ) -> Result<Self, parley_runtime::config::ConfigError> {
        let read = |var: &str, default: &str| {
            let value = env.string_or(var, default);
            if value.len() > 200 || value.chars().any(char::is_control) {
                return Err(parley_runtime::config::ConfigError::new(
                    var,
                    "must be at most 200 printable characters",
                ));
            }
            Ok(value)
        };
        Ok(Self {
            issuer: read("PARLEY_TOKEN_ISSUER", DEFAULT_ISSUER)?,
            audience: read("PARLEY_TOKEN_AUDIENCE", DEFAULT_AUDIENCE)?,
        })
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or a header/claims shape parley does not issue.
    #[error("malformed token")]
    Malformed,
    /// The `kid` names no key this service knows.
    #[error("unknown signing key")]
    UnknownKey,
    /// Signature, algorithm or claims invalid.
    #[error("invalid token")]
    Invalid,
    /// Issued by someone else, or meant for someone else (`iss`, `aud`).
    #[error("token not meant for this service")]
    WrongScope,
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// A key could not be read.
    #[error("bad key: {0}")]
    Key(String),
}

/// The public JWK of an Ed25519 key, with its RFC 7638 thumbprint (first
/// 16 characters) as `kid`: stable across restarts and replicas.
fn public_jwk(verifying: &ed25519_dalek::VerifyingKey) -> Result<Jwk, TokenError> {
    use jsonwebtoken::jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, KeyAlgorithm, OctetKeyPairParameters,
        OctetKeyPairType, PublicKeyUse, ThumbprintHash,
    };
    let mut jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: b64url(verifying.as_bytes()),
        }),
    };
    let thumb = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| TokenError::Key(e.to_string()))?;
    jwk.common.key_id = Some(thumb.chars().take(16).collect());
    Ok(jwk)
}

/// Signs tokens with one Ed25519 private key.
#[derive(Clone)]
pub struct TokenSigner {
    kid: String,
    key: EncodingKey,
    jwk: Jwk,
    lifetime: Duration,
    scope: TokenScope,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// From a PKCS#8 PEM private key (as `openssl genpkey -algorithm ed25519` writes).
    pub fn from_pem(pem: &str, lifetime: Duration) -> Result<Self, TokenError> {
        // ed25519-dalek reads both PKCS#8 v1 and v2 and names the problem
        // clearly; the signing key is then handed over as plain v1 DER.
        // Secrets often gain stray whitespace; the PEM parser is strict.
        let pem = format!("{}\n", pem.trim());
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| TokenError::Key(format!("not an Ed25519 PKCS#8 private key: {e}")))?;
        let key = EncodingKey::from_ed_der(v1_der(&signing)?.as_bytes());
        let jwk = public_jwk(&signing.verifying_key())?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        Ok(Self {
            kid,
            key,
            jwk,
            lifetime,
            scope: TokenScope::default(),
        })
    }

    /// Signs with this `iss` and `aud` (default: [`TokenScope::default`]).
    #[must_use]
    pub fn with_scope(mut self, scope: TokenScope) -> Self {
        self.scope = scope;
        self
    }

    /// The `iss` and `aud` put in tokens.
    pub fn scope(&self) -> &TokenScope {
        &self.scope
    }

    /// The key id put in every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK (for `/.well-known/jwks.json`).
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// How long issued tokens live.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Issues a token for the user, valid from `now` (seconds since the
    /// epoch), at token generation 0 (no logout yet).
    pub fn sign(&self, sub: &str, email: &str, name: &str, now: i64) -> Result<String, TokenError> {
        self.sign_at(sub, email, name, 0, now)
    }

    /// Issues a token for the user at the user's current token `generation`.
    pub fn sign_at(
        &self,
        sub: &str,
        email: &str,
        name: &str,
        generation: u64,
        now: i64,
    ) -> Result<String, TokenError> {
        let claims = self.claims(sub, email, name, generation, now);
        self.sign_claims(&claims)
    }

    /// The claims [`TokenSigner::sign_at`] signs (tests change them).
    pub fn claims(&self, sub: &str, email: &str, name: &str, generation: u64, now: i64) -> Claims {
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        Claims {
            sub: sub.to_owned(),
            email: email.to_owned(),
            name: name.to_owned(),
            iat: now,
            exp: now.saturating_add(lifetime),
            iss: self.scope.issuer.clone(),
            aud: self.scope.audience.clone(),
            generation,
        }
    }

    /// Signs arbitrary claims (tests use it for expired tokens).
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| TokenError::Key(e.to_string()))
    }
}

/// Verifies tokens against a set of public keys, by `kid`, and their
/// `iss` and `aud` against a [`TokenScope`].
#[derive(Clone, Default)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    leeway_secs: u64,
    scope: TokenScope,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// No keys yet.
    pub fn new() -> Self {
        Self {
            keys: HashMap::new(),
            leeway_secs: 30,
            scope: TokenScope::default(),
        }
    }

    /// Requires this `iss` and `aud` (default: [`TokenScope::default`]).
    #[must_use]
    pub fn with_scope(mut self, scope: TokenScope) -> Self {
        self.scope = scope;
        self
    }

    /// Accepts the signer's own key.
    pub fn with_signer(mut self, signer: &TokenSigner) -> Result<Self, TokenError> {
        let key = DecodingKey::from_jwk(&signer.jwk).map_err(|e| TokenError::Key(e.to_string()))?;
        self.keys.insert(signer.kid.clone(), key);
        Ok(self)
    }

    /// Accepts every Ed25519 key with a `kid` in a JWK set.
    pub fn with_jwks(mut self, set: &JwkSet) -> Result<Self, TokenError> {
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Key(e.to_string()))?;
            self.keys.insert(kid, key);
        }
        Ok(self)
    }

    /// Accepts every Ed25519 public key (SPKI PEM blocks) in `text`, each
    /// under the kid derived from it, the same kid its signer puts in tokens.
    pub fn with_public_pems(mut self, text: &str) -> Result<Self, TokenError> {
        let mut found = 0;
        for verifying in public_keys(text)? {
            let jwk = public_jwk(&verifying)?;
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| TokenError::Key(e.to_string()))?;
            self.keys.insert(kid, key);
            found += 1;
        }
        if found == 0 {
            return Err(TokenError::Key("no PUBLIC KEY block found".to_owned()));
        }
        Ok(self)
    }

    /// The kids accepted.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Checks signature, algorithm, expiry, issuer and audience; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > 8 * 1024 {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = self.leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[&self.scope.issuer]);
        validation.set_audience(&[&self.scope.audience]);
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidIssuer
                | jsonwebtoken::errors::ErrorKind::InvalidAudience => TokenError::WrongScope,
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c)
                    if c == "iss" || c == "aud" =>
                {
                    TokenError::WrongScope
                }
                jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::Base64(_) => TokenError::Malformed,
                _ => TokenError::Invalid,
            })
    }
}

fn v1_der(
    signing: &ed25519_dalek::SigningKey,
) -> Result<ed25519_dalek::pkcs8::SecretDocument, TokenError> {
    ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: signing.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_der()
    .map_err(|e| TokenError::Key(e.to_string()))
}

/// A fresh Ed25519 key pair as PKCS#8 private PEM and SPKI public PEM.
pub fn generate_ed25519_pem() -> Result<(String, String), TokenError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| TokenError::Key(format!("no randomness: {e}")))?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private = v1_der(&signing)?
        .to_pem("PRIVATE KEY", Default::default())
        .map_err(|e| TokenError::Key(e.to_string()))?;
    let public = signing
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| TokenError::Key(e.to_string()))?;
    Ok((private.to_string(), public))
}

/// The public JWKs (with derived kids) of every Ed25519 public key in `text`.
pub fn jwks_from_public_pems(text: &str) -> Result<Vec<Jwk>, TokenError> {
    public_keys(text)?.iter().map(public_jwk).collect()
}

/// The Ed25519 keys of every `PUBLIC KEY` (SPKI) PEM block of `text`;
/// blocks of other labels are passed over.
fn public_keys(text: &str) -> Result<Vec<ed25519_dalek::VerifyingKey>, TokenError> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    use rustls_pki_types::pem::PemObject;
    SubjectPublicKeyInfoDer::pem_slice_iter(text.as_bytes())
        .map(|spki| {
            let spki = spki.map_err(|e| TokenError::Key(format!("not PEM: {e}")))?;
            ed25519_dalek::VerifyingKey::from_public_key_der(spki.as_ref())
                .map_err(|e| TokenError::Key(format!("not an Ed25519 public key: {e}")))
        })
        .collect()
}

/// Base64url of raw bytes (JWK `x` values and the like).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let (private, _) = generate_ed25519_pem().unwrap();
        TokenSigner::from_pem(&private, Duration::from_secs(3600)).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn round_trip_through_jwks() {
        let s = signer();
        let set = JwkSet {
            keys: vec![s.public_jwk().clone()],
        };
        let json = serde_json::to_string(&set).unwrap();
        let parsed: JwkSet = serde_json::from_str(&json).unwrap();
        let v = TokenVerifier::new().with_jwks(&parsed).unwrap();
        let token = s.sign("u1", "a@b.c", "ann", now()).unwrap();
        let claims = v.verify(&token).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn every_public_key_block_is_read_and_other_blocks_passed_over() {
        let (_, first) = generate_ed25519_pem().unwrap();
        let (_, second) = generate_ed25519_pem().unwrap();
        let bundle = format!(
            "a comment\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{first}\n{second}"
        );
        let jwks = jwks_from_public_pems(&bundle).unwrap();
        assert_eq!(jwks.len(), 2);
        assert_ne!(jwks[0].common.key_id, jwks[1].common.key_id);
        let broken = "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n";
        assert!(jwks_from_public_pems(broken).is_err());
        assert!(
            TokenVerifier::new()
                .with_public_pems("no keys here")
                .is_err()
        );
    }

    #[test]
    fn public_pem_verifies() {
        let (private, public) = generate_ed25519_pem().unwrap();
        let s = TokenSigner::from_pem(&private, Duration::from_secs(60)).unwrap();
        let (_, other_public) = generate_ed25519_pem().unwrap();
        let both = format!("{other_public}\n{public}");
        let v = TokenVerifier::new().with_public_pems(&both).unwrap();
        assert_eq!(v.kids().count(), 2);
        assert!(v.verify(&s.sign("u", "e", "n", now()).unwrap()).is_ok());
        assert!(
            TokenVerifier::new()
                .with_public_pems("nothing here")
                .is_err()
        );
    }

    #[test]
    fn rotation_accepts_both_kids() {
        let (old, new) = (signer(), signer());
        assert_ne!(old.kid(), new.kid());
        let v = TokenVerifier::new()
            .with_signer(&old)
            .unwrap()
            .with_signer(&new)
            .unwrap();
        assert!(v.verify(&old.sign("u", "e", "n", now()).unwrap()).is_ok());
        assert!(v.verify(&new.sign("u", "e", "n", now()).unwrap()).is_ok());
    }

    #[test]
    fn refusals() {
        let s = signer();
        let other = signer();
        let v = TokenVerifier::new().with_signer(&s).unwrap();
        assert_eq!(v.verify("nonsense"), Err(TokenError::Malformed));
        assert_eq!(
            v.verify(&other.sign("u", "e", "n", now()).unwrap()),
            Err(TokenError::UnknownKey)
        );
        let expired = s
            .sign_claims(&Claims {
                iat: 0,
                exp: 1,
                ..s.claims("u", "e", "n", 0, now())
            })
            .unwrap();
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        // Tamper with the payload: the signature no longer matches.
        let token = s.sign("u", "e", "n", now()).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64url(br#"{"sub":"admin","email":"e","name":"n","iat":0,"exp":99999999999}"#);
        parts[1] = &forged;
        assert_eq!(v.verify(&parts.join(".")), Err(TokenError::Invalid));
        // An HS256 token with the same kid is refused (no algorithm confusion).
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(s.kid().to_owned());
        let hs = jsonwebtoken::encode(
            &header,
            &Claims {
                iat: 0,
                exp: 99999999999,
                ..s.claims("u", "e", "n", 0, now())
            },
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(v.verify(&hs), Err(TokenError::Invalid));
    }

    #[test]
    fn issuer_and_audience_are_checked() {
        let s = signer();
        let v = TokenVerifier::new().with_signer(&s).unwrap();
        let claims = s.claims("u", "e", "n", 7, now());
        assert_eq!(claims.iss, DEFAULT_ISSUER);
        assert_eq!(claims.aud, DEFAULT_AUDIENCE);
        let ok = v.verify(&s.sign_claims(&claims).unwrap()).unwrap();
        assert_eq!(ok.generation, 7);
        for (iss, aud) in [
            ("someone-else", DEFAULT_AUDIENCE),
            (DEFAULT_ISSUER, "other-app"),
        ] {
            let token = s
                .sign_claims(&Claims {
                    iss: iss.into(),
                    aud: aud.into(),
                    ..claims.clone()
                })
                .unwrap();
            assert_eq!(v.verify(&token), Err(TokenError::WrongScope), "{iss} {aud}");
        }
        // A token without iss/aud (as issued before they existed).
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(s.kid().to_owned());
        let bare = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "u", "email": "e", "name": "n", "iat": now(), "exp": now() + 60}),
            &s.key,
        )
        .unwrap();
        assert_eq!(v.verify(&bare), Err(TokenError::WrongScope));
        // Both sides configured alike.
        let scope = TokenScope {
            issuer: "https://login.example".into(),
            audience: "chat.example".into(),
        };
        let s2 = signer().with_scope(scope.clone());
        let v2 = TokenVerifier::new()
            .with_signer(&s2)
            .unwrap()
            .with_scope(scope);
        assert!(v2.verify(&s2.sign("u", "e", "n", now()).unwrap()).is_ok());
        let v_default = TokenVerifier::new().with_signer(&s2).unwrap();
        assert_eq!(
            v_default.verify(&s2.sign("u", "e", "n", now()).unwrap()),
            Err(TokenError::WrongScope)
        );
    }

    #[test]
    fn wrong_key_type_is_a_clear_error() {
        let err = TokenSigner::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, TokenError::Key(_)));
    }
}
