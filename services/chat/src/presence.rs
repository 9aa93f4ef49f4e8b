//! Presence in Redis: a user is online while any of their sockets, on any
//! replica, has a live heartbeat.
//!
//! `presence:sockets:<user>` is a sorted set of socket ids scored by expiry
//! (ms). Every replica refreshes its own sockets; a crashed replica's sockets
//! simply expire. `presence:<user>` mirrors the live count with the same TTL
//! for readers that only need a number (the mail service).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use parley_common::redis::Redis;
use parley_common::storage::{presence_count_key, presence_sockets_key};

const TOUCH: &str = r"
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local op = ARGV[3]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local before = redis.call('ZCARD', KEYS[1])
for i = 4, #ARGV do
  if op == 'add' then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  elseif op == 'refresh' then
    redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
  else
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
local after = redis.call('ZCARD', KEYS[1])
if after > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('SET', KEYS[2], after, 'PX', ttl)
else
  redis.call('DEL', KEYS[1], KEYS[2])
end
return {before, after}
";

/// A change of a user's online state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// First socket anywhere.
    CameOnline,
    /// Last socket anywhere closed.
    WentOffline,
    /// Still the same state.
    Unchanged,
}

/// Pure: the transition implied by live socket counts before and after.
pub fn transition(before: i64, after: i64) -> Transition {
    match (before > 0, after > 0) {
        (false, true) => Transition::CameOnline,
        (true, false) => Transition::WentOffline,
        _ => Transition::Unchanged,
    }
}

/// Presence tracking for this replica's sockets.
#[derive(Clone)]
pub struct Presence {
    redis: Redis,
    ttl: Duration,
    script: Arc<redis::Script>,
    local: Arc<Mutex<Local>>,
}

/// This replica's registered sockets, and how many each user has.
#[derive(Debug, Default)]
struct Local {
    sockets: HashMap<String, ObjectId>,
    users: HashMap<ObjectId, u32>,
}

impl Local {
    fn insert(&mut self, socket: &str, user: &ObjectId) {
        if self.sockets.insert(socket.to_owned(), *user).is_none() {
            *self.users.entry(*user).or_default() += 1;
        }
        self.publish();
    }

    fn remove(&mut self, socket: &str) {
        if let Some(user) = self.sockets.remove(socket)
            && let std::collections::hash_map::Entry::Occupied(mut n) = self.users.entry(user)
        {
            *n.get_mut() = n.get().saturating_sub(1);
            if *n.get() == 0 {
                n.remove();
            }
        }
        self.publish();
    }

    /// The gauges of what this replica tracks (every entry must go when
    /// its socket does).
    fn publish(&self) {
        metrics::gauge!("chat_presence_tracked_sockets").set(self.sockets.len() as f64);
        metrics::gauge!("chat_presence_tracked_users").set(self.users.len() as f64);
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Presence {
    /// Presence with heartbeat expiry `ttl`.
    pub fn new(redis: Redis, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            script: Arc::new(redis::Script::new(TOUCH)),
            local: Arc::new(Mutex::new(Local::default())),
        }
    }

    async fn touch(
        &self,
        user: &ObjectId,
        op: &str,
        sockets: &[&str],
    ) -> redis::RedisResult<(i64, i64)> {
        let mut conn = self.redis.conn();
        let mut call = self.script.key(self.sockets_key(user));
        call.key(self.count_key(user))
            .arg(now_ms())
            .arg(i64::try_from(self.ttl.as_millis()).unwrap_or(30_000))
            .arg(op);
        for s in sockets {
            call.arg(*s);
        }
        let result: Vec<i64> = call.invoke_async(&mut conn).await?;
        Ok((
            result.first().copied().unwrap_or(0),
            result.get(1).copied().unwrap_or(0),
        ))
    }

    fn sockets_key(&self, user: &ObjectId) -> String {
        self.redis.key(&presence_sockets_key(&user.to_hex()))
    }

    fn count_key(&self, user: &ObjectId) -> String {
        self.redis.key(&presence_count_key(&user.to_hex()))
    }

    /// A socket connected.
    pub async fn connected(&self, user: &ObjectId, socket: &str) -> redis::RedisResult<Transition> {
        if let Ok(mut local) = self.local.lock() {
            local.insert(socket, user);
        }
        let (before, after) = self.touch(user, "add", &[socket]).await?;
        Ok(transition(before, after))
    }

    /// A socket closed.
    pub async fn disconnected(
        &self,
        user: &ObjectId,
        socket: &str,
    ) -> redis::RedisResult<Transition> {
        if let Ok(mut local) = self.local.lock() {
            local.remove(socket);
        }
        let (before, after) = self.touch(user, "remove", &[socket]).await?;
        Ok(transition(before, after))
    }

    /// Which of `users` are online now.
    pub async fn online(&self, users: &[ObjectId]) -> redis::RedisResult<Vec<ObjectId>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let now = now_ms();
        for user in users {
            pipe.cmd("ZCOUNT")
                .arg(self.sockets_key(user))
                .arg(now)
                .arg("+inf");
        }
        let counts: Vec<i64> = pipe.query_async(&mut self.redis.conn()).await?;
        Ok(users
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(u, _)| *u)
            .collect())
    }

    /// Refreshes every local socket's expiry (also re-adds sockets lost
    /// while Redis was down). Call every third of the TTL. One pipelined
    /// round trip per 500 users.
    pub async fn heartbeat(&self) -> redis::RedisResult<()> {
        let by_user: HashMap<ObjectId, Vec<String>> = {
            let Ok(local) = self.local.lock() else {
                return Ok(());
            };
            let mut map: HashMap<ObjectId, Vec<String>> = HashMap::new();
            for (socket, user) in &local.sockets {
                map.entry(*user).or_default().push(socket.clone());
            }
            map
        };
        if by_user.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.conn();
        // Loaded each round: a restarted Redis has forgotten it.
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(TOUCH)
            .query_async(&mut conn)
            .await?;
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(30_000);
        let users: Vec<(&ObjectId, &Vec<String>)> = by_user.iter().collect();
        for chunk in users.chunks(500) {
            let now = now_ms();
            let mut pipe = redis::pipe();
            for (user, sockets) in chunk {
                pipe.cmd("EVALSHA")
                    .arg(&sha)
                    .arg(2)
                    .arg(self.sockets_key(user))
                    .arg(self.count_key(user))
                    .arg(now)
                    .arg(ttl)
                    .arg("add")
                    .arg(sockets.as_slice())
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    /// The heartbeat period.
    pub fn heartbeat_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Sockets of this replica.
    pub fn local_count(&self) -> usize {
        self.local.lock().map(|l| l.sockets.len()).unwrap_or(0)
    }

    /// Users with a socket on this replica.
    pub fn local_users(&self) -> usize {
        self.local.lock().map(|l| l.users.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_entries_are_freed_with_their_sockets() {
        let (u1, u2) = (ObjectId::new(), ObjectId::new());
        let mut local = Local::default();
        local.insert("a", &u1);
        local.insert("a", &u1);
        local.insert("b", &u1);
        local.insert("c", &u2);
        assert_eq!((local.sockets.len(), local.users.len()), (3, 2));
        assert_eq!(local.users.get(&u1), Some(&2));
        for s in ["a", "a", "b", "c", "unknown"] {
            local.remove(s);
        }
        assert!(local.sockets.is_empty() && local.users.is_empty());
    }

    #[test]
    fn transitions() {
        assert_eq!(transition(0, 1), Transition::CameOnline);
        assert_eq!(transition(1, 2), Transition::Unchanged);
        assert_eq!(transition(2, 1), Transition::Unchanged);
        assert_eq!(transition(1, 0), Transition::WentOffline);
        assert_eq!(transition(0, 0), Transition::Unchanged);
    }
}
