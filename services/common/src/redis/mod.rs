//! Redis connector.
//!
//! A lazy [`ConnectionManager`]: it connects on first use and reconnects by
//! itself after an outage, with short timeouts so a dead Redis gives a quick
//! error rather than a hung request, and a watchdog ([`healing`]) that
//! replaces a connection that stopped answering. Every key parley writes
//! carries the configured prefix.

mod healing;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};

pub use healing::HealingManager;

use crate::config::{ConfigError, Env, REQUIRED, UNSET, VarDoc};
use crate::tls::CaBundle;

/// Lua helpers for fixed-window counters, shared by the limit scripts:
/// `left(key)` is the window's milliseconds left as a string ("1000" when the
/// key has no expiry), `count(key)` its count (0 when absent).
const WINDOW_HELPERS: &str = r"
local function left(key)
  local t = redis.call('PTTL', key)
  if t < 0 then return '1000' end
  return tostring(t)
end
local function count(key) return tonumber(redis.call('GET', key) or '0') or 0 end
";

/// A script whose `body` may call the window helpers `left` and `count`.
pub fn window_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{WINDOW_HELPERS}{body}"))
}

/// Where Redis is and how parley's keys are named.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `unix://` URL (`PARLEY_REDIS_URL`).
    pub url: String,
    /// Prefix of every key (`PARLEY_REDIS_PREFIX`, default `parley:`).
    pub prefix: String,
    /// The CAs trusted for a `rediss://` URL in place of the system's
    /// (`PARLEY_REDIS_CA_FILE`).
    pub ca: Option<CaBundle>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &crate::config::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("ca", &self.ca)
            .finish()
    }
}

impl RedisConfig {
    /// The variables [`RedisConfig::from_env`] reads.
    pub const ENV: &'static [VarDoc] = &[
        VarDoc::new(
            "PARLEY_REDIS_URL",
            REQUIRED,
            "`redis://`, `rediss://` (TLS) or `unix://` URL",
        ),
        VarDoc::new(
            "PARLEY_REDIS_PREFIX",
            "parley:",
            "prefix of every Redis key and pub/sub channel",
        ),
        VarDoc::new(
            "PARLEY_REDIS_CA_FILE",
            UNSET,
            "PEM file of the CAs trusted for a `rediss://` URL, in place of the system's",
        ),
    ];

    /// Reads `PARLEY_REDIS_URL` (required) and `PARLEY_REDIS_PREFIX`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.required_url("PARLEY_REDIS_URL", &["redis", "rediss", "unix"])?;
        let ca = CaBundle::from_env(env, "PARLEY_REDIS_CA_FILE")?;
        if ca.is_some() && url.scheme() != "rediss" {
            return Err(ConfigError::new(
                "PARLEY_REDIS_CA_FILE",
                "is set, so PARLEY_REDIS_URL must be a rediss:// (TLS) URL",
            ));
        }
        Ok(Self {
            url: url.to_string(),
            prefix: env.string_or("PARLEY_REDIS_PREFIX", "parley:"),
            ca,
        })
    }
}

/// Errors building the Redis client.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL was refused by the client.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
}

/// How often the watchdog pings an open connection; with the 2 s response
/// timeout, a connection that stopped answering is replaced within ~3 s.
pub const WATCHDOG_EVERY: Duration = Duration::from_secs(1);

/// Socket options of every Redis connection: no Nagle delay on small
/// commands (a relayed event is one small `PUBLISH`), and a kernel that
/// drops the connection when its peer vanished: keepalive probes on an idle
/// connection (a subscription), a 5 s limit on unacknowledged data on a busy
/// one. The connection manager then sees a closed connection and reconnects.
pub fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(5))
}

impl RedisConfig {
    /// A client for this configuration: its CAs, [`tcp_settings`], and RESP3
    /// when `resp3` (pub/sub push messages on a multiplexed connection).
    pub fn client(&self, resp3: bool) -> Result<redis::Client, RedisSetupError> {
        use redis::IntoConnectionInfo;
        if self.url.starts_with("rediss:") {
            crate::tls::install_crypto_provider();
        }
        let mut info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(RedisSetupError::Url)?
            .set_tcp_settings(tcp_settings());
        if resp3 {
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        match &self.ca {
            None => redis::Client::open(info),
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.pem.clone().into_bytes()),
                },
            ),
        }
        .map_err(RedisSetupError::Url)
    }
}

/// A self-healing Redis connection and parley's key prefix.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    manager: HealingManager,
    prefix: String,
}

impl Redis {
    /// Builds the connection manager. No network I/O happens here; inside a
    /// Tokio runtime its watchdog starts (it ends with the last clone).
    pub fn connect(config: &RedisConfig) -> Result<Self, RedisSetupError> {
        let client = config.client(false)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let manager =
            HealingManager::new(client.clone(), manager_config).map_err(RedisSetupError::Url)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            manager.spawn_watchdog(WATCHDOG_EVERY, |_| {});
        }
        Ok(Self {
            client,
            manager,
            prefix: config.prefix.clone(),
        })
    }

    /// A handle for commands; cheap to clone.
    pub fn conn(&self) -> ConnectionManager {
        self.manager.conn()
    }

    /// The client, for connections of their own (pub/sub subscriptions).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `prefix` + `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Readiness: a `PING` round trip.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Follows the pub/sub `channel` of `redis` until `shutdown`, in a task of
/// its own: `on_message` gets each message's payload, and `on_subscribed`
/// runs at every (re)subscription, since messages sent while unsubscribed
/// are lost (drop what they would have changed there). A lost subscription
/// is made again after [`crate::retry::backoff`]; `what` names the channel
/// in the logs.
pub fn follow_channel<S, M>(
    redis: Redis,
    channel: String,
    what: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
    on_subscribed: S,
    on_message: M,
) -> tokio::task::JoinHandle<()>
where
    S: Fn() + Send + 'static,
    M: Fn(String) + Send + 'static,
{
    use futures::StreamExt;
    tokio::spawn(async move {
        let mut waits = crate::retry::backoff();
        loop {
            let subscribed = async {
                let mut pubsub = redis.client().get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                () = shutdown.cancelled() => return,
                r = subscribed => r,
            };
            match pubsub {
                Ok(mut pubsub) => {
                    waits = crate::retry::backoff();
                    on_subscribed();
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            () = shutdown.cancelled() => return,
                            m = messages.next() => m,
                        };
                        let Some(message) = message else { break };
                        on_message(message.get_payload().unwrap_or_default());
                    }
                    tracing::warn!(channel = what, "subscription lost; subscribing again");
                }
                Err(error) => tracing::warn!(%error, channel = what, "cannot subscribe yet"),
            }
            let wait = waits.next().unwrap_or(crate::retry::MAX_DELAY);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}
