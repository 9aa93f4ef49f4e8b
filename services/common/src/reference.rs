//! The configuration reference of a service binary.

use crate::config::{ServerConfig, VarDoc};

/// Every variable a service binary (user, chat, mail) reads: the shared
/// server, log, MongoDB, Redis and RabbitMQ settings, then its `own`.
pub fn service_reference(own: &[VarDoc]) -> Vec<VarDoc> {
    [
        ServerConfig::ENV,
        crate::telemetry::ENV,
        crate::mongo::MongoConfig::ENV,
        crate::redis::RedisConfig::ENV,
        crate::amqp::AmqpConfig::ENV,
        own,
    ]
    .concat()
}
