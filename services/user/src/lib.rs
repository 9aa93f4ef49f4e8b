//! parley-user: passwordless login by one-time code, tokens and profiles.

pub mod config;

use anyhow::Context;
use axum::Router;
use parley_common::amqp::Amqp;
use parley_common::cache::Redis;
use parley_common::health::Readiness;
use parley_common::mongo::Mongo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Connections the service holds.
#[derive(Clone)]
pub struct Deps {
    /// MongoDB.
    pub mongo: Mongo,
    /// Redis.
    pub redis: Redis,
    /// RabbitMQ.
    pub amqp: Amqp,
}

impl Deps {
    /// Builds every connector; they connect (and reconnect) in the background.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            mongo: Mongo::connect(&config.mongo, "parley-user")
                .await
                .context("mongodb client")?,
            redis: Redis::connect(&config.redis).context("redis client")?,
            amqp: Amqp::start(config.amqp.clone(), "parley-user"),
        })
    }

    /// `/readyz` checks for every dependency.
    pub fn readiness(&self, draining: CancellationToken) -> Readiness {
        Readiness::new(draining)
            .mongodb(&self.mongo)
            .redis(&self.redis)
            .rabbitmq(&self.amqp)
    }
}

/// The service's HTTP routes, operational ones included.
pub fn router(deps: &Deps, draining: CancellationToken) -> Router {
    parley_common::server::with_ops(Router::new(), deps.readiness(draining))
}

/// Runs the service until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.http_addr))?;
    serve(config, listener, shutdown).await
}

/// Runs the service on an already bound listener (tests bind port 0).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let deps = Deps::connect(&config).await?;
    let app = router(&deps, shutdown.clone());
    parley_common::server::serve(listener, app, shutdown, config.server.shutdown_grace)
        .await
        .context("http server")?;
    deps.amqp.close().await;
    Ok(())
}
