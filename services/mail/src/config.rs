//! The mail service's configuration, from environment variables.

use parley_common::amqp::AmqpConfig;
use parley_common::redis::RedisConfig;
use std::time::Duration;

use parley_common::config::{ConfigError, Env, REQUIRED, Redacted, ServerConfig, UNSET, VarDoc};
use parley_common::mongo::MongoConfig;

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
    pub password: Option<Redacted<String>>,
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
            password: password.map(Redacted),
            from,
        })
    }
}

/// Delivery policy: concurrency, retries, notification pacing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Deliveries in flight per queue (`PARLEY_MAIL_PREFETCH`, default 16).
    pub prefetch: u16,
    /// Sends tried before a mail is parked (`PARLEY_MAIL_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Waits before retry 1, 2, … (`PARLEY_MAIL_RETRY_DELAYS_MS`, default
    /// `5000,30000,120000,600000`); the last repeats.
    pub retry_delays: Vec<Duration>,
    /// Wait before notifying about an unseen message (`PARLEY_NOTIFY_GRACE_SECS`, default 120).
    pub notify_grace: Duration,
    /// At most one notification per chat and recipient per window (`PARLEY_NOTIFY_WINDOW_SECS`, default 900).
    pub notify_window: Duration,
    /// Base of links in notifications (`PARLEY_APP_BASE_URL`, default `http://localhost:3000`).
    pub app_base_url: url::Url,
    /// How long and how many parked mails are kept.
    pub parking: Parking,
}

/// Bounds of the `*.dead` queues: a parked mail holds an address, so it is
/// dropped after `ttl`, and the oldest go first beyond `max_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parking {
    /// Time a parked mail is kept (`PARLEY_MAIL_PARK_TTL_SECS`, default 7 days).
    pub ttl: Duration,
    /// Parked mails kept per queue (`PARLEY_MAIL_PARK_MAX`, default 10000).
    pub max_length: u32,
}

impl Parking {
    /// Reads `PARLEY_MAIL_PARK_TTL_SECS` and `PARLEY_MAIL_PARK_MAX`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let ttl = env.seconds_or(
            "PARLEY_MAIL_PARK_TTL_SECS",
            Duration::from_secs(7 * 24 * 3600),
        )?;
        // RabbitMQ's x-message-ttl is a 32-bit count of milliseconds.
        if ttl.is_zero() || ttl.as_millis() > u128::from(u32::MAX) {
            return Err(ConfigError::new(
                "PARLEY_MAIL_PARK_TTL_SECS",
                "must be between 1 and 4294967 seconds (about 49 days)",
            ));
        }
        let max_length: u32 = env.parsed_or("PARLEY_MAIL_PARK_MAX", "a whole number", 10_000)?;
        if max_length == 0 {
            return Err(ConfigError::new(
                "PARLEY_MAIL_PARK_MAX",
                "must be at least 1",
            ));
        }
        Ok(Self { ttl, max_length })
    }
}

impl Delivery {
    /// Reads the `PARLEY_MAIL_*`, `PARLEY_NOTIFY_*` and `PARLEY_APP_BASE_URL` variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let delays_var = "PARLEY_MAIL_RETRY_DELAYS_MS";
        let retry_delays = env
            .string_or(delays_var, "5000,30000,120000,600000")
            .split(',')
            .map(|part| part.trim().parse::<u64>().map(Duration::from_millis))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ConfigError::new(
                    delays_var,
                    "expected comma-separated milliseconds such as 5000,30000",
                )
            })?;
        if retry_delays.is_empty() || retry_delays.iter().any(Duration::is_zero) {
            return Err(ConfigError::new(delays_var, "every delay must be positive"));
        }
        let prefetch: u16 =
            env.parsed_or("PARLEY_MAIL_PREFETCH", "a number between 1 and 1000", 16)?;
        if !(1..=1000).contains(&prefetch) {
            return Err(ConfigError::new(
                "PARLEY_MAIL_PREFETCH",
                "must be between 1 and 1000",
            ));
        }
        let max_attempts: u32 = env.parsed_or("PARLEY_MAIL_MAX_ATTEMPTS", "a whole number", 5)?;
        if max_attempts == 0 {
            return Err(ConfigError::new(
                "PARLEY_MAIL_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        let base = env.string_or("PARLEY_APP_BASE_URL", "http://localhost:3000");
        let app_base_url =
            parley_common::config::parse_url("PARLEY_APP_BASE_URL", &base, &["http", "https"])?;
        Ok(Self {
            prefetch,
            max_attempts,
            retry_delays,
            notify_grace: env.seconds_or("PARLEY_NOTIFY_GRACE_SECS", Duration::from_secs(120))?,
            notify_window: env.seconds_or("PARLEY_NOTIFY_WINDOW_SECS", Duration::from_secs(900))?,
            app_base_url,
            parking: Parking::from_env(env)?,
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
    /// Recipients and seen-state of messages are read here.
    pub mongo: MongoConfig,
    /// Delivery policy.
    pub delivery: Delivery,
}

/// The variables only the mail service reads.
pub const ENV: &[VarDoc] = &[
    VarDoc::new("PARLEY_SMTP_HOST", REQUIRED, "SMTP server host"),
    VarDoc::new("PARLEY_SMTP_PORT", "587", "SMTP server port"),
    VarDoc::new(
        "PARLEY_SMTP_TLS",
        "starttls",
        "transport security: `none`, `starttls` or `tls`",
    ),
    VarDoc::new(
        "PARLEY_SMTP_USERNAME",
        UNSET,
        "SMTP login; no authentication when unset",
    ),
    VarDoc::new(
        "PARLEY_SMTP_PASSWORD",
        UNSET,
        "SMTP password (required with a username)",
    ),
    VarDoc::new("PARLEY_MAIL_FROM", REQUIRED, "sender address of every mail"),
    VarDoc::new(
        "PARLEY_MAIL_PREFETCH",
        "16",
        "deliveries handled at once per queue (1 to 1000)",
    ),
    VarDoc::new(
        "PARLEY_MAIL_MAX_ATTEMPTS",
        "5",
        "sends tried before a mail is parked",
    ),
    VarDoc::new(
        "PARLEY_MAIL_RETRY_DELAYS_MS",
        "5000,30000,120000,600000",
        "waits between retries in milliseconds (the last repeats)",
    ),
    VarDoc::new(
        "PARLEY_MAIL_PARK_TTL_SECS",
        "604800",
        "how long a mail that could not be sent stays parked in its `*.dead` queue (1 s to 49 days)",
    ),
    VarDoc::new(
        "PARLEY_MAIL_PARK_MAX",
        "10000",
        "parked mails kept per `*.dead` queue; the oldest are dropped beyond it",
    ),
    VarDoc::new(
        "PARLEY_NOTIFY_GRACE_SECS",
        "120",
        "wait before mailing about an unseen message",
    ),
    VarDoc::new(
        "PARLEY_NOTIFY_WINDOW_SECS",
        "900",
        "at most one notification per chat and recipient per window",
    ),
    VarDoc::new(
        "PARLEY_APP_BASE_URL",
        "http://localhost:3000",
        "base of links in notification mails",
    ),
];

/// Every variable this binary reads, its own and the shared ones, for the
/// configuration reference.
pub fn reference() -> Vec<VarDoc> {
    parley_common::reference::service_reference(ENV)
}

impl Config {
    /// Reads and validates every variable; the first problem names its variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env)?,
            redis: RedisConfig::from_env(env)?,
            amqp: AmqpConfig::from_env(env)?,
            smtp: SmtpConfig::from_env(env)?,
            mongo: MongoConfig::from_env(env)?,
            delivery: Delivery::from_env(env)?,
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
            ("PARLEY_MONGODB_URI", "mongodb://127.0.0.1:27017"),
        ]
    }

    #[test]
    fn defaults() {
        let cfg = Config::from_env(&Env::from_pairs(base())).unwrap();
        assert_eq!(cfg.smtp.port, 587);
        assert_eq!(cfg.smtp.tls, TlsMode::StartTls);
        assert_eq!(cfg.delivery.retry_delays.len(), 4);
        assert_eq!(cfg.delivery.max_attempts, 5);
        assert_eq!(
            cfg.delivery.parking,
            Parking {
                ttl: Duration::from_secs(604_800),
                max_length: 10_000
            }
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PARLEY_SMTP_PORT", "abc"),
            ("PARLEY_SMTP_TLS", "sometimes"),
            ("PARLEY_MAIL_FROM", "not an address"),
            ("PARLEY_SMTP_PASSWORD", ""),
            ("PARLEY_MAIL_RETRY_DELAYS_MS", "100,soon"),
            ("PARLEY_MAIL_PREFETCH", "0"),
            ("PARLEY_APP_BASE_URL", "ftp://x"),
            ("PARLEY_MAIL_PARK_TTL_SECS", "0"),
            ("PARLEY_MAIL_PARK_TTL_SECS", "5000000"),
            ("PARLEY_MAIL_PARK_MAX", "0"),
            ("PARLEY_MAIL_PARK_MAX", "many"),
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
