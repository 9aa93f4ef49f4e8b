//! Stored documents and the JSON shapes clients see.

use std::collections::BTreeMap;

use mongodb::bson::DateTime;
use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};

/// The last message of a chat, kept on the chat for lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestMessage {
    /// Preview text.
    pub text: String,
    /// Who sent it.
    pub sender: ObjectId,
    /// When the server stored it.
    pub sent_at: DateTime,
    /// Its sequence number in the chat.
    pub seq: i64,
}

/// Whether a chat is a 1:1 conversation or a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    /// Two users; members never change (stored chats without a kind are these).
    #[default]
    Direct,
    /// A named group with roles; members come and go.
    Group,
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds every right, one per group.
    Owner,
    /// Renames, adds and removes members, deletes anyone's messages.
    Admin,
    /// Writes, reads and leaves.
    Member,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    /// True for the owner and admins.
    pub fn manages(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// One member of a group, in the order they joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RosterEntry {
    /// The member.
    pub user: ObjectId,
    /// Their role.
    pub role: Role,
    /// The chat's last message seq when they joined: they see only
    /// messages after it.
    pub joined_seq: i64,
    /// When they joined.
    pub joined_at: DateTime,
}

/// A chat document (`chats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatDoc {
    /// Id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Member user ids.
    pub members: Vec<ObjectId>,
    /// Unique key of a 1:1 chat.
    pub pair_key: String,
    /// Highest message sequence number handed out.
    #[serde(default)]
    pub last_seq: i64,
    /// Highest change sequence number handed out (every new, edited,
    /// deleted, hidden or reacted-to message takes the next one).
    #[serde(default)]
    pub last_change: i64,
    /// The newest message, if any.
    #[serde(default)]
    pub latest_message: Option<LatestMessage>,
    /// Creation time.
    pub created_at: DateTime,
    /// Last activity.
    pub updated_at: DateTime,
    /// Members who accepted the chat: the one who opened it, anyone who
    /// sent a message in it, anyone who accepted it explicitly. Presence
    /// flows only once every member has.
    #[serde(default)]
    pub accepted_by: Vec<ObjectId>,
    /// Members who blocked the other (kept in step with `blocks`): no
    /// sends, typing, receipts or presence while any.
    #[serde(default)]
    pub blocked_by: Vec<ObjectId>,
    /// Members who muted the chat: no mail notifications for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub muted_by: Vec<ObjectId>,
    /// 1:1 or group.
    #[serde(default)]
    pub kind: ChatKind,
    /// A group's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A group's members with their roles, in the order they joined (kept
    /// in step with `members`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roster: Vec<RosterEntry>,
    /// A group's read watermarks: member (hex id) to the highest message
    /// seq they read. Receipts in groups are these, never per message.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reads: BTreeMap<String, i64>,
    /// A group's delivery watermarks: member (hex id) to the highest seq
    /// one of their devices received.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub delivered: BTreeMap<String, i64>,
}

impl ChatDoc {
    /// A 1:1 chat of `members` under `pair_key`, with nothing in it yet
    /// (a group sets its kind, name and roster on top).
    pub fn empty(id: ObjectId, members: Vec<ObjectId>, pair_key: String, now: DateTime) -> Self {
        Self {
            id,
            members,
            pair_key,
            last_seq: 0,
            last_change: 0,
            latest_message: None,
            created_at: now,
            updated_at: now,
            accepted_by: Vec::new(),
            blocked_by: Vec::new(),
            muted_by: Vec::new(),
            kind: ChatKind::Direct,
            name: None,
            roster: Vec::new(),
            reads: BTreeMap::new(),
            delivered: BTreeMap::new(),
        }
    }

    /// True when `user` is a member.
    pub fn has_member(&self, user: &ObjectId) -> bool {
        self.members.contains(user)
    }

    /// True when the members may see each other's presence (1:1 chats;
    /// see [`ChatDoc::presence_partners`] for groups).
    pub fn presence_flows(&self) -> bool {
        crate::domain::presence_flows(&self.members, &self.accepted_by, &self.blocked_by)
    }

    /// The members who see `user`'s presence through this chat: in a 1:1
    /// chat the other member once both accepted it; in a group, the
    /// members who accepted it, once `user` did too.
    pub fn presence_partners(&self, user: &ObjectId) -> Vec<ObjectId> {
        let flows = match self.kind {
            ChatKind::Direct => self.presence_flows(),
            ChatKind::Group => self.accepted_by.contains(user) && self.has_member(user),
        };
        if !flows {
            return Vec::new();
        }
        self.members
            .iter()
            .filter(|m| *m != user && self.accepted_by.contains(m))
            .copied()
            .collect()
    }

    /// True for a group.
    pub fn is_group(&self) -> bool {
        self.kind == ChatKind::Group
    }

    /// `user`'s role in a group (`None` in a 1:1 chat or for a non-member).
    pub fn role_of(&self, user: &ObjectId) -> Option<Role> {
        self.roster.iter().find(|e| e.user == *user).map(|e| e.role)
    }

    /// The seq after which `user` sees messages: 0 in a 1:1 chat, the
    /// chat's last seq when they joined in a group.
    pub fn visible_after(&self, user: &ObjectId) -> i64 {
        self.roster
            .iter()
            .find(|e| e.user == *user)
            .map_or(0, |e| e.joined_seq)
    }

    /// The seq `user` read up to in a group (0 before any read).
    pub fn read_up_to(&self, user: &ObjectId) -> i64 {
        mark(&self.reads, user)
    }

    /// The seq up to which a device of `user` received a group's messages
    /// (0 before any delivered receipt).
    pub fn delivered_up_to(&self, user: &ObjectId) -> i64 {
        mark(&self.delivered, user)
    }
}

/// A member's watermark in a map keyed by hex user id; 0 when absent.
fn mark(marks: &BTreeMap<String, i64>, user: &ObjectId) -> i64 {
    marks.get(&user.to_hex()).copied().unwrap_or(0)
}

/// An image stored in GridFS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    /// GridFS file id.
    pub media_id: ObjectId,
    /// Sniffed MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
}

/// A message document (`messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageDoc {
    /// Id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The chat.
    pub chat_id: ObjectId,
    /// Position in the chat, 1, 2, 3… (cursor for `before`/`after`).
    pub seq: i64,
    /// The sender.
    pub sender: ObjectId,
    /// Text (may be empty for an image).
    pub text: String,
    /// Attached image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// `text` or `image`.
    pub message_type: String,
    /// The client's idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    /// When the server stored it.
    pub sent_at: DateTime,
    /// When a recipient's device acknowledged it.
    #[serde(default)]
    pub delivered_at: Option<DateTime>,
    /// Whether the recipient opened it.
    #[serde(default)]
    pub seen: bool,
    /// When the recipient opened it.
    #[serde(default)]
    pub seen_at: Option<DateTime>,
    /// The chat's change sequence number of this message's latest change
    /// (creation, edit, deletion, reaction, hiding): the cursor of
    /// `GET /message/{chatId}/changes`. Messages stored before changes were
    /// tracked have 0.
    #[serde(default)]
    pub change_seq: i64,
    /// When the sender last edited the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime>,
    /// When it was deleted for everyone (a tombstone: no text, no image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime>,
    /// Members who deleted it for themselves only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden_for: Vec<ObjectId>,
    /// Reactions, in the order each emoji was first used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    /// The message this one answers, quoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyRef>,
    /// True once its sender deleted their account (it is then a tombstone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sender_deleted: bool,
    /// What a `system` message records (a group's membership change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Notice>,
}

/// A change to a group, as its `system` message records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// `created`, `renamed`, `added`, `removed`, `left`, `roleChanged` or
    /// `ownerChanged`.
    pub action: String,
    /// Who did it.
    pub actor: ObjectId,
    /// Whom it concerns (added, removed, promoted, the new owner…).
    #[serde(default)]
    pub users: Vec<ObjectId>,
    /// The group's name after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The role given (`roleChanged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl MessageDoc {
    /// An empty text message by `sender` at `seq` and change number
    /// `change_seq` of `chat_id` (callers fill in what it holds).
    pub fn new(
        chat_id: ObjectId,
        seq: i64,
        change_seq: i64,
        sender: ObjectId,
        sent_at: DateTime,
    ) -> Self {
        Self {
            id: ObjectId::new(),
            chat_id,
            seq,
            sender,
            text: String::new(),
            image: None,
            message_type: "text".to_owned(),
            client_message_id: None,
            sent_at,
            delivered_at: None,
            seen: false,
            seen_at: None,
            change_seq,
            edited_at: None,
            deleted_at: None,
            hidden_for: Vec::new(),
            reactions: Vec::new(),
            reply_to: None,
            sender_deleted: false,
            system: None,
        }
    }
}

/// One emoji on a message and who reacted with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    /// The emoji, as the client sent it.
    pub emoji: String,
    /// Who reacted with it, oldest first.
    pub users: Vec<ObjectId>,
}

/// The message a reply quotes: kept with the reply, refreshed when the
/// original is edited, emptied when it is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyRef {
    /// The quoted message.
    pub message_id: ObjectId,
    /// Its sequence number (to scroll to it).
    pub seq: i64,
    /// Its sender.
    pub sender: ObjectId,
    /// A preview of its current text (empty once deleted).
    pub preview: String,
    /// True once the original was deleted for everyone.
    #[serde(default)]
    pub deleted: bool,
}

fn iso(dt: DateTime) -> String {
    dt.try_to_rfc3339_string().unwrap_or_default()
}

/// An image as clients see it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    /// Authenticated download URL.
    pub url: String,
    /// GridFS id.
    pub media_id: String,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
}

/// A message as clients see it (original field names kept).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// Id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Chat id.
    pub chat_id: String,
    /// Sequence in the chat.
    pub seq: i64,
    /// Sender id.
    pub sender: String,
    /// Text.
    pub text: String,
    /// Image, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageView>,
    /// `text` or `image`.
    pub message_type: String,
    /// The client's idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    /// `sent`, `delivered` or `seen`.
    pub status: &'static str,
    /// Seen flag (original field).
    pub seen: bool,
    /// When seen.
    pub seen_at: Option<String>,
    /// When delivered.
    pub delivered_at: Option<String>,
    /// When the server stored it.
    pub sent_at: String,
    /// Same as sentAt (original field).
    pub created_at: String,
    /// The chat's change sequence number of this message's latest change.
    pub change_seq: i64,
    /// When the text was last edited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// When it was deleted for everyone (`messageType` is then `deleted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// True when the viewer deleted it for themselves (only in the change
    /// feed; history leaves such messages out).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    /// Reactions: each emoji with its count and who used it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionView>,
    /// The message this one answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyView>,
    /// True once its sender deleted their account.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sender_deleted: bool,
    /// What a `system` message records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<NoticeView>,
    /// In a group: who of the members received and read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<GroupReceipts>,
}

/// A group change as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticeView {
    /// What happened.
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// Whom it concerns.
    pub users: Vec<String>,
    /// The group's name after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The role given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl From<&Notice> for NoticeView {
    fn from(n: &Notice) -> Self {
        Self {
            action: n.action.clone(),
            actor: n.actor.to_hex(),
            users: n.users.iter().map(|u| u.to_hex()).collect(),
            name: n.name.clone(),
            role: n.role,
        }
    }
}

/// A group message's receipts, from the members' watermarks: counts
/// always, the lists too in small groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupReceipts {
    /// Members it was meant for: current members but the sender who
    /// joined before it was sent (the M of "seen by N of M").
    pub of: usize,
    /// How many of them received it on a device.
    pub delivered: usize,
    /// How many read it.
    pub seen: usize,
    /// Who received it (groups of at most
    /// [`crate::watermarks::LISTED_UP_TO`] members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_to: Option<Vec<String>>,
    /// Who read it (same bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_by: Option<Vec<String>>,
}

/// A reaction as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionView {
    /// The emoji.
    pub emoji: String,
    /// How many reacted with it.
    pub count: usize,
    /// Who.
    pub users: Vec<String>,
}

/// A quoted message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyView {
    /// The quoted message's id.
    pub message_id: String,
    /// Its sequence number.
    pub seq: i64,
    /// Its sender.
    pub sender: String,
    /// Its current preview (empty once deleted).
    pub preview: String,
    /// True once it was deleted for everyone.
    pub deleted: bool,
}

impl MessageView {
    /// The view of `m` for `viewer`: a message the viewer deleted for
    /// themselves shows as hidden, without its content.
    pub fn for_viewer(m: &MessageDoc, viewer: &ObjectId) -> Self {
        let mut view = Self::from(m);
        if m.hidden_for.contains(viewer) {
            view.hidden = true;
            view.text = String::new();
            view.image = None;
            view.reactions = Vec::new();
            view.reply_to = None;
        }
        view
    }
}

impl From<&MessageDoc> for MessageView {
    fn from(m: &MessageDoc) -> Self {
        let status = if m.seen {
            "seen"
        } else if m.delivered_at.is_some() {
            "delivered"
        } else {
            "sent"
        };
        Self {
            id: m.id.to_hex(),
            chat_id: m.chat_id.to_hex(),
            seq: m.seq,
            sender: m.sender.to_hex(),
            text: m.text.clone(),
            image: m.image.as_ref().map(|i| ImageView {
                url: format!("/api/v1/media/{}", i.media_id.to_hex()),
                media_id: i.media_id.to_hex(),
                content_type: i.content_type.clone(),
                size: i.size,
            }),
            message_type: m.message_type.clone(),
            client_message_id: m.client_message_id.clone(),
            status,
            seen: m.seen,
            seen_at: m.seen_at.map(iso),
            delivered_at: m.delivered_at.map(iso),
            sent_at: iso(m.sent_at),
            created_at: iso(m.sent_at),
            change_seq: m.change_seq,
            edited_at: m.edited_at.map(iso),
            deleted_at: m.deleted_at.map(iso),
            hidden: false,
            reactions: m
                .reactions
                .iter()
                .map(|r| ReactionView {
                    emoji: r.emoji.clone(),
                    count: r.users.len(),
                    users: r.users.iter().map(|u| u.to_hex()).collect(),
                })
                .collect(),
            reply_to: m.reply_to.as_ref().map(|r| ReplyView {
                message_id: r.message_id.to_hex(),
                seq: r.seq,
                sender: r.sender.to_hex(),
                preview: r.preview.clone(),
                deleted: r.deleted,
            }),
            sender_deleted: m.sender_deleted,
            system: m.system.as_ref().map(NoticeView::from),
            receipts: None,
        }
    }
}

/// A chat's latest message as clients see it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestView {
    /// Preview text.
    pub text: String,
    /// Sender id.
    pub sender: String,
    /// When sent.
    pub sent_at: String,
    /// Sequence.
    pub seq: i64,
}

/// A chat as clients see it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatView {
    /// Id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Member ids (original field name).
    pub users: Vec<String>,
    /// The newest message.
    pub latest_message: Option<LatestView>,
    /// Messages from others the caller has not seen.
    pub unseen_count: u64,
    /// True when the caller muted the chat (no mail notifications).
    pub muted: bool,
    /// `direct` or `group`.
    pub kind: ChatKind,
    /// A group's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The caller's role in a group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Creation time.
    pub created_at: String,
    /// Last activity.
    pub updated_at: String,
}

impl ChatView {
    /// The view of `chat` for `viewer`, with their unseen count.
    pub fn new(chat: &ChatDoc, viewer: &ObjectId, unseen_count: u64) -> Self {
        Self {
            id: chat.id.to_hex(),
            users: chat.members.iter().map(|id| id.to_hex()).collect(),
            latest_message: chat.latest_message.as_ref().map(|l| LatestView {
                text: l.text.clone(),
                sender: l.sender.to_hex(),
                sent_at: iso(l.sent_at),
                seq: l.seq,
            }),
            unseen_count,
            muted: chat.muted_by.contains(viewer),
            kind: chat.kind,
            name: chat.name.clone(),
            role: chat.role_of(viewer),
            created_at: iso(chat.created_at),
            updated_at: iso(chat.updated_at),
        }
    }
}

/// A user's public profile: id and name. An email in the user service's
/// answer is dropped here, so chat never shows one user's address to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Display name.
    pub name: String,
}

impl Profile {
    /// Shown when the user service cannot be asked.
    pub fn placeholder(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: "Unknown user".to_owned(),
        }
    }
}
