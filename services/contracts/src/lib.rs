//! parley-contracts: what the services agree on across process
//! boundaries: the events on RabbitMQ, the token claims, signing and
//! verification, and what they share in their stores.

pub mod events;
pub mod storage;
pub mod token;
