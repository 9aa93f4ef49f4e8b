//! parley-testkit: the integration-test harness.
//!
//! Tests talk to real servers over real sockets:
//! - the shared Redis, RabbitMQ and MongoDB-protocol servers that
//!   `scripts/lib/deps.sh` provisions (found through the same `PARLEY_*`
//!   variables the services read, with the local defaults), each test in its
//!   own [`Namespace`] (database, key prefix, vhost);
//! - private servers on spare ports ([`RedisServer`], [`MongoServer`],
//!   [`RabbitServer`], [`SmtpSink`]) for tests that stop and restart them;
//! - the real service binaries ([`ServiceProcess`]).

pub mod events;
pub mod process;
pub mod procfs;
pub mod servers;
pub mod shared;
pub mod socketio;
pub mod tcp_proxy;

use std::future::Future;
use std::time::{Duration, Instant};

pub use process::{ServiceProcess, call};
pub use servers::{MongoServer, RabbitServer, RedisServer, SmtpSink};
pub use shared::Namespace;

/// A port nothing listens on right now. Only for what cannot bind port 0
/// and report it (third-party servers told their port on the command
/// line, or an address that must refuse connections): parley's own
/// services bind port 0 themselves (see [`ServiceProcess::spawn`]).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `probe` every 50 ms until it returns true; fails after `timeout`
/// with an error naming `what`. Returns how long it took.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if probe().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            anyhow::bail!("{what}: not true after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when something accepts TCP connections on `127.0.0.1:port`.
pub async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// A short random id for names (databases, prefixes, vhosts).
pub fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The workspace root (for scripts the harness runs).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Runs `binary` with `env` and checks that it refuses to start: exit code 2
/// and a single output line naming `var`.
pub async fn assert_config_error(
    binary: &str,
    env: &[(String, String)],
    var: &str,
) -> anyhow::Result<()> {
    let mut process = ServiceProcess::spawn(binary, env)?;
    let code = process.wait_exit(Duration::from_secs(10)).await?;
    let output = process.output();
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    anyhow::ensure!(
        code == Some(2),
        "expected exit code 2, got {code:?}; output:\n{output}"
    );
    anyhow::ensure!(lines.len() == 1, "expected one line, got:\n{output}");
    anyhow::ensure!(
        lines[0].contains(var),
        "the line does not name {var}: {}",
        lines[0]
    );
    Ok(())
}

/// Path of another workspace binary (debug profile), built first if needed:
/// for tests that run a second service next to their own.
pub fn workspace_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    // .../target/debug/deps/<test> -> .../target/debug
    let debug_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary location {}", exe.display()))?;
    let target_dir = debug_dir.parent().unwrap_or(debug_dir);
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args(["build", "--quiet", "--bin", name, "-p", name])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(workspace_root())
            .status()?;
    anyhow::ensure!(status.success(), "cargo build of {name} failed");
    Ok(debug_dir.join(name))
}
