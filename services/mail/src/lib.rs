//! parley-mail: mails login codes and notifications from RabbitMQ events.

pub mod config;
pub mod smtp;

use anyhow::Context;
use axum::Router;
use parley_common::amqp::Amqp;
use parley_common::cache::Redis;
use parley_common::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Connections the service holds.
#[derive(Clone)]
pub struct Deps {
    /// Redis (deduplication).
    pub redis: Redis,
    /// RabbitMQ.
    pub amqp: Amqp,
    /// SMTP.
    pub smtp: smtp::Transport,
}

impl Deps {
    /// Builds every connector; they connect (and reconnect) in the background.
    pub fn connect(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            redis: Redis::connect(&config.redis).context("redis client")?,
            amqp: Amqp::start(config.amqp.clone(), "parley-mail"),
            smtp: smtp::transport(&config.smtp).context("smtp transport")?,
        })
    }

    /// `/readyz` checks for every dependency.
    pub fn readiness(&self, draining: CancellationToken) -> Readiness {
        let smtp = self.smtp.clone();
        Readiness::new(draining)
            .redis(&self.redis)
            .rabbitmq(&self.amqp)
            .check("smtp", move || {
                let smtp = smtp.clone();
                async move { smtp::ping(&smtp).await }
            })
    }
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
    let deps = Deps::connect(&config)?;
    let app = parley_common::server::with_ops(Router::new(), deps.readiness(shutdown.clone()));
    parley_common::server::serve(listener, app, shutdown, config.server.shutdown_grace)
        .await
        .context("http server")?;
    deps.amqp.close().await;
    Ok(())
}
