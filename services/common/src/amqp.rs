//! RabbitMQ connector: one supervised connection that heals itself.
//!
//! A background task connects with growing delays, declares the events
//! exchange, opens a confirm-mode channel for publishing and watches the
//! connection; when it drops, everything is rebuilt. Publishers wait for the
//! broker's confirm; consumers re-declare and resume after each reconnect.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{ConfigError, Env, REQUIRED, UNSET, VarDoc};
use crate::events::{EXCHANGE, Envelope, Event};
use crate::tls::CaBundle;

/// Where RabbitMQ is.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// `amqp://` or `amqps://` URL including the vhost (`PARLEY_AMQP_URL`).
    pub url: String,
    /// CAs trusted for an `amqps://` URL besides the system's
    /// (`PARLEY_AMQP_CA_FILE`).
    pub ca: Option<CaBundle>,
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &crate::config::redact_url(&self.url))
            .field("ca", &self.ca)
            .finish()
    }
}

impl AmqpConfig {
    /// The variables [`AmqpConfig::from_env`] reads.
    pub const ENV: &'static [VarDoc] = &[
        VarDoc::new(
            "PARLEY_AMQP_URL",
            REQUIRED,
            "`amqp://` or `amqps://` (TLS) URL including the vhost",
        ),
        VarDoc::new(
            "PARLEY_AMQP_CA_FILE",
            UNSET,
            "PEM file of CAs trusted for an `amqps://` URL, besides the system's",
        ),
    ];

    /// Reads `PARLEY_AMQP_URL` (required).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let var = "PARLEY_AMQP_URL";
        let url = env.required_url(var, &["amqp", "amqps"])?;
        url.as_str()
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| ConfigError::new(var, format!("is not a valid AMQP URI ({e})")))?;
        let ca = CaBundle::from_env(env, "PARLEY_AMQP_CA_FILE")?;
        if ca.is_some() && url.scheme() != "amqps" {
            return Err(ConfigError::new(
                "PARLEY_AMQP_CA_FILE",
                "is set, so PARLEY_AMQP_URL must be an amqps:// (TLS) URL",
            ));
        }
        Ok(Self {
            url: url.to_string(),
            ca,
        })
    }
}

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

/// A live connection and its confirm-mode publishing channel.
#[derive(Clone)]
pub struct Live {
    /// The connection.
    pub connection: Arc<Connection>,
    publisher: Channel,
}

/// Handle to the supervised connection; cheap to clone.
#[derive(Clone)]
pub struct Amqp {
    live: watch::Receiver<Option<Live>>,
    stop: CancellationToken,
    confirm_timeout: Duration,
}

impl Amqp {
    /// Starts the supervisor; it connects in the background.
    pub fn start(config: AmqpConfig, connection_name: &str) -> Self {
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        tokio::spawn(supervise(
            config,
            connection_name.to_owned(),
            tx,
            stop.clone(),
        ));
        Self {
            live: rx,
            stop,
            confirm_timeout: Duration::from_secs(5),
        }
    }

    /// True while a connection is open.
    pub fn is_connected(&self) -> bool {
        self.live
            .borrow()
            .as_ref()
            .is_some_and(|l| l.connection.status().connected())
    }

    /// Readiness: the connection is open.
    pub async fn ping(&self) -> Result<(), String> {
        if self.is_connected() {
            Ok(())
        } else {
            Err("not connected".to_owned())
        }
    }

    /// Waits until connected or `timeout` passes; true when connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.live.clone();
        tokio::time::timeout(timeout, rx.wait_for(|l| l.is_some()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

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

    /// Opens a fresh channel on the current connection.
    pub async fn channel(&self) -> Result<Channel, PublishError> {
        let live = self
            .live
            .borrow()
            .clone()
            .ok_or(PublishError::NotConnected)?;
        Ok(live.connection.create_channel().await?)
    }

    /// Closes the connection for good (after consumers have finished).
    pub async fn close(&self) {
        self.stop.cancel();
        let mut rx = self.live.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| l.is_none())).await;
    }

    fn subscribe(&self) -> watch::Receiver<Option<Live>> {
        self.live.clone()
    }
}

/// Declares the durable topic exchange every event goes through
/// ([`EXCHANGE`]), as every publisher and consumer of parley declares it.
pub async fn declare_exchange(channel: &Channel) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

async fn establish(config: &AmqpConfig, name: &str) -> Result<Live, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connection = match &config.ca {
        None => Connection::connect(&config.url, properties).await?,
        Some(ca) => {
            let tls = lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: Some(ca.pem.clone()),
            };
            let runtime = lapin::runtime::default_runtime()?;
            Connection::connect_with_config(&config.url, properties, tls, runtime).await?
        }
    };
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_exchange(&publisher).await?;
    Ok(Live {
        connection: Arc::new(connection),
        publisher,
    })
}

async fn supervise(
    config: AmqpConfig,
    name: String,
    tx: watch::Sender<Option<Live>>,
    stop: CancellationToken,
) {
    let mut attempt = 0u32;
    let mut waits = crate::retry::backoff();
    loop {
        let connect = tokio::time::timeout(Duration::from_secs(10), establish(&config, &name));
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = connect => outcome,
        };
        match outcome {
            Ok(Ok(live)) => {
                attempt = 0;
                waits = crate::retry::backoff();
                tracing::info!(dependency = "rabbitmq", "connected");
                metrics::counter!("amqp_connects_total").increment(1);
                let mut events = live.connection.events_listener();
                tx.send_replace(Some(live.clone()));
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => {
                            tx.send_replace(None);
                            let _ = live.connection.close(200, "shutting down".into()).await;
                            tracing::info!(dependency = "rabbitmq", "connection closed");
                            return;
                        }
                        event = events.next() => match event {
                            // The broker closing one channel (a refused
                            // declaration, say) is reported here too; the
                            // connection and its other channels live on.
                            Some(lapin::Event::Error(error))
                                if error.is_amqp_soft_error()
                                    && live.connection.status().connected() =>
                            {
                                tracing::debug!(dependency = "rabbitmq", %error, "a channel was closed by the broker");
                            }
                            Some(lapin::Event::Error(error)) => {
                                tracing::warn!(dependency = "rabbitmq", %error, "connection lost");
                                break;
                            }
                            None => break,
                            Some(_) => {}
                        },
                        _ = tick.tick() => {
                            if !live.connection.status().connected() {
                                tracing::warn!(dependency = "rabbitmq", "connection no longer open");
                                break;
                            }
                        }
                    }
                }
                tx.send_replace(None);
            }
            Ok(Err(error)) => {
                tracing::warn!(dependency = "rabbitmq", %error, attempt, "connect failed");
            }
            Err(_) => {
                tracing::warn!(dependency = "rabbitmq", attempt, "connect timed out");
            }
        }
        let delay = waits.next().unwrap_or(crate::retry::MAX_DELAY);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_other_schemes() {
        let env = Env::from_pairs([("PARLEY_AMQP_URL", "http://127.0.0.1")]);
        assert_eq!(
            AmqpConfig::from_env(&env).unwrap_err().var,
            "PARLEY_AMQP_URL"
        );
        let env = Env::from_pairs([("PARLEY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")]);
        assert!(AmqpConfig::from_env(&env).is_ok());
    }
}
