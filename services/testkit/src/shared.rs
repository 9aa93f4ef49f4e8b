//! The shared dependencies and per-test namespaces on them.

use std::process::Command;

use anyhow::Context;

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// URL of the shared Redis.
pub fn redis_url() -> String {
    var_or("PARLEY_REDIS_URL", "redis://127.0.0.1:6379")
}

/// URL of the shared RabbitMQ's default vhost.
pub fn amqp_url() -> String {
    var_or("PARLEY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

/// Connection string of the shared MongoDB-protocol server.
pub fn mongo_uri() -> String {
    var_or(
        "PARLEY_MONGODB_URI",
        "mongodb://127.0.0.1:27017/?directConnection=true",
    )
}

/// The Python interpreter of the harness venv (secantusdb, aiosmtpd).
pub fn python() -> String {
    var_or("PARLEY_PYTHON", "/var/tmp/parley/venv/bin/python")
}

/// The SecantusDB launcher.
pub fn secantusd() -> String {
    var_or("PARLEY_SECANTUSD", "/var/tmp/parley/venv/bin/secantusd-py")
}

/// Runs `rabbitmqctl` against the shared broker.
pub async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .context("running rabbitmqctl")?;
    anyhow::ensure!(
        output.status.success(),
        "rabbitmqctl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// One test's private corner of the shared servers: its own MongoDB
/// database, Redis key prefix and RabbitMQ vhost (deleted on drop).
#[derive(Debug)]
pub struct Namespace {
    /// Short unique id.
    pub id: String,
    /// MongoDB database name.
    pub database: String,
    /// Redis key prefix.
    pub redis_prefix: String,
    /// RabbitMQ vhost.
    pub vhost: String,
}

impl Namespace {
    /// Creates the vhost (with guest permissions) and picks the names.
    pub async fn new() -> anyhow::Result<Self> {
        let id = crate::short_id();
        let vhost = format!("t_{id}");
        rabbitmqctl(&["add_vhost", &vhost]).await?;
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]).await?;
        Ok(Self {
            database: format!("t_{id}"),
            redis_prefix: format!("t:{id}:"),
            vhost,
            id,
        })
    }

    /// The AMQP URL of this namespace's vhost on the shared broker.
    pub fn amqp_url(&self) -> String {
        let base = amqp_url();
        let without_vhost = match base.rfind('/') {
            Some(i) if i > "amqp://".len() => base[..i].to_owned(),
            _ => base,
        };
        format!("{without_vhost}/{}", self.vhost)
    }

    /// The `PARLEY_*` variables pointing a service at this namespace.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PARLEY_MONGODB_URI".into(), mongo_uri()),
            ("PARLEY_MONGODB_DATABASE".into(), self.database.clone()),
            ("PARLEY_REDIS_URL".into(), redis_url()),
            ("PARLEY_REDIS_PREFIX".into(), self.redis_prefix.clone()),
            ("PARLEY_AMQP_URL".into(), self.amqp_url()),
        ]
    }

    /// A connected AMQP client on this namespace's vhost (for tests that
    /// publish or read events themselves).
    pub async fn amqp(&self) -> anyhow::Result<lapin::Connection> {
        lapin::Connection::connect(&self.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .context("connecting to the test vhost")
    }

    /// A MongoDB handle on this namespace's database.
    pub async fn mongo(&self) -> anyhow::Result<mongodb::Database> {
        let client = mongodb::Client::with_uri_str(mongo_uri())
            .await
            .context("mongodb client")?;
        Ok(client.database(&self.database))
    }

    /// A Redis connection to the shared server.
    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(redis_url()).context("redis client")?;
        client
            .get_multiplexed_async_connection()
            .await
            .context("connecting to redis")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Best effort: a leftover vhost is harmless, so errors are ignored.
        // The command runs on a thread of its own, so a test's runtime is
        // not blocked while rabbitmqctl starts and finishes.
        let vhost = std::mem::take(&mut self.vhost);
        std::thread::spawn(move || {
            let _ = Command::new("rabbitmqctl")
                .args(["delete_vhost", &vhost])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        });
    }
}
