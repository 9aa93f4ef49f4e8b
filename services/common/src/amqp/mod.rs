//! RabbitMQ connector: one supervised connection that heals itself.
//!
//! A background task ([`supervisor`]) connects with growing delays,
//! declares the events exchange, opens a confirm-mode channel for
//! publishing and watches the connection; when it drops, everything is
//! rebuilt. Publishers wait for the broker's confirm ([`publish`]);
//! consumers re-declare and resume after each reconnect ([`consume`]).
//! Its settings are read in [`config`].

pub mod config;
pub mod consume;
pub mod publish;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use lapin::{Channel, Connection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::AmqpConfig;
pub use consume::{QueueSpec, consume, declare_queue};
pub use publish::PublishError;
pub use supervisor::declare_exchange;

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
        tokio::spawn(supervisor::supervise(
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
