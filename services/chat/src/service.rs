//! What the edges (REST and Socket.IO) share: the rules of sending, reading
//! and marking messages, with membership checked in one place.

use mongodb::bson::oid::ObjectId;
use parley_common::api_error::ApiError;
use parley_common::events::MessageCreated;
use parley_common::token::Claims;

use crate::domain::{self, Window};
use crate::model::{ChatDoc, ImageRef, MessageView};
use crate::state::AppState;
use crate::store::{Appended, NewMessage};

pub use parley_common::auth::caller;

/// The chat, when `user` is a member: 404 unknown, 403 not a member.
pub async fn member_chat(
    state: &AppState,
    chat_id: &ObjectId,
    user: &ObjectId,
) -> Result<ChatDoc, ApiError> {
    let chat = state
        .store
        .chat(chat_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such chat"))?;
    if !chat.has_member(user) {
        return Err(ApiError::forbidden("you are not a member of this chat"));
    }
    Ok(chat)
}

/// The user room every socket of `user` joins.
pub fn user_room(user: &ObjectId) -> String {
    format!("user:{}", user.to_hex())
}

/// The room of an open chat (joined through `joinChat`).
pub fn chat_room(chat: &ObjectId) -> String {
    format!("chat:{}", chat.to_hex())
}

/// A send request from either edge.
#[derive(Debug, Clone)]
pub struct SendInput {
    /// Raw chat id.
    pub chat_id: String,
    /// Raw text (may be empty with an image).
    pub text: Option<String>,
    /// Raw idempotency key.
    pub client_message_id: Option<String>,
    /// Image bytes, not yet checked.
    pub image: Option<Vec<u8>>,
}

/// Validates, stores and fans out a message. Returns the stored message and
/// whether it is new (a repeated clientMessageId returns the first one).
pub async fn send(
    state: &AppState,
    claims: &Claims,
    input: SendInput,
) -> Result<(MessageView, bool), ApiError> {
    let sender = caller(claims)?;
    let chat_id = domain::parse_id("chatId", &input.chat_id)?;
    let client_message_id = domain::validate_client_id(input.client_message_id.as_deref())?;
    let text = match &input.image {
        Some(_) => domain::validate_caption(input.text.as_deref())?,
        None => domain::validate_text(input.text.as_deref().unwrap_or_default())?,
    };
    let image_type = match &input.image {
        Some(bytes) if bytes.len() > state.config.media_max_bytes => {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "image is larger than {} bytes",
                    state.config.media_max_bytes
                ),
            ));
        }
        Some(bytes) => Some(domain::sniff_image(bytes).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "image must be jpeg, png, gif or webp",
            )
        })?),
        None => None,
    };
    // An image is stored only for a member; a text needs no read: the
    // append itself is filtered on membership.
    if input.image.is_some() {
        let chat = member_chat(state, &chat_id, &sender).await?;
        if !chat.blocked_by.is_empty() {
            return Err(blocked_error(&chat, &sender));
        }
    }
    if let Some(cid) = &client_message_id
        && let Some(existing) = state.store.by_client_id(&chat_id, &sender, cid).await?
    {
        return Ok((MessageView::from(&existing), false));
    }
    let image: Option<ImageRef> = match (input.image, image_type) {
        (Some(bytes), Some(content_type)) => {
            Some(crate::media::store(state, &sender, &chat_id, content_type, &bytes).await?)
        }
        _ => None,
    };
    let preview = domain::preview(&text, image.is_some());
    let stored_image = image.clone();
    let appended = state
        .store
        .append_message(NewMessage {
            chat_id,
            sender,
            text,
            image,
            client_message_id,
            preview: preview.clone(),
        })
        .await?;
    crate::media::keep_if_sent(state, &sender, stored_image.as_ref(), &appended).await;
    let (message, chat) = match appended {
        Appended::Created(message, chat) => (message, chat),
        Appended::Duplicate(existing) => return Ok((MessageView::from(&existing), false)),
        Appended::NotMember => {
            // Only now tell "no such chat" from "not a member" from "blocked".
            let chat = member_chat(state, &chat_id, &sender).await?;
            return Err(blocked_error(&chat, &sender));
        }
    };
    // Writing in a chat accepts it (once per member).
    if !chat.accepted_by.contains(&sender)
        && let Err(error) = accept(state, &chat_id, &sender).await
    {
        tracing::warn!(error = %error.message, "chat not marked accepted");
    }
    let view = MessageView::from(&message);
    metrics::counter!("chat_messages_stored_total").increment(1);
    let rooms: Vec<String> = chat.members.iter().map(user_room).collect();
    if let Err(error) = state.io.to(rooms).emit("newMessage", &view).await {
        tracing::warn!(%error, "newMessage fan-out failed");
    }
    let event = MessageCreated {
        message_id: view.id.clone(),
        chat_id: view.chat_id.clone(),
        sender_id: view.sender.clone(),
        sender_name: claims.name.clone(),
        recipient_ids: chat
            .members
            .iter()
            .filter(|m| **m != sender)
            .map(|id| id.to_hex())
            .collect(),
        preview,
        sent_at: chrono::Utc::now(),
    };
    if let Err(error) = state.amqp.publish(event).await {
        metrics::counter!("chat_event_publish_failed_total").increment(1);
        tracing::error!(%error, message_id = %view.id, "chat.message_created.v1 not published");
    }
    Ok((view, true))
}

/// Why a member may not write in `chat`: they blocked the other member,
/// or were blocked (the block the answer names is the caller's own only).
pub fn blocked_error(chat: &ChatDoc, me: &ObjectId) -> ApiError {
    if chat.blocked_by.contains(me) {
        ApiError::forbidden("you blocked this user: unblock them to write in this chat")
    } else if !chat.blocked_by.is_empty() {
        ApiError::forbidden("you cannot write in this chat")
    } else {
        // A block lifted between the write and this read.
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "the chat changed meanwhile: try again",
        )
    }
}

/// `user` accepts the chat: from now on, once every member has, they see
/// each other's presence. Their online lists are refreshed when that
/// starts now.
pub async fn accept(
    state: &AppState,
    chat_id: &ObjectId,
    user: &ObjectId,
) -> Result<ChatDoc, ApiError> {
    let before = member_chat(state, chat_id, user).await?;
    if before.accepted_by.contains(user) {
        return Ok(before);
    }
    let chat = state
        .store
        .accept(chat_id, user)
        .await?
        .ok_or_else(|| ApiError::not_found("no such chat"))?;
    if chat.presence_flows() {
        crate::realtime::refresh_presence(state, &chat.members).await;
    }
    Ok(chat)
}

/// `blocker` blocks (`on`) or unblocks `other`: stored, then announced to
/// every replica (their sockets of the two forget what they knew of each
/// other's chat), then both online lists are sent again. True when it
/// changed anything.
pub async fn set_block(
    state: &AppState,
    blocker: &ObjectId,
    other: &ObjectId,
    on: bool,
) -> Result<bool, ApiError> {
    let changed = if on {
        state.store.block(blocker, other).await?
    } else {
        state.store.unblock(blocker, other).await?
    };
    crate::realtime::blocking::announce(state, blocker, other).await;
    crate::realtime::refresh_presence(state, &[*blocker, *other]).await;
    Ok(changed)
}

/// Reads a page of history; marks the other side's messages seen and tells
/// their senders (`messagesSeen`).
pub async fn read(
    state: &AppState,
    claims: &Claims,
    chat_id: &str,
    window: Window,
    limit: i64,
) -> Result<(ChatDoc, Vec<MessageView>), ApiError> {
    let reader = caller(claims)?;
    let chat_id = domain::parse_id("chatId", chat_id)?;
    let chat = member_chat(state, &chat_id, &reader).await?;
    let (seen_ids, _) = state.store.mark_seen(&chat_id, &reader).await?;
    // In a blocked chat, reading tells the other nothing (it would show
    // that the reader is around).
    if !seen_ids.is_empty() && chat.blocked_by.is_empty() {
        let payload = serde_json::json!({
            "chatId": chat_id.to_hex(),
            "seenBy": reader.to_hex(),
            "messageIds": seen_ids.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "seenAt": chrono::Utc::now().to_rfc3339(),
        });
        let others: Vec<String> = chat
            .members
            .iter()
            .filter(|m| **m != reader)
            .map(user_room)
            .collect();
        if let Err(error) = state.io.to(others).emit("messagesSeen", &payload).await {
            tracing::warn!(%error, "messagesSeen fan-out failed");
        }
    }
    let messages = state.store.messages(&chat_id, window, limit).await?;
    Ok((chat, messages.iter().map(MessageView::from).collect()))
}

/// Validates the ids of a delivered receipt: 1 to 100 message ids.
pub fn receipt_ids(message_ids: &[String]) -> Result<Vec<ObjectId>, ApiError> {
    if message_ids.is_empty() || message_ids.len() > 100 {
        return Err(ApiError::bad_request("messageIds must hold 1 to 100 ids"));
    }
    message_ids
        .iter()
        .map(|id| domain::parse_id("messageIds", id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_ids_are_bounded_and_checked() {
        assert!(receipt_ids(&[]).is_err());
        assert!(receipt_ids(&vec![ObjectId::new().to_hex(); 101]).is_err());
        assert!(receipt_ids(&["nope".to_owned()]).is_err());
        let id = ObjectId::new();
        assert_eq!(receipt_ids(&[id.to_hex()]).unwrap(), vec![id]);
    }
}
