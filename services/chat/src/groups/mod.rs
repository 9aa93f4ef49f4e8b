//! Group conversations: creating them and changing their members, roles
//! and name. Every change is written together with the chat's next
//! message (a `system` message recording it, in history and the change
//! feed), then told to every member's devices (`groupUpdated`, also to
//! those it removed) and to every replica's sockets, which forget what
//! they knew of the group's members (see [`crate::realtime::invalidation`]).
//! The rules themselves are pure, in [`rules`].

pub mod rules;

use mongodb::bson::DateTime;
use mongodb::bson::oid::ObjectId;
use parley_common::token::Claims;
use serde::Serialize;

use crate::domain;
use crate::error::ChatError;
use crate::membership::member_chat;
use crate::model::{ChatDoc, ChatKind, LatestMessage, MessageDoc, MessageView, Notice, Role};
use crate::service::caller;
use crate::state::AppState;
use crate::store::system_message;
use rules::{Action, Outcome};

/// How often a change is decided again when a message or another change
/// was written to the group meanwhile.
const ATTEMPTS: usize = 4;

/// A member as clients see a group.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// The member.
    pub user_id: String,
    /// Their role.
    pub role: Role,
    /// When they joined.
    pub joined_at: String,
    /// The seq they read up to.
    pub read_up_to: i64,
    /// The seq a device of theirs received up to.
    pub delivered_up_to: i64,
}

/// A group as its members see it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    /// The chat id.
    #[serde(rename = "_id")]
    pub id: String,
    /// The name.
    pub name: String,
    /// Members in join order, with their roles and watermarks.
    pub members: Vec<MemberView>,
    /// The chat's latest message seq.
    pub last_seq: i64,
}

impl From<&ChatDoc> for GroupView {
    fn from(chat: &ChatDoc) -> Self {
        Self {
            id: chat.id.to_hex(),
            name: chat.name.clone().unwrap_or_default(),
            members: chat
                .roster
                .iter()
                .map(|e| MemberView {
                    user_id: e.user.to_hex(),
                    role: e.role,
                    joined_at: e.joined_at.try_to_rfc3339_string().unwrap_or_default(),
                    read_up_to: chat.read_up_to(&e.user),
                    delivered_up_to: chat.delivered_up_to(&e.user),
                })
                .collect(),
            last_seq: chat.last_seq,
        }
    }
}

/// The `groupUpdated` event: what changed, the group after it, and the
/// system message recording it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupUpdated {
    /// The chat id.
    pub chat_id: String,
    /// `created`, `renamed`, `added`, `removed`, `left`, `roleChanged`, `ownerChanged`.
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// Whom it concerns.
    pub users: Vec<String>,
    /// The group after it.
    pub group: GroupView,
    /// The system message in the history.
    pub message: MessageView,
}

/// Parses the user ids of a request, naming the field.
pub fn parse_ids(field: &str, raw: &[String]) -> Result<Vec<ObjectId>, ChatError> {
    if raw.len() > rules::MAX_ADD_AT_ONCE {
        return Err(ChatError::invalid(format!(
            "{field} holds more than {} ids",
            rules::MAX_ADD_AT_ONCE
        )));
    }
    raw.iter().map(|id| domain::parse_id(field, id)).collect()
}

/// Checks that every one of `users` exists and did not block `actor`
/// (both look the same: no such user, so a block stays unsaid).
async fn addable(state: &AppState, actor: &ObjectId, users: &[ObjectId]) -> Result<(), ChatError> {
    if !state.store.unknown_users(users).await?.is_empty()
        || !state.store.blocking_among(users, actor).await?.is_empty()
    {
        return Err(ChatError::NotFound("no such user"));
    }
    Ok(())
}

/// The caller creates a group named `name` with `member_ids`: they own it,
/// everyone sees it from its first (system) message on.
pub async fn create(
    state: &AppState,
    claims: &Claims,
    name: &str,
    member_ids: &[String],
) -> Result<ChatDoc, ChatError> {
    let me = caller(claims)?;
    let name = rules::validate_name(name)?;
    let others = rules::new_members(
        &me,
        &parse_ids("memberIds", member_ids)?,
        state.config.group_max_members,
    )?;
    addable(state, &me, &others).await?;
    let now = DateTime::now();
    let notice = Notice {
        action: "created".to_owned(),
        actor: me,
        users: others.clone(),
        name: Some(name.clone()),
        role: None,
    };
    let text = rules::preview(&notice);
    let id = ObjectId::new();
    let roster = rules::first_roster(&me, &others, now);
    let members = roster.iter().map(|e| e.user).collect();
    let chat = ChatDoc {
        last_seq: 1,
        last_change: 1,
        latest_message: Some(LatestMessage {
            text: text.clone(),
            sender: me,
            sent_at: now,
            seq: 1,
        }),
        accepted_by: vec![me],
        kind: ChatKind::Group,
        name: Some(name),
        roster,
        ..ChatDoc::empty(id, members, format!("group:{}", id.to_hex()), now)
    };
    let first = system_message(&chat, &text, &notice, now);
    state.store.create_group(&chat, &first).await?;
    metrics::counter!("chat_group_changes_total", "action" => "created").increment(1);
    announce(state, &chat, &notice, &[], &first).await;
    Ok(chat)
}

/// A member of a group, or why not: not found, forbidden for a
/// non-member, invalid for a 1:1 chat.
pub async fn member_group(
    state: &AppState,
    chat_id: &ObjectId,
    user: &ObjectId,
) -> Result<ChatDoc, ChatError> {
    let chat = member_chat(&state.store, chat_id, user).await?;
    if !chat.is_group() {
        return Err(ChatError::invalid("this chat is not a group"));
    }
    Ok(chat)
}

/// The caller changes a group; returns the group as the change left it.
pub async fn act(
    state: &AppState,
    claims: &Claims,
    chat_id: &str,
    action: Action,
) -> Result<ChatDoc, ChatError> {
    let me = caller(claims)?;
    let chat_id = domain::parse_id("chatId", chat_id)?;
    act_as(state, &me, &chat_id, action).await
}

/// `me` changes a group (the service acts for a deleted account so).
pub async fn act_as(
    state: &AppState,
    me: &ObjectId,
    chat_id: &ObjectId,
    action: Action,
) -> Result<ChatDoc, ChatError> {
    let (me, chat_id) = (*me, *chat_id);
    let mut chat = member_group(state, &chat_id, &me).await?;
    if let Action::Add(users) = &action {
        addable(state, &me, users).await?;
    }
    for _ in 0..ATTEMPTS {
        let now = DateTime::now();
        let outcome = rules::apply(&chat, &me, &action, state.config.group_max_members, now)?;
        let text = rules::preview(&outcome.notice);
        if let Some((after, message)) = state.store.apply_group(&chat, &outcome, &text, now).await?
        {
            metrics::counter!("chat_group_changes_total", "action" => outcome.notice.action.clone())
                .increment(1);
            changed(state, &chat, &after, &outcome, &message).await;
            return Ok(after);
        }
        chat = member_group(state, &chat_id, &me).await?;
    }
    Err(ChatError::Conflict(
        "the group kept changing meanwhile: try again",
    ))
}

/// After a change was stored: every replica's sockets forget the group's
/// old members (those removed leave its room), everyone concerned hears
/// `groupUpdated`, and the presence lists of those it parted are resent.
async fn changed(
    state: &AppState,
    before: &ChatDoc,
    after: &ChatDoc,
    outcome: &Outcome,
    message: &MessageDoc,
) {
    state
        .fanout
        .members_changed(&after.id, &outcome.removed)
        .await;
    announce(state, after, &outcome.notice, &outcome.removed, message).await;
    if !outcome.removed.is_empty() {
        let parted: Vec<ObjectId> = before
            .accepted_by
            .iter()
            .filter(|u| before.has_member(u))
            .copied()
            .collect();
        state.fanout.refresh_presence(&parted).await;
    }
}

/// `groupUpdated` to every member's devices and to those just removed.
async fn announce(
    state: &AppState,
    chat: &ChatDoc,
    notice: &Notice,
    removed: &[ObjectId],
    message: &MessageDoc,
) {
    let event = GroupUpdated {
        chat_id: chat.id.to_hex(),
        action: notice.action.clone(),
        actor: notice.actor.to_hex(),
        users: notice.users.iter().map(|u| u.to_hex()).collect(),
        group: GroupView::from(chat),
        message: MessageView::from(message),
    };
    state
        .fanout
        .to_users(chat.members.iter().chain(removed), "groupUpdated", &event)
        .await;
}
