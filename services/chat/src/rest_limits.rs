//! Per-user limits on REST sends (`POST /message`) and uploads (the
//! multipart form of it), as windows in Redis that open with a user's first
//! send. A refused request counts against nothing.

use std::sync::LazyLock;
use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use parley_common::redis::{Redis, window_script};

/// Checks both windows, then counts the send (and the upload) only when
/// neither is full. Answers `{'ok'|'sends'|'uploads', ms left}`.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    window_script(
        r"
if count(KEYS[1]) >= tonumber(ARGV[1]) then return {'sends', left(KEYS[1])} end
local upload = ARGV[3] == '1'
if upload and count(KEYS[2]) >= tonumber(ARGV[2]) then return {'uploads', left(KEYS[2])} end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
if upload and redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
return {'ok', '0'}
",
    )
});

/// The per-user budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestLimits {
    /// REST sends per user per minute (`PARLEY_REST_SENDS_PER_MINUTE`).
    pub sends_per_minute: u32,
    /// Uploads per user per hour (`PARLEY_UPLOADS_PER_HOUR`).
    pub uploads_per_hour: u32,
}

/// Which budget is spent, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    /// Too many sends this minute.
    #[error("too many messages sent; wait {0} s")]
    Sends(u64),
    /// Too many uploads this hour.
    #[error("too many images uploaded this hour; wait {0} s")]
    Uploads(u64),
}

impl Exceeded {
    /// Seconds until the budget has room again.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Self::Sends(s) | Self::Uploads(s) => *s,
        }
    }
}

/// Gives back a send (and upload) the server failed to carry out, so that
/// retries through an outage do not use up the user's budget.
static REFUND: LazyLock<redis::Script> = LazyLock::new(|| {
    window_script(
        r"
for i = 1, #KEYS do
  if (tonumber(redis.call('GET', KEYS[i]) or '0') or 0) > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
",
    )
});

fn secs(ms: &str) -> u64 {
    ms.parse::<u64>().map_or(1, |ms| ms.div_ceil(1000).max(1))
}

fn keys(redis: &Redis, user: &ObjectId) -> (String, String) {
    (
        redis.key(&format!("rest:sends:{}", user.to_hex())),
        redis.key(&format!("rest:uploads:{}", user.to_hex())),
    )
}

impl RestLimits {
    /// Takes one send (and one upload when `upload`) from `user`'s budgets.
    /// The outer error is Redis; callers may let the request through then.
    pub async fn take(
        &self,
        redis: &Redis,
        user: &ObjectId,
        upload: bool,
    ) -> Result<Result<(), Exceeded>, redis::RedisError> {
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        let (sends, uploads) = keys(redis, user);
        let mut conn = redis.conn();
        let (answer, ms): (String, String) = TAKE
            .key(sends)
            .key(uploads)
            .arg(self.sends_per_minute)
            .arg(self.uploads_per_hour)
            .arg(if upload { "1" } else { "0" })
            .arg(minute.as_millis().to_string())
            .arg(hour.as_millis().to_string())
            .invoke_async(&mut conn)
            .await?;
        Ok(match answer.as_str() {
            "sends" => Err(Exceeded::Sends(secs(&ms))),
            "uploads" => Err(Exceeded::Uploads(secs(&ms))),
            _ => Ok(()),
        })
    }

    /// Gives back what [`RestLimits::take`] counted for a send that failed
    /// on the server's side.
    pub async fn refund(
        &self,
        redis: &Redis,
        user: &ObjectId,
        upload: bool,
    ) -> Result<(), redis::RedisError> {
        let (sends, uploads) = keys(redis, user);
        let mut invocation = REFUND.key(sends);
        if upload {
            invocation.key(uploads);
        }
        let _: i64 = invocation.invoke_async(&mut redis.conn()).await?;
        Ok(())
    }
}
