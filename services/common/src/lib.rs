//! parley-common: the ground every parley service stands on.
//!
//! Configuration from the environment, JSON logs, the operational HTTP routes
//! (`/healthz`, `/readyz`, `/metrics`), graceful shutdown, self-healing
//! connectors for MongoDB, Redis and RabbitMQ, the event contracts shared
//! between services and token signing/verification.

pub mod amqp;
pub mod api_error;
pub mod auth;
pub mod cache;
pub mod config;
pub mod entry;
pub mod events;
pub mod health;
pub mod metrics;
pub mod mongo;
pub mod mongo_user;
pub mod revocation;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod token;
