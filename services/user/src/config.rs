//! The user service's configuration, from environment variables.

use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use parley_common::amqp::AmqpConfig;
use parley_common::config::{ConfigError, Env, REQUIRED, Redacted, ServerConfig, UNSET, VarDoc};
use parley_common::mongo::MongoConfig;
use parley_common::redis::RedisConfig;
use parley_common::revocation::RevocationConfig;
use parley_common::token::{TokenScope, TokenSigner, TokenVerifier, jwks_from_public_pems};

/// Limits on issuing login codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Life of a code (`PARLEY_OTP_TTL_SECS`, default 300).
    pub otp_ttl: Duration,
    /// Minimum gap between two codes for one email (`PARLEY_OTP_RESEND_SECS`, default 60).
    pub resend_cooldown: Duration,
    /// Tries per code before it is burned (`PARLEY_OTP_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Codes one client address may request per hour (`PARLEY_LOGIN_PER_IP_PER_HOUR`, default 20).
    pub per_ip_per_hour: u32,
    /// Codes the whole service issues per minute (`PARLEY_LOGIN_GLOBAL_PER_MINUTE`, default 600).
    pub global_per_minute: u32,
    /// Digits of a code (`PARLEY_OTP_DIGITS`, 6 to 10, default 8).
    pub digits: u32,
    /// Codes one inbox (address without `+tag`) may get per hour (`PARLEY_LOGIN_PER_INBOX_PER_HOUR`, default 5).
    pub per_inbox_per_hour: u32,
    /// Wrong codes with a login id per account per 24 h (`PARLEY_OTP_FAILURES_PER_DAY`, default 10).
    pub account_failures_per_day: u32,
    /// Of those, from one client address (`PARLEY_OTP_FAILURES_PER_ADDRESS_PER_DAY`, default 5).
    pub account_failures_per_address: u32,
    /// Wrong codes without a login id per account per 24 h (`PARLEY_OTP_LEGACY_FAILURES_PER_DAY`, default 3).
    pub legacy_failures_per_day: u32,
    /// Wrong codes one client address may send per hour (`PARLEY_VERIFY_FAILURES_PER_IP_PER_HOUR`, default 20).
    pub verify_failures_per_ip_per_hour: u32,
    /// Longest wait between two tries of one account (`PARLEY_OTP_MAX_BACKOFF_SECS`, default 3600).
    pub max_backoff: Duration,
    /// Leading bits of an IPv6 address that make one client (`PARLEY_IPV6_PREFIX_LEN`, default 64).
    pub ipv6_prefix: u8,
}

/// Everything the user service reads at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listener and shutdown grace.
    pub server: ServerConfig,
    /// Users live here.
    pub mongo: MongoConfig,
    /// Codes and rate limits live here.
    pub redis: RedisConfig,
    /// Events go here.
    pub amqp: AmqpConfig,
    /// Signs tokens (`PARLEY_JWT_PRIVATE_KEY_FILE`, lifetime `PARLEY_TOKEN_TTL_SECS`, default 86400).
    pub signer: TokenSigner,
    /// Accepts the signer's key and the rotation keys.
    pub verifier: TokenVerifier,
    /// Public keys served at `/.well-known/jwks.json`.
    pub jwks: Vec<Jwk>,
    /// How long a token generation read from Redis is reused
    /// (`PARLEY_REVOCATION_CACHE_SECS`); tokens' `iss`/`aud` come from
    /// `PARLEY_TOKEN_ISSUER`/`PARLEY_TOKEN_AUDIENCE`.
    pub revocation: RevocationConfig,
    /// HMAC key for stored codes (`PARLEY_OTP_SECRET`, at least 32 characters).
    pub otp_secret: Redacted<Vec<u8>>,
    /// Code limits.
    pub limits: Limits,
    /// X-Forwarded-For hops to trust for the client address (`PARLEY_TRUSTED_PROXY_HOPS`, default 0).
    pub trusted_proxy_hops: usize,
    /// Largest request body (`PARLEY_MAX_BODY_BYTES`, default 16384).
    pub max_body_bytes: usize,
    /// Whether `/user/all` lists users (`PARLEY_USER_DIRECTORY`, default true).
    pub directory: bool,
}

/// The variables only the user service reads.
pub const ENV: &[VarDoc] = &[
    VarDoc::new(
        "PARLEY_JWT_PRIVATE_KEY_FILE",
        REQUIRED,
        "Ed25519 PKCS#8 PEM private key that signs tokens (`openssl genpkey -algorithm ed25519`)",
    ),
    VarDoc::new(
        "PARLEY_JWT_EXTRA_PUBLIC_KEYS_FILE",
        UNSET,
        "PEM public keys still accepted and published at `/.well-known/jwks.json` during a key rotation",
    ),
    VarDoc::new(
        "PARLEY_TOKEN_TTL_SECS",
        "86400",
        "token lifetime (at least 60)",
    ),
    VarDoc::new(
        "PARLEY_OTP_SECRET",
        REQUIRED,
        "HMAC key (32+ characters) under which login codes are stored",
    ),
    VarDoc::new(
        "PARLEY_OTP_TTL_SECS",
        "300",
        "life of a login code (at least 30)",
    ),
    VarDoc::new(
        "PARLEY_OTP_RESEND_SECS",
        "60",
        "least gap between two codes for one address",
    ),
    VarDoc::new(
        "PARLEY_OTP_DIGITS",
        "8",
        "digits of a login code (6 to 10); fewer digits make guessing likelier, see the security model",
    ),
    VarDoc::new(
        "PARLEY_OTP_MAX_ATTEMPTS",
        "5",
        "wrong tries (with the `loginId` from `/login`) before a code burns; backoff starts after as many wrong codes of one account",
    ),
    VarDoc::new(
        "PARLEY_OTP_FAILURES_PER_DAY",
        "10",
        "wrong codes with a `loginId` one account may get in 24 h, from all addresses",
    ),
    VarDoc::new(
        "PARLEY_OTP_FAILURES_PER_ADDRESS_PER_DAY",
        "5",
        "of those, from one client address",
    ),
    VarDoc::new(
        "PARLEY_OTP_LEGACY_FAILURES_PER_DAY",
        "3",
        "wrong codes without a `loginId` (old clients) one account may get in 24 h",
    ),
    VarDoc::new(
        "PARLEY_OTP_MAX_BACKOFF_SECS",
        "3600",
        "longest wait the backoff between wrong codes of one account imposes",
    ),
    VarDoc::new(
        "PARLEY_VERIFY_FAILURES_PER_IP_PER_HOUR",
        "20",
        "wrong codes one client address may send per hour, for any accounts",
    ),
    VarDoc::new(
        "PARLEY_LOGIN_PER_IP_PER_HOUR",
        "20",
        "codes one client address may request per hour",
    ),
    VarDoc::new(
        "PARLEY_LOGIN_PER_INBOX_PER_HOUR",
        "5",
        "codes one inbox may get per hour (case, `+tag` and, for Gmail, dots ignored)",
    ),
    VarDoc::new(
        "PARLEY_LOGIN_GLOBAL_PER_MINUTE",
        "600",
        "codes the whole service issues per minute (only issued codes count)",
    ),
    VarDoc::new(
        "PARLEY_IPV6_PREFIX_LEN",
        "64",
        "leading bits of an IPv6 client address counted as one client (1 to 128)",
    ),
    VarDoc::new(
        "PARLEY_TRUSTED_PROXY_HOPS",
        "0",
        "`X-Forwarded-For` hops to trust for the client address (1 behind one ingress)",
    ),
    VarDoc::new("PARLEY_MAX_BODY_BYTES", "16384", "largest request body"),
    VarDoc::new(
        "PARLEY_USER_DIRECTORY",
        "true",
        "`false` turns off `GET /user/all` (403); profiles by id stay",
    ),
];

/// Every variable this binary reads, its own and the shared ones, for the
/// configuration reference.
pub fn reference() -> Vec<VarDoc> {
    parley_common::reference::service_reference(
        &[ENV, TokenScope::ENV, RevocationConfig::ENV].concat(),
    )
}

fn read_file(env: &Env, var: &str) -> Result<String, ConfigError> {
    let path = env.required(var)?;
    std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::new(var, format!("cannot read {path}: {e}")))
}

fn positive(var: &str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(var, "must be at least 1"));
    }
    Ok(value)
}

fn whole(env: &Env, var: &str, default: u32) -> Result<u32, ConfigError> {
    positive(var, env.parsed_or(var, "a whole number", default)?)
}

impl Config {
    /// Reads and validates every variable; the first problem names its variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let server = ServerConfig::from_env(env)?;
        let mongo = MongoConfig::from_env(env)?;
        let redis = RedisConfig::from_env(env)?;
        let amqp = AmqpConfig::from_env(env)?;
        let lifetime = env.seconds_or("PARLEY_TOKEN_TTL_SECS", Duration::from_secs(86_400))?;
        if lifetime < Duration::from_secs(60) {
            return Err(ConfigError::new(
                "PARLEY_TOKEN_TTL_SECS",
                "must be at least 60",
            ));
        }
        let key_var = "PARLEY_JWT_PRIVATE_KEY_FILE";
        let scope = TokenScope::from_env(env)?;
        let signer = TokenSigner::from_pem(&read_file(env, key_var)?, lifetime)
            .map_err(|e| ConfigError::new(key_var, e.to_string()))?
            .with_scope(scope.clone());
        let mut verifier = TokenVerifier::new()
            .with_scope(scope)
            .with_signer(&signer)
            .map_err(|e| ConfigError::new(key_var, e.to_string()))?;
        let mut jwks = vec![signer.public_jwk().clone()];
        let extra_var = "PARLEY_JWT_EXTRA_PUBLIC_KEYS_FILE";
        if env.raw(extra_var).is_some() {
            let pems = read_file(env, extra_var)?;
            verifier = verifier
                .with_public_pems(&pems)
                .map_err(|e| ConfigError::new(extra_var, e.to_string()))?;
            jwks.extend(
                jwks_from_public_pems(&pems)
                    .map_err(|e| ConfigError::new(extra_var, e.to_string()))?,
            );
        }
        let otp_secret = env.required("PARLEY_OTP_SECRET")?;
        if otp_secret.len() < 32 {
            return Err(ConfigError::new(
                "PARLEY_OTP_SECRET",
                "must be at least 32 characters",
            ));
        }
        let limits = Limits {
            otp_ttl: env.seconds_or("PARLEY_OTP_TTL_SECS", Duration::from_secs(300))?,
            resend_cooldown: env.seconds_or("PARLEY_OTP_RESEND_SECS", Duration::from_secs(60))?,
            max_attempts: positive(
                "PARLEY_OTP_MAX_ATTEMPTS",
                env.parsed_or("PARLEY_OTP_MAX_ATTEMPTS", "a whole number", 5)?,
            )?,
            per_ip_per_hour: positive(
                "PARLEY_LOGIN_PER_IP_PER_HOUR",
                env.parsed_or("PARLEY_LOGIN_PER_IP_PER_HOUR", "a whole number", 20)?,
            )?,
            global_per_minute: positive(
                "PARLEY_LOGIN_GLOBAL_PER_MINUTE",
                env.parsed_or("PARLEY_LOGIN_GLOBAL_PER_MINUTE", "a whole number", 600)?,
            )?,
            digits: env.parsed_or("PARLEY_OTP_DIGITS", "a whole number", 8)?,
            per_inbox_per_hour: whole(env, "PARLEY_LOGIN_PER_INBOX_PER_HOUR", 5)?,
            account_failures_per_day: whole(env, "PARLEY_OTP_FAILURES_PER_DAY", 10)?,
            account_failures_per_address: whole(env, "PARLEY_OTP_FAILURES_PER_ADDRESS_PER_DAY", 5)?,
            legacy_failures_per_day: whole(env, "PARLEY_OTP_LEGACY_FAILURES_PER_DAY", 3)?,
            verify_failures_per_ip_per_hour: whole(
                env,
                "PARLEY_VERIFY_FAILURES_PER_IP_PER_HOUR",
                20,
            )?,
            max_backoff: env
                .seconds_or("PARLEY_OTP_MAX_BACKOFF_SECS", Duration::from_secs(3600))?,
            ipv6_prefix: env.parsed_or("PARLEY_IPV6_PREFIX_LEN", "a whole number", 64)?,
        };
        if !crate::domain::CODE_DIGITS.contains(&limits.digits) {
            return Err(ConfigError::new(
                "PARLEY_OTP_DIGITS",
                "must be between 6 and 10",
            ));
        }
        if !(1..=128).contains(&limits.ipv6_prefix) {
            return Err(ConfigError::new(
                "PARLEY_IPV6_PREFIX_LEN",
                "must be between 1 and 128",
            ));
        }
        if limits.otp_ttl < Duration::from_secs(30) {
            return Err(ConfigError::new(
                "PARLEY_OTP_TTL_SECS",
                "must be at least 30",
            ));
        }
        Ok(Self {
            server,
            mongo,
            redis,
            amqp,
            signer,
            verifier,
            jwks,
            revocation: RevocationConfig::from_env(env)?,
            otp_secret: Redacted(otp_secret.into_bytes()),
            limits,
            trusted_proxy_hops: env.parsed_or("PARLEY_TRUSTED_PROXY_HOPS", "a whole number", 0)?,
            max_body_bytes: env.parsed_or("PARLEY_MAX_BODY_BYTES", "a size in bytes", 16 * 1024)?,
            directory: env.parsed_or("PARLEY_USER_DIRECTORY", "true or false", true)?,
        })
    }
}
