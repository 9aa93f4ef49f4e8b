//! The state every handler shares.

use std::sync::Arc;

use axum::extract::FromRef;
use parley_common::amqp::Amqp;
use parley_common::cache::Redis;
use parley_common::revocation::Revocations;
use parley_common::token::TokenVerifier;
use socketioxide::SocketIo;

use crate::config::Config;
use crate::presence::Presence;
use crate::profiles::Profiles;
use crate::realtime::Adapter;
use crate::realtime::receipts::Receipts;
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
    /// Socket.IO server (cross-replica through Redis).
    pub io: SocketIo<Adapter>,
    /// Presence.
    pub presence: Presence,
    /// Profile cache.
    pub profiles: Profiles,
    /// Delivered receipts waiting for their (coalesced) write.
    pub receipts: Receipts,
    /// Token generations (logout).
    pub revocations: Revocations,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.config.verifier.clone()
    }
}

impl FromRef<AppState> for Revocations {
    fn from_ref(state: &AppState) -> Self {
        state.revocations.clone()
    }
}
