//! A message's life after it was sent: edits, deletion for everyone or
//! for oneself, reactions, and the per-chat change feed a reconnecting
//! client catches up with. Both edges (REST and Socket.IO) call these;
//! the rules themselves are pure, in [`rules`].

pub mod rules;

use mongodb::bson::DateTime;
use mongodb::bson::oid::ObjectId;
use parley_common::token::Claims;
use serde::Serialize;

use crate::domain;
use crate::error::ChatError;
use crate::membership::{blocked_error, member_chat};
use crate::model::{ChatDoc, ImageRef, MessageDoc, MessageView};
use crate::service::caller;
use crate::state::AppState;
use rules::{Change, Update};

/// How often a change is decided again when another change to the same
/// message won the race.
const ATTEMPTS: usize = 4;

/// Changes shown per page of the change feed, at most.
pub const MAX_CHANGES_PAGE: i64 = 200;

/// The socket event each change is announced with.
fn event_of(change: &Change) -> &'static str {
    match change {
        Change::Edit(_) => "messageEdited",
        Change::DeleteForEveryone => "messageDeleted",
        Change::DeleteForMe => "messageHidden",
        Change::React { .. } => "messageReactions",
    }
}

/// Applies `change` by the caller to a message of a chat; returns the
/// message as the caller now sees it. Members are told with
/// `messageEdited`, `messageDeleted` or `messageReactions` (each carrying
/// the message); a deletion for oneself goes to the caller's own devices
/// only (`messageHidden`).
pub async fn change(
    state: &AppState,
    claims: &Claims,
    chat_id: &str,
    message_id: &str,
    change: Change,
) -> Result<MessageView, ChatError> {
    let me = caller(claims)?;
    let chat_id = domain::parse_id("chatId", chat_id)?;
    let message_id = domain::parse_id("messageId", message_id)?;
    let chat = member_chat(&state.store, &chat_id, &me).await?;
    // Taking words back stays possible in a blocked chat; adding some does not.
    if matches!(change, Change::Edit(_) | Change::React { .. }) && !chat.blocked_by.is_empty() {
        return Err(blocked_error(&chat, &me));
    }
    // A group member sees (and changes) only messages from after they joined.
    let floor = chat.visible_after(&me);
    let moderator = chat.role_of(&me).is_some_and(crate::model::Role::manages);
    for _ in 0..ATTEMPTS {
        let message = state
            .store
            .message(&message_id)
            .await?
            .filter(|m| m.chat_id == chat_id && m.seq > floor)
            .ok_or(ChatError::NotFound("no such message"))?;
        if message.hidden_for.contains(&me) && change != Change::DeleteForMe {
            return Err(ChatError::NotFound("no such message"));
        }
        let update = rules::decide(
            &change,
            &message,
            &me,
            moderator,
            DateTime::now(),
            state.config.edit_window,
        )?;
        if update == Update::Nothing {
            return Ok(MessageView::for_viewer(&message, &me));
        }
        let seq = state
            .store
            .next_change(&chat_id, Some(&me))
            .await?
            .ok_or(ChatError::Forbidden("you are not a member of this chat"))?;
        if !state.store.apply_change(&message, &update, seq).await? {
            continue;
        }
        let image = message.image.clone();
        let changed = rules::applied(message, &update, seq);
        after(state, &changed, &update, seq, image).await;
        metrics::counter!("chat_message_changes_total", "change" => event_of(&change)).increment(1);
        announce(state, &chat, &me, &changed, event_of(&change)).await;
        return Ok(MessageView::for_viewer(&changed, &me));
    }
    Err(ChatError::Conflict(
        "the message kept changing meanwhile: try again",
    ))
}

/// What else follows from a change: quotes and the chat list's preview
/// follow the text, and the image of a deleted message is removed (and
/// its bytes given back to the sender's quota). Failures are logged: the
/// change itself stands.
async fn after(
    state: &AppState,
    changed: &MessageDoc,
    update: &Update,
    seq: i64,
    image: Option<ImageRef>,
) {
    if !matches!(update, Update::Edit { .. } | Update::Tombstone { .. }) {
        return;
    }
    if let Err(error) = state.store.refresh_quotes(changed, seq).await {
        tracing::warn!(%error, message_id = %changed.id, "quotes of a changed message not refreshed");
    }
    // Only if it is still the chat's latest message (checked in the write).
    let preview = rules::latest_preview(changed);
    if let Err(error) = state
        .store
        .set_latest_preview(
            &changed.chat_id,
            changed.seq,
            &preview,
            changed.deleted_at.is_some(),
        )
        .await
    {
        tracing::warn!(%error, chat_id = %changed.chat_id, "chat preview not refreshed");
    }
    if let (Update::Tombstone { .. }, Some(image)) = (update, image) {
        crate::media::discard(state, &changed.sender, &image).await;
    }
}

/// Tells the members (all of them but those who hid the message), or for
/// a deletion for oneself only the caller's devices.
async fn announce(
    state: &AppState,
    chat: &ChatDoc,
    me: &ObjectId,
    changed: &MessageDoc,
    event: &'static str,
) {
    if event == "messageHidden" {
        let view = MessageView::for_viewer(changed, me);
        state.fanout.to_users([me], event, &view).await;
        return;
    }
    let view = MessageView::from(changed);
    let members = chat
        .members
        .iter()
        .filter(|m| !changed.hidden_for.contains(m));
    state.fanout.to_users(members, event, &view).await;
}

/// A page of the change feed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangePage {
    /// Messages changed after the cursor, as the caller sees them, in
    /// change order (a message appears once, in its latest state).
    pub changes: Vec<MessageView>,
    /// The cursor to ask with next time (the last change here, or the
    /// one asked with when nothing changed).
    pub next_since: i64,
    /// With `nextSince`, where the next page starts within one change
    /// number (several messages can share one: an edit and the quotes it
    /// refreshed); `None` when the page is empty.
    pub next_after: Option<String>,
    /// True when more changes wait past this page.
    pub more: bool,
}

/// Where a page of the change feed starts: after change number `since`,
/// or within it after message `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedCursor {
    /// The change number.
    pub since: i64,
    /// The last message read of that change number.
    pub after: Option<ObjectId>,
}

/// Pure: checks the change feed's query.
pub fn feed_query(
    since: Option<i64>,
    after: Option<&str>,
    limit: Option<i64>,
) -> Result<(FeedCursor, i64), ChatError> {
    let since = since.unwrap_or(0);
    if since < 0 {
        return Err(ChatError::invalid("since must be non-negative"));
    }
    let after = after.map(|a| domain::parse_id("after", a)).transpose()?;
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_CHANGES_PAGE).contains(&limit) {
        return Err(ChatError::invalid(format!(
            "limit must be between 1 and {MAX_CHANGES_PAGE}"
        )));
    }
    Ok((FeedCursor { since, after }, limit))
}

/// What changed in a chat after change number `since`: new messages,
/// edits, deletions, reactions and the caller's own hiding.
pub async fn since(
    state: &AppState,
    claims: &Claims,
    chat_id: &str,
    cursor: FeedCursor,
    limit: i64,
) -> Result<ChangePage, ChatError> {
    let me = caller(claims)?;
    let chat_id = domain::parse_id("chatId", chat_id)?;
    let chat = member_chat(&state.store, &chat_id, &me).await?;
    let floor = chat.visible_after(&me);
    let mut found = state.store.changes(&chat_id, cursor, limit + 1).await?;
    let more = found.len() as i64 > limit;
    found.truncate(usize::try_from(limit).unwrap_or(0));
    let next_since = found.last().map_or(cursor.since, |m| m.change_seq);
    let next_after = found
        .last()
        .map(|m| m.id.to_hex())
        .or_else(|| cursor.after.map(|a| a.to_hex()));
    Ok(ChangePage {
        // The cursor moves past a group's messages from before the caller
        // joined; they are never shown.
        changes: found
            .iter()
            .filter(|m| m.seq > floor)
            .map(|m| crate::watermarks::view(&chat, m, &me))
            .collect(),
        next_since,
        next_after,
        more,
    })
}

/// After a reply was stored: if its original was edited or deleted
/// meanwhile (after the quote was read, before the reply was written, so
/// the original's own refresh missed it), the quote is refreshed now.
pub async fn settle_quote(state: &AppState, reply: &MessageDoc) {
    let Some(quoted) = &reply.reply_to else {
        return;
    };
    let original = match state.store.message(&quoted.message_id).await {
        Ok(Some(original)) => original,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "quote of a new reply not checked");
            return;
        }
    };
    let now = rules::quote(&original);
    if now.preview != quoted.preview || now.deleted != quoted.deleted {
        let seq = original.change_seq.max(reply.change_seq);
        if let Err(error) = state.store.refresh_quotes(&original, seq).await {
            tracing::warn!(%error, "quote of a new reply not refreshed");
        }
    }
}

/// The quote for a reply to `reply_to` in `chat`: the message must be in
/// that chat and visible to the sender (a member, who joined before it).
pub async fn quote_for(
    state: &AppState,
    chat: &ObjectId,
    sender: &ObjectId,
    reply_to: &str,
) -> Result<crate::model::ReplyRef, ChatError> {
    let id = domain::parse_id("replyTo", reply_to)?;
    let floor = member_chat(&state.store, chat, sender)
        .await?
        .visible_after(sender);
    let original = state
        .store
        .message(&id)
        .await?
        .filter(|m| m.chat_id == *chat && m.seq > floor && !m.hidden_for.contains(sender))
        .ok_or_else(|| ChatError::invalid("replyTo names no message of this chat"))?;
    Ok(rules::quote(&original))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_query_is_bounded() {
        let start = FeedCursor {
            since: 0,
            after: None,
        };
        assert_eq!(feed_query(None, None, None), Ok((start, 100)));
        let id = ObjectId::new();
        assert_eq!(
            feed_query(Some(5), Some(&id.to_hex()), Some(200)),
            Ok((
                FeedCursor {
                    since: 5,
                    after: Some(id)
                },
                200
            ))
        );
        assert!(feed_query(Some(-1), None, None).is_err());
        assert!(feed_query(None, Some("x"), None).is_err());
        assert!(feed_query(None, None, Some(0)).is_err());
        assert!(feed_query(None, None, Some(201)).is_err());
    }
}
