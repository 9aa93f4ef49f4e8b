//! Shared set-up of the user service's integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::BasicAckOptions;
use parley_common::events::{Envelope, Event, OtpRequested};
use parley_common::token::generate_ed25519_pem;
use parley_testkit::{Namespace, ServiceProcess};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_parley-user");
pub const T: Duration = Duration::from_secs(10);

/// One test's world: namespace, signing key, OTP secret.
pub struct Stack {
    pub ns: Namespace,
    pub key: tempfile::NamedTempFile,
    pub public_pem: String,
    pub extra: Vec<(String, String)>,
}

impl Stack {
    pub async fn new() -> anyhow::Result<Self> {
        let ns = Namespace::new().await?;
        let (private, public_pem) = generate_ed25519_pem()?;
        let mut key = tempfile::NamedTempFile::new()?;
        key.write_all(private.as_bytes())?;
        Ok(Self {
            ns,
            key,
            public_pem,
            extra: Vec::new(),
        })
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.extra.push((key.to_owned(), value.into()));
        self
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.ns.env();
        env.extend([
            (
                "PARLEY_JWT_PRIVATE_KEY_FILE".to_owned(),
                self.key.path().to_string_lossy().into_owned(),
            ),
            (
                "PARLEY_OTP_SECRET".to_owned(),
                "test-secret-test-secret-test-secret-0123".to_owned(),
            ),
            ("PARLEY_OTP_RESEND_SECS".to_owned(), "1".to_owned()),
            (
                "PARLEY_LOGIN_PER_IP_PER_HOUR".to_owned(),
                "100000".to_owned(),
            ),
        ]);
        for (k, v) in &self.extra {
            env.retain(|(key, _)| key != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    pub async fn service(&self) -> anyhow::Result<ServiceProcess> {
        let service = ServiceProcess::spawn(BIN, &self.env())?;
        service.wait_ready(Duration::from_secs(30)).await?;
        Ok(service)
    }

    /// A queue receiving what the mail service would: the code events.
    pub async fn mailbox(&self) -> anyhow::Result<Mailbox> {
        let (connection, channel) = parley_testkit::events::channel(&self.ns.amqp_url()).await?;
        let keys = [OtpRequested::TYPE, parley_common::events::UserUpdated::TYPE];
        let consumer = parley_testkit::events::tap(&channel, "", &keys).await?;
        Ok(Mailbox {
            _connection: connection,
            consumer,
        })
    }
}

pub struct Mailbox {
    _connection: lapin::Connection,
    consumer: lapin::Consumer,
}

impl Mailbox {
    /// The next event's envelope as JSON.
    pub async fn next(&mut self) -> anyhow::Result<Value> {
        let delivery = tokio::time::timeout(T, self.consumer.next())
            .await
            .map_err(|_| anyhow::anyhow!("no event within {T:?}"))?
            .ok_or_else(|| anyhow::anyhow!("consumer closed"))??;
        delivery.ack(BasicAckOptions::default()).await?;
        Ok(serde_json::from_slice(&delivery.data)?)
    }

    /// The code mailed to `email` (skipping other events).
    pub async fn code_for(&mut self, email: &str) -> anyhow::Result<String> {
        loop {
            let event = self.next().await?;
            if event["type"] == OtpRequested::TYPE {
                let otp: Envelope<OtpRequested> = serde_json::from_value(event)?;
                if otp.data.email == email {
                    return Ok(otp.data.code);
                }
            }
        }
    }
}

pub use parley_testkit::call;

/// Logs `email` in through the real flow; returns (user, token).
pub async fn login(
    service: &ServiceProcess,
    mailbox: &mut Mailbox,
    email: &str,
) -> anyhow::Result<(Value, String)> {
    // A repeated login may meet the (short, in tests) resend cooldown.
    parley_testkit::wait_until("login accepted", Duration::from_secs(5), || async {
        matches!(
            call(
                service,
                reqwest::Method::POST,
                "/api/v1/login",
                None,
                Some(serde_json::json!({"email": email}))
            )
            .await,
            Ok((200, _))
        )
    })
    .await?;
    let code = mailbox.code_for(&email.trim().to_lowercase()).await?;
    let (status, body) = call(
        service,
        reqwest::Method::POST,
        "/api/v1/verify",
        None,
        Some(serde_json::json!({"email": email, "otp": code})),
    )
    .await?;
    anyhow::ensure!(status == 200, "verify: {status} {body}");
    Ok((
        body["user"].clone(),
        body["token"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// An HTTP client whose connections leave from `ip`: any 127.0.0.0/8
/// address works on Linux, so each client is a distinct address to the service.
pub fn client_from(ip: &str) -> anyhow::Result<reqwest::Client> {
    let ip: std::net::IpAddr = ip.parse()?;
    Ok(reqwest::Client::builder()
        .local_address(ip)
        .timeout(T)
        .build()?)
}

/// POSTs JSON with extra headers (appended, so a name may repeat); returns
/// the status, the `Retry-After` seconds and the body.
pub async fn post(
    client: &reqwest::Client,
    service: &ServiceProcess,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> anyhow::Result<(u16, Option<u64>, Value)> {
    let mut request = client.post(service.url(path)).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok((status, retry, response.json().await.unwrap_or(Value::Null)))
}

/// A wrong code of the same length as `code`.
pub fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect()
}

/// The `message` of an error body.
pub fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

/// A real chat replica next to `user`, trusting the public key in `keys`.
pub async fn chat_replica(
    stack: &Stack,
    user: &ServiceProcess,
    keys: &std::path::Path,
) -> anyhow::Result<ServiceProcess> {
    let bin = parley_testkit::workspace_binary("parley-chat")?;
    let mut env = stack.ns.env();
    env.push((
        "PARLEY_JWT_PUBLIC_KEYS_FILE".to_owned(),
        keys.to_string_lossy().into_owned(),
    ));
    env.push(("PARLEY_USER_SERVICE_URL".to_owned(), user.url("")));
    let chat = ServiceProcess::spawn(&bin.to_string_lossy(), &env)?;
    chat.wait_ready(Duration::from_secs(30)).await?;
    Ok(chat)
}

/// The official Socket.IO client, connected to `chat` with `token`.
pub async fn socket(
    chat: &ServiceProcess,
    token: &str,
) -> anyhow::Result<parley_testkit::socketio::JsClient> {
    let mut c = parley_testkit::socketio::JsClient::start(
        &chat.url(""),
        Some(token),
        &[],
        parley_testkit::socketio::Transport::WebSocket,
    )
    .await?;
    c.connected(T).await?;
    Ok(c)
}
