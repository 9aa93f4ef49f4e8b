//! parley-contracts: what the services agree on across process
//! boundaries: the events on RabbitMQ and the token claims, signing and
//! verification.

pub mod events;
pub mod token;
