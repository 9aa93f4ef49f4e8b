//! Readiness checks of the connectors: `Readiness::new(..).mongodb(&mongo)`
//! and so on, with [`ConnectorChecks`] in scope.

use crate::health::Readiness;

/// The stores' readiness checks.
pub trait ConnectorChecks {
    /// Adds the `mongodb` check (a `ping` round trip).
    fn mongodb(self, mongo: &crate::mongo::Mongo) -> Self;
    /// Adds the `redis` check (a `PING` round trip).
    fn redis(self, redis: &crate::redis::Redis) -> Self;
    /// Adds the `rabbitmq` check (the connection is open).
    fn rabbitmq(self, amqp: &crate::amqp::Amqp) -> Self;
    /// Adds the `rabbitmq` check for a service that needs RabbitMQ only for
    /// some requests: required until it first answers, then only degraded
    /// (see [`Readiness::degraded_without`]).
    fn rabbitmq_for_some_requests(self, amqp: &crate::amqp::Amqp) -> Self;
}

impl ConnectorChecks for Readiness {
    fn mongodb(self, mongo: &crate::mongo::Mongo) -> Self {
        let mongo = mongo.clone();
        self.check("mongodb", move || {
            let mongo = mongo.clone();
            async move { mongo.ping().await }
        })
    }

    fn redis(self, redis: &crate::redis::Redis) -> Self {
        let redis = redis.clone();
        self.check("redis", move || {
            let redis = redis.clone();
            async move { redis.ping().await }
        })
    }

    fn rabbitmq(self, amqp: &crate::amqp::Amqp) -> Self {
        let amqp = amqp.clone();
        self.check("rabbitmq", move || {
            let amqp = amqp.clone();
            async move { amqp.ping().await }
        })
    }

    fn rabbitmq_for_some_requests(self, amqp: &crate::amqp::Amqp) -> Self {
        let amqp = amqp.clone();
        self.degraded_without("rabbitmq", move || {
            let amqp = amqp.clone();
            async move { amqp.ping().await }
        })
    }
}
