//! A Redis pub/sub driver for socketioxide's Redis adapter that survives
//! Redis outages.
//!
//! The stock driver holds one multiplexed connection that never reconnects.
//! This one uses a self-healing connection manager with automatic
//! re-subscription, replaces a connection that stopped answering (a Redis
//! pod that vanished without closing it: see [`HealingManager`]) and
//! subscribes its channels again on the new one, retries subscriptions that
//! failed while Redis was down, and degrades to local-only delivery while
//! Redis is unreachable (clients catch up with `GET /message/:chatId?after=`),
//! instead of failing sends.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_common::redis::{HealingManager, RedisConfig, RedisSetupError, WATCHDOG_EVERY};
use redis::aio::ConnectionManagerConfig;
use redis::{AsyncCommands, PushInfo, PushKind, Value};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

type Handlers = Arc<Mutex<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// Errors the driver reports (only for programming errors; outages degrade).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The client could not be built from the configuration.
    #[error("redis driver: {0}")]
    Config(#[from] RedisSetupError),
    /// The connection manager refused its settings.
    #[error("redis driver: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The resilient driver; cheap to clone.
#[derive(Clone)]
pub struct ResilientDriver {
    conn: HealingManager,
    handlers: Handlers,
    pending: Arc<Mutex<HashSet<String>>>,
}

/// Marks every channel with a handler as to be subscribed (again).
fn resubscribe_all(handlers: &Handlers, pending: &Mutex<HashSet<String>>) {
    let channels: Vec<String> = handlers
        .lock()
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default();
    if let Ok(mut pending) = pending.lock() {
        pending.extend(channels);
    }
}

fn dispatch(msg: PushInfo, handlers: &Handlers) {
    if !matches!(msg.kind, PushKind::Message | PushKind::SMessage) || msg.data.len() < 2 {
        return;
    }
    let mut data = msg.data.into_iter();
    let (Some(Value::BulkString(chan)), Some(Value::BulkString(payload))) =
        (data.next(), data.next())
    else {
        return;
    };
    let chan = String::from_utf8_lossy(&chan).into_owned();
    let sender = handlers.lock().ok().and_then(|h| h.get(&chan).cloned());
    if let Some(tx) = sender
        && tx.try_send((chan, payload)).is_err()
    {
        metrics::counter!("socketio_adapter_dropped_total").increment(1);
    }
}

impl ResilientDriver {
    /// Connects lazily to the configured Redis (RESP3 is forced: push
    /// messages need it).
    pub fn new(redis: &RedisConfig) -> Result<Self, DriverError> {
        let client = redis.client(true)?;
        let handlers: Handlers = Arc::new(Mutex::new(HashMap::new()));
        let for_push = handlers.clone();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |msg: PushInfo| {
                dispatch(msg, &for_push);
                Ok::<(), Infallible>(())
            })
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = HealingManager::new(client, config)?;
        let driver = Self {
            conn,
            handlers,
            pending: Arc::new(Mutex::new(HashSet::new())),
        };
        let (handlers, pending) = (driver.handlers.clone(), driver.pending.clone());
        driver.conn.spawn_watchdog(WATCHDOG_EVERY, move |_| {
            resubscribe_all(&handlers, &pending);
        });
        driver.spawn_retry();
        Ok(driver)
    }

    /// Re-tries subscriptions that failed (Redis was down at start-up).
    fn spawn_retry(&self) {
        let driver = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let pending: Vec<String> = driver
                    .pending
                    .lock()
                    .map(|p| p.iter().cloned().collect())
                    .unwrap_or_default();
                for chan in pending {
                    if driver.conn.conn().subscribe(chan.as_str()).await.is_ok()
                        && let Ok(mut p) = driver.pending.lock()
                    {
                        p.remove(&chan);
                        tracing::info!(channel = %chan, "socket.io adapter subscribed after retry");
                    }
                }
            }
        });
    }
}

impl Driver for ResilientDriver {
    type Error = DriverError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        let (generation, mut conn) = self.conn.current();
        if let Err(error) = conn.publish::<_, _, Value>(&chan, val).await {
            // Degrade: local delivery still happens; other replicas miss this
            // event and their clients catch up through the REST history.
            metrics::counter!("socketio_adapter_publish_failed_total").increment(1);
            tracing::warn!(%error, "socket.io adapter publish failed; delivering locally only");
            if error.is_timeout() && self.conn.replace(generation).is_some() {
                resubscribe_all(&self.handlers, &self.pending);
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        let (tx, rx) = mpsc::channel(size);
        if let Ok(mut handlers) = self.handlers.lock() {
            handlers.insert(chan.clone(), tx);
        }
        if let Err(error) = self.conn.conn().subscribe(chan.as_str()).await {
            tracing::warn!(%error, channel = %chan, "socket.io adapter subscribe failed; retrying in the background");
            if let Ok(mut pending) = self.pending.lock() {
                pending.insert(chan);
            }
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        if let Ok(mut handlers) = self.handlers.lock() {
            handlers.remove(&chan);
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&chan);
        }
        let _ = self.conn.conn().unsubscribe(chan.as_str()).await;
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let reply: redis::RedisResult<(String, u16)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut self.conn.conn())
            .await;
        // While Redis is down, this replica is the only one it can reach.
        Ok(reply.map(|(_, n)| n.max(1)).unwrap_or(1))
    }
}
