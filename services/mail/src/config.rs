//! The mail service's configuration, from environment variables.

use parley_common::amqp::AmqpConfig;
use parley_common::cache::RedisConfig;
use parley_common::config::{ConfigError, Env, ServerConfig};

/// How to talk to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text (local sinks only).
    None,
    /// Upgrade with STARTTLS (usually port 587).
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            _ => Err("must be none, starttls or tls".to_owned()),
        }
    }
}

/// SMTP settings.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Server host (`PARLEY_SMTP_HOST`).
    pub host: String,
    /// Server port (`PARLEY_SMTP_PORT`, default 587).
    pub port: u16,
    /// TLS mode (`PARLEY_SMTP_TLS`: none, starttls or tls; default starttls).
    pub tls: TlsMode,
    /// Login (`PARLEY_SMTP_USERNAME`), optional.
    pub username: Option<String>,
    /// Password (`PARLEY_SMTP_PASSWORD`), required with a username.
    pub password: Option<String>,
    /// Sender address (`PARLEY_MAIL_FROM`).
    pub from: String,
}

impl SmtpConfig {
    /// Reads the `PARLEY_SMTP_*` variables and `PARLEY_MAIL_FROM`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let username = env.raw("PARLEY_SMTP_USERNAME");
        let password = env.raw("PARLEY_SMTP_PASSWORD");
        if username.is_some() && password.is_none() {
            return Err(ConfigError::new(
                "PARLEY_SMTP_PASSWORD",
                "is required when PARLEY_SMTP_USERNAME is set",
            ));
        }
        let from = env.required("PARLEY_MAIL_FROM")?;
        from.parse::<lettre::message::Mailbox>().map_err(|e| {
            ConfigError::new("PARLEY_MAIL_FROM", format!("is not a mail address ({e})"))
        })?;
        Ok(Self {
            host: env.required("PARLEY_SMTP_HOST")?,
            port: env.port_or("PARLEY_SMTP_PORT", 587)?,
            tls: env.parsed_or(
                "PARLEY_SMTP_TLS",
                "none, starttls or tls",
                TlsMode::StartTls,
            )?,
            username,
            password,
            from,
        })
    }
}

/// Everything the mail service reads at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listener and shutdown grace.
    pub server: ServerConfig,
    /// Deduplication keys live here.
    pub redis: RedisConfig,
    /// Events come from here.
    pub amqp: AmqpConfig,
    /// Mail goes out here.
    pub smtp: SmtpConfig,
}

impl Config {
    /// Reads and validates every variable; the first problem names its variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env)?,
            redis: RedisConfig::from_env(env)?,
            amqp: AmqpConfig::from_env(env)?,
            smtp: SmtpConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("PARLEY_REDIS_URL", "redis://127.0.0.1:6379"),
            ("PARLEY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("PARLEY_SMTP_HOST", "127.0.0.1"),
            ("PARLEY_MAIL_FROM", "parley@example.com"),
        ]
    }

    #[test]
    fn defaults() {
        let cfg = Config::from_env(&Env::from_pairs(base())).unwrap();
        assert_eq!(cfg.smtp.port, 587);
        assert_eq!(cfg.smtp.tls, TlsMode::StartTls);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PARLEY_SMTP_PORT", "abc"),
            ("PARLEY_SMTP_TLS", "sometimes"),
            ("PARLEY_MAIL_FROM", "not an address"),
            ("PARLEY_SMTP_PASSWORD", ""),
        ] {
            let mut pairs = base();
            pairs.push((var, value));
            if var == "PARLEY_SMTP_PASSWORD" {
                pairs.push(("PARLEY_SMTP_USERNAME", "u"));
            }
            let err = Config::from_env(&Env::from_pairs(pairs.clone())).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }
}
