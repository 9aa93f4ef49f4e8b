//! The state every handler shares.

use std::sync::Arc;

use parley_common::amqp::Amqp;
use parley_common::redis::Redis;
use parley_common::revocation::Revocations;

use crate::config::Config;
use crate::fanout::Fanout;
use crate::presence::Presence;
use crate::profiles::Profiles;
use crate::receipts::Receipts;
use crate::store::Store;

/// Shared handles; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<Config>,
    /// MongoDB collections.
    pub store: Store,
    /// Redis.
    pub redis: Redis,
    /// RabbitMQ.
    pub amqp: Amqp,
    /// Rooms and emits, on every replica.
    pub fanout: Fanout,
    /// Presence.
    pub presence: Presence,
    /// Profile cache.
    pub profiles: Profiles,
    /// Delivered receipts waiting for their (coalesced) write.
    pub receipts: Receipts,
    /// Token generations (logout).
    pub revocations: Revocations,
}
