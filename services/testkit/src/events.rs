//! The events exchange as tests see it: a publishing channel with
//! confirms, a queue tapping routing keys, and a confirmed publish, all on
//! the exchange the services use ([`parley_contracts::events::EXCHANGE`]).

use anyhow::Context;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use parley_contracts::events::EXCHANGE;

/// A connection to `url` and a channel with publisher confirms on which
/// the events exchange is declared (as the services declare it).
pub async fn channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .context("connecting to the broker")?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    parley_common::amqp::declare_exchange(&channel).await?;
    Ok((connection, channel))
}

/// A consumer of queue `queue` bound to `keys` on the events exchange;
/// an empty name makes an exclusive queue of the broker's naming.
pub async fn tap(channel: &Channel, queue: &str, keys: &[&str]) -> anyhow::Result<Consumer> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                exclusive: queue.is_empty(),
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in keys {
        channel
            .queue_bind(
                declared.name().clone(),
                EXCHANGE.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(channel
        .basic_consume(
            declared.name().clone(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

/// Publishes `body` under `routing_key` (persistent, with message id
/// `id`) and waits for the broker's confirm.
pub async fn publish(
    channel: &Channel,
    routing_key: &str,
    id: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    channel
        .basic_publish(
            EXCHANGE.into(),
            routing_key.into(),
            Default::default(),
            body,
            BasicProperties::default()
                .with_message_id(id.into())
                .with_delivery_mode(2),
        )
        .await?
        .await?;
    Ok(())
}
