//! Socket.IO: authenticated sockets, rooms, typing, sends, receipts, presence.
//!
//! Every socket proves who it is with a token at the handshake (`auth.token`
//! or the `token` query parameter); the user id always comes from the token.
//! Each socket joins `user:<id>`, so events reach every device of a user on
//! every replica (through the Redis adapter).

pub mod rate;
pub mod redis_driver;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mongodb::bson::oid::ObjectId;
use parley_common::api_error::ApiError;
use parley_common::token::{Claims, TokenVerifier};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Emitter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

use crate::presence::Transition;
use crate::realtime::rate::TokenBucket;
use crate::realtime::redis_driver::ResilientDriver;
use crate::service::{self, SendInput, chat_room, user_room};
use crate::state::AppState;

/// The adapter: socketioxide's Redis adapter on the resilient driver.
pub type Adapter = CustomRedisAdapter<Emitter, ResilientDriver>;

/// Largest Socket.IO packet accepted (bigger ones close that socket only).
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Who a socket belongs to, set by the handshake check.
#[derive(Clone)]
struct SocketUser {
    id: ObjectId,
    claims: Claims,
    bucket: Arc<Mutex<TokenBucket>>,
    chats: Arc<Mutex<HashSet<ObjectId>>>,
}

impl SocketUser {
    fn allow(&self) -> bool {
        self.bucket
            .lock()
            .map(|mut b| b.try_take(Instant::now()))
            .unwrap_or(false)
    }
}

/// Builds the Socket.IO service and handle over Redis at `redis_url`.
///
/// One service (one engine) for the whole router: applying the layer to an
/// axum `Router` would give each route its own engine, and polling sessions
/// would not be found from one request to the next.
pub fn build(
    redis_url: &str,
    channel_prefix: String,
) -> Result<(axum::Router, SocketIo<Adapter>), redis_driver::DriverError> {
    let driver = ResilientDriver::new(redis_url)?;
    let ctr = RedisAdapterCtr::new_with_driver(
        driver,
        RedisAdapterConfig::new().with_prefix(channel_prefix),
    );
    let (service, io) = SocketIo::builder()
        .max_payload(MAX_PACKET_BYTES as u64)
        .ws_max_message_size(MAX_PACKET_BYTES)
        .ws_max_frame_size(MAX_PACKET_BYTES)
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

/// Pure: the token from the auth payload (`{token}`) or the query string.
pub fn handshake_token(auth: Option<&Value>, query: Option<&str>) -> Option<String> {
    if let Some(token) = auth.and_then(|a| a.get("token")).and_then(Value::as_str) {
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        return Some(token.to_owned());
    }
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
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

fn socket_user(socket: &SocketRef<Adapter>) -> Option<SocketUser> {
    socket.extensions.get::<SocketUser>()
}

/// Registers the default namespace.
pub async fn register(
    state: AppState,
) -> Result<(), socketioxide_redis::InitError<ResilientDriver>> {
    let verifier = state.config.verifier.clone();
    let (rate, burst) = (
        state.config.socket_events_per_sec,
        state.config.socket_event_burst,
    );
    let for_auth = state.clone();
    let auth = move |socket: SocketRef<Adapter>, TryData(payload): TryData<Value>| {
        let verifier: TokenVerifier = verifier.clone();
        let state = for_auth.clone();
        async move {
            let token = handshake_token(payload.ok().as_ref(), socket.req_parts().uri.query())
                .ok_or(Refused(
                    "authentication required: pass auth.token or a token query parameter",
                ))?;
            let claims = verifier.verify(&token).map_err(|e| match e {
                parley_common::token::TokenError::Expired => Refused("token expired"),
                _ => Refused("invalid token"),
            })?;
            let id = ObjectId::parse_str(&claims.sub).map_err(|_| Refused("invalid token"))?;
            let user = SocketUser {
                id,
                claims,
                bucket: Arc::new(Mutex::new(TokenBucket::new(rate, burst, Instant::now()))),
                chats: Arc::new(Mutex::new(HashSet::new())),
            };
            prepare(&state, &socket, &user);
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
    state.io.ns("/", on_connect.with(auth)).await
}

/// Joins the user's room and registers every event handler. Runs inside the
/// handshake check, before the client is told it is connected: socketioxide
/// spawns the connect handler only after that, so a client emitting at once
/// would otherwise race the registrations and lose its first event.
fn prepare(state: &AppState, socket: &SocketRef<Adapter>, user: &SocketUser) {
    socket.join(user_room(&user.id));

    on(
        socket,
        state,
        "joinChat",
        |state, socket, user, payload| async move {
            let chat_id =
                chat_id_of(&payload).ok_or_else(|| ApiError::bad_request("chatId is required"))?;
            let chat_id = crate::domain::parse_id("chatId", chat_id)?;
            service::member_chat(&state, &chat_id, &user.id).await?;
            if let Ok(mut chats) = user.chats.lock() {
                chats.insert(chat_id);
            }
            socket.join(chat_room(&chat_id));
            Ok(json!({ "ok": true, "chatId": chat_id.to_hex() }))
        },
    );
    on(
        socket,
        state,
        "leaveChat",
        |_state, socket, _user, payload| async move {
            let chat_id =
                chat_id_of(&payload).ok_or_else(|| ApiError::bad_request("chatId is required"))?;
            let chat_id = crate::domain::parse_id("chatId", chat_id)?;
            socket.leave(chat_room(&chat_id));
            Ok(json!({ "ok": true }))
        },
    );
    for (event, out) in [
        ("typing", "userTyping"),
        ("stopTyping", "userStoppedTyping"),
    ] {
        on(
            socket,
            state,
            event,
            move |state, _socket, user, payload| async move {
                let chat_id = chat_id_of(&payload)
                    .ok_or_else(|| ApiError::bad_request("chatId is required"))?;
                let chat_id = crate::domain::parse_id("chatId", chat_id)?;
                let chat = service::member_chat(&state, &chat_id, &user.id).await?;
                let others: Vec<String> = chat
                    .members
                    .iter()
                    .filter(|m| **m != user.id)
                    .map(user_room)
                    .collect();
                let body = json!({ "chatId": chat_id.to_hex(), "userId": user.id.to_hex() });
                state
                    .io
                    .to(others)
                    .emit(out, &body)
                    .await
                    .map_err(|e| ApiError::unavailable("redis", e))?;
                Ok(json!({ "ok": true }))
            },
        );
    }
    on(
        socket,
        state,
        "sendMessage",
        |state, _socket, user, payload| async move {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Payload {
                chat_id: String,
                text: String,
                client_message_id: Option<String>,
            }
            let p: Payload = serde_json::from_value(payload).map_err(|e| {
                ApiError::bad_request(format!("expected {{chatId, text, clientMessageId?}}: {e}"))
            })?;
            let (message, _) = service::send(
                &state,
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
        },
    );
    on(
        socket,
        state,
        "messageDelivered",
        |state, _socket, user, payload| async move {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Payload {
                chat_id: String,
                message_ids: Vec<String>,
            }
            let p: Payload = serde_json::from_value(payload).map_err(|e| {
                ApiError::bad_request(format!("expected {{chatId, messageIds}}: {e}"))
            })?;
            let count =
                service::delivered(&state, &user.claims, &p.chat_id, &p.message_ids).await?;
            Ok(json!({ "ok": true, "count": count }))
        },
    );

    let on_disconnect = {
        let state = state.clone();
        move |socket: SocketRef<Adapter>| {
            let state = state.clone();
            async move { disconnected(state, socket).await }
        }
    };
    socket.on_disconnect(on_disconnect);
}

/// After the handshake: presence, and the online list for this socket.
async fn connected(state: AppState, socket: SocketRef<Adapter>) {
    let Some(user) = socket_user(&socket) else {
        let _ = socket.disconnect();
        return;
    };
    metrics::gauge!("chat_sockets_connected").increment(1.0);
    let partners = match state.store.partners_of(&user.id).await {
        Ok(p) => p,
        Err(error) => {
            tracing::warn!(error = %error.message, "chat partners unavailable at connect");
            Vec::new()
        }
    };
    match state.presence.connected(&user.id, socket.id.as_str()).await {
        Ok(Transition::CameOnline) => presence_changed(&state, &user.id, &partners, true).await,
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "presence unavailable at connect"),
    }
    send_online_list(&state, &user.id, &partners).await;
}

/// Registers `event` with validation, rate limiting and replies in one place.
fn on<F, Fut>(socket: &SocketRef<Adapter>, state: &AppState, event: &'static str, handler: F)
where
    F: Fn(AppState, SocketRef<Adapter>, SocketUser, Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ApiError>> + Send + 'static,
{
    let state = state.clone();
    socket.on(
        event,
        move |socket: SocketRef<Adapter>,
              TryData(payload): TryData<Value>,
              ack: AckSender<Adapter>| {
            let state = state.clone();
            let handler = handler.clone();
            async move {
                metrics::counter!("chat_socket_events_total", "event" => event).increment(1);
                let Some(user) = socket_user(&socket) else {
                    return;
                };
                let result = match payload {
                    Err(_) => Err(ApiError::bad_request("payload is not valid JSON")),
                    Ok(_) if !user.allow() => {
                        Err(ApiError::too_many("too many events; slow down", 1))
                    }
                    Ok(payload) => handler(state, socket.clone(), user, payload).await,
                };
                reply(&socket, ack, event, result);
            }
        },
    );
}

async fn disconnected(state: AppState, socket: SocketRef<Adapter>) {
    metrics::gauge!("chat_sockets_connected").decrement(1.0);
    let Some(user) = socket_user(&socket) else {
        return;
    };
    match state
        .presence
        .disconnected(&user.id, socket.id.as_str())
        .await
    {
        Ok(Transition::WentOffline) => {
            if let Err(error) = state
                .store
                .set_last_seen(&user.id, mongodb::bson::DateTime::now())
                .await
            {
                tracing::warn!(error = %error.message, "lastSeenAt not stored");
            }
            match state.store.partners_of(&user.id).await {
                Ok(partners) => presence_changed(&state, &user.id, &partners, false).await,
                Err(error) => tracing::warn!(error = %error.message, "presence fan-out skipped"),
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "presence unavailable at disconnect"),
    }
}

/// Tells the user's chat partners (only them) about a change of state.
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
    // Old clients only read `getOnlineUser`: refresh each partner's list.
    for partner in partners.iter().take(200) {
        match state.store.partners_of(partner).await {
            Ok(contacts) => send_online_list(state, partner, &contacts).await,
            Err(error) => tracing::warn!(error = %error.message, "getOnlineUser refresh skipped"),
        }
    }
}

/// Sends `getOnlineUser` (which of `contacts` are online) to every socket of `user`.
async fn send_online_list(state: &AppState, user: &ObjectId, contacts: &[ObjectId]) {
    let mut online = match state.presence.online(contacts).await {
        Ok(o) => o.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
        Err(error) => {
            tracing::warn!(%error, "presence unavailable");
            return;
        }
    };
    online.sort();
    if let Err(error) = state
        .io
        .to(user_room(user))
        .emit("getOnlineUser", &online)
        .await
    {
        tracing::warn!(%error, "getOnlineUser not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_auth_or_query() {
        let auth = json!({"token": "abc"});
        assert_eq!(handshake_token(Some(&auth), None).as_deref(), Some("abc"));
        let bearer = json!({"token": "Bearer abc"});
        assert_eq!(handshake_token(Some(&bearer), None).as_deref(), Some("abc"));
        assert_eq!(
            handshake_token(None, Some("EIO=4&token=t%2B1&transport=polling")).as_deref(),
            Some("t+1")
        );
        assert_eq!(handshake_token(None, Some("userId=123")), None);
        assert_eq!(handshake_token(Some(&json!({"userId": "x"})), None), None);
    }

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
}
