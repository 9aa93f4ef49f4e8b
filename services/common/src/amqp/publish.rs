//! Publishing with the broker's confirm.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use uuid::Uuid;

use super::Amqp;
use crate::events::{EXCHANGE, Envelope, Event};

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No live connection to the broker right now.
    #[error("rabbitmq is not connected")]
    NotConnected,
    /// The broker refused the message (nack).
    #[error("rabbitmq refused the message")]
    Nacked,
    /// No confirm within the deadline.
    #[error("rabbitmq did not confirm within {0:?}")]
    Timeout(Duration),
    /// No queue took the (mandatory) message.
    #[error("no queue is bound for this message")]
    Unroutable,
    /// The payload could not be serialised.
    #[error("cannot serialise event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The channel failed.
    #[error("rabbitmq publish failed: {0}")]
    Broker(#[from] lapin::Error),
}

impl Amqp {
    /// Publishes `data` as an event and waits for the broker's confirm.
    pub async fn publish<E: Event>(&self, data: E) -> Result<Envelope<E>, PublishError> {
        let envelope = Envelope::new(data);
        let payload = serde_json::to_vec(&envelope)?;
        self.publish_raw(EXCHANGE, E::TYPE, envelope.id, E::TYPE, &payload)
            .await?;
        Ok(envelope)
    }

    /// Publishes bytes persistently with `message_id` and waits for the confirm.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: Uuid,
        kind: &str,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let properties = BasicProperties::default()
            .with_message_id(message_id.to_string().into())
            .with_type(kind.into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        self.publish_inner(exchange, routing_key, properties, payload, false)
            .await
    }

    /// Publishes bytes with the given properties (headers included) and
    /// waits for the broker's confirm. Unlike [`Amqp::publish_raw`] the
    /// publish is mandatory: a message no queue takes is an error, not a loss.
    pub async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        self.publish_inner(exchange, routing_key, properties, payload, true)
            .await
    }

    async fn publish_inner(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        payload: &[u8],
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let live = self
            .live
            .borrow()
            .clone()
            .ok_or(PublishError::NotConnected)?;
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(self.confirm_timeout, async {
            let confirm = live
                .publisher
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    },
                    payload,
                    properties,
                )
                .await?;
            confirm.await
        })
        .await;
        let result = match outcome {
            Err(_) => Err(PublishError::Timeout(self.confirm_timeout)),
            Ok(Err(e)) => Err(PublishError::Broker(e)),
            Ok(Ok(lapin::Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable),
            Ok(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
            Ok(Ok(_)) => Err(PublishError::Nacked),
        };
        let status = if result.is_ok() {
            "confirmed"
        } else {
            "failed"
        };
        metrics::counter!("amqp_publish_total", "routing_key" => routing_key.to_owned(), "outcome" => status)
            .increment(1);
        metrics::histogram!("amqp_publish_confirm_seconds").record(started.elapsed().as_secs_f64());
        result
    }
}
