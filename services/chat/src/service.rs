//! What the edges (REST and Socket.IO) share: the rules of opening and
//! listing chats, sending, reading and marking messages, with membership
//! checked in one place. Everything here answers in [`ChatError`]; the
//! edges translate.

use mongodb::bson::oid::ObjectId;
use parley_common::events::MessageCreated;
use parley_common::token::Claims;

use crate::domain::{self, Window};
use crate::error::ChatError;
use crate::model::{ChatDoc, ChatView, ImageRef, MessageView, Profile};
use crate::state::AppState;
use crate::store::{Appended, NewMessage};

pub use crate::membership::{blocked_error, member_chat};

/// The user id of verified claims.
pub fn caller(claims: &Claims) -> Result<ObjectId, ChatError> {
    Ok(parley_common::auth::caller(claims)?)
}

/// How opening a chat with someone went.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The chat.
    pub chat: ChatDoc,
    /// True when it was created now; false when it already existed.
    pub created: bool,
}

/// Opens (finds or creates) the 1:1 chat of `me` and `other`. A user that
/// blocked `me` looks like no user at all; opening a chat someone else
/// opened with `me` accepts it.
pub async fn open_chat(
    state: &AppState,
    me: &ObjectId,
    other: &ObjectId,
) -> Result<Opened, ChatError> {
    if other == me {
        return Err(ChatError::invalid("cannot open a chat with yourself"));
    }
    if !state.store.user_exists(other).await? {
        return Err(ChatError::NotFound("no such user"));
    }
    let blockers = state.store.blockers_between(me, other).await?;
    if blockers.contains(me) {
        return Err(ChatError::Forbidden(
            "you blocked this user: unblock them to open a chat",
        ));
    }
    if !blockers.is_empty() {
        // Blocked: the same answer as for nobody, so the block stays unsaid.
        return Err(ChatError::NotFound("no such user"));
    }
    let (chat, created) = state.store.find_or_create_pair(me, other).await?;
    if !created && !chat.accepted_by.contains(me) {
        accept(state, &chat.id, me).await?;
    }
    Ok(Opened { chat, created })
}

/// One chat of a listing, with the other member's profile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatItem {
    /// The other member (a placeholder when their profile is unavailable).
    pub user: Profile,
    /// The chat, with the caller's unseen count.
    pub chat: ChatView,
}

/// A page of the caller's chats, newest activity first.
#[derive(Debug, Clone)]
pub struct ChatPage {
    /// The chats.
    pub items: Vec<ChatItem>,
    /// Where the next page starts (`None`: this was the last).
    pub next_cursor: Option<String>,
}

/// Lists `me`'s chats after `cursor`: one query for the page, one
/// aggregation for every unseen count, one batch of profiles (read with
/// the caller's `token`).
pub async fn list_chats(
    state: &AppState,
    me: &ObjectId,
    cursor: Option<&str>,
    limit: Option<i64>,
    token: &str,
) -> Result<ChatPage, ChatError> {
    let limit = domain::page_size(limit.or(Some(20)))?;
    let cursor = cursor.map(domain::decode_cursor).transpose()?;
    let chats = state.store.chats_of(me, cursor, limit).await?;
    let others: Vec<String> = chats
        .iter()
        .filter(|c| !c.is_group())
        .filter_map(|c| domain::other_member(&c.members, me))
        .map(|id| id.to_hex())
        .collect();
    let profiles = state.profiles.get(&others, token).await;
    let unseen_counts = state.store.unseen_counts(&chats, me).await?;
    let items = chats
        .iter()
        .map(|chat| {
            let unseen = unseen_counts.get(&chat.id).copied().unwrap_or(0);
            let user = match group_profile(chat) {
                Some(group) => group,
                None => {
                    let other = domain::other_member(&chat.members, me)
                        .map(|id| id.to_hex())
                        .unwrap_or_default();
                    profiles
                        .get(&other)
                        .cloned()
                        .unwrap_or_else(|| Profile::placeholder(&other))
                }
            };
            ChatItem {
                user,
                chat: ChatView::new(chat, me, unseen),
            }
        })
        .collect();
    let next_cursor = (chats.len() as i64 == limit)
        .then(|| {
            chats
                .last()
                .map(|c| domain::encode_cursor(c.updated_at, &c.id))
        })
        .flatten();
    Ok(ChatPage { items, next_cursor })
}

/// Pure: what stands in a group's place where a 1:1 chat shows the other
/// member (`user` in listings and history): its id and name.
pub fn group_profile(chat: &ChatDoc) -> Option<Profile> {
    chat.is_group().then(|| Profile {
        id: chat.id.to_hex(),
        name: chat.name.clone().unwrap_or_default(),
    })
}

/// The profile of the other member of `chat` (read with the caller's
/// `token`), or the group's.
pub async fn partner_profile(
    state: &AppState,
    chat: &ChatDoc,
    me: &ObjectId,
    token: &str,
) -> Profile {
    if let Some(group) = group_profile(chat) {
        return group;
    }
    let other = domain::other_member(&chat.members, me)
        .map(|id| id.to_hex())
        .unwrap_or_default();
    let profiles = state
        .profiles
        .get(std::slice::from_ref(&other), token)
        .await;
    profiles
        .get(&other)
        .cloned()
        .unwrap_or_else(|| Profile::placeholder(&other))
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
    /// Raw id of the message this one answers.
    pub reply_to: Option<String>,
}

/// Validates, stores and fans out a message. Returns the stored message and
/// whether it is new (a repeated clientMessageId returns the first one).
pub async fn send(
    state: &AppState,
    claims: &Claims,
    input: SendInput,
) -> Result<(MessageView, bool), ChatError> {
    let sender = caller(claims)?;
    let chat_id = domain::parse_id("chatId", &input.chat_id)?;
    let client_message_id = domain::validate_client_id(input.client_message_id.as_deref())?;
    let text = match &input.image {
        Some(_) => domain::validate_caption(input.text.as_deref())?,
        None => domain::validate_text(input.text.as_deref().unwrap_or_default())?,
    };
    let image_type = match &input.image {
        Some(bytes) if bytes.len() > state.config.media_max_bytes => {
            return Err(ChatError::TooLarge(format!(
                "image is larger than {} bytes",
                state.config.media_max_bytes
            )));
        }
        Some(bytes) => Some(domain::sniff_image(bytes).ok_or(ChatError::UnsupportedType(
            "image must be jpeg, png, gif or webp",
        ))?),
        None => None,
    };
    // An image is stored only for a member; a text needs no read: the
    // append itself is filtered on membership.
    if input.image.is_some() {
        let chat = member_chat(&state.store, &chat_id, &sender).await?;
        if !chat.blocked_by.is_empty() {
            return Err(blocked_error(&chat, &sender));
        }
    }
    // A quote is checked (membership first) before anything is stored.
    let reply_to = match input.reply_to.as_deref() {
        Some(raw) => Some(crate::changes::quote_for(state, &chat_id, &sender, raw).await?),
        None => None,
    };
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
            reply_to,
        })
        .await?;
    crate::media::keep_if_sent(state, &sender, stored_image.as_ref(), &appended).await;
    let (message, chat) = match appended {
        Appended::Created(message, chat) => (message, chat),
        Appended::Duplicate(existing) => return Ok((MessageView::from(&existing), false)),
        Appended::NotMember => {
            // Only now tell "no such chat" from "not a member" from "blocked".
            let chat = member_chat(&state.store, &chat_id, &sender).await?;
            return Err(blocked_error(&chat, &sender));
        }
    };
    // Writing in a chat accepts it (once per member).
    if !chat.accepted_by.contains(&sender)
        && let Err(error) = accept(state, &chat_id, &sender).await
    {
        tracing::warn!(%error, "chat not marked accepted");
    }
    crate::changes::settle_quote(state, &message).await;
    let view = MessageView::from(&message);
    metrics::counter!("chat_messages_stored_total").increment(1);
    state
        .fanout
        .to_users(&chat.members, "newMessage", &view)
        .await;
    let event = MessageCreated {
        message_id: view.id.clone(),
        chat_id: view.chat_id.clone(),
        sender_id: view.sender.clone(),
        sender_name: claims.name.clone(),
        // Members who muted the chat get no mail about it.
        recipient_ids: chat
            .members
            .iter()
            .filter(|m| **m != sender && !chat.muted_by.contains(m))
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

/// `user` accepts the chat: from now on, once every member has, they see
/// each other's presence. Their online lists are refreshed when that
/// starts now.
pub async fn accept(
    state: &AppState,
    chat_id: &ObjectId,
    user: &ObjectId,
) -> Result<ChatDoc, ChatError> {
    let before = member_chat(&state.store, chat_id, user).await?;
    if before.accepted_by.contains(user) {
        return Ok(before);
    }
    let chat = state
        .store
        .accept(chat_id, user)
        .await?
        .ok_or(ChatError::NotFound("no such chat"))?;
    let partners = chat.presence_partners(user);
    if !partners.is_empty() {
        let mut everyone = partners;
        everyone.push(*user);
        state.fanout.refresh_presence(&everyone).await;
    }
    Ok(chat)
}

/// `user` mutes (`on`) or unmutes a chat they are a member of: a muted
/// chat sends them no mail notifications. Returns the chat.
pub async fn set_mute(
    state: &AppState,
    chat_id: &ObjectId,
    user: &ObjectId,
    on: bool,
) -> Result<ChatDoc, ChatError> {
    member_chat(&state.store, chat_id, user).await?;
    state
        .store
        .set_mute(chat_id, user, on)
        .await?
        .ok_or(ChatError::Forbidden("you are not a member of this chat"))
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
) -> Result<bool, ChatError> {
    let changed = if on {
        state.store.block(blocker, other).await?
    } else {
        state.store.unblock(blocker, other).await?
    };
    state.fanout.block_changed(blocker, other).await;
    state.fanout.refresh_presence(&[*blocker, *other]).await;
    Ok(changed)
}

/// Reads a page of history. In a 1:1 chat it marks the other side's
/// messages seen and tells their senders (`messagesSeen`); in a group it
/// moves the reader's watermark (see [`crate::watermarks`]). Either way
/// the reader's own devices hear `chatRead`, with the chat's new unread
/// count. A group member sees only messages from after they joined:
/// asking for a page wholly before that is forbidden.
pub async fn read(
    state: &AppState,
    claims: &Claims,
    chat_id: &str,
    window: Window,
    limit: i64,
) -> Result<(ChatDoc, Vec<MessageView>), ChatError> {
    let reader = caller(claims)?;
    let chat_id = domain::parse_id("chatId", chat_id)?;
    let chat = member_chat(&state.store, &chat_id, &reader).await?;
    let floor = chat.visible_after(&reader);
    if matches!(window, Window::Before(before) if floor > 0 && before <= floor + 1) {
        return Err(ChatError::Forbidden(
            "messages from before you joined are not yours to read",
        ));
    }
    if chat.is_group() {
        crate::watermarks::read(state, &chat, &reader).await?;
    } else {
        mark_seen(state, &chat, &reader).await?;
    }
    let messages = state
        .store
        .messages(&chat_id, &reader, floor, window, limit)
        .await?;
    let views = messages
        .iter()
        .map(|m| crate::watermarks::view(&chat, m, &reader))
        .collect();
    Ok((chat, views))
}

/// A 1:1 chat read: the other side's messages are marked seen, the
/// reader's other devices hear `chatRead` and, unless blocked, the sender
/// `messagesSeen`.
async fn mark_seen(state: &AppState, chat: &ChatDoc, reader: &ObjectId) -> Result<(), ChatError> {
    let (seen_ids, seen_at) = state.store.mark_seen(&chat.id, reader).await?;
    if seen_ids.is_empty() {
        return Ok(());
    }
    // The reader's other devices: this chat has nothing unread now.
    let read = serde_json::json!({
        "chatId": chat.id.to_hex(),
        "unseenCount": 0,
        "readUpTo": chat.last_seq,
        "readAt": seen_at.try_to_rfc3339_string().unwrap_or_default(),
    });
    state.fanout.to_users([reader], "chatRead", &read).await;
    // In a blocked chat, reading tells the other nothing (it would show
    // that the reader is around).
    if chat.blocked_by.is_empty() {
        let payload = serde_json::json!({
            "chatId": chat.id.to_hex(),
            "seenBy": reader.to_hex(),
            "messageIds": seen_ids.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "seenAt": chrono::Utc::now().to_rfc3339(),
        });
        let others = chat.members.iter().filter(|m| *m != reader);
        state
            .fanout
            .to_users(others, "messagesSeen", &payload)
            .await;
    }
    Ok(())
}

/// Validates the ids of a delivered receipt: 1 to 100 message ids.
pub fn receipt_ids(message_ids: &[String]) -> Result<Vec<ObjectId>, ChatError> {
    if message_ids.is_empty() || message_ids.len() > 100 {
        return Err(ChatError::invalid("messageIds must hold 1 to 100 ids"));
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
