//! parley-common: the connectors every parley service uses, on top of
//! [`parley_runtime`] (configuration, logs, the operational HTTP routes,
//! graceful shutdown) and [`parley_contracts`] (events and tokens shared
//! between services), which it re-exports under their old paths.
//!
//! Its own modules: self-healing connectors for MongoDB ([`mongo`]),
//! Redis ([`redis`](crate::redis)) and RabbitMQ ([`amqp`]), their readiness checks,
//! token revocation and the HTTP authentication built on it.

pub use parley_contracts::{events, storage, token};
pub use parley_runtime::{
    api_error, config, entry, health, metrics, retry, server, shutdown, telemetry, tls,
};

pub mod amqp;
pub mod http;
pub mod mongo;
pub mod mongo_user;
pub mod readiness;
pub mod redis;
pub mod reference;
pub mod revocation;

pub use http::auth;
