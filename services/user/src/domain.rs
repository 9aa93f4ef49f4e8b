//! Pure rules of login and profiles: emails, inboxes, names, codes, login
//! ids and client addresses.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::DomainError;

/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Trims and lowercases an email and checks its shape: ASCII, one `@`, a
/// non-empty local part of at most 64 bytes and a dotted domain.
pub fn normalize_email(raw: &str) -> Result<String, DomainError> {
    let email = raw.trim().to_ascii_lowercase();
    let invalid = || DomainError::invalid("email is not a valid address");
    if email.is_empty() {
        return Err(DomainError::invalid("email is required"));
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(DomainError::invalid(format!(
            "email is longer than {MAX_EMAIL_LEN} characters"
        )));
    }
    if !email.is_ascii() {
        return Err(DomainError::invalid("email must use ASCII characters only"));
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

/// The inbox an address delivers to, for rate limiting only (mail always
/// goes to the address as given): a normalised address (see
/// [`normalize_email`]) without its `+tag`; for `gmail.com` and
/// `googlemail.com`, which ignore dots, also without dots and as `gmail.com`.
pub fn inbox_key(email: &str) -> String {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return email.to_owned();
    };
    let local = local.split('+').next().unwrap_or(local);
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", local.replace('.', "")),
        _ => format!("{local}@{domain}"),
    }
}

/// The name a new user starts with: the first 8 characters of the email, as the original did.
pub fn default_name(email: &str) -> String {
    let name: String = email
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c) && !is_invisible(*c))
        .take(8)
        .collect();
    // Addresses are ASCII, so this only guards the rule that every stored
    // name passes [`validate_name`].
    match validate_name(&name) {
        Ok(name) => name,
        Err(_) => "user".to_owned(),
    }
}

/// Trims a display name and checks it is 1 to 64 characters without control,
/// bidirectional control or invisible characters.
pub fn validate_name(raw: &str) -> Result<String, DomainError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(DomainError::invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "name must not contain control characters",
        ));
    }
    if name.chars().any(is_bidi_control) {
        return Err(DomainError::invalid(
            "name must not contain bidirectional control characters",
        ));
    }
    if name.chars().any(is_invisible) {
        return Err(DomainError::invalid(
            "name must not contain invisible characters",
        ));
    }
    Ok(name.to_owned())
}

/// Pure: a character that reorders the text around it (bidirectional
/// embeddings, overrides, isolates and marks), which lets a name display
/// as something other than what it is.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Pure: a character that shows nothing (zero-width and other default
/// ignorable format characters, line and paragraph separators, blank
/// fillers), which lets two different names look the same. Variation
/// selectors (U+FE00–U+FE0F) stay allowed: emoji need them.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'..='\u{2065}'
            | '\u{206A}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Fewest and most digits a code may have.
pub const CODE_DIGITS: std::ops::RangeInclusive<u32> = 6..=10;

/// Checks a submitted code: exactly `digits` ASCII digits.
pub fn validate_code(raw: &str, digits: u32) -> Result<&str, DomainError> {
    let code = raw.trim();
    if code.len() == digits as usize && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(DomainError::invalid(format!("otp must be {digits} digits")))
    }
}

/// A code sent as a JSON number, as digits: leading zeros a number lost
/// are put back.
pub fn code_from_number(n: u64, digits: u32) -> String {
    format!("{n:0width$}", width = digits as usize)
}

/// Draws a uniform code of `digits` digits (6 to 10) from the operating
/// system's CSPRNG.
pub fn generate_code(digits: u32) -> Result<String, getrandom::Error> {
    let digits = digits.clamp(*CODE_DIGITS.start(), *CODE_DIGITS.end());
    let space = 10u64.pow(digits);
    // Rejection sampling keeps every code equally likely.
    let limit = u64::MAX - (u64::MAX % space);
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)?;
        let n = u64::from_le_bytes(bytes);
        if n < limit {
            return Ok(code_from_number(n % space, digits));
        }
    }
}

/// A fresh login id: 128 random bits, hex. Only the client that asked for
/// the code learns it; `/verify` may present it to bind the attempt to
/// that login.
pub fn generate_login_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Longest login id accepted from a client.
pub const MAX_LOGIN_ID_LEN: usize = 128;

/// Checks a presented login id: a non-empty string of printable ASCII.
pub fn validate_login_id(raw: &str) -> Result<&str, DomainError> {
    let id = raw.trim();
    if id.is_empty() || id.len() > MAX_LOGIN_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::invalid("loginId is not valid"));
    }
    Ok(id)
}

/// Seconds an account must wait before its next try, after `failures`
/// wrong codes of which the first `free` cost no wait: 1, 2, 4, ... up to
/// `max_secs`. The Redis script applies the same rule atomically.
pub fn backoff_secs(failures: u32, free: u32, max_secs: u64) -> u64 {
    match failures.checked_sub(free) {
        None => 0,
        Some(extra) => 1u64.checked_shl(extra).unwrap_or(u64::MAX).min(max_secs),
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

    /// The key a login id is stored under (hex, 128 bits of its HMAC), so
    /// Redis never holds the id itself.
    pub fn login_key(&self, login_id: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(b"login-id:");
        mac.update(login_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        hex::encode(&digest[..16])
    }

    /// Constant-time check of a submitted code against the stored hash.
    pub fn matches(&self, email: &str, code: &str, stored_hex: &str) -> bool {
        match hex::decode(stored_hex) {
            Ok(stored) => self.mac(email, code).verify_slice(&stored).is_ok(),
            Err(_) => false,
        }
    }
}

/// The client's address: the socket peer, or the `hops`-th entry from the
/// right of `X-Forwarded-For` when that many proxies are trusted.
///
/// `forwarded_for` holds every `X-Forwarded-For` header line in order (a
/// proxy may add a line instead of extending one). Every entry keeps its
/// position, parseable or not, so an entry a proxy wrote that is not an
/// address (`unknown`, an obfuscated name) cannot shift the trusted
/// position onto one the client wrote: when the trusted entry is not an
/// address, the peer (the nearest proxy) is used, and all such clients
/// share its budgets.
pub fn client_addr(peer: SocketAddr, forwarded_for: &[&str], hops: usize) -> IpAddr {
    if hops == 0 {
        return peer.ip();
    }
    let entries: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(hops)
        .and_then(|i| entries.get(i))
        .and_then(|entry| forwarded_entry(entry))
        .unwrap_or_else(|| peer.ip())
}

/// An `X-Forwarded-For` entry as an address: `1.2.3.4`, `2001:db8::1`,
/// `1.2.3.4:5678`, `[2001:db8::1]:5678` or `[2001:db8::1]`.
fn forwarded_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
}

/// The group a client address is counted in: an IPv4 address alone (also
/// when written IPv4-mapped), an IPv6 address by its first `v6_prefix`
/// bits (one /64 is usually one subscriber).
pub fn client_group(ip: IpAddr, v6_prefix: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = v6_prefix.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
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
        for sneaky in [
            "evil\u{202E}gpj.exe",
            "a\u{2066}b",
            "a\u{200F}",
            "a\u{061C}b",
            "ad\u{200B}min",
            "a\u{200D}b",
            "a\u{2060}b",
            "\u{FEFF}admin",
            "a\u{00AD}b",
            "a\u{2028}b",
            "a\u{E0041}",
        ] {
            assert!(validate_name(sneaky).is_err(), "{sneaky:?}");
        }
        assert!(validate_name("Zoë ❤\u{FE0F} مرحبا 日本").is_ok());
        for email in ["averylongname@example.com", "a@b.co", "\u{200B}@x"] {
            assert!(validate_name(&default_name(email)).is_ok(), "{email}");
        }
    }

    #[test]
    fn inboxes() {
        assert_eq!(inbox_key("bomb+1@example.com"), "bomb@example.com");
        assert_eq!(inbox_key("bomb@example.com"), "bomb@example.com");
        assert_eq!(inbox_key("a.b+x+y@example.com"), "a.b@example.com");
        assert_eq!(inbox_key("j.d.oe+k@googlemail.com"), "jdoe@gmail.com");
        assert_eq!(inbox_key("jdoe@gmail.com"), "jdoe@gmail.com");
        assert_eq!(inbox_key("+x@example.com"), "@example.com");
    }

    #[test]
    fn backoff() {
        assert_eq!(backoff_secs(0, 5, 3600), 0);
        assert_eq!(backoff_secs(4, 5, 3600), 0);
        assert_eq!(backoff_secs(5, 5, 3600), 1);
        assert_eq!(backoff_secs(7, 5, 3600), 4);
        assert_eq!(backoff_secs(40, 5, 3600), 3600);
        assert_eq!(backoff_secs(200, 5, 3600), 3600);
    }

    #[test]
    fn login_ids() {
        let id = generate_login_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_ne!(id, generate_login_id().unwrap());
        assert!(validate_login_id(&id).is_ok());
        assert!(validate_login_id("").is_err());
        assert!(validate_login_id("a b").is_err());
        assert!(validate_login_id(&"a".repeat(129)).is_err());
        let hasher = CodeHasher::new(b"secret").unwrap();
        assert_eq!(hasher.login_key(&id).len(), 32);
        assert_ne!(hasher.login_key(&id), hasher.login_key("other"));
        assert!(!hasher.login_key(&id).contains(&id));
    }

    #[test]
    fn codes() {
        for digits in CODE_DIGITS {
            for _ in 0..50 {
                let code = generate_code(digits).unwrap();
                assert!(validate_code(&code, digits).is_ok(), "{code}");
            }
        }
        assert_eq!(code_from_number(1234, 8), "00001234");
        assert!(validate_code("123456", 8).is_err());
        assert!(validate_code("12345", 6).is_err());
        assert!(validate_code("12345a", 6).is_err());
        assert!(validate_code("１２３４５６", 6).is_err());
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
        let addr = |lines: &[&str], hops| client_addr(peer, lines, hops).to_string();
        assert_eq!(addr(&["1.2.3.4"], 0), "10.0.0.9");
        assert_eq!(addr(&["6.6.6.6, 1.2.3.4"], 1), "1.2.3.4");
        assert_eq!(addr(&["6.6.6.6, 1.2.3.4"], 2), "6.6.6.6");
        assert_eq!(addr(&["1.2.3.4"], 3), "10.0.0.9");
        assert_eq!(addr(&[], 1), "10.0.0.9");
        assert_eq!(addr(&["garbage"], 1), "10.0.0.9");
        // An unparseable trusted entry does not hand the position to the
        // client's own entry; garbage the client wrote costs it nothing.
        assert_eq!(addr(&["6.6.6.6, unknown"], 1), "10.0.0.9");
        assert_eq!(addr(&["garbage, 1.2.3.4"], 1), "1.2.3.4");
        assert_eq!(addr(&["6.6.6.6, garbage, 1.2.3.4, 5.5.5.5"], 2), "1.2.3.4");
        assert_eq!(addr(&["6.6.6.6, unknown, 5.5.5.5"], 2), "10.0.0.9");
        // Every header line counts, in order.
        assert_eq!(addr(&["6.6.6.6", "1.2.3.4"], 1), "1.2.3.4");
        // Ports and brackets are tolerated.
        assert_eq!(addr(&["1.2.3.4:5678"], 1), "1.2.3.4");
        assert_eq!(addr(&["[2001:db8::1]:443"], 1), "2001:db8::1");
        assert_eq!(addr(&["[2001:db8::1]"], 1), "2001:db8::1");
    }

    #[test]
    fn client_groups() {
        let group = |ip: &str, prefix| client_group(ip.parse().unwrap(), prefix);
        assert_eq!(group("1.2.3.4", 64), "1.2.3.4");
        assert_eq!(group("::ffff:1.2.3.4", 64), "1.2.3.4");
        assert_eq!(group("2001:db8:7:7::1", 64), "2001:db8:7:7::/64");
        assert_eq!(group("2001:db8:7:7:ffff::2", 64), "2001:db8:7:7::/64");
        assert_eq!(group("2001:db8:7:8::1", 64), "2001:db8:7:8::/64");
        assert_eq!(group("2001:db8:7:7::1", 48), "2001:db8:7::/48");
        assert_eq!(group("2001:db8::1", 128), "2001:db8::1/128");
        assert_eq!(group("2001:db8::1", 0), "::/0");
    }
}
