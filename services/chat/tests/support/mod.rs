//! Shared set-up of the chat service's integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};
use parley_common::token::{TokenSigner, generate_ed25519_pem};
use parley_testkit::{Namespace, ServiceProcess, free_port};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_parley-chat");
pub const T: Duration = Duration::from_secs(10);

/// A test user with a valid token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: ObjectId,
    pub name: String,
    pub token: String,
}

/// One test's world: its namespace, signing key and the env for chat replicas.
pub struct Stack {
    pub ns: Namespace,
    pub signer: TokenSigner,
    /// The signer's private key (PKCS#8 PEM), for tokens of any shape.
    pub private_pem: String,
    keys: tempfile::NamedTempFile,
    pub db: mongodb::Database,
    pub extra_env: Vec<(String, String)>,
}

impl Stack {
    pub async fn new() -> anyhow::Result<Self> {
        let ns = Namespace::new().await?;
        let (private, public) = generate_ed25519_pem()?;
        let signer = TokenSigner::from_pem(&private, Duration::from_secs(3600))?;
        let mut keys = tempfile::NamedTempFile::new()?;
        keys.write_all(public.as_bytes())?;
        let db = ns.mongo().await?;
        Ok(Self {
            ns,
            signer,
            private_pem: private,
            keys,
            db,
            extra_env: Vec::new(),
        })
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.ns.env();
        env.push((
            "PARLEY_JWT_PUBLIC_KEYS_FILE".into(),
            self.keys.path().to_string_lossy().into_owned(),
        ));
        // Nothing listens there: profiles fall back to placeholders.
        let closed = free_port().unwrap_or(1);
        env.push((
            "PARLEY_USER_SERVICE_URL".into(),
            format!("http://127.0.0.1:{closed}"),
        ));
        for (k, v) in &self.extra_env {
            env.retain(|(key, _)| key != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.extra_env.push((key.to_owned(), value.into()));
        self
    }

    pub async fn replica(&self) -> anyhow::Result<ServiceProcess> {
        let service = ServiceProcess::spawn(BIN, &self.env())?;
        service.wait_ready(Duration::from_secs(30)).await?;
        Ok(service)
    }

    pub async fn user(&self, name: &str) -> anyhow::Result<User> {
        let id = ObjectId::new();
        let now = DateTime::now();
        self.db
            .collection::<mongodb::bson::Document>("users")
            .insert_one(doc! {"_id": id, "name": name, "email": format!("{name}@example.com"), "createdAt": now, "updatedAt": now})
            .await?;
        let token = self.signer.sign(
            &id.to_hex(),
            &format!("{name}@example.com"),
            name,
            chrono::Utc::now().timestamp(),
        )?;
        Ok(User {
            id,
            name: name.to_owned(),
            token,
        })
    }

    pub fn expired_token(&self, user: &User) -> anyhow::Result<String> {
        self.sign_raw(&serde_json::json!({
            "sub": user.id.to_hex(), "email": "x@example.com", "name": user.name,
            "iat": 1, "exp": 2, "iss": "parley-user", "aud": "parley",
        }))
    }

    /// Signs any claims with the stack's key (tokens parley would not issue).
    pub fn sign_raw(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.signer.kid().to_owned());
        let key = jsonwebtoken::EncodingKey::from_ed_pem(self.private_pem.as_bytes())?;
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }
}

pub use parley_testkit::call;

/// `user` calls `path` on `replica` with their token: the status and body.
pub async fn rest(
    replica: &ServiceProcess,
    user: &User,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    call(replica, method, path, Some(&user.token), body).await
}

/// `user` sends `text` to `chat` over REST: the status and body.
pub async fn send_text(
    replica: &ServiceProcess,
    user: &User,
    chat: &str,
    text: &str,
) -> anyhow::Result<(u16, Value)> {
    let body = serde_json::json!({"chatId": chat, "text": text});
    rest(
        replica,
        user,
        reqwest::Method::POST,
        "/api/v1/message",
        Some(body),
    )
    .await
}

/// `owner` creates a group with `members` named `name`; its chat id.
pub async fn create_group(
    replica: &ServiceProcess,
    owner: &User,
    members: &[&User],
    name: &str,
) -> anyhow::Result<String> {
    let ids: Vec<String> = members.iter().map(|m| m.id.to_hex()).collect();
    let (status, body) = rest(
        replica,
        owner,
        reqwest::Method::POST,
        "/api/v1/group",
        Some(serde_json::json!({"name": name, "memberIds": ids})),
    )
    .await?;
    anyhow::ensure!(status == 201, "create group: {status} {body}");
    Ok(body["chatId"].as_str().unwrap_or_default().to_owned())
}

/// Whether `list` (a JSON array of hex user ids) holds `user`.
pub fn lists(list: &Value, user: &User) -> bool {
    list.as_array()
        .is_some_and(|l| l.contains(&serde_json::json!(user.id.to_hex())))
}

/// Opens (or finds) the 1:1 chat between `a` and `b`, and has `b` open it
/// too (so both accepted it and see each other's presence); returns its id.
pub async fn open_chat(service: &ServiceProcess, a: &User, b: &User) -> anyhow::Result<String> {
    let chat = open_chat_one_sided(service, a, b).await?;
    let again = open_chat_one_sided(service, b, a).await?;
    anyhow::ensure!(chat == again, "one chat per pair: {chat} {again}");
    Ok(chat)
}

/// `a` opens (or finds) the 1:1 chat with `b`; `b` has not accepted it.
pub async fn open_chat_one_sided(
    service: &ServiceProcess,
    a: &User,
    b: &User,
) -> anyhow::Result<String> {
    let (status, body) = call(
        service,
        reqwest::Method::POST,
        "/api/v1/chat/new",
        Some(&a.token),
        Some(serde_json::json!({"otherUserId": b.id.to_hex()})),
    )
    .await?;
    anyhow::ensure!(status == 201 || status == 200, "chat/new: {status} {body}");
    Ok(body["chatId"].as_str().unwrap_or_default().to_owned())
}

impl Stack {
    /// Users `first` and `second` and their chat, opened through `replica`
    /// and accepted by both: the start of most tests.
    pub async fn pair_on(
        &self,
        replica: &ServiceProcess,
        first: &str,
        second: &str,
    ) -> anyhow::Result<(User, User, String)> {
        let first = self.user(first).await?;
        let second = self.user(second).await?;
        let chat = open_chat(replica, &first, &second).await?;
        Ok((first, second, chat))
    }
}

pub fn socket_url(service: &ServiceProcess) -> String {
    service.url("")
}

/// `user`'s Socket.IO client (the official one) on `replica`, connected
/// over websocket.
pub async fn connect(
    replica: &ServiceProcess,
    user: &User,
) -> anyhow::Result<parley_testkit::socketio::JsClient> {
    let mut c = parley_testkit::socketio::JsClient::start(
        &socket_url(replica),
        Some(&user.token),
        &[],
        parley_testkit::socketio::Transport::WebSocket,
    )
    .await?;
    c.connected(T).await?;
    Ok(c)
}
