//! Consumers that re-declare their queue and resume after each reconnect.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Amqp, Live};
use crate::events::EXCHANGE;

/// A durable queue bound to routing keys on the events exchange.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// Queue name.
    pub queue: String,
    /// Routing keys bound on [`EXCHANGE`].
    pub routing_keys: Vec<String>,
    /// Queue arguments (dead-lettering, TTL, …).
    pub arguments: FieldTable,
    /// Deliveries in flight at once.
    pub prefetch: u16,
}

/// Consumes `spec` until `shutdown`, re-subscribing after every reconnect.
///
/// `handler` gets each delivery and must ack, nack or reject it. After
/// `shutdown` no new delivery is taken; the one being handled finishes.
pub async fn consume<H, Fut>(amqp: Amqp, spec: QueueSpec, shutdown: CancellationToken, handler: H)
where
    H: Fn(Delivery) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut live_rx = amqp.subscribe();
    loop {
        let live = tokio::select! {
            () = shutdown.cancelled() => return,
            live = live_rx.wait_for(|l| l.is_some()) => match live {
                Ok(live) => live.clone(),
                Err(_) => return,
            },
        };
        let Some(live) = live else { continue };
        match open_consumer(&live, &spec).await {
            Ok((channel, mut consumer)) => {
                tracing::info!(queue = %spec.queue, "consuming");
                loop {
                    let next = tokio::select! {
                        () = shutdown.cancelled() => {
                            let _ = channel
                                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                                .await;
                            return;
                        }
                        next = consumer.next() => next,
                    };
                    match next {
                        Some(Ok(delivery)) => handler(delivery).await,
                        Some(Err(error)) => {
                            tracing::warn!(queue = %spec.queue, %error, "consumer failed");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(error) => {
                tracing::warn!(queue = %spec.queue, %error, "cannot start consumer");
            }
        }
        // Wait for this connection to be replaced before trying again.
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = live_rx.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Declares `spec`'s durable queue and binds it to its routing keys
/// (idempotent; consumers do it too, so a service may declare its queues
/// before it reports ready).
pub async fn declare_queue(channel: &Channel, spec: &QueueSpec) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            spec.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            spec.arguments.clone(),
        )
        .await?;
    for key in &spec.routing_keys {
        channel
            .queue_bind(
                spec.queue.as_str().into(),
                EXCHANGE.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

async fn open_consumer(
    live: &Live,
    spec: &QueueSpec,
) -> Result<(Channel, lapin::Consumer), lapin::Error> {
    let channel = live.connection.create_channel().await?;
    channel
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await?;
    declare_queue(&channel, spec).await?;
    let consumer = channel
        .basic_consume(
            spec.queue.as_str().into(),
            format!("{}-{}", spec.queue, Uuid::new_v4()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}
