//! The handles every request may need; cheap to clone.

use std::sync::Arc;

use parley_common::amqp::Amqp;
use parley_common::revocation::Revocations;

use crate::codes::Codes;
use crate::config::Config;
use crate::domain::CodeHasher;
use crate::store::Users;

/// Shared handles of the user service.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<Config>,
    /// Users.
    pub users: Users,
    /// Codes and limits.
    pub codes: Codes,
    /// Keyed code hashing.
    pub hasher: CodeHasher,
    /// Events.
    pub amqp: Amqp,
    /// Token generations (logout).
    pub revocations: Revocations,
}
