//! Configuration from environment variables.
//!
//! Every problem names the variable, so a bad deployment fails at start-up
//! with one line that says what to fix.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// A problem with `var`.
    pub fn new(var: &str, problem: impl Into<String>) -> Self {
        Self {
            var: var.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Where variables come from: the process environment, or a map in tests.
#[derive(Debug, Clone, Default)]
pub struct Env {
    overrides: Option<HashMap<String, String>>,
}

impl Env {
    /// Reads the process environment.
    pub fn process() -> Self {
        Self { overrides: None }
    }

    /// Reads only the given pairs (for tests and tools).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            overrides: Some(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    /// The raw value; an empty or whitespace-only value counts as unset.
    pub fn raw(&self, var: &str) -> Option<String> {
        let value = match &self.overrides {
            Some(map) => map.get(var).cloned(),
            None => std::env::var(var).ok(),
        }?;
        let trimmed = value.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// A required string.
    pub fn required(&self, var: &str) -> Result<String, ConfigError> {
        self.raw(var)
            .ok_or_else(|| ConfigError::new(var, "is required but not set"))
    }

    /// A required value parsed with `FromStr`; `expected` describes the format.
    pub fn required_parsed<T>(&self, var: &str, expected: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = self.required(var)?;
        parse_value(var, &raw, expected)
    }

    /// An optional value parsed with `FromStr`, or `default` when unset.
    pub fn parsed_or<T>(&self, var: &str, expected: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(var) {
            Some(raw) => parse_value(var, &raw, expected),
            None => Ok(default),
        }
    }

    /// An optional string, or `default` when unset.
    pub fn string_or(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_owned())
    }

    /// A socket address such as `0.0.0.0:8080`.
    pub fn socket_addr_or(
        &self,
        var: &str,
        default: SocketAddr,
    ) -> Result<SocketAddr, ConfigError> {
        self.parsed_or(var, "a host:port address such as 0.0.0.0:8080", default)
    }

    /// A TCP port number (1-65535).
    pub fn port_or(&self, var: &str, default: u16) -> Result<u16, ConfigError> {
        let port: u16 = self.parsed_or(var, "a port number between 1 and 65535", default)?;
        if port == 0 {
            return Err(ConfigError::new(
                var,
                "must be a port number between 1 and 65535, got 0",
            ));
        }
        Ok(port)
    }

    /// A duration given in whole seconds.
    pub fn seconds_or(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        let secs: u64 = self.parsed_or(var, "a whole number of seconds", default.as_secs())?;
        Ok(Duration::from_secs(secs))
    }

    /// A required URL whose scheme is one of `schemes`.
    pub fn required_url(&self, var: &str, schemes: &[&str]) -> Result<url::Url, ConfigError> {
        let raw = self.required(var)?;
        parse_url(var, &raw, schemes)
    }
}

/// Parses `raw` as a URL with one of `schemes`, naming `var` in the error.
pub fn parse_url(var: &str, raw: &str, schemes: &[&str]) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| {
        ConfigError::new(
            var,
            format!(
                "is not a valid URL ({e}); expected {}://…",
                schemes.join("|")
            ),
        )
    })?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::new(
            var,
            format!(
                "has scheme {:?}; expected one of {}",
                url.scheme(),
                schemes.join(", ")
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) && url.scheme() != "unix" {
        return Err(ConfigError::new(var, "has no host"));
    }
    Ok(url)
}

fn parse_value<T>(var: &str, raw: &str, expected: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    raw.parse::<T>()
        .map_err(|e| ConfigError::new(var, format!("expected {expected}, got {raw:?} ({e})")))
}

/// Settings every parley binary shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address the HTTP server listens on (`PARLEY_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Longest wait for in-flight work after SIGTERM (`PARLEY_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// Reads `PARLEY_HTTP_ADDR` (default `0.0.0.0:8080`) and `PARLEY_SHUTDOWN_GRACE_SECS` (default 20).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http_addr: env
                .socket_addr_or("PARLEY_HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            shutdown_grace: env
                .seconds_or("PARLEY_SHUTDOWN_GRACE_SECS", Duration::from_secs(20))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_required_names_the_variable() {
        let env = Env::from_pairs::<&str, &str>([]);
        let err = env.required("PARLEY_REDIS_URL").unwrap_err();
        assert_eq!(err.to_string(), "PARLEY_REDIS_URL: is required but not set");
    }

    #[test]
    fn blank_counts_as_unset() {
        let env = Env::from_pairs([("PARLEY_X", "   ")]);
        assert!(env.required("PARLEY_X").is_err());
        assert_eq!(env.string_or("PARLEY_X", "d"), "d");
    }

    #[test]
    fn malformed_port_names_variable_and_value() {
        let env = Env::from_pairs([("PARLEY_SMTP_PORT", "abc")]);
        let err = env.port_or("PARLEY_SMTP_PORT", 25).unwrap_err();
        assert_eq!(err.var, "PARLEY_SMTP_PORT");
        assert!(err.problem.contains("\"abc\""), "{err}");
        let zero = Env::from_pairs([("PARLEY_SMTP_PORT", "0")]);
        assert!(zero.port_or("PARLEY_SMTP_PORT", 25).is_err());
        let big = Env::from_pairs([("PARLEY_SMTP_PORT", "70000")]);
        assert!(big.port_or("PARLEY_SMTP_PORT", 25).is_err());
    }

    #[test]
    fn socket_addr_parses_and_rejects() {
        let ok = Env::from_pairs([("PARLEY_HTTP_ADDR", "127.0.0.1:7101")]);
        let cfg = ServerConfig::from_env(&ok).unwrap();
        assert_eq!(cfg.http_addr.port(), 7101);
        let bad = Env::from_pairs([("PARLEY_HTTP_ADDR", "127.0.0.1:abc")]);
        let err = ServerConfig::from_env(&bad).unwrap_err();
        assert_eq!(err.var, "PARLEY_HTTP_ADDR");
    }

    #[test]
    fn url_scheme_and_host_are_checked() {
        let env = Env::from_pairs([
            ("A", "redis://127.0.0.1:6379"),
            ("B", "http://127.0.0.1"),
            ("C", "not a url"),
            ("D", "redis://"),
        ]);
        assert!(env.required_url("A", &["redis", "rediss"]).is_ok());
        assert!(
            env.required_url("B", &["redis"])
                .unwrap_err()
                .problem
                .contains("scheme")
        );
        assert!(
            env.required_url("C", &["redis"])
                .unwrap_err()
                .problem
                .contains("not a valid URL")
        );
        assert!(env.required_url("D", &["redis"]).is_err());
    }

    #[test]
    fn defaults_apply_when_unset() {
        let env = Env::from_pairs::<&str, &str>([]);
        let cfg = ServerConfig::from_env(&env).unwrap();
        assert_eq!(cfg.http_addr.port(), 8080);
        assert_eq!(cfg.shutdown_grace, Duration::from_secs(20));
    }
}
