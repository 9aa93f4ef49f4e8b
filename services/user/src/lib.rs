//! parley-user: passwordless login by one-time code, tokens and profiles.

pub mod account;
pub mod codes;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod login;
pub mod profiles;
pub mod state;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use parley_common::amqp::Amqp;
use parley_common::health::Readiness;
use parley_common::mongo::Mongo;
use parley_common::readiness::ConnectorChecks;
use parley_common::redis::Redis;
use parley_common::retry;
use parley_common::revocation::Revocations;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::codes::Codes;
use crate::config::Config;
use crate::domain::CodeHasher;
use crate::http::Router;
use crate::state::AppState;
use crate::store::Users;

/// Runs the service until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.http_addr))?;
    serve(config, listener, shutdown).await
}

/// Creates the unique email index, retrying in the background until MongoDB answers.
fn ensure_indexes(users: Users, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let created = retry::until_ok("creating indexes", &shutdown, || users.ensure_indexes());
        if created.await.is_some() {
            tracing::info!("indexes ready");
        }
    });
}

/// The service's router and the handles it needs closed at shutdown.
pub async fn app(config: Config, shutdown: CancellationToken) -> anyhow::Result<(Router, Amqp)> {
    let mongo = Mongo::connect(&config.mongo, "parley-user")
        .await
        .context("mongodb client")?;
    let redis = Redis::connect(&config.redis).context("redis client")?;
    let amqp = Amqp::start(config.amqp.clone(), "parley-user");
    let users = Users::new(mongo.db());
    ensure_indexes(users.clone(), shutdown.clone());
    let hasher = CodeHasher::new(&config.otp_secret).context("PARLEY_OTP_SECRET")?;
    let readiness = Readiness::new(shutdown.clone())
        .mongodb(&mongo)
        .redis(&redis)
        // only /login (user) and the account and profile events (chat) need it
        .rabbitmq_for_some_requests(&amqp);
    let revocations = Revocations::new(redis.clone(), config.revocation);
    // Logouts handled by other replicas move this one's cache on at once.
    revocations.watch(shutdown.clone(), |_, _| {}, || {});
    let state = AppState {
        revocations,
        codes: Codes::new(redis, config.limits.clone()),
        config: Arc::new(config),
        users,
        hasher,
        amqp: amqp.clone(),
    };
    Ok((
        parley_common::server::with_ops(http::routes(state), readiness),
        amqp,
    ))
}

/// Runs the service on an already bound listener (tests bind port 0).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grace = config.server.shutdown_grace;
    let (app, amqp) = app(config, shutdown.clone()).await?;
    parley_common::server::serve(listener, app, shutdown, grace)
        .await
        .context("http server")?;
    amqp.close().await;
    Ok(())
}
