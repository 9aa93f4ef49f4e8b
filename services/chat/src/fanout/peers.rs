//! Whether this pod is the only one on the Socket.IO adapter's channel.
//!
//! Every emit through the Redis adapter is published to Redis (and comes
//! back to this pod, which drops it) even when no other pod exists. While
//! this pod is alone, relays (typing, receipts) are emitted locally only.
//! The count is read only once this pod's own subscription is in place (so
//! one subscriber means this pod), then every 250 ms: for up to that long
//! after another pod starts, a relay to its sockets can be missed. Messages
//! and presence always go through the adapter.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parley_common::redis::Redis;
use tokio_util::sync::CancellationToken;

/// How often the number of pods is read.
pub const REFRESH: Duration = Duration::from_millis(250);

/// The adapter's request channel of the default namespace, which every pod
/// subscribes to (socketioxide-redis names it `<prefix>-request#<ns>#`).
pub fn request_channel(prefix: &str) -> String {
    format!("{prefix}-request#/#")
}

/// Pure: alone only when exactly one subscriber (this pod) is seen; zero
/// means the channel name or the subscription is not what we think, so the
/// adapter is used as usual.
pub fn alone(subscribers: Option<u64>) -> bool {
    subscribers == Some(1)
}

/// The shared answer, kept current in the background; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    alone: Arc<AtomicBool>,
}

impl Peers {
    /// Starts watching `channel`; until the first answer the pod is not
    /// alone. Call it after this pod's adapter has subscribed.
    pub fn watch(&self, redis: Redis, channel: String, shutdown: CancellationToken) {
        let flag = self.alone.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let reply: redis::RedisResult<(String, u64)> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channel)
                    .query_async(&mut redis.conn())
                    .await;
                flag.store(alone(reply.ok().map(|(_, n)| n)), Ordering::Relaxed);
            }
        });
    }

    /// True while no other pod shares the adapter.
    pub fn alone(&self) -> bool {
        self.alone.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_only_with_exactly_one_subscriber() {
        assert!(alone(Some(1)));
        assert!(!alone(Some(2)));
        assert!(
            !alone(Some(0)),
            "no subscriber: the name is wrong, keep publishing"
        );
        assert!(!alone(None), "no answer: keep publishing");
        assert_eq!(
            request_channel("parley:socket.io"),
            "parley:socket.io-request#/#"
        );
    }
}
