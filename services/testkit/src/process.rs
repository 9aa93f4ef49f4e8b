//! Real service binaries, spawned with a chosen environment.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::wait_until;

/// Where the services log the address they listen on: the runtime crate
/// (its server module moved once; earlier builds, run by the benchmarks'
/// `PARLEY_BENCH_CHAT_BIN`, log it from `parley_runtime::server`).
const LISTENING_TARGET: &str = "parley_runtime";

/// A running service binary listening on a port the kernel chose.
pub struct ServiceProcess {
    child: Child,
    port: std::sync::OnceLock<u16>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl ServiceProcess {
    /// Spawns `binary` with exactly `env` (plus `PATH`, and
    /// `PARLEY_HTTP_ADDR` on port 0 unless `env` names one); its output
    /// goes to a log file. The service binds the port itself, so no other
    /// test can take it in between; [`Self::listening`] (and the waits for
    /// `/readyz`) read it from the service's log.
    pub fn spawn(binary: &str, env: &[(String, String)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("service.log");
        let file = std::fs::File::create(&log)?;
        // Whatever the level asked for, the line that names the bound
        // address is logged.
        let log_filter = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PARLEY_LOG")
            .map_or("info", |(_, v)| v.as_str());
        let child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PARLEY_HTTP_ADDR", "127.0.0.1:0")
            .envs(env.iter().cloned())
            .env(
                "PARLEY_LOG",
                format!("{log_filter},{LISTENING_TARGET}=info"),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {binary}"))?;
        Ok(Self {
            child,
            port: std::sync::OnceLock::new(),
            log,
            _dir: dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// The OS process id (for resource readings in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The port it listens on, once [`Self::listening`] (or a wait for
    /// `/readyz`) has read it; 0 before.
    pub fn port(&self) -> u16 {
        self.port.get().copied().unwrap_or(0)
    }

    /// Waits until the service logs the address it listens on, and
    /// returns its port.
    pub async fn listening(&self, timeout: Duration) -> anyhow::Result<u16> {
        if let Some(port) = self.port.get() {
            return Ok(*port);
        }
        wait_until("the service to listen", timeout, || async {
            listening_port(&self.output()).is_some()
        })
        .await
        .with_context(|| format!("output:\n{}", self.output()))?;
        let port = listening_port(&self.output()).unwrap_or(0);
        Ok(*self.port.get_or_init(|| port))
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing the service")
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// An HTTP client with a 10 s timeout.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A JSON request with an optional bearer token; the status and the body
    /// (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        ))
    }

    /// The sum of the `/metrics` samples whose line starts with `prefix`
    /// (a metric name, optionally with the start of its labels).
    pub async fn metric(&self, prefix: &str) -> anyhow::Result<f64> {
        Ok(self
            .samples(|line| line.starts_with(prefix))
            .await?
            .iter()
            .sum())
    }

    /// The sum of the samples of the metric named exactly `name` (any
    /// labels); `None` when it is not exported at all.
    pub async fn metric_named(&self, name: &str) -> anyhow::Result<Option<f64>> {
        let values = self
            .samples(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .await?;
        Ok((!values.is_empty()).then(|| values.iter().sum()))
    }

    async fn samples(&self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<Vec<f64>> {
        let body = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(body
            .lines()
            .filter(|line| wanted(line))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .collect())
    }

    /// `/readyz`'s status code and JSON body (`None` when nothing answers).
    pub async fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let response = self.http.get(self.url("/readyz")).send().await.ok()?;
        let status = response.status().as_u16();
        let body = response.json().await.ok()?;
        Some((status, body))
    }

    /// Waits until `/readyz` answers 200; fails with the last answer and
    /// the process output otherwise.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_readyz(200, timeout).await
    }

    /// Waits until `/readyz` answers 200 with no dependency degraded (every
    /// one answers, RabbitMQ included).
    pub async fn wait_whole(&self, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_readyz_where("/readyz 200, nothing degraded", timeout, |code, body| {
            code == 200
                && body["degraded"]
                    .as_array()
                    .is_none_or(|degraded| degraded.is_empty())
        })
        .await
    }

    /// Waits until `/readyz` answers `status`.
    pub async fn wait_readyz(&self, status: u16, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_readyz_where(&format!("/readyz {status}"), timeout, |code, _| {
            code == status
        })
        .await
    }

    /// Waits until `/readyz` answers what `wanted` accepts.
    async fn wait_readyz_where(
        &self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> anyhow::Result<Duration> {
        self.listening(timeout).await?;
        let last = std::sync::Mutex::new(None);
        let outcome = wait_until(what, timeout, || async {
            let answer = self.readyz().await;
            let hit = matches!(&answer, Some((code, body)) if wanted(*code, body));
            if let Ok(mut slot) = last.lock() {
                *slot = answer;
            }
            hit
        })
        .await;
        let last = last.lock().map(|l| format!("{l:?}")).unwrap_or_default();
        outcome.with_context(|| format!("last /readyz: {last}\noutput:\n{}", self.output()))
    }

    /// Sends SIGTERM and waits for the exit code.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        if let Some(pid) = self.child.id() {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .context("kill -TERM")?;
            anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        }
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .context("service did not exit after SIGTERM")??;
        Ok(status.code())
    }

    /// Waits for the process to exit by itself (for start-up failures).
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .context("service did not exit")??;
        Ok(status.code())
    }
}

/// A JSON request to `service` with an optional bearer token: the status
/// and the body (`Null` when the body is not JSON).
pub async fn call(
    service: &ServiceProcess,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    service.call(method, path, token, body).await
}

/// Pure: the port of the address in the service's "http server listening"
/// log line (JSON, field `addr`).
pub fn listening_port(output: &str) -> Option<u16> {
    output
        .lines()
        .filter(|line| line.contains("http server listening"))
        .find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            let addr = value
                .pointer("/fields/addr")
                .or_else(|| value.get("addr"))?
                .as_str()?;
            addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_comes_from_the_listening_line() {
        let output = concat!(
            r#"{"level":"INFO","fields":{"message":"starting"}}"#,
            "\n",
            r#"{"level":"INFO","fields":{"message":"http server listening","addr":"127.0.0.1:41234"}}"#,
            "\n"
        );
        assert_eq!(listening_port(output), Some(41234));
        assert_eq!(listening_port("not json\n"), None);
        assert_eq!(listening_port(""), None);
    }
}
