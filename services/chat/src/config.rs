//! The chat service's configuration, from environment variables.

use std::time::Duration;

use parley_common::amqp::AmqpConfig;
use parley_common::config::{ConfigError, Env, REQUIRED, ServerConfig, VarDoc};
use parley_common::mongo::MongoConfig;
use parley_common::redis::RedisConfig;
use parley_common::revocation::RevocationConfig;
use parley_common::token::{TokenScope, TokenVerifier};

use crate::handshake::{self, HandshakePolicy};

/// Limits on work in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Events of one socket being handled at once, per class (`PARLEY_SOCKET_IN_FLIGHT`).
    pub per_socket: u32,
    /// Relay events in flight in the pod (`PARLEY_SOCKET_RELAY_IN_FLIGHT`).
    pub relay: usize,
    /// Events that reach MongoDB in flight in the pod (`PARLEY_SOCKET_STORE_IN_FLIGHT`).
    pub store: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            per_socket: 8,
            relay: 2048,
            store: 256,
        }
    }
}

/// Everything the chat service reads at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listener and shutdown grace.
    pub server: ServerConfig,
    /// Chats, messages and media live here.
    pub mongo: MongoConfig,
    /// Presence, profile cache and cross-replica traffic live here.
    pub redis: RedisConfig,
    /// Events go here.
    pub amqp: AmqpConfig,
    /// Public keys accepted for tokens (`PARLEY_JWT_PUBLIC_KEYS_FILE`),
    /// and the `iss`/`aud` required (`PARLEY_TOKEN_ISSUER`, `PARLEY_TOKEN_AUDIENCE`).
    pub verifier: TokenVerifier,
    /// How long a token generation read from Redis is reused
    /// (`PARLEY_REVOCATION_CACHE_SECS`).
    pub revocation: RevocationConfig,
    /// Base URL of the user service (`PARLEY_USER_SERVICE_URL`).
    pub user_service_url: url::Url,
    /// Largest accepted image (`PARLEY_MEDIA_MAX_BYTES`, default 5 MiB).
    pub media_max_bytes: usize,
    /// Image bytes one user may store in all (`PARLEY_MEDIA_QUOTA_BYTES`,
    /// default 1 GiB); `None` (set to 0) counts without a limit.
    pub media_quota_bytes: Option<u64>,
    /// Presence expiry without heartbeat (`PARLEY_PRESENCE_TTL_SECS`, default 30).
    pub presence_ttl: Duration,
    /// How long after sending the sender may edit a message
    /// (`PARLEY_MESSAGE_EDIT_WINDOW_SECS`, default 900).
    pub edit_window: Duration,
    /// Most members a group holds besides any one of them
    /// (`PARLEY_GROUP_MAX_MEMBERS`, default 256): a group is created with 2
    /// to this many others, and never grows past this many plus one.
    pub group_max_members: usize,
    /// How long messages are kept (`PARLEY_MESSAGE_RETENTION_DAYS`; `None`,
    /// set to 0 and the default, keeps them forever).
    pub retention: Option<Duration>,
    /// How often a replica looks for messages past the retention period
    /// (`PARLEY_RETENTION_SWEEP_SECS`, default 3600).
    pub retention_sweep_every: Duration,
    /// Socket events allowed per second per socket (`PARLEY_SOCKET_EVENTS_PER_SEC`, default 10).
    pub socket_events_per_sec: u32,
    /// Burst above that rate (`PARLEY_SOCKET_EVENT_BURST`, default 20).
    pub socket_event_burst: u32,
    /// Bounds on socket events in flight (`PARLEY_SOCKET_IN_FLIGHT`,
    /// `PARLEY_SOCKET_RELAY_IN_FLIGHT`, `PARLEY_SOCKET_STORE_IN_FLIGHT`).
    pub admission: AdmissionConfig,
    /// Per-user REST budgets (`PARLEY_REST_SENDS_PER_MINUTE`, default 60;
    /// `PARLEY_UPLOADS_PER_HOUR`, default 30).
    pub rest_limits: crate::rest_limits::RestLimits,
    /// Where handshake tokens may come from, allowed origins, connect
    /// timeout (`PARLEY_SOCKET_QUERY_TOKEN`, `PARLEY_SOCKET_ALLOWED_ORIGINS`,
    /// `PARLEY_SOCKET_CONNECT_TIMEOUT_SECS`).
    pub handshake: HandshakePolicy,
}

/// Default of `PARLEY_MEDIA_QUOTA_BYTES`: 1 GiB.
pub const DEFAULT_MEDIA_QUOTA_BYTES: u64 = 1024 * 1024 * 1024;

/// Default of `PARLEY_MESSAGE_EDIT_WINDOW_SECS`: 15 minutes.
pub const DEFAULT_EDIT_WINDOW: Duration = Duration::from_secs(900);

/// The variables only the chat service reads.
pub const ENV: &[VarDoc] = &[
    VarDoc::new(
        "PARLEY_JWT_PUBLIC_KEYS_FILE",
        REQUIRED,
        "PEM file with the Ed25519 public key(s) tokens may be signed with",
    ),
    VarDoc::new(
        "PARLEY_USER_SERVICE_URL",
        REQUIRED,
        "base URL of the user service (profile lookups)",
    ),
    VarDoc::new("PARLEY_MEDIA_MAX_BYTES", "5242880", "largest image upload"),
    VarDoc::new(
        "PARLEY_MEDIA_QUOTA_BYTES",
        "1073741824",
        "image bytes one user may store in all, counted when stored (413 `storage quota exceeded` beyond); 0 counts without a limit",
    ),
    VarDoc::new(
        "PARLEY_PRESENCE_TTL_SECS",
        "30",
        "presence expiry without heartbeat (a crashed replica's users go offline after this)",
    ),
    VarDoc::new(
        "PARLEY_MESSAGE_EDIT_WINDOW_SECS",
        "900",
        "how long after sending the sender may edit a message (403 after)",
    ),
    VarDoc::new(
        "PARLEY_GROUP_MAX_MEMBERS",
        "256",
        "most members a group holds besides its creator: created with 2 to this many others, never more than this plus one (400 beyond)",
    ),
    VarDoc::new(
        "PARLEY_MESSAGE_RETENTION_DAYS",
        "0",
        "delete messages (and their images) older than this many days, in the background; 0 keeps them forever",
    ),
    VarDoc::new(
        "PARLEY_RETENTION_SWEEP_SECS",
        "3600",
        "how often one replica looks for messages past the retention period",
    ),
    VarDoc::new(
        "PARLEY_SOCKET_EVENTS_PER_SEC",
        "10",
        "per-socket rate of sends, typing and receipts",
    ),
    VarDoc::new(
        "PARLEY_SOCKET_EVENT_BURST",
        "20",
        "burst allowed above that rate",
    ),
    VarDoc::new(
        "PARLEY_SOCKET_IN_FLIGHT",
        "8",
        "socket events of one socket handled at once (relays and MongoDB-bound events each); more are refused (429)",
    ),
    VarDoc::new(
        "PARLEY_SOCKET_RELAY_IN_FLIGHT",
        "2048",
        "typing and receipt relays in flight per pod; more are refused (503) and counted",
    ),
    VarDoc::new(
        "PARLEY_SOCKET_STORE_IN_FLIGHT",
        "256",
        "socket events that reach MongoDB in flight per pod; more are refused (503) and counted",
    ),
    VarDoc::new(
        "PARLEY_REST_SENDS_PER_MINUTE",
        "60",
        "`POST /message` requests one user may make per minute (429 beyond)",
    ),
    VarDoc::new(
        "PARLEY_UPLOADS_PER_HOUR",
        "30",
        "image uploads one user may make per hour (429 beyond)",
    ),
];

/// Every variable this binary reads, its own and the shared ones, for the
/// configuration reference.
pub fn reference() -> Vec<VarDoc> {
    parley_common::reference::service_reference(
        &[ENV, TokenScope::ENV, RevocationConfig::ENV, handshake::ENV].concat(),
    )
}

impl Config {
    /// Reads and validates every variable; the first problem names its variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let keys_var = "PARLEY_JWT_PUBLIC_KEYS_FILE";
        let keys_path = env.required(keys_var)?;
        let pems = std::fs::read_to_string(&keys_path)
            .map_err(|e| ConfigError::new(keys_var, format!("cannot read {keys_path}: {e}")))?;
        let verifier = TokenVerifier::new()
            .with_scope(TokenScope::from_env(env)?)
            .with_public_pems(&pems)
            .map_err(|e| ConfigError::new(keys_var, format!("{keys_path}: {e}")))?;
        let media_max_bytes: usize =
            env.parsed_or("PARLEY_MEDIA_MAX_BYTES", "a size in bytes", 5 * 1024 * 1024)?;
        if media_max_bytes == 0 {
            return Err(ConfigError::new(
                "PARLEY_MEDIA_MAX_BYTES",
                "must be positive",
            ));
        }
        let media_quota_bytes: u64 = env.parsed_or(
            "PARLEY_MEDIA_QUOTA_BYTES",
            "a size in bytes (0 for no limit)",
            DEFAULT_MEDIA_QUOTA_BYTES,
        )?;
        // Usage is an int64 in MongoDB.
        if i64::try_from(media_quota_bytes).is_err() {
            return Err(ConfigError::new(
                "PARLEY_MEDIA_QUOTA_BYTES",
                "must be at most 9223372036854775807",
            ));
        }
        let media_quota_bytes = (media_quota_bytes > 0).then_some(media_quota_bytes);
        let presence_ttl = env.seconds_or("PARLEY_PRESENCE_TTL_SECS", Duration::from_secs(30))?;
        if presence_ttl < Duration::from_secs(3) {
            return Err(ConfigError::new(
                "PARLEY_PRESENCE_TTL_SECS",
                "must be at least 3",
            ));
        }
        let edit_window = env.seconds_or("PARLEY_MESSAGE_EDIT_WINDOW_SECS", DEFAULT_EDIT_WINDOW)?;
        let group_max_members: usize =
            env.parsed_or("PARLEY_GROUP_MAX_MEMBERS", "a whole number", 256)?;
        if !(2..=10_000).contains(&group_max_members) {
            return Err(ConfigError::new(
                "PARLEY_GROUP_MAX_MEMBERS",
                "must be between 2 and 10000",
            ));
        }
        let retention_days: u64 =
            env.parsed_or("PARLEY_MESSAGE_RETENTION_DAYS", "a whole number of days", 0)?;
        if retention_days > 100 * 365 {
            return Err(ConfigError::new(
                "PARLEY_MESSAGE_RETENTION_DAYS",
                "must be at most 36500 (0 keeps messages forever)",
            ));
        }
        let retention = (retention_days > 0).then(|| Duration::from_secs(retention_days * 86_400));
        let retention_sweep_every =
            env.seconds_or("PARLEY_RETENTION_SWEEP_SECS", Duration::from_secs(3600))?;
        if retention_sweep_every.is_zero() {
            return Err(ConfigError::new(
                "PARLEY_RETENTION_SWEEP_SECS",
                "must be positive",
            ));
        }
        let socket_events_per_sec: u32 =
            env.parsed_or("PARLEY_SOCKET_EVENTS_PER_SEC", "a whole number", 10)?;
        let socket_event_burst: u32 =
            env.parsed_or("PARLEY_SOCKET_EVENT_BURST", "a whole number", 20)?;
        if socket_events_per_sec == 0 || socket_event_burst == 0 {
            return Err(ConfigError::new(
                "PARLEY_SOCKET_EVENTS_PER_SEC",
                "rate and burst must be positive",
            ));
        }
        let defaults = AdmissionConfig::default();
        let admission = AdmissionConfig {
            per_socket: env.parsed_or(
                "PARLEY_SOCKET_IN_FLIGHT",
                "a whole number",
                defaults.per_socket,
            )?,
            relay: env.parsed_or(
                "PARLEY_SOCKET_RELAY_IN_FLIGHT",
                "a whole number",
                defaults.relay,
            )?,
            store: env.parsed_or(
                "PARLEY_SOCKET_STORE_IN_FLIGHT",
                "a whole number",
                defaults.store,
            )?,
        };
        for (var, value) in [
            ("PARLEY_SOCKET_IN_FLIGHT", admission.per_socket as usize),
            ("PARLEY_SOCKET_RELAY_IN_FLIGHT", admission.relay),
            ("PARLEY_SOCKET_STORE_IN_FLIGHT", admission.store),
        ] {
            if value == 0 {
                return Err(ConfigError::new(var, "must be positive"));
            }
        }
        let mut rest_limits = crate::rest_limits::RestLimits {
            sends_per_minute: 60,
            uploads_per_hour: 30,
        };
        for (var, value) in [
            (
                "PARLEY_REST_SENDS_PER_MINUTE",
                &mut rest_limits.sends_per_minute,
            ),
            ("PARLEY_UPLOADS_PER_HOUR", &mut rest_limits.uploads_per_hour),
        ] {
            *value = env.parsed_or(var, "a whole number", *value)?;
            if *value == 0 {
                return Err(ConfigError::new(var, "must be positive"));
            }
        }
        Ok(Self {
            server: ServerConfig::from_env(env)?,
            mongo: MongoConfig::from_env(env)?,
            redis: RedisConfig::from_env(env)?,
            amqp: AmqpConfig::from_env(env)?,
            verifier,
            revocation: RevocationConfig::from_env(env)?,
            user_service_url: env.required_url("PARLEY_USER_SERVICE_URL", &["http", "https"])?,
            media_max_bytes,
            media_quota_bytes,
            presence_ttl,
            edit_window,
            group_max_members,
            retention,
            retention_sweep_every,
            socket_events_per_sec,
            socket_event_burst,
            admission,
            rest_limits,
            handshake: HandshakePolicy::from_env(env)?,
        })
    }
}
