//! Private dependency servers on spare ports, for tests that stop them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{free_port, port_open, shared, wait_until};

/// A child process serving on one port, restartable on the same port.
struct Served {
    what: &'static str,
    port: u16,
    program: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Served {
    async fn start(&mut self, ready_within: Duration) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.what, self.program))?;
        self.child = Some(child);
        let port = self.port;
        wait_until(
            &format!("{} on port {port}", self.what),
            ready_within,
            || port_open(port),
        )
        .await
        .with_context(|| format!("{} log: {}", self.what, self.log.display()))?;
        Ok(())
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .with_context(|| format!("stopping {}", self.what))?;
        }
        let port = self.port;
        wait_until(
            &format!("{} port {port} closed", self.what),
            Duration::from_secs(10),
            || async move { !port_open(port).await },
        )
        .await?;
        Ok(())
    }
}

/// A private `redis-server` (nothing persisted).
pub struct RedisServer {
    served: Served,
    /// `redis`, or `rediss` when it speaks TLS only.
    scheme: &'static str,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts it on a spare port and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut served = Served {
            what: "redis-server",
            port,
            program: "redis-server".into(),
            args: [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.path().to_string_lossy(),
            ]
            .map(String::from)
            .to_vec(),
            log: dir.path().join("redis.log"),
            child: None,
        };
        served.start(Duration::from_secs(10)).await?;
        Ok(Self {
            served,
            scheme: "redis",
            _dir: dir,
        })
    }

    /// Starts one that speaks TLS only, with the certificate and key of
    /// these PEM files (no client certificates asked for), on a spare port.
    pub async fn start_tls(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut served = Served {
            what: "redis-server (TLS)",
            port,
            program: "redis-server".into(),
            args: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                cert.to_string_lossy().into_owned(),
                "--tls-key-file".into(),
                key.to_string_lossy().into_owned(),
                "--tls-auth-clients".into(),
                "no".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                dir.path().to_string_lossy().into_owned(),
            ],
            log: dir.path().join("redis.log"),
            child: None,
        };
        served.start(Duration::from_secs(10)).await?;
        Ok(Self {
            served,
            scheme: "rediss",
            _dir: dir,
        })
    }

    /// Its URL (`redis://`, or `rediss://` when started with TLS).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.served.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.served.port
    }

    /// Kills it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.served.stop().await
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.served.start(Duration::from_secs(10)).await
    }
}

/// A private SecantusDB (MongoDB wire protocol) keeping its data in a temp
/// dir, so a restart finds what was written before.
pub struct MongoServer {
    served: Served,
    _dir: TempDir,
}

impl MongoServer {
    /// Starts it on a spare port and waits until it answers `ping`.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut served = Served {
            what: "secantusd",
            port,
            program: shared::secantusd(),
            args: vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--storage-path".into(),
                dir.path().join("data").to_string_lossy().into_owned(),
                "--log-level".into(),
                "WARNING".into(),
                // Durable like a journaled MongoDB: a kill loses no acknowledged write.
                "--sync-on-commit".into(),
            ],
            log: dir.path().join("secantusd.log"),
            child: None,
        };
        served.start(Duration::from_secs(30)).await?;
        let server = Self { served, _dir: dir };
        server.wait_ping().await?;
        Ok(server)
    }

    async fn wait_ping(&self) -> anyhow::Result<()> {
        let client = mongodb::Client::with_uri_str(self.uri()).await?;
        let db = client.database("admin");
        wait_until("secantusd answers ping", Duration::from_secs(30), || {
            let db = db.clone();
            async move {
                db.run_command(mongodb::bson::doc! {"ping": 1})
                    .await
                    .is_ok()
            }
        })
        .await?;
        Ok(())
    }

    /// Its connection string.
    pub fn uri(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true",
            self.served.port
        )
    }

    /// Its connection string as `user`:`password`, authenticating against `source`.
    pub fn uri_as(&self, user: &str, password: &str, source: &str) -> String {
        format!(
            "mongodb://{user}:{password}@127.0.0.1:{}/?directConnection=true&authSource={source}",
            self.served.port
        )
    }

    /// Makes a `root` user `user`:`password` in `admin`, then restarts the
    /// server with authentication required (as a managed MongoDB runs).
    pub async fn require_auth(&mut self, user: &str, password: &str) -> anyhow::Result<()> {
        let client = mongodb::Client::with_uri_str(self.uri()).await?;
        client
            .database("admin")
            .run_command(mongodb::bson::doc! {
                "createUser": user,
                "pwd": password,
                "roles": [{ "role": "root", "db": "admin" }],
            })
            .await?;
        drop(client);
        self.stop().await?;
        self.served.args.push("--auth".into());
        self.served.start(Duration::from_secs(30)).await?;
        // `ping` needs no authentication, so readiness is checked the same way.
        self.wait_ping().await
    }

    /// Kills it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.served.stop().await
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.served.start(Duration::from_secs(30)).await?;
        self.wait_ping().await
    }
}

/// A private RabbitMQ node (its own node name, port and data dir).
pub struct RabbitServer {
    node: String,
    port: u16,
    dir: TempDir,
    env: Vec<(String, String)>,
}

impl RabbitServer {
    /// Starts a node on a spare port and waits until it accepts AMQP.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let dist_port = free_port()?;
        let node = format!("parleytest{}@localhost", crate::short_id());
        let conf = dir.path().join("rabbitmq.conf");
        std::fs::write(
            &conf,
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )?;
        let plugins = dir.path().join("enabled_plugins");
        std::fs::write(&plugins, "[].\n")?;
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        // The broker drops to the rabbitmq user: it must own its dirs.
        let status = std::process::Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir.path())
            .status()
            .context("chown for rabbitmq")?;
        anyhow::ensure!(status.success(), "chown of the rabbitmq test dir failed");
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let env = vec![
            ("RABBITMQ_NODENAME".to_owned(), node.clone()),
            ("RABBITMQ_DIST_PORT".to_owned(), dist_port.to_string()),
            ("RABBITMQ_CONFIG_FILE".to_owned(), path(&conf)),
            (
                "RABBITMQ_MNESIA_BASE".to_owned(),
                path(&dir.path().join("mnesia")),
            ),
            (
                "RABBITMQ_LOG_BASE".to_owned(),
                path(&dir.path().join("log")),
            ),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".to_owned(), path(&plugins)),
        ];
        let server = Self {
            node,
            port,
            dir,
            env,
        };
        server.boot().await?;
        Ok(server)
    }

    async fn boot(&self) -> anyhow::Result<()> {
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("starting rabbitmq-server")?;
        anyhow::ensure!(status.success(), "rabbitmq-server -detached failed");
        let port = self.port;
        wait_until(
            "private rabbitmq accepting AMQP",
            Duration::from_secs(60),
            || port_open(port),
        )
        .await
        .with_context(|| format!("rabbitmq logs in {}", self.dir.path().join("log").display()))?;
        Ok(())
    }

    /// Its AMQP URL (default vhost).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the node (the broker closes client connections).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let status = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("rabbitmqctl stop")?;
        anyhow::ensure!(status.success(), "rabbitmqctl stop {} failed", self.node);
        let port = self.port;
        wait_until(
            "private rabbitmq stopped",
            Duration::from_secs(30),
            || async move { !port_open(port).await },
        )
        .await?;
        Ok(())
    }

    /// Starts the node again with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.boot().await
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A real SMTP server (aiosmtpd) that stores each accepted mail as a file.
pub struct SmtpSink {
    served: Served,
    dir: TempDir,
}

impl SmtpSink {
    /// Starts it on a spare port.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let script = crate::workspace_root().join("scripts/smtp_sink.py");
        let mail_dir = dir.path().join("mail");
        std::fs::create_dir_all(&mail_dir)?;
        let mut served = Served {
            what: "smtp sink",
            port,
            program: shared::python(),
            args: vec![
                script.to_string_lossy().into_owned(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--dir".into(),
                mail_dir.to_string_lossy().into_owned(),
            ],
            log: dir.path().join("smtp.log"),
            child: None,
        };
        served.start(Duration::from_secs(20)).await?;
        Ok(Self { served, dir })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.served.port
    }

    /// What a sender of parley needs to deliver here: the SMTP server
    /// (plain, no TLS) and a sender address.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("PARLEY_SMTP_HOST", "127.0.0.1".to_owned()),
            ("PARLEY_SMTP_PORT", self.port().to_string()),
            ("PARLEY_SMTP_TLS", "none".to_owned()),
            ("PARLEY_MAIL_FROM", "parley@example.com".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The folder holding one `.eml` file per received message (for
    /// readers outside the harness, such as `e2e/js/scenario.mjs`).
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Every message received so far, raw, oldest first.
    pub fn messages(&self) -> anyhow::Result<Vec<String>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.mail_dir())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
            .collect()
    }

    /// Kills it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.served.stop().await
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.served.start(Duration::from_secs(20)).await
    }
}
