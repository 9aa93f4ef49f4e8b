//! Pure rules of login and profiles: emails, names, codes, client addresses.

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, Mac};
use parley_common::api_error::ApiError;
use sha2::Sha256;

/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Trims and lowercases an email and checks its shape: ASCII, one `@`, a
/// non-empty local part of at most 64 bytes and a dotted domain.
pub fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_ascii_lowercase();
    let invalid = || ApiError::bad_request("email is not a valid address");
    if email.is_empty() {
        return Err(ApiError::bad_request("email is required"));
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(ApiError::bad_request(format!(
            "email is longer than {MAX_EMAIL_LEN} characters"
        )));
    }
    if !email.is_ascii() {
        return Err(ApiError::bad_request(
            "email must use ASCII characters only",
        ));
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if local_ok && domain_ok {
        Ok(email)
    } else {
        Err(invalid())
    }
}

/// The name a new user starts with: the first 8 characters of the email, as the original did.
pub fn default_name(email: &str) -> String {
    email.chars().take(8).collect()
}

/// Trims a display name and checks it is 1 to 64 characters without control characters.
pub fn validate_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// Checks a submitted code: exactly six ASCII digits.
pub fn validate_code(raw: &str) -> Result<&str, ApiError> {
    let code = raw.trim();
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(ApiError::bad_request("otp must be 6 digits"))
    }
}

/// Draws a uniform 6-digit code from the operating system's CSPRNG.
pub fn generate_code() -> Result<String, getrandom::Error> {
    // Rejection sampling keeps every code equally likely.
    const LIMIT: u32 = u32::MAX - (u32::MAX % 1_000_000);
    loop {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes)?;
        let n = u32::from_le_bytes(bytes);
        if n < LIMIT {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Keyed hashing of codes: only the HMAC of `email:code` is ever stored.
#[derive(Clone)]
pub struct CodeHasher(HmacSha256);

impl CodeHasher {
    /// A hasher keyed with the server secret.
    pub fn new(secret: &[u8]) -> Result<Self, hmac::digest::InvalidLength> {
        Ok(Self(<HmacSha256 as Mac>::new_from_slice(secret)?))
    }

    fn mac(&self, email: &str, code: &str) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(email.as_bytes());
        mac.update(b":");
        mac.update(code.as_bytes());
        mac
    }

    /// The keyed hash stored instead of the code (hex).
    pub fn hash(&self, email: &str, code: &str) -> String {
        hex::encode(self.mac(email, code).finalize().into_bytes())
    }

    /// Constant-time check of a submitted code against the stored hash.
    pub fn matches(&self, email: &str, code: &str, stored_hex: &str) -> bool {
        match hex::decode(stored_hex) {
            Ok(stored) => self.mac(email, code).verify_slice(&stored).is_ok(),
            Err(_) => false,
        }
    }
}

/// The client's address: the socket peer, or the `hops`-th address from the
/// right of `X-Forwarded-For` when that many proxies are trusted.
pub fn client_addr(peer: SocketAddr, forwarded_for: Option<&str>, hops: usize) -> IpAddr {
    if hops == 0 {
        return peer.ip();
    }
    let chain: Vec<IpAddr> = forwarded_for
        .unwrap_or_default()
        .split(',')
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    chain
        .len()
        .checked_sub(hops)
        .and_then(|i| chain.get(i).copied())
        .unwrap_or_else(|| peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("  Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a..b@example.com",
            "ann@-x.com",
            "ánn@example.com",
            "ann@exämple.com",
            "a b@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(default_name("averylongname@example.com"), "averylon");
        assert_eq!(validate_name("  Ann  ").unwrap(), "Ann");
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"é".repeat(65)).is_err());
        assert!(validate_name(&"é".repeat(64)).is_ok());
        assert!(validate_name("a\u{0007}b").is_err());
    }

    #[test]
    fn codes() {
        for _ in 0..100 {
            let code = generate_code().unwrap();
            assert!(validate_code(&code).is_ok(), "{code}");
        }
        assert!(validate_code("12345").is_err());
        assert!(validate_code("12345a").is_err());
        assert!(validate_code("１２３４５６").is_err());
        let hasher = CodeHasher::new(b"secret").unwrap();
        let other = CodeHasher::new(b"other").unwrap();
        let hash = hasher.hash("a@b.co", "123456");
        assert!(hasher.matches("a@b.co", "123456", &hash));
        assert!(!hasher.matches("a@b.co", "123457", &hash));
        assert!(!other.matches("a@b.co", "123456", &hash));
        assert!(!hasher.matches("x@b.co", "123456", &hash));
        assert!(!hasher.matches("a@b.co", "123456", "zz"));
        assert!(!hash.contains("123456"));
    }

    #[test]
    fn client_addresses() {
        let peer: SocketAddr = "10.0.0.9:5555".parse().unwrap();
        assert_eq!(
            client_addr(peer, Some("1.2.3.4"), 0).to_string(),
            "10.0.0.9"
        );
        assert_eq!(
            client_addr(peer, Some("6.6.6.6, 1.2.3.4"), 1).to_string(),
            "1.2.3.4"
        );
        assert_eq!(
            client_addr(peer, Some("6.6.6.6, 1.2.3.4"), 2).to_string(),
            "6.6.6.6"
        );
        assert_eq!(
            client_addr(peer, Some("1.2.3.4"), 3).to_string(),
            "10.0.0.9"
        );
        assert_eq!(
            client_addr(peer, Some("garbage"), 1).to_string(),
            "10.0.0.9"
        );
    }
}
