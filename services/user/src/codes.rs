//! One-time codes and login limits in Redis. Every check-and-change is one
//! Lua script, so concurrent requests cannot slip past a limit.

use std::net::IpAddr;
use std::time::Duration;

use parley_common::api_error::ApiError;
use parley_common::cache::Redis;

use crate::config::Limits;

/// Stores a fresh code hash with zero tries, replacing any older code.
const STORE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'tries', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Reserves one try: returns the stored hash, or 'missing' / 'burned'.
const RESERVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local tries = redis.call('HINCRBY', KEYS[1], 'tries', 1)
if tries > tonumber(ARGV[1]) then return 'burned' end
return redis.call('HGET', KEYS[1], 'hash')
";

/// Consumes the code if it is still the one that matched (single use).
const CONSUME: &str = r"
if redis.call('HGET', KEYS[1], 'hash') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Counts one event in a fixed window; returns the count and the window's TTL (ms).
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
";

/// What a try found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// No code (never issued, expired or used).
    Missing,
    /// Too many tries: the code no longer works.
    Burned,
    /// The stored hash to compare against.
    Hash(String),
}

/// Code storage and limits.
#[derive(Clone)]
pub struct Codes {
    redis: Redis,
    limits: Limits,
    store: std::sync::Arc<redis::Script>,
    reserve: std::sync::Arc<redis::Script>,
    consume: std::sync::Arc<redis::Script>,
    count: std::sync::Arc<redis::Script>,
}

fn redis_down(error: redis::RedisError) -> ApiError {
    ApiError::unavailable("redis", error)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Codes {
    /// Codes in `redis` under `limits`.
    pub fn new(redis: Redis, limits: Limits) -> Self {
        Self {
            redis,
            limits,
            store: std::sync::Arc::new(redis::Script::new(STORE)),
            reserve: std::sync::Arc::new(redis::Script::new(RESERVE)),
            consume: std::sync::Arc::new(redis::Script::new(CONSUME)),
            count: std::sync::Arc::new(redis::Script::new(COUNT)),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn otp_key(&self, email: &str) -> String {
        self.redis.key(&format!("otp:{email}"))
    }

    fn cooldown_key(&self, email: &str) -> String {
        self.redis.key(&format!("otp:ratelimit:{email}"))
    }

    async fn count(&self, key: String, window: Duration) -> Result<(u64, u64), ApiError> {
        let mut conn = self.redis.conn();
        let (n, ttl): (u64, i64) = self
            .count
            .key(key)
            .arg(millis(window))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_down)?;
        Ok((n, u64::try_from(ttl).unwrap_or(0).div_ceil(1000)))
    }

    /// Applies the global, per-address and per-email limits, in that order;
    /// on success the email's resend cooldown has started.
    pub async fn admit(&self, email: &str, client: IpAddr) -> Result<(), ApiError> {
        let now = chrono::Utc::now().timestamp();
        let minute = now / 60;
        let (n, retry) = self
            .count(
                self.redis.key(&format!("login:global:{minute}")),
                Duration::from_secs(60),
            )
            .await?;
        if n > u64::from(self.limits.global_per_minute) {
            return Err(ApiError::too_many(
                "too many login requests right now; try again shortly",
                retry,
            ));
        }
        let hour = now / 3600;
        let (n, retry) = self
            .count(
                self.redis.key(&format!("login:ip:{client}:{hour}")),
                Duration::from_secs(3600),
            )
            .await?;
        if n > u64::from(self.limits.per_ip_per_hour) {
            return Err(ApiError::too_many(
                "too many codes requested from this address; try again later",
                retry,
            ));
        }
        let mut conn = self.redis.conn();
        let cooldown = self.limits.resend_cooldown;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.cooldown_key(email))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(cooldown).max(1))
            .query_async(&mut conn)
            .await
            .map_err(redis_down)?;
        if set.is_none() {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(self.cooldown_key(email))
                .query_async(&mut conn)
                .await
                .map_err(redis_down)?;
            let retry = u64::try_from(ttl).unwrap_or(0).div_ceil(1000);
            return Err(ApiError::too_many(
                format!("a code was sent recently; wait {retry} s before asking again"),
                retry,
            ));
        }
        Ok(())
    }

    /// Stores a code hash, replacing any earlier code and its tries.
    pub async fn store(&self, email: &str, hash: &str) -> Result<(), ApiError> {
        let mut conn = self.redis.conn();
        let _: i64 = self
            .store
            .key(self.otp_key(email))
            .arg(hash)
            .arg(millis(self.limits.otp_ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_down)?;
        Ok(())
    }

    /// Takes back a code that could not be sent, and its cooldown.
    pub async fn withdraw(&self, email: &str, hash: &str) -> Result<(), ApiError> {
        let mut conn = self.redis.conn();
        let _: i64 = self
            .consume
            .key(self.otp_key(email))
            .arg(hash)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_down)?;
        let _: i64 = redis::cmd("DEL")
            .arg(self.cooldown_key(email))
            .query_async(&mut conn)
            .await
            .map_err(redis_down)?;
        Ok(())
    }

    /// Reserves one try at the email's code.
    pub async fn reserve(&self, email: &str) -> Result<Reserved, ApiError> {
        let mut conn = self.redis.conn();
        let answer: String = self
            .reserve
            .key(self.otp_key(email))
            .arg(self.limits.max_attempts)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_down)?;
        Ok(match answer.as_str() {
            "missing" => Reserved::Missing,
            "burned" => Reserved::Burned,
            _ => Reserved::Hash(answer),
        })
    }

    /// Uses up the code; false when a concurrent request used it first.
    pub async fn consume(&self, email: &str, hash: &str) -> Result<bool, ApiError> {
        let mut conn = self.redis.conn();
        let done: i64 = self
            .consume
            .key(self.otp_key(email))
            .arg(hash)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_down)?;
        Ok(done == 1)
    }
}
