//! The official JavaScript Socket.IO client, run by Node and driven from Rust.
//!
//! `e2e/js/driver.mjs` wraps `socket.io-client`; this side sends it commands
//! and reads what it saw, one JSON object a line.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

static NPM_READY: OnceLock<Result<(), String>> = OnceLock::new();

fn js_dir() -> std::path::PathBuf {
    crate::workspace_root().join("e2e/js")
}

/// Installs the client's npm packages once (from the committed lock file).
pub fn ensure_npm() -> anyhow::Result<()> {
    NPM_READY
        .get_or_init(|| {
            let dir = js_dir();
            if dir.join("node_modules/socket.io-client").exists() {
                return Ok(());
            }
            let output = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .output()
                .map_err(|e| format!("running npm ci: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "npm ci failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Transport a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket only.
    WebSocket,
    /// HTTP long-polling only.
    Polling,
}

/// One running JavaScript client.
pub struct JsClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    seen: VecDeque<Value>,
    next_ack: u64,
}

impl JsClient {
    /// Starts a client for `url` with `token` (in `auth.token`) and extra query pairs.
    pub async fn start(
        url: &str,
        token: Option<&str>,
        query: &[(&str, &str)],
        transport: Transport,
    ) -> anyhow::Result<Self> {
        Self::start_with_headers(url, token, query, &[], transport).await
    }

    /// Like [`JsClient::start`], sending extra HTTP headers (`Origin`, say)
    /// with the handshake requests.
    pub async fn start_with_headers(
        url: &str,
        token: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        transport: Transport,
    ) -> anyhow::Result<Self> {
        ensure_npm()?;
        let mut args = vec![
            js_dir().join("driver.mjs").to_string_lossy().into_owned(),
            url.to_owned(),
            "--transport".to_owned(),
            match transport {
                Transport::WebSocket => "websocket",
                Transport::Polling => "polling",
            }
            .to_owned(),
        ];
        if let Some(token) = token {
            args.extend(["--token".to_owned(), token.to_owned()]);
        }
        for (k, v) in query {
            args.extend(["--query".to_owned(), format!("{k}={v}")]);
        }
        for (k, v) in headers {
            args.extend(["--header".to_owned(), format!("{k}={v}")]);
        }
        let mut child = Command::new("node")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (is Node.js installed?)")?;
        let stdin = child.stdin.take().context("client stdin")?;
        let stdout = child.stdout.take().context("client stdout")?;
        Ok(Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            seen: VecDeque::new(),
            next_ack: 0,
        })
    }

    async fn send(&mut self, command: Value) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(&command)?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .context("writing to the client")?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Emits `event` without acknowledgement.
    pub async fn emit(&mut self, event: &str, data: Value) -> anyhow::Result<()> {
        self.send(json!({"op": "emit", "event": event, "data": data}))
            .await
    }

    /// Emits `event` with any arguments (wrong shapes included).
    pub async fn emit_raw(&mut self, event: &str, args: Vec<Value>) -> anyhow::Result<()> {
        self.send(json!({"op": "emit_raw", "event": event, "args": args}))
            .await
    }

    /// Emits `event` and waits for the server's acknowledgement.
    pub async fn emit_ack(
        &mut self,
        event: &str,
        data: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.next_ack += 1;
        let id = self.next_ack;
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.send(
            json!({"op": "emit", "event": event, "data": data, "ack": id, "timeout": millis}),
        )
        .await?;
        let line = self
            .wait_for(&format!("ack {id} for {event}"), timeout, |l| {
                matches!(l["type"].as_str(), Some("ack" | "ack_timeout")) && l["ack"] == json!(id)
            })
            .await?;
        anyhow::ensure!(line["type"] == "ack", "server did not acknowledge {event}");
        Ok(line["data"].clone())
    }

    /// Replaces the token used at the next (re)connection.
    pub async fn set_token(&mut self, token: &str) -> anyhow::Result<()> {
        self.send(json!({"op": "auth", "token": token})).await
    }

    /// Disconnects (no automatic reconnection after this).
    pub async fn disconnect(&mut self) -> anyhow::Result<()> {
        self.send(json!({"op": "disconnect"})).await
    }

    /// Connects again after [`JsClient::disconnect`].
    pub async fn connect(&mut self) -> anyhow::Result<()> {
        self.send(json!({"op": "connect"})).await
    }

    /// Opens `count` more sockets with this client's token, `concurrency` at
    /// a time, each closed the moment it connects; returns how many
    /// connected, how many were refused, and the refusals' messages with
    /// their counts (`{"timeout": 3}` is the client giving up, not the server).
    pub async fn churn(
        &mut self,
        count: u32,
        concurrency: u32,
        timeout: Duration,
    ) -> anyhow::Result<(u64, u64, Value)> {
        self.send(json!({"op": "churn", "count": count, "concurrency": concurrency}))
            .await?;
        let done = self
            .wait_for("churn_done", timeout, |l| l["type"] == "churn_done")
            .await?;
        Ok((
            done["connected"].as_u64().unwrap_or(0),
            done["refused"].as_u64().unwrap_or(0),
            done["reasons"].clone(),
        ))
    }

    /// Waits for the next line matching `matches` (earlier unmatched lines are kept).
    pub async fn wait_for<F>(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: F,
    ) -> anyhow::Result<Value>
    where
        F: Fn(&Value) -> bool,
    {
        if let Some(pos) = self.seen.iter().position(&matches) {
            return self.seen.remove(pos).context("seen line vanished");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.lines.next_line()).await;
            let line = match next {
                Err(_) => anyhow::bail!(
                    "{what}: nothing within {timeout:?}; unmatched: {:?}",
                    self.seen
                ),
                Ok(Err(e)) => return Err(e).context("reading the client"),
                Ok(Ok(None)) => {
                    anyhow::bail!("{what}: the client exited; unmatched: {:?}", self.seen)
                }
                Ok(Ok(Some(line))) => line,
            };
            let value: Value =
                serde_json::from_str(&line).with_context(|| format!("client said {line:?}"))?;
            if matches(&value) {
                return Ok(value);
            }
            self.seen.push_back(value);
        }
    }

    /// Waits for the server event `event`; returns its data.
    pub async fn event(&mut self, event: &str, timeout: Duration) -> anyhow::Result<Value> {
        let line = self
            .wait_for(&format!("event {event}"), timeout, |l| {
                l["type"] == "event" && l["event"] == event
            })
            .await?;
        Ok(line["data"].clone())
    }

    /// Waits for an event `event` whose data satisfies `pred`.
    pub async fn event_where<F>(
        &mut self,
        event: &str,
        timeout: Duration,
        pred: F,
    ) -> anyhow::Result<Value>
    where
        F: Fn(&Value) -> bool,
    {
        let line = self
            .wait_for(&format!("event {event} (matching)"), timeout, |l| {
                l["type"] == "event" && l["event"] == event && pred(&l["data"])
            })
            .await?;
        Ok(line["data"].clone())
    }

    /// Waits for the connection; fails with the server's refusal message.
    pub async fn connected(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let line = self
            .wait_for("connect", timeout, |l| {
                matches!(l["type"].as_str(), Some("connect" | "connect_error"))
            })
            .await?;
        anyhow::ensure!(line["type"] == "connect", "refused: {}", line["message"]);
        Ok(())
    }

    /// Waits for a refusal; returns its message.
    pub async fn refused(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let line = self
            .wait_for("connect_error", timeout, |l| {
                matches!(l["type"].as_str(), Some("connect" | "connect_error"))
            })
            .await?;
        anyhow::ensure!(
            line["type"] == "connect_error",
            "connected although it should have been refused"
        );
        Ok(line["message"].as_str().unwrap_or_default().to_owned())
    }

    /// True if no event named `event` arrives within `window` (for "nothing
    /// leaked" checks: the window bounds how long we listen, it is not a readiness wait).
    pub async fn quiet(&mut self, event: &str, window: Duration) -> anyhow::Result<bool> {
        match self.event(event, window).await {
            Ok(_) => Ok(false),
            Err(_) => Ok(true),
        }
    }

    /// Stops the client process.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
