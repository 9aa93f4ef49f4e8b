//! The task that keeps one connection alive: connect with growing delays,
//! declare the exchange, open the publishing channel, watch, rebuild.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AmqpConfig, Live};
use crate::events::EXCHANGE;

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

pub(super) async fn supervise(
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
