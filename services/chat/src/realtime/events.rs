//! The client events: one shared handler on every socket's read loop,
//! cheap checks and refusals inline, everything that awaits in one
//! admitted task. Errors are answered with stable codes through the
//! acknowledgement and, for clients without one, a `chatError` event.

use std::sync::Arc;

use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{FromMessageParts, MessageHandler};
use socketioxide::socket::Socket;

use crate::changes::{self, rules, rules::Change};
use crate::error::ChatError;
use crate::fanout::{Adapter, chat_room};
use crate::membership::member_chat;
use crate::realtime::admission::{self, Admission, Class, Refusal, Ticket};
use crate::realtime::invalidation;
use crate::realtime::socket::{AuthorisedChat, SocketSlot, SocketState, socket_user};
use crate::receipts::Receipt;
use crate::service::{self, SendInput};
use crate::state::AppState;

/// Pure: a chat id given as a string or as `{chatId}`.
pub fn chat_id_of(payload: &Value) -> Option<&str> {
    payload
        .as_str()
        .or_else(|| payload.get("chatId").and_then(Value::as_str))
}

/// Pure: how an error travels over Socket.IO: a stable code, the message a
/// client may see, and when trying again can succeed.
pub fn error_fields(error: &ChatError) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("code".into(), json!(error.code()));
    fields.insert("message".into(), json!(error.public_message()));
    if let Some(secs) = error.retry_after_secs() {
        fields.insert("retryAfter".into(), json!(secs));
    }
    fields
}

/// Pure: the acknowledgement of a refused event: `{error: {code, message, retryAfter?}}`.
pub fn error_ack(error: &ChatError) -> Value {
    json!({ "error": error_fields(error) })
}

/// Pure: the `chatError` event of a refused event: `{event, code, message, retryAfter?}`.
pub fn chat_error(event: &str, error: &ChatError) -> Value {
    let mut fields = error_fields(error);
    fields.insert("event".into(), json!(event));
    Value::Object(fields)
}

/// Logs the refusals that are the service's or a dependency's fault.
fn log(event: &str, error: &ChatError) {
    match error {
        ChatError::Unavailable { dependency, detail } => {
            tracing::warn!(event, dependency, %detail, "dependency unavailable");
        }
        ChatError::Internal(detail) => tracing::error!(event, %detail, "internal error"),
        _ => {}
    }
}

/// Answers through the acknowledgement (when asked for) and, for errors,
/// with a `chatError` event too (old clients send without acknowledgements).
fn reply(
    socket: &SocketRef<Adapter>,
    ack: AckSender<Adapter>,
    event: &str,
    result: Result<Value, ChatError>,
) {
    let body = match result {
        Ok(body) => body,
        Err(error) => {
            log(event, &error);
            let _ = socket.emit("chatError", &chat_error(event, &error));
            error_ack(&error)
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
        let _ = ack.send(&error_ack(&error));
    } else {
        let _ = socket.emit("chatError", &chat_error(event, &error));
    }
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
    /// `editMessage`.
    EditMessage,
    /// `deleteMessage`.
    DeleteMessage,
    /// `reactMessage`.
    ReactMessage,
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
            "editMessage" => Self::EditMessage,
            "deleteMessage" => Self::DeleteMessage,
            "reactMessage" => Self::ReactMessage,
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
            Self::EditMessage => "editMessage",
            Self::DeleteMessage => "deleteMessage",
            Self::ReactMessage => "reactMessage",
        }
    }
}

/// What every socket's handler shares.
struct Shared {
    state: AppState,
    admission: Admission,
}

/// The one message handler of every socket.
#[derive(Clone)]
pub struct Dispatch(Arc<Shared>);

impl Dispatch {
    /// The handler of every socket of this pod, admitting work within the
    /// configured limits.
    pub fn new(state: AppState) -> Self {
        Self(Arc::new(Shared {
            admission: Admission::new(&state.config.admission),
            state,
        }))
    }
}

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
    reply_to: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePayload {
    chat_id: String,
    message_id: String,
    /// `editMessage`: the new text.
    text: Option<String>,
    /// `deleteMessage`: `everyone` (default) or `me`.
    #[serde(rename = "for")]
    scope: Option<String>,
    /// `reactMessage`: the emoji.
    emoji: Option<String>,
    /// `reactMessage`: true to take the emoji back.
    #[serde(default)]
    remove: bool,
}

impl ChangePayload {
    /// The change this payload asks for under `event`.
    fn change(&self, event: ClientEvent) -> Result<Change, ChatError> {
        match event {
            ClientEvent::EditMessage => Ok(Change::Edit(
                self.text
                    .clone()
                    .ok_or_else(|| ChatError::invalid("text is required"))?,
            )),
            ClientEvent::DeleteMessage => rules::delete_scope(self.scope.as_deref()),
            _ => Ok(Change::React {
                emoji: rules::validate_emoji(
                    self.emoji
                        .as_deref()
                        .ok_or_else(|| ChatError::invalid("emoji is required"))?,
                )?,
                on: !self.remove,
            }),
        }
    }
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
        let started = std::time::Instant::now();
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
                Err(ChatError::invalid("payload is not valid JSON")),
            );
        };
        if !user.allow() {
            return reply(
                &socket,
                ack,
                name,
                Err(ChatError::RateLimited {
                    message: "too many events; slow down".to_owned(),
                    retry_after_secs: 1,
                }),
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
                    Err(ChatError::invalid("chatId is required")),
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
            && (entry.blocked || self.state.fanout.alone())
        {
            let result =
                invalidation::usable(entry).and_then(|()| self.relay_now(&user, event, entry));
            reply(&socket, ack, name, result);
            return admission::record_handled(Class::Relay, started);
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
            admission::record_handled(class, started);
        });
    }

    /// A typing relay through the local adapter only, completed in place.
    fn relay_now(
        &self,
        user: &SocketState,
        event: ClientEvent,
        entry: &AuthorisedChat,
    ) -> Result<Value, ChatError> {
        let body = TypingBody {
            chat_id: &entry.chat_hex,
            user_id: &user.hex,
        };
        self.state
            .fanout
            .relay_here_now(&entry.others, typing_out(event), &body)?;
        Ok(json!({ "ok": true }))
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
    ) -> Result<Value, ChatError> {
        let state = &self.state;
        let authorised = move |chat: ObjectId, known: Option<Arc<AuthorisedChat>>| async move {
            match known {
                Some(entry) => Ok::<_, ChatError>(entry),
                None => {
                    let checkpoint = user.checkpoint();
                    let doc = member_chat(&state.store, &chat, &user.id).await?;
                    Ok(user.remember(&doc, checkpoint))
                }
            }
        };
        match event {
            ClientEvent::JoinChat => {
                let chat = chat.ok_or_else(|| ChatError::invalid("chatId is required"))?;
                let entry = authorised(chat, known).await?;
                socket.join(chat_room(&chat));
                Ok(json!({ "ok": true, "chatId": entry.chat_hex }))
            }
            ClientEvent::Typing | ClientEvent::StopTyping => {
                let chat = chat.ok_or_else(|| ChatError::invalid("chatId is required"))?;
                let entry = authorised(chat, known).await?;
                invalidation::usable(&entry)?;
                let body = TypingBody {
                    chat_id: &entry.chat_hex,
                    user_id: &user.hex,
                };
                self.state
                    .fanout
                    .relay(&entry.others, typing_out(event), &body)
                    .await?;
                Ok(json!({ "ok": true }))
            }
            ClientEvent::MessageDelivered => {
                let p: DeliveredPayload = serde_json::from_value(payload).map_err(|e| {
                    ChatError::invalid(format!("expected {{chatId, messageIds}}: {e}"))
                })?;
                let chat = match chat {
                    Some(chat) => chat,
                    None => crate::domain::parse_id("chatId", &p.chat_id)?,
                };
                let ids = service::receipt_ids(&p.message_ids)?;
                let entry = authorised(chat, known).await?;
                invalidation::usable(&entry)?;
                if entry.group {
                    let moved =
                        crate::watermarks::delivered(state, &chat, &entry, &user.id, &ids).await?;
                    return Ok(json!({ "ok": true, "deliveredUpTo": moved }));
                }
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
                    self.state
                        .fanout
                        .relay(&entry.others, "messagesDelivered", &payload)
                        .await?;
                }
                Ok(json!({ "ok": true, "count": marked.len(), "messageIds": marked }))
            }
            ClientEvent::SendMessage => {
                let p: SendPayload = serde_json::from_value(payload).map_err(|e| {
                    ChatError::invalid(format!("expected {{chatId, text, clientMessageId?}}: {e}"))
                })?;
                let (message, _) = service::send(
                    state,
                    &user.claims,
                    SendInput {
                        chat_id: p.chat_id,
                        text: Some(p.text),
                        client_message_id: p.client_message_id,
                        image: None,
                        reply_to: p.reply_to,
                    },
                )
                .await?;
                Ok(json!({ "message": message }))
            }
            ClientEvent::EditMessage | ClientEvent::DeleteMessage | ClientEvent::ReactMessage => {
                let p: ChangePayload = serde_json::from_value(payload).map_err(|e| {
                    ChatError::invalid(format!("expected {{chatId, messageId, …}}: {e}"))
                })?;
                let change = p.change(event)?;
                let message =
                    changes::change(state, &user.claims, &p.chat_id, &p.message_id, change).await?;
                Ok(json!({ "message": message }))
            }
            ClientEvent::LeaveChat => Ok(json!({ "ok": true })),
        }
    }
}

/// The event a typing relay is sent as.
fn typing_out(event: ClientEvent) -> &'static str {
    if event == ClientEvent::StopTyping {
        "userStoppedTyping"
    } else {
        "userTyping"
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
    fn event_names_round_trip_and_unknown_ones_are_ignored() {
        for event in [
            ClientEvent::JoinChat,
            ClientEvent::LeaveChat,
            ClientEvent::Typing,
            ClientEvent::StopTyping,
            ClientEvent::SendMessage,
            ClientEvent::MessageDelivered,
            ClientEvent::EditMessage,
            ClientEvent::DeleteMessage,
            ClientEvent::ReactMessage,
        ] {
            assert_eq!(ClientEvent::parse(event.name()), Some(event));
        }
        assert_eq!(ClientEvent::parse("getOnlineUser"), None);
    }

    #[test]
    fn errors_travel_with_codes_not_statuses() {
        let busy = ChatError::Busy {
            message: "server busy: event refused, try again shortly",
            retry_after_secs: 1,
        };
        assert_eq!(
            error_ack(&busy),
            json!({ "error": { "code": "busy", "message": "server busy: event refused, try again shortly", "retryAfter": 1 } })
        );
        let forbidden = ChatError::Forbidden("you cannot write in this chat");
        assert_eq!(
            chat_error("typing", &forbidden),
            json!({ "event": "typing", "code": "forbidden", "message": "you cannot write in this chat" })
        );
        let down = ChatError::unavailable("mongodb", "10.0.0.1 refused");
        let ack = error_ack(&down);
        assert_eq!(ack["error"]["code"], "unavailable");
        assert!(
            !ack.to_string().contains("10.0.0.1"),
            "details stay in the log: {ack}"
        );
    }
}
