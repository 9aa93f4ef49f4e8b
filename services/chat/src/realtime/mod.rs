//! Socket.IO: authenticated sockets, rooms, typing, sends, receipts, presence.
//!
//! Every socket proves who it is with a token at the handshake (`auth.token`,
//! or the `token` query parameter where enabled, from an allowed origin;
//! see [`handshake`]); the user id always comes from the token.
//! Each socket joins `user:<id>`, so events reach every device of a user on
//! every replica (through the Redis adapter).
//!
//! Client events go through one shared handler ([`Dispatch`]) that runs on
//! the socket's read loop: it checks the payload, the per-socket rate, and
//! admission (a per-socket and a per-pod bound on events in flight) before
//! any task is spawned, so excess work is refused at once and counted, never
//! queued. Ephemeral events (typing, receipts, repeated joins) are authorised
//! from the socket's own state: the chats it passed one membership check for.
//! Receipts are answered and broadcast once their batched write tells which
//! of the named messages they marked (see [`receipts`]).

pub mod admission;
pub mod blocking;
pub mod handshake;
pub mod lifecycle;
pub mod peers;
pub mod rate;
pub mod receipts;
pub mod redis_driver;
pub mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mongodb::bson::oid::ObjectId;
use parley_common::api_error::ApiError;
use parley_common::revocation::RevocationError;
use parley_common::token::{Claims, TokenVerifier};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Emitter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, MessageHandler};
use socketioxide::socket::Socket;
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

use crate::presence::Transition;
use crate::realtime::admission::{Admission, Class, Refusal, Ticket};
use crate::realtime::lifecycle::{Action, Lifecycle};
use crate::realtime::peers::Peers;
use crate::realtime::rate::TokenBucket;
use crate::realtime::receipts::Receipt;
use crate::realtime::redis_driver::ResilientDriver;
use crate::service::{self, SendInput, chat_room, user_room};
use crate::state::AppState;

/// The adapter: socketioxide's Redis adapter on the resilient driver.
pub type Adapter = CustomRedisAdapter<Emitter, ResilientDriver>;

/// Largest Socket.IO packet accepted (bigger ones close that socket only).
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Packets waiting to be written to one client before emits to it fail
/// (counted as dropped relays). socketioxide's default is 128; the queue's
/// memory is only taken while a client lags, so a larger bound rides out a
/// short stall of a busy client instead of dropping its events.
pub const SOCKET_BUFFER_PACKETS: usize = 256;

/// Adapter messages from other pods waiting to be handled before the driver
/// drops them (counted in `socketio_adapter_dropped_total`); the adapter's
/// default is 1,024, a fifth of a second of 5k/s.
pub const ADAPTER_STREAM_BUFFER: usize = 8192;

/// Websocket read buffer per socket (socketioxide's default is 4 KiB;
/// larger frames are read in several steps).
pub const WS_READ_BUFFER_BYTES: usize = 1024;

/// Chats one socket remembers as authorised (beyond that, each use is checked).
pub const MAX_AUTHORISED_CHATS: usize = 512;

/// A chat a socket passed the membership check for.
///
/// Chats are 1:1 pairs whose members never change (no route adds or removes
/// members), so a passed check stays true for the life of the socket. Failed
/// checks are never remembered. Whether a member blocked the other is read
/// in the same check; a change of it makes the socket forget the chat (see
/// [`blocking`]).
#[derive(Debug)]
pub struct AuthorisedChat {
    /// The chat id, hex.
    pub chat_hex: String,
    /// The user rooms of the other members.
    pub others: Vec<String>,
    /// A member blocked the other: no typing or receipts.
    pub blocked: bool,
}

/// Who a socket belongs to and what it may do, set by the handshake check.
pub struct SocketState {
    /// The user.
    pub id: ObjectId,
    /// The user id, hex.
    pub hex: String,
    /// Verified token claims.
    pub claims: Claims,
    bucket: Mutex<TokenBucket>,
    chats: Mutex<HashMap<ObjectId, Arc<AuthorisedChat>>>,
    /// Events in flight, per class (relays do not wait behind sends).
    in_flight: [AtomicU32; 2],
    /// Presence registration, whichever of connect and disconnect runs first.
    lifecycle: Lifecycle,
    /// Cancelled when the socket is gone (stops its expiry timer).
    closed: tokio_util::sync::CancellationToken,
}

impl SocketState {
    /// A fresh state for `claims` with a full rate bucket.
    pub fn new(id: ObjectId, claims: Claims, rate: u32, burst: u32) -> Self {
        Self {
            id,
            hex: id.to_hex(),
            claims,
            bucket: Mutex::new(TokenBucket::new(rate, burst, Instant::now())),
            chats: Mutex::new(HashMap::new()),
            in_flight: [AtomicU32::new(0), AtomicU32::new(0)],
            lifecycle: Lifecycle::default(),
            closed: tokio_util::sync::CancellationToken::new(),
        }
    }

    fn allow(&self) -> bool {
        self.bucket
            .lock()
            .map(|mut b| b.try_take(Instant::now()))
            .unwrap_or(false)
    }

    /// The chat, when this socket already passed its membership check.
    pub fn authorised(&self, chat: &ObjectId) -> Option<Arc<AuthorisedChat>> {
        self.chats.lock().ok()?.get(chat).cloned()
    }

    /// Remembers a passed membership check (up to [`MAX_AUTHORISED_CHATS`]).
    pub fn remember(
        &self,
        chat: ObjectId,
        members: &[ObjectId],
        blocked: bool,
    ) -> Arc<AuthorisedChat> {
        let entry = Arc::new(AuthorisedChat {
            chat_hex: chat.to_hex(),
            others: members
                .iter()
                .filter(|m| **m != self.id)
                .map(user_room)
                .collect(),
            blocked,
        });
        if let Ok(mut chats) = self.chats.lock()
            && chats.len() < MAX_AUTHORISED_CHATS
        {
            chats.insert(chat, entry.clone());
        }
        entry
    }

    /// Forgets the chats shared with the user of `room` (their next use is
    /// checked again).
    pub fn forget_peer(&self, room: &str) {
        if let Ok(mut chats) = self.chats.lock() {
            chats.retain(|_, entry| !entry.others.iter().any(|o| o == room));
        }
    }

    /// Forgets every chat.
    pub fn forget_all(&self) {
        if let Ok(mut chats) = self.chats.lock() {
            chats.clear();
        }
    }

    /// How many chats this socket remembers.
    pub fn authorised_count(&self) -> usize {
        self.chats.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// The per-socket state as kept in the socket's extensions (cheap to clone).
#[derive(Clone)]
pub struct SocketUser(pub Arc<SocketState>);

/// Builds the Socket.IO service and handle over Redis at `redis_url`.
///
/// One service (one engine) for the whole router: applying the layer to an
/// axum `Router` would give each route its own engine, and polling sessions
/// would not be found from one request to the next.
pub fn build(
    redis_url: &str,
    channel_prefix: String,
    connect_timeout: std::time::Duration,
) -> Result<(axum::Router, SocketIo<Adapter>), redis_driver::DriverError> {
    let driver = ResilientDriver::new(redis_url)?;
    let ctr = RedisAdapterCtr::new_with_driver(
        driver,
        RedisAdapterConfig::new()
            .with_prefix(channel_prefix)
            .with_stream_buffer(ADAPTER_STREAM_BUFFER),
    );
    let (service, io) = SocketIo::builder()
        .max_payload(MAX_PACKET_BYTES as u64)
        .ws_max_message_size(MAX_PACKET_BYTES)
        .ws_max_frame_size(MAX_PACKET_BYTES)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .max_buffer_size(SOCKET_BUFFER_PACKETS)
        .connect_timeout(connect_timeout)
        .with_adapter::<Adapter>(ctr)
        .build_svc();
    Ok((
        axum::Router::new().route_service("/socket.io/", service),
        io,
    ))
}

/// Why a handshake was refused; the client sees the message in `connect_error`.
#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Pure: a chat id given as a string or as `{chatId}`.
pub fn chat_id_of(payload: &Value) -> Option<&str> {
    payload
        .as_str()
        .or_else(|| payload.get("chatId").and_then(Value::as_str))
}

fn error_body(error: &ApiError) -> Value {
    json!({ "error": { "status": error.status.as_u16(), "message": error.message } })
}

/// Answers through the acknowledgement (when asked for) and, for errors,
/// with a `chatError` event too (old clients send without acknowledgements).
fn reply(
    socket: &SocketRef<Adapter>,
    ack: AckSender<Adapter>,
    event: &str,
    result: Result<Value, ApiError>,
) {
    let body = match result {
        Ok(body) => body,
        Err(error) => {
            let body = error_body(&error);
            let _ = socket.emit("chatError", &json!({ "event": event, "status": error.status.as_u16(), "message": error.message }));
            body
        }
    };
    let _ = ack.send(&body);
}

/// Tells the sender an event was refused for load: through the
/// acknowledgement when it asked for one, otherwise with `chatError`
/// (one packet either way, so refusing stays cheap).
fn refuse(
    socket: &SocketRef<Adapter>,
    ack: AckSender<Adapter>,
    wants_ack: bool,
    event: &'static str,
    refusal: Refusal,
) {
    admission::count_refusal(event, refusal);
    let error = refusal.error();
    if wants_ack {
        let _ = ack.send(&error_body(&error));
    } else {
        let _ = socket.emit(
            "chatError",
            &json!({ "event": event, "status": error.status.as_u16(), "message": error.message }),
        );
    }
}

fn socket_user(socket: &Socket<Adapter>) -> Option<SocketUser> {
    socket.extensions.get::<SocketUser>()
}

/// The prefix of the adapter's Redis channels.
pub fn channel_prefix(redis: &parley_common::cache::Redis) -> String {
    redis.key("socket.io")
}

/// Registers the default namespace.
pub async fn register(
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), socketioxide_redis::InitError<ResilientDriver>> {
    let verifier = state.config.verifier.clone();
    let (rate, burst) = (
        state.config.socket_events_per_sec,
        state.config.socket_event_burst,
    );
    let peers = Peers::default();
    let dispatch = Dispatch(Arc::new(Shared {
        admission: Admission::new(&state.config.admission),
        peers: peers.clone(),
        state: state.clone(),
    }));
    let for_auth = state.clone();
    let auth = move |socket: SocketRef<Adapter>, TryData(payload): TryData<Value>| {
        let verifier: TokenVerifier = verifier.clone();
        let state = for_auth.clone();
        let dispatch = dispatch.clone();
        async move {
            let policy = &state.config.handshake;
            let parts = socket.req_parts();
            let origin = parts
                .headers
                .get(axum::http::header::ORIGIN)
                .map(|v| v.to_str().unwrap_or("?"));
            if !policy.origin_allowed(origin) {
                metrics::counter!("chat_socket_handshakes_refused_total", "reason" => "origin")
                    .increment(1);
                return Err(Refused("origin not allowed"));
            }
            let token = policy
                .token(payload.ok().as_ref(), parts.uri.query())
                .ok_or(Refused(policy.missing_token()))?;
            let claims = verifier.verify(&token).map_err(|e| match e {
                parley_common::token::TokenError::Expired => Refused("token expired"),
                parley_common::token::TokenError::WrongScope => {
                    Refused("token not meant for this service")
                }
                _ => Refused("invalid token"),
            })?;
            // No leeway for sockets: one would be closed again at once.
            if claims.exp <= chrono::Utc::now().timestamp() {
                return Err(Refused("token expired"));
            }
            state
                .revocations
                .check(&claims)
                .await
                .map_err(|e| match e {
                    RevocationError::Revoked => Refused("token revoked"),
                    RevocationError::Unavailable(_) => Refused("service unavailable, try again"),
                })?;
            let id = ObjectId::parse_str(&claims.sub).map_err(|_| Refused("invalid token"))?;
            let user = SocketUser(Arc::new(SocketState::new(id, claims, rate, burst)));
            prepare(&state, &socket, &user, dispatch);
            socket.extensions.insert(user);
            Ok::<(), Refused>(())
        }
    };
    let on_connect = {
        let state = state.clone();
        move |socket: SocketRef<Adapter>| {
            let state = state.clone();
            async move { connected(state, socket).await }
        }
    };
    state.io.ns("/", on_connect.with(auth)).await?;
    // Only now is this pod's own subscription in place.
    peers.watch(
        state.redis.clone(),
        peers::request_channel(&channel_prefix(&state.redis)),
        shutdown,
    );
    Ok(())
}

/// Joins the user's room and registers the event handlers. Runs inside the
/// handshake check, before the client is told it is connected: socketioxide
/// spawns the connect handler only after that, so a client emitting at once
/// would otherwise race the registrations and lose its first event.
///
/// One shared handler serves every event (registered as the fallback, so
/// the socket holds one boxed pointer instead of a map of closures).
fn prepare(state: &AppState, socket: &SocketRef<Adapter>, user: &SocketUser, dispatch: Dispatch) {
    socket.join(user_room(&user.0.id));
    socket.on_fallback(dispatch);
    let on_disconnect = {
        let state = state.clone();
        move |socket: SocketRef<Adapter>| {
            let state = state.clone();
            async move { disconnected(state, socket).await }
        }
    };
    socket.on_disconnect(on_disconnect);
}

/// The client events the service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// `joinChat`.
    JoinChat,
    /// `leaveChat`.
    LeaveChat,
    /// `typing`.
    Typing,
    /// `stopTyping`.
    StopTyping,
    /// `sendMessage`.
    SendMessage,
    /// `messageDelivered`.
    MessageDelivered,
}

impl ClientEvent {
    /// Pure: the event for a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "joinChat" => Self::JoinChat,
            "leaveChat" => Self::LeaveChat,
            "typing" => Self::Typing,
            "stopTyping" => Self::StopTyping,
            "sendMessage" => Self::SendMessage,
            "messageDelivered" => Self::MessageDelivered,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::JoinChat => "joinChat",
            Self::LeaveChat => "leaveChat",
            Self::Typing => "typing",
            Self::StopTyping => "stopTyping",
            Self::SendMessage => "sendMessage",
            Self::MessageDelivered => "messageDelivered",
        }
    }
}

/// What every socket's handler shares.
struct Shared {
    state: AppState,
    admission: Admission,
    peers: Peers,
}

/// The one message handler of every socket.
#[derive(Clone)]
pub struct Dispatch(Arc<Shared>);

/// Marker type of [`Dispatch`]'s handler implementation.
pub struct DispatchKind;

impl MessageHandler<Adapter, DispatchKind> for Dispatch {
    fn call(
        &self,
        s: Arc<Socket<Adapter>>,
        mut v: socketioxide::handler::Value,
        ack_id: Option<i64>,
    ) {
        let Ok(Event(name)) =
            <Event as FromMessageParts<Adapter>>::from_message_parts(&s, &mut v, &ack_id)
        else {
            return;
        };
        let Some(event) = ClientEvent::parse(&name) else {
            return;
        };
        let Ok(ack) = <AckSender<Adapter> as FromMessageParts<Adapter>>::from_message_parts(
            &s, &mut v, &ack_id,
        );
        let Ok(socket) = <SocketRef<Adapter> as FromMessageParts<Adapter>>::from_message_parts(
            &s, &mut v, &ack_id,
        );
        let Ok(TryData(payload)) =
            <TryData<Value> as FromMessageParts<Adapter>>::from_message_parts(&s, &mut v, &ack_id);
        self.0
            .handle(socket, event, payload.ok(), ack, ack_id.is_some());
    }
}

/// Releases the socket's in-flight slot when the event's work ends.
struct SocketSlot(Arc<SocketState>, usize);

impl SocketSlot {
    /// Takes a slot of `class`; also returns how many were taken before.
    fn take(state: &Arc<SocketState>, class: Class) -> (Self, u32) {
        let i = match class {
            Class::Relay => 0,
            Class::Store => 1,
        };
        let previous = state.in_flight[i].fetch_add(1, Ordering::AcqRel);
        (Self(state.clone(), i), previous)
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.in_flight[self.1].fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything a spawned event task holds: its admission and socket slot.
struct Work {
    _ticket: Ticket,
    _slot: SocketSlot,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TypingBody<'a> {
    chat_id: &'a str,
    user_id: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendPayload {
    chat_id: String,
    text: String,
    client_message_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveredPayload {
    chat_id: String,
    message_ids: Vec<String>,
}

impl Shared {
    /// Runs on the socket's read loop: cheap checks and refusals inline,
    /// everything that awaits in one admitted task.
    fn handle(
        self: &Arc<Self>,
        socket: SocketRef<Adapter>,
        event: ClientEvent,
        payload: Option<Value>,
        ack: AckSender<Adapter>,
        wants_ack: bool,
    ) {
        let name = event.name();
        admission::count_event(name);
        let Some(user) = socket_user(&socket) else {
            return;
        };
        let user = user.0;
        let Some(payload) = payload else {
            return reply(
                &socket,
                ack,
                name,
                Err(ApiError::bad_request("payload is not valid JSON")),
            );
        };
        if !user.allow() {
            return reply(
                &socket,
                ack,
                name,
                Err(ApiError::too_many("too many events; slow down", 1)),
            );
        }
        // Validation that needs no I/O, and the cached authorisation.
        let chat_id = match event {
            ClientEvent::SendMessage => None,
            ClientEvent::MessageDelivered => payload
                .get("chatId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => chat_id_of(&payload).map(str::to_owned),
        };
        let parsed = match (event, chat_id) {
            (ClientEvent::SendMessage, _) => None,
            (_, None) if event != ClientEvent::MessageDelivered => {
                return reply(
                    &socket,
                    ack,
                    name,
                    Err(ApiError::bad_request("chatId is required")),
                );
            }
            (_, None) => None,
            (_, Some(raw)) => match crate::domain::parse_id("chatId", &raw) {
                Ok(id) => Some(id),
                Err(e) => return reply(&socket, ack, name, Err(e)),
            },
        };
        if event == ClientEvent::LeaveChat {
            if let Some(chat) = parsed {
                socket.leave(chat_room(&chat));
            }
            return reply(&socket, ack, name, Ok(json!({ "ok": true })));
        }
        let known = parsed.and_then(|c| user.authorised(&c));
        if event == ClientEvent::JoinChat
            && let (Some(chat), Some(entry)) = (parsed, &known)
        {
            socket.join(chat_room(&chat));
            return reply(
                &socket,
                ack,
                name,
                Ok(json!({ "ok": true, "chatId": entry.chat_hex })),
            );
        }
        // Alone on the adapter: a typing relay is a local emit that never
        // waits, done right here on the read loop (no task, no ticket).
        if let Some(entry) = &known
            && matches!(event, ClientEvent::Typing | ClientEvent::StopTyping)
            && (entry.blocked || self.peers.alone())
        {
            let result = blocking::usable(entry).and_then(|()| self.relay_now(&user, event, entry));
            return reply(&socket, ack, name, result);
        }
        // Admission: a slot of this socket (per class), then a ticket of the pod.
        let class = match (event, &known) {
            // Receipts wait for their (batched) write: they are store work.
            (ClientEvent::Typing | ClientEvent::StopTyping, Some(_)) => Class::Relay,
            _ => Class::Store,
        };
        let (slot, previous) = SocketSlot::take(&user, class);
        if previous >= self.admission.per_socket() {
            drop(slot);
            return refuse(&socket, ack, wants_ack, name, Refusal::Socket);
        }
        let Some(ticket) = self.admission.admit(class) else {
            drop(slot);
            return refuse(&socket, ack, wants_ack, name, Refusal::Pod);
        };
        let work = Work {
            _ticket: ticket,
            _slot: slot,
        };
        let shared = self.clone();
        tokio::spawn(async move {
            let result = shared
                .run(&socket, &user, event, payload, parsed, known)
                .await;
            reply(&socket, ack, name, result);
            drop(work);
        });
    }

    /// A typing relay through the local adapter only, completed in place.
    fn relay_now(
        &self,
        user: &SocketState,
        event: ClientEvent,
        entry: &AuthorisedChat,
    ) -> Result<Value, ApiError> {
        use futures::FutureExt;
        let body = TypingBody {
            chat_id: &entry.chat_hex,
            user_id: &user.hex,
        };
        let out = typing_out(event);
        let io = self.state.io.local();
        let sent = match entry.others.as_slice() {
            [] => Some(Ok(())),
            [one] => io.to(one.clone()).emit(out, &body).now_or_never(),
            many => io.to(many.to_vec()).emit(out, &body).now_or_never(),
        };
        match sent {
            Some(Ok(())) => Ok(json!({ "ok": true })),
            Some(Err(e)) => Err(broadcast_error(e)),
            None => Err(ApiError::internal("local emit did not complete at once")),
        }
    }

    /// Emits `event` to the given user rooms: on every replica, or only
    /// here while this pod is alone on the adapter.
    async fn emit_to<T: Serialize + ?Sized>(
        &self,
        rooms: &[String],
        event: &str,
        body: &T,
    ) -> Result<(), ApiError> {
        let io = if self.peers.alone() {
            self.state.io.local()
        } else {
            self.state.io.broadcast()
        };
        let result = match rooms {
            [] => return Ok(()),
            [one] => io.to(one.clone()).emit(event, body).await,
            many => io.to(many.to_vec()).emit(event, body).await,
        };
        result.map_err(broadcast_error)
    }

    /// The admitted part of an event.
    async fn run(
        &self,
        socket: &SocketRef<Adapter>,
        user: &Arc<SocketState>,
        event: ClientEvent,
        payload: Value,
        chat: Option<ObjectId>,
        known: Option<Arc<AuthorisedChat>>,
    ) -> Result<Value, ApiError> {
        let state = &self.state;
        let authorised = move |chat: ObjectId, known: Option<Arc<AuthorisedChat>>| async move {
            match known {
                Some(entry) => Ok::<_, ApiError>(entry),
                None => {
                    let doc = service::member_chat(state, &chat, &user.id).await?;
                    Ok(user.remember(chat, &doc.members, !doc.blocked_by.is_empty()))
                }
            }
        };
        match event {
            ClientEvent::JoinChat => {
                let chat = chat.ok_or_else(|| ApiError::bad_request("chatId is required"))?;
                let entry = authorised(chat, known).await?;
                socket.join(chat_room(&chat));
                Ok(json!({ "ok": true, "chatId": entry.chat_hex }))
            }
            ClientEvent::Typing | ClientEvent::StopTyping => {
                let chat = chat.ok_or_else(|| ApiError::bad_request("chatId is required"))?;
                let entry = authorised(chat, known).await?;
                blocking::usable(&entry)?;
                let body = TypingBody {
                    chat_id: &entry.chat_hex,
                    user_id: &user.hex,
                };
                self.emit_to(&entry.others, typing_out(event), &body)
                    .await?;
                Ok(json!({ "ok": true }))
            }
            ClientEvent::MessageDelivered => {
                let p: DeliveredPayload = serde_json::from_value(payload).map_err(|e| {
                    ApiError::bad_request(format!("expected {{chatId, messageIds}}: {e}"))
                })?;
                let chat = match chat {
                    Some(chat) => chat,
                    None => crate::domain::parse_id("chatId", &p.chat_id)?,
                };
                let ids = service::receipt_ids(&p.message_ids)?;
                let entry = authorised(chat, known).await?;
                blocking::usable(&entry)?;
                // Only what this receipt actually marked is told to anyone.
                let marked = state
                    .receipts
                    .mark(Receipt {
                        chat,
                        recipient: user.id,
                        ids,
                    })
                    .await?;
                let marked: Vec<String> = marked.iter().map(|id| id.to_hex()).collect();
                if !marked.is_empty() {
                    let payload = json!({
                        "chatId": entry.chat_hex,
                        "deliveredTo": user.hex,
                        "messageIds": marked,
                        "deliveredAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    });
                    self.emit_to(&entry.others, "messagesDelivered", &payload)
                        .await?;
                }
                Ok(json!({ "ok": true, "count": marked.len(), "messageIds": marked }))
            }
            ClientEvent::SendMessage => {
                let p: SendPayload = serde_json::from_value(payload).map_err(|e| {
                    ApiError::bad_request(format!(
                        "expected {{chatId, text, clientMessageId?}}: {e}"
                    ))
                })?;
                let (message, _) = service::send(
                    state,
                    &user.claims,
                    SendInput {
                        chat_id: p.chat_id,
                        text: Some(p.text),
                        client_message_id: p.client_message_id,
                        image: None,
                    },
                )
                .await?;
                Ok(json!({ "message": message }))
            }
            ClientEvent::LeaveChat => Ok(json!({ "ok": true })),
        }
    }
}

/// Pure: what the sender hears when a relay could not be handed over. A
/// recipient whose bounded send buffer is full is not keeping up: the relay
/// is dropped for it (counted) rather than queued.
pub fn relay_error(socket_side: bool) -> ApiError {
    if socket_side {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "recipient is not keeping up: event dropped",
            )
        }
    } else {
        ApiError::unavailable("redis", "socket.io adapter")
    }
}

fn broadcast_error(error: socketioxide::BroadcastError) -> ApiError {
    let socket_side = matches!(error, socketioxide::BroadcastError::Socket(_));
    if socket_side {
        metrics::counter!("chat_socket_relays_dropped_total").increment(1);
    } else {
        tracing::warn!(%error, "relay not sent");
    }
    relay_error(socket_side)
}

/// The event a typing relay is sent as.
fn typing_out(event: ClientEvent) -> &'static str {
    if event == ClientEvent::StopTyping {
        "userStoppedTyping"
    } else {
        "userTyping"
    }
}

/// After the handshake: presence, and the online list for this socket.
///
/// socketioxide runs this in a task of its own, so the socket may already
/// be gone (and its disconnect handled) by now: the lifecycle decides.
async fn connected(state: AppState, socket: SocketRef<Adapter>) {
    let Some(SocketUser(user)) = socket_user(&socket) else {
        let _ = socket.disconnect();
        return;
    };
    let id = user.id;
    let partners = match state.store.partners_of(&id).await {
        Ok(p) => p,
        Err(error) => {
            tracing::warn!(error = %error.message, "chat partners unavailable at connect");
            Vec::new()
        }
    };
    {
        let mut step = user.lifecycle.lock().await;
        let (next, action) = lifecycle::on_connect(*step, socket.connected());
        *step = next;
        if action != Action::Register {
            return;
        }
        metrics::gauge!("chat_sockets_connected").increment(1.0);
        session::expire(
            socket.clone(),
            &SocketUser(user.clone()),
            user.closed.clone(),
        );
        match state.presence.connected(&id, socket.id.as_str()).await {
            Ok(Transition::CameOnline) => {
                drop(step);
                presence_changed(&state, &id, &partners, true).await;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "presence unavailable at connect"),
        }
    }
    send_online_list(&state, &id, &partners).await;
}

async fn disconnected(state: AppState, socket: SocketRef<Adapter>) {
    let Some(SocketUser(user)) = socket_user(&socket) else {
        return;
    };
    user.closed.cancel();
    let id = user.id;
    let transition = {
        let mut step = user.lifecycle.lock().await;
        let (next, action) = lifecycle::on_disconnect(*step);
        *step = next;
        if action != Action::Unregister {
            return;
        }
        metrics::gauge!("chat_sockets_connected").decrement(1.0);
        state.presence.disconnected(&id, socket.id.as_str()).await
    };
    match transition {
        Ok(Transition::WentOffline) => {
            if let Err(error) = state
                .store
                .set_last_seen(&id, mongodb::bson::DateTime::now())
                .await
            {
                tracing::warn!(error = %error.message, "lastSeenAt not stored");
            }
            match state.store.partners_of(&id).await {
                Ok(partners) => presence_changed(&state, &id, &partners, false).await,
                Err(error) => tracing::warn!(error = %error.message, "presence fan-out skipped"),
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "presence unavailable at disconnect"),
    }
}

/// Partners whose `getOnlineUser` list is refreshed on a change of state.
pub const PRESENCE_REFRESH_LIMIT: usize = 200;

/// Tells the user's chat partners (only them) about a change of state.
///
/// Old clients only read `getOnlineUser`, so each partner's list is resent:
/// the partners' own contacts come from one query and their online state
/// from one pipelined Redis round trip, whatever the number of partners.
async fn presence_changed(state: &AppState, user: &ObjectId, partners: &[ObjectId], online: bool) {
    if partners.is_empty() {
        return;
    }
    let body =
        json!({ "userId": user.to_hex(), "online": online, "at": chrono::Utc::now().to_rfc3339() });
    let rooms: Vec<String> = partners.iter().map(user_room).collect();
    if let Err(error) = state.io.to(rooms).emit("presence", &body).await {
        tracing::warn!(%error, "presence event not sent");
    }
    let partners = &partners[..partners.len().min(PRESENCE_REFRESH_LIMIT)];
    let contacts = match state.store.partners_of_many(partners).await {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(error = %error.message, "getOnlineUser refresh skipped");
            return;
        }
    };
    let mut everyone: Vec<ObjectId> = contacts.values().flatten().copied().collect();
    everyone.sort();
    everyone.dedup();
    let online_now: std::collections::HashSet<ObjectId> =
        match state.presence.online(&everyone).await {
            Ok(o) => o.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "presence unavailable");
                return;
            }
        };
    for partner in partners {
        let list = crate::domain::online_list(
            contacts.get(partner).map(Vec::as_slice).unwrap_or_default(),
            &online_now,
        );
        if let Err(error) = state
            .io
            .to(user_room(partner))
            .emit("getOnlineUser", &list)
            .await
        {
            tracing::warn!(%error, "getOnlineUser not sent");
        }
    }
}

/// Sends each of `users` their `getOnlineUser` list again (after a chat was
/// accepted, or a block changed who may see whom).
pub async fn refresh_presence(state: &AppState, users: &[ObjectId]) {
    let contacts = match state.store.partners_of_many(users).await {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(error = %error.message, "getOnlineUser refresh skipped");
            return;
        }
    };
    for user in users {
        let partners = contacts.get(user).map(Vec::as_slice).unwrap_or_default();
        send_online_list(state, user, partners).await;
    }
}

/// Sends `getOnlineUser` (which of `contacts` are online) to every socket of `user`.
async fn send_online_list(state: &AppState, user: &ObjectId, contacts: &[ObjectId]) {
    let online: std::collections::HashSet<ObjectId> = match state.presence.online(contacts).await {
        Ok(o) => o.into_iter().collect(),
        Err(error) => {
            tracing::warn!(%error, "presence unavailable");
            return;
        }
    };
    let list = crate::domain::online_list(contacts, &online);
    if let Err(error) = state
        .io
        .to(user_room(user))
        .emit("getOnlineUser", &list)
        .await
    {
        tracing::warn!(%error, "getOnlineUser not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids_in_both_shapes() {
        assert_eq!(chat_id_of(&json!("c1")), Some("c1"));
        assert_eq!(
            chat_id_of(&json!({"chatId": "c2", "userId": "ignored"})),
            Some("c2")
        );
        assert_eq!(chat_id_of(&json!({"chatId": 5})), None);
        assert_eq!(chat_id_of(&json!(null)), None);
    }

    #[test]
    fn a_full_recipient_is_a_dropped_relay_not_an_outage() {
        let full = relay_error(true);
        assert_eq!(full.status.as_u16(), 503);
        assert!(full.message.contains("not keeping up"), "{}", full.message);
        assert!(relay_error(false).message.contains("redis"));
    }

    #[test]
    fn event_names_round_trip_and_unknown_ones_are_ignored() {
        for event in [
            ClientEvent::JoinChat,
            ClientEvent::LeaveChat,
            ClientEvent::Typing,
            ClientEvent::StopTyping,
            ClientEvent::SendMessage,
            ClientEvent::MessageDelivered,
        ] {
            assert_eq!(ClientEvent::parse(event.name()), Some(event));
        }
        assert_eq!(ClientEvent::parse("getOnlineUser"), None);
    }

    fn claims(id: &ObjectId) -> Claims {
        Claims {
            sub: id.to_hex(),
            email: "a@example.com".into(),
            name: "a".into(),
            iat: 0,
            exp: i64::MAX,
            iss: parley_common::token::DEFAULT_ISSUER.into(),
            aud: parley_common::token::DEFAULT_AUDIENCE.into(),
            generation: 0,
        }
    }

    #[test]
    fn authorised_chats_address_the_other_members_and_are_bounded() {
        let me = ObjectId::new();
        let other = ObjectId::new();
        let state = SocketState::new(me, claims(&me), 10, 10);
        let chat = ObjectId::new();
        assert!(state.authorised(&chat).is_none());
        state.remember(chat, &[me, other], false);
        let entry = state.authorised(&chat).expect("remembered");
        assert_eq!(entry.others, vec![user_room(&other)]);
        assert_eq!(entry.chat_hex, chat.to_hex());
        for _ in 0..MAX_AUTHORISED_CHATS + 10 {
            state.remember(ObjectId::new(), &[me, other], false);
        }
        assert_eq!(state.authorised_count(), MAX_AUTHORISED_CHATS);
        state.forget_peer(&user_room(&ObjectId::new()));
        assert_eq!(state.authorised_count(), MAX_AUTHORISED_CHATS);
        state.forget_peer(&user_room(&other));
        assert_eq!(state.authorised_count(), 0);
    }
}
