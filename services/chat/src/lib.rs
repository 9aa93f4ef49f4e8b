//! parley-chat: chats, messages and realtime delivery across replicas.

pub mod account;
pub mod changes;
pub mod config;
pub mod domain;
pub mod error;
pub mod fanout;
pub mod groups;
pub mod handshake;
pub mod http;
pub mod media;
pub mod membership;
pub mod model;
pub mod presence;
pub mod profiles;
pub mod realtime;
pub mod receipts;
pub mod rest_limits;
pub mod retention;
pub mod service;
pub mod state;
pub mod store;
pub mod watermarks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use parley_common::amqp::{Amqp, QueueSpec, consume};
use parley_common::events::{Envelope, Event, UserUpdated};
use parley_common::health::Readiness;
use parley_common::mongo::Mongo;
use parley_common::readiness::ConnectorChecks;
use parley_common::redis::Redis;
use parley_common::retry;
use parley_common::revocation::Revocations;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::fanout::Fanout;
use crate::presence::Presence;
use crate::profiles::Profiles;
use crate::receipts::Receipts;
use crate::state::AppState;
use crate::store::Store;

/// Runs the service until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.http_addr))?;
    serve(config, listener, shutdown).await
}

/// Creates indexes, retrying in the background until MongoDB answers.
fn ensure_indexes(store: Store, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let created = retry::until_ok("creating indexes", &shutdown, || store.ensure_indexes());
        if created.await.is_some() {
            tracing::info!("indexes ready");
        }
    });
}

/// Drops cached profiles when users change (one shared queue: any replica may handle it).
fn invalidate_profiles(
    amqp: Amqp,
    profiles: Profiles,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let spec = QueueSpec {
        queue: "chat.profile-invalidation".to_owned(),
        routing_keys: vec![UserUpdated::TYPE.to_owned()],
        arguments: Default::default(),
        prefetch: 32,
    };
    tokio::spawn(consume(amqp, spec, shutdown, move |delivery| {
        let profiles = profiles.clone();
        async move {
            let parsed: Result<Envelope<UserUpdated>, _> = serde_json::from_slice(&delivery.data);
            match parsed {
                Ok(event) => match profiles.invalidate(&event.data.user_id).await {
                    Ok(()) => {
                        let _ = delivery.ack(BasicAckOptions::default()).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "profile not invalidated; retrying");
                        let _ = delivery
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await;
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "unreadable user.updated event dropped");
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
            }
        }
    }))
}

/// The service assembled: its router, and what runs beside it until the
/// shutdown token given to [`app`] is cancelled.
pub struct App {
    /// Every route: REST, Socket.IO and the operational ones.
    pub router: axum::Router,
    io: socketioxide::SocketIo<fanout::Adapter>,
    amqp: Amqp,
    receipts_stop: CancellationToken,
    receipt_writer: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Builds the service over its stores. No store needs to answer: the
/// connectors connect lazily, and a request that needs one meanwhile gets
/// a 503 (so routes can be tested in process with `oneshot`).
pub async fn app(config: Config, shutdown: CancellationToken) -> anyhow::Result<App> {
    let mongo = Mongo::connect(&config.mongo, "parley-chat")
        .await
        .context("mongodb client")?;
    let redis = Redis::connect(&config.redis).context("redis client")?;
    let amqp = Amqp::start(config.amqp.clone(), "parley-chat");
    let store = Store::new(mongo.db());
    ensure_indexes(store.clone(), shutdown.clone());
    let (socket_routes, io) = realtime::build(
        &config.redis,
        fanout::channel_prefix(&redis),
        config.handshake.connect_timeout,
    )
    .context("socket.io adapter")?;
    let profiles =
        Profiles::new(redis.clone(), &config.user_service_url).context("user service URL")?;
    let presence = Presence::new(redis.clone(), config.presence_ttl);
    let receipts_stop = CancellationToken::new();
    let (receipts, receipt_writer) = Receipts::start(store.clone(), receipts_stop.clone());
    let config_revocation = config.revocation;
    let state = AppState {
        config: Arc::new(config),
        store: store.clone(),
        redis: redis.clone(),
        amqp: amqp.clone(),
        fanout: Fanout::new(io.clone(), store.clone(), presence.clone(), redis.clone()),
        presence: presence.clone(),
        profiles: profiles.clone(),
        receipts,
        revocations: Revocations::new(redis.clone(), config_revocation),
    };
    realtime::register(state.clone(), shutdown.clone())
        .await
        .context("socket.io namespace")?;
    let tasks = vec![
        realtime::session::follow_revocations(&state, shutdown.clone()),
        realtime::session::expire_tokens(&state, shutdown.clone()),
        realtime::invalidation::follow(&state, shutdown.clone()),
        heartbeat(presence, shutdown.clone()),
        invalidate_profiles(amqp.clone(), profiles, shutdown.clone()),
        account::follow_deletions(amqp.clone(), state.clone(), shutdown.clone()),
        retention::start(
            &state,
            state.config.retention,
            state.config.retention_sweep_every,
            shutdown.clone(),
        ),
    ];
    let readiness = Readiness::new(shutdown)
        .mongodb(&mongo)
        .redis(&redis)
        // only /login (user) and the account and profile events (chat) need it
        .rabbitmq_for_some_requests(&amqp);
    let routes = http::routes(state).merge(socket_routes);
    Ok(App {
        router: parley_common::server::with_ops(routes, readiness),
        io,
        amqp,
        receipts_stop,
        receipt_writer,
        tasks,
    })
}

/// Refreshes this replica's presence entries until `stop`.
fn heartbeat(presence: Presence, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(presence.heartbeat_every());
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(error) = presence.heartbeat().await {
                        tracing::warn!(%error, "presence heartbeat failed");
                    }
                }
            }
        }
    })
}

/// Runs the service on an already bound listener (tests bind port 0).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grace = config.server.shutdown_grace;
    let App {
        router,
        io,
        amqp,
        receipts_stop,
        receipt_writer,
        tasks,
    } = app(config, shutdown.clone()).await?;

    // On SIGTERM: close every socket first (clients reconnect to another
    // replica), then let the HTTP server drain.
    let http_stop = CancellationToken::new();
    let closer = {
        let (shutdown, http_stop) = (shutdown.clone(), http_stop.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            let _ = tokio::time::timeout(Duration::from_secs(10), io.close()).await;
            http_stop.cancel();
        })
    };
    parley_common::server::serve(listener, router, http_stop, grace)
        .await
        .context("http server")?;
    let _ = closer.await;
    // Sockets are closed: write the receipts still queued, then stop.
    receipts_stop.cancel();
    let _ = receipt_writer.await;
    for task in tasks {
        let _ = task.await;
    }
    amqp.close().await;
    Ok(())
}
