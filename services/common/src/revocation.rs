//! Logout and revocation: a per-user token generation.
//!
//! Redis key `user:<id>:gen` holds the user's current generation: the
//! Redis server's clock in milliseconds at their last logout (always
//! moving forward). Tokens carry the generation they were issued at (claim
//! `gen`); a token older than the current generation is refused. A logout
//! sets the key and publishes `<id> <generation>` on the `revocations`
//! channel in one script, so every pod hears it at once: each keeps the
//! generations it looked up for a few seconds ([`Revocations::check`] costs
//! a Redis round trip only on a miss), and the message moves them on
//! immediately. The key expires one token lifetime after the logout: by
//! then every token it refused has expired on its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env, VarDoc};
use crate::redis::Redis;
use crate::token::Claims;

/// Generations kept per pod at most (beyond that the stale ones go).
pub const MAX_CACHED: usize = 100_000;

const REVOKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local generation = now
if current >= generation then generation = current + 1 end
redis.call('SET', KEYS[1], generation, 'PX', ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[2] .. ' ' .. generation)
return generation
";

/// Why a token's generation was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// The user logged out after this token was issued.
    #[error("token revoked")]
    Revoked,
    /// Redis did not answer.
    #[error("revocations unavailable: {0}")]
    Unavailable(String),
}

/// Pure: a token of `token_generation` is revoked when the user's current
/// generation is newer.
pub fn is_revoked(token_generation: u64, current: u64) -> bool {
    token_generation < current
}

/// Pure: `"<user> <generation>"` as published on the channel.
pub fn parse_message(payload: &str) -> Option<(String, u64)> {
    let (user, generation) = payload.trim().split_once(' ')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_owned(), generation.parse().ok()?))
}

/// How long a pod trusts a generation it looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationConfig {
    /// `PARLEY_REVOCATION_CACHE_SECS`.
    pub cache_ttl: Duration,
}

impl RevocationConfig {
    /// The variables [`RevocationConfig::from_env`] reads (user and chat).
    pub const ENV: &'static [VarDoc] = &[VarDoc::new(
        "PARLEY_REVOCATION_CACHE_SECS",
        "5",
        "how long a pod reuses a user's token generation it read from Redis (0 to 60; logouts reach every pod at once through pub/sub, this bounds a missed message)",
    )];

    /// Reads `PARLEY_REVOCATION_CACHE_SECS`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let var = "PARLEY_REVOCATION_CACHE_SECS";
        let cache_ttl = env.seconds_or(var, Duration::from_secs(5))?;
        if cache_ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(var, "must be 0 to 60 seconds"));
        }
        Ok(Self { cache_ttl })
    }
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    generation: u64,
    at: Instant,
}

/// Token generations; cheap to clone.
#[derive(Clone)]
pub struct Revocations {
    redis: Redis,
    ttl: Duration,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// Generations in `redis`, each reused for `config.cache_ttl`.
    pub fn new(redis: Redis, config: RevocationConfig) -> Self {
        Self {
            redis,
            ttl: config.cache_ttl,
            cache: Arc::default(),
        }
    }

    fn key(&self, user: &str) -> String {
        self.redis.key(&format!("user:{user}:gen"))
    }

    /// The pub/sub channel logouts are announced on.
    pub fn channel(&self) -> String {
        self.redis.key("revocations")
    }

    fn cached(&self, user: &str) -> Option<u64> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(user)?;
        (entry.at.elapsed() < self.ttl).then_some(entry.generation)
    }

    /// Remembers `generation` for `user` (never moving it back).
    pub fn note(&self, user: &str, generation: u64) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= MAX_CACHED && !cache.contains_key(user) {
            let ttl = self.ttl;
            cache.retain(|_, c| c.at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        let entry = cache.entry(user.to_owned()).or_insert(Cached {
            generation,
            at: Instant::now(),
        });
        entry.generation = entry.generation.max(generation);
        entry.at = Instant::now();
    }

    /// Forgets every remembered generation (after pub/sub messages may
    /// have been missed).
    pub fn forget_all(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// The user's current generation (0 before any logout).
    pub async fn current(&self, user: &str) -> Result<u64, RevocationError> {
        if let Some(generation) = self.cached(user) {
            return Ok(generation);
        }
        let value: Option<u64> = redis::cmd("GET")
            .arg(self.key(user))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(|e| RevocationError::Unavailable(e.to_string()))?;
        let generation = value.unwrap_or(0);
        self.note(user, generation);
        Ok(generation)
    }

    /// Refuses a token issued before the user's last logout.
    pub async fn check(&self, claims: &Claims) -> Result<(), RevocationError> {
        let current = self.current(&claims.sub).await?;
        if is_revoked(claims.generation, current) {
            return Err(RevocationError::Revoked);
        }
        Ok(())
    }

    /// Logs the user out everywhere: moves the generation on (kept for
    /// `token_lifetime`) and announces it; returns the new generation.
    pub async fn revoke(
        &self,
        user: &str,
        token_lifetime: Duration,
    ) -> Result<u64, RevocationError> {
        let keep = u64::try_from(token_lifetime.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(60_000);
        let generation: u64 = redis::Script::new(REVOKE)
            .key(self.key(user))
            .key(self.channel())
            .arg(keep)
            .arg(user)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| RevocationError::Unavailable(e.to_string()))?;
        self.note(user, generation);
        Ok(generation)
    }

    /// Follows the channel until `shutdown`: every announced logout moves
    /// the remembered generation on and is handed to `on_revoked`. After a
    /// (re)subscription the cache is dropped, since messages may have been
    /// missed meanwhile, and `on_resubscribed` runs.
    pub fn watch<F, G>(
        &self,
        shutdown: CancellationToken,
        on_revoked: F,
        on_resubscribed: G,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn(String, u64) + Send + Sync + 'static,
        G: Fn() + Send + Sync + 'static,
    {
        let on_message = {
            let this = self.clone();
            move |payload: String| {
                if let Some((user, generation)) = parse_message(&payload) {
                    this.note(&user, generation);
                    on_revoked(user, generation);
                }
            }
        };
        let this = self.clone();
        crate::redis::follow_channel(
            self.redis.clone(),
            self.channel(),
            "revocations",
            shutdown,
            move || {
                this.forget_all();
                on_resubscribed();
            },
            on_message,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_generations_are_revoked() {
        assert!(!is_revoked(0, 0));
        assert!(!is_revoked(5, 5));
        assert!(!is_revoked(6, 5));
        assert!(is_revoked(4, 5));
        assert!(is_revoked(0, 1_700_000_000_000));
    }

    #[test]
    fn messages_parse() {
        assert_eq!(
            parse_message("65a1 1700000000123"),
            Some(("65a1".to_owned(), 1_700_000_000_123))
        );
        assert_eq!(parse_message("65a1"), None);
        assert_eq!(parse_message(" 12"), None);
        assert_eq!(parse_message("u x"), None);
    }

    #[test]
    fn cache_setting_is_bounded() {
        let env = Env::from_pairs([("PARLEY_REVOCATION_CACHE_SECS", "61")]);
        assert_eq!(
            RevocationConfig::from_env(&env).unwrap_err().var,
            "PARLEY_REVOCATION_CACHE_SECS"
        );
        let none = Env::from_pairs::<&str, &str>([]);
        assert_eq!(
            RevocationConfig::from_env(&none).unwrap(),
            RevocationConfig::default()
        );
    }
}
