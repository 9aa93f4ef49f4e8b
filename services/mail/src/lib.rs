//! parley-mail: mails login codes and notifications from RabbitMQ events.
//!
//! Work queues `mail.otp` and `mail.notifications` are bound to the events
//! exchange. Each delivery is acked only after the SMTP server accepted the
//! mail; transient failures wait in delay queues and come back, permanent
//! ones (and unreadable events) are parked in `*.dead` with the reason.
//! Redeliveries are deduplicated on the event id in Redis.

pub mod audience;
pub mod config;
pub mod policy;
pub mod smtp;
pub mod templates;
pub mod topology;
pub mod worker;

use std::time::Duration;

use anyhow::Context;
use lettre::message::Mailbox;
use parley_common::amqp::{Amqp, QueueSpec, consume, declare_queue};
use parley_common::events::{Event, MessageCreated, OtpRequested};
use parley_common::health::Readiness;
use parley_common::mongo::Mongo;
use parley_common::readiness::ConnectorChecks;
use parley_common::redis::Redis;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::worker::Worker;

/// Runs the service until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.http_addr))?;
    serve(config, listener, shutdown).await
}

/// Declares the work queues (bound to their events), and the delay, dead
/// and grace queues around them, after every (re)connection; the receiver
/// turns true once they were declared the first time.
fn keep_topology(
    amqp: Amqp,
    work: Vec<QueueSpec>,
    policy: config::Delivery,
    shutdown: CancellationToken,
) -> tokio::sync::watch::Receiver<bool> {
    let (declared_tx, declared_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if !amqp.wait_connected(Duration::from_secs(1)).await {
                continue;
            }
            let declared = async {
                let channel = amqp.channel().await.map_err(|e| e.to_string())?;
                for spec in &work {
                    declare_queue(&channel, spec)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                for queue in [topology::OTP, topology::DUE, topology::NOTIFICATIONS] {
                    topology::declare_retries(&channel, queue, &policy.retry_delays)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                topology::declare_grace(&channel, policy.notify_grace)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = channel.close(200, "topology declared".into()).await;
                for queue in [topology::OTP, topology::DUE, topology::NOTIFICATIONS] {
                    let parked = topology::declare_parking(&amqp, queue, policy.parking)
                        .await
                        .map_err(|e| e.to_string())?;
                    if let topology::Parked::Legacy { messages } = parked {
                        tracing::warn!(
                            queue = topology::dead_queue(queue),
                            messages,
                            "parking queue has other bounds than configured and is not empty; \
                             it keeps its old bounds until it is drained or deleted"
                        );
                    }
                }
                Ok::<(), String>(())
            }
            .await;
            match declared {
                Ok(()) => {
                    tracing::info!("mail queues declared");
                    declared_tx.send_replace(true);
                    // Until this connection drops.
                    while amqp.is_connected() && !shutdown.is_cancelled() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot declare mail queues yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    declared_rx
}

/// Runs the service on an already bound listener (tests bind port 0).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let redis = Redis::connect(&config.redis).context("redis client")?;
    let amqp = Amqp::start(config.amqp.clone(), "parley-mail");
    let mongo = Mongo::connect(&config.mongo, "parley-mail")
        .await
        .context("mongodb client")?;
    let transport = smtp::transport(&config.smtp).context("smtp transport")?;
    let from: Mailbox = config.smtp.from.parse().context("PARLEY_MAIL_FROM")?;
    let work: Vec<(&'static str, QueueSpec)> = [
        (topology::OTP, vec![OtpRequested::TYPE.to_owned()]),
        (
            topology::NOTIFICATIONS,
            vec![MessageCreated::TYPE.to_owned()],
        ),
        (topology::DUE, Vec::new()),
    ]
    .into_iter()
    .map(|(queue, routing_keys)| {
        let spec = QueueSpec {
            queue: queue.to_owned(),
            routing_keys,
            arguments: Default::default(),
            prefetch: config.delivery.prefetch,
        };
        (queue, spec)
    })
    .collect();
    let specs = work.iter().map(|(_, spec)| spec.clone()).collect();
    let topology = keep_topology(
        amqp.clone(),
        specs,
        config.delivery.clone(),
        shutdown.clone(),
    );
    let worker = Worker {
        topology,
        amqp: amqp.clone(),
        redis: redis.clone(),
        db: mongo.db().clone(),
        smtp: transport.clone(),
        from,
        policy: config.delivery.clone(),
    };

    let tracker = TaskTracker::new();
    let mut consumers = Vec::new();
    for (queue, spec) in work {
        let (worker, tracker) = (worker.clone(), tracker.clone());
        consumers.push(tokio::spawn(consume(
            amqp.clone(),
            spec,
            shutdown.clone(),
            move |delivery| {
                let worker = worker.clone();
                // Deliveries are handled concurrently (up to the prefetch); the
                // tracker lets shutdown wait for the ones in flight.
                tracker.spawn(async move { worker.handle(queue, delivery).await });
                std::future::ready(())
            },
        )));
    }

    let smtp_check = transport.clone();
    let declared = worker.topology.clone();
    let readiness = Readiness::new(shutdown.clone())
        .redis(&redis)
        .rabbitmq(&amqp)
        .mongodb(&mongo)
        .check("smtp", move || {
            let smtp = smtp_check.clone();
            async move { smtp::ping(&smtp).await }
        })
        // Events published before the work queues exist would be lost.
        .check("queues", move || {
            let done = *declared.borrow();
            async move {
                if done {
                    Ok(())
                } else {
                    Err("mail queues not declared yet".to_owned())
                }
            }
        });
    let app = parley_common::server::ops_only(readiness);
    parley_common::server::serve(listener, app, shutdown, config.server.shutdown_grace)
        .await
        .context("http server")?;
    for consumer in consumers {
        let _ = consumer.await;
    }
    tracker.close();
    let _ = tokio::time::timeout(config.server.shutdown_grace, tracker.wait()).await;
    amqp.close().await;
    Ok(())
}
