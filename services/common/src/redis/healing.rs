//! A Redis connection manager that is replaced when its connection stops
//! answering.
//!
//! redis-rs' [`ConnectionManager`] reconnects when its connection is closed,
//! but a command that times out leaves the connection in place. A peer that
//! vanished without closing (a Redis pod deleted and its IP gone, a network
//! partition) leaves exactly that: a half-open connection on which every
//! command times out until the kernel gives up, minutes later. The watchdog
//! here pings the current connection; a ping that times out replaces the
//! manager with a fresh one, which connects anew (and re-resolves the host).

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::RedisResult;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The current manager and how many times it was replaced.
struct Current {
    generation: u64,
    manager: ConnectionManager,
}

struct Shared {
    client: redis::Client,
    config: ConnectionManagerConfig,
    current: RwLock<Current>,
}

/// A [`ConnectionManager`] that can be swapped for a fresh one; cheap to
/// clone (clones share the manager).
#[derive(Clone)]
pub struct HealingManager {
    shared: Arc<Shared>,
}

impl HealingManager {
    /// A lazy manager over `client`: no network I/O happens here.
    pub fn new(client: redis::Client, config: ConnectionManagerConfig) -> RedisResult<Self> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                config,
                current: RwLock::new(Current {
                    generation: 0,
                    manager,
                }),
            }),
        })
    }

    /// The current manager and its generation (pass it to
    /// [`HealingManager::replace`] when a command on it times out).
    pub fn current(&self) -> (u64, ConnectionManager) {
        let current = self
            .shared
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (current.generation, current.manager.clone())
    }

    /// The current manager, for commands.
    pub fn conn(&self) -> ConnectionManager {
        self.current().1
    }

    /// Replaces the manager of `generation` with a fresh one, unless that was
    /// done already (many commands time out on one dead connection). Returns
    /// the new generation when this call replaced it.
    pub fn replace(&self, generation: u64) -> Option<u64> {
        let fresh = ConnectionManager::new_lazy_with_config(
            self.shared.client.clone(),
            self.shared.config.clone(),
        );
        let fresh = match fresh {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(%error, "cannot build a new Redis connection manager");
                return None;
            }
        };
        let mut current = self
            .shared
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.generation != generation {
            return None;
        }
        current.generation += 1;
        current.manager = fresh;
        metrics::counter!("redis_connection_replaced_total").increment(1);
        tracing::warn!(
            generation = current.generation,
            "Redis stopped answering on an open connection; connecting anew"
        );
        Some(current.generation)
    }

    /// PINGs the current connection every `every` until every handle is
    /// dropped. A ping that times out replaces the connection, then
    /// `on_replaced` runs with the new generation (to subscribe again what
    /// the old connection carried).
    pub fn spawn_watchdog<F>(&self, every: Duration, on_replaced: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(u64) + Send + 'static,
    {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                let healing = HealingManager { shared };
                let (generation, mut conn) = healing.current();
                drop(healing);
                let pong = redis::cmd("PING").query_async::<()>(&mut conn).await;
                if let Err(error) = pong
                    && error.is_timeout()
                    && let Some(shared) = weak.upgrade()
                    && let Some(next) = (HealingManager { shared }).replace(generation)
                {
                    on_replaced(next);
                }
            }
        })
    }
}
