//! Users in MongoDB (`users`, unique by email).

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, IndexModel};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// A user document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDoc {
    /// Id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Lowercased email, unique.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Created.
    pub created_at: DateTime,
    /// Last change.
    pub updated_at: DateTime,
    /// When the user's last socket closed (written by the chat service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime>,
}

/// A user as clients see it (the original's field names).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    /// Id (hex).
    #[serde(rename = "_id")]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Last seen (RFC 3339), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<String>,
}

/// Another user as a caller sees them: no email, and `lastSeenAt` only for
/// people who share a chat with them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicView {
    /// Id (hex).
    #[serde(rename = "_id")]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Last seen (RFC 3339), when known and the caller shares a chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<String>,
}

impl PublicView {
    /// `user` as seen by someone who does (`shares_chat`) or does not share
    /// a chat with them.
    pub fn of(user: &UserDoc, shares_chat: bool) -> Self {
        Self {
            id: user.id.to_hex(),
            name: user.name.clone(),
            created_at: iso(user.created_at),
            updated_at: iso(user.updated_at),
            last_seen_at: user.last_seen_at.filter(|_| shares_chat).map(iso),
        }
    }
}

fn iso(dt: DateTime) -> String {
    dt.try_to_rfc3339_string().unwrap_or_default()
}

impl From<&UserDoc> for UserView {
    fn from(u: &UserDoc) -> Self {
        Self {
            id: u.id.to_hex(),
            name: u.name.clone(),
            email: u.email.clone(),
            created_at: iso(u.created_at),
            updated_at: iso(u.updated_at),
            last_seen_at: u.last_seen_at.map(iso),
        }
    }
}

use parley_common::mongo::find_or_insert;
use parley_common::storage::collections;

/// The `users` collection (and, read-only, the chat service's `chats` and
/// `messages`: who shares a chat, and a user's data export).
#[derive(Clone, Debug)]
pub struct Users {
    users: Collection<UserDoc>,
    chats: Collection<mongodb::bson::Document>,
    messages: Collection<SentMessage>,
}

/// A chat a user is in, as their export shows it (read from the chat
/// service's `chats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatOfUser {
    /// Id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Member ids.
    pub members: Vec<ObjectId>,
    /// Created.
    #[serde(rename = "createdAt")]
    pub created_at: DateTime,
}

/// An image a user sent, as their export names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentImage {
    /// The media id (download at `/api/v1/media/{id}` of the chat service).
    pub media_id: ObjectId,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
}

/// A message a user sent, as their export shows it (read from the chat
/// service's `messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    /// Id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Its chat.
    pub chat_id: ObjectId,
    /// Position in the chat.
    pub seq: i64,
    /// Text.
    #[serde(default)]
    pub text: String,
    /// Image, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<SentImage>,
    /// When it was sent.
    pub sent_at: DateTime,
    /// When it was last edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime>,
}

impl Users {
    /// Handle on `db.users`.
    pub fn new(db: &mongodb::Database) -> Self {
        Self {
            users: db.collection(collections::USERS),
            chats: db.collection(collections::CHATS),
            messages: db.collection(collections::MESSAGES),
        }
    }

    /// Those of `others` who share a chat with `caller` that both accepted
    /// and neither blocked (as the chat service's presence: a stranger who
    /// opens a chat learns nothing), served by the chat service's `members`
    /// index.
    pub async fn chat_partners(
        &self,
        caller: &ObjectId,
        others: &[ObjectId],
    ) -> Result<std::collections::HashSet<ObjectId>, DomainError> {
        let others: Vec<ObjectId> = others.iter().filter(|id| *id != caller).copied().collect();
        if others.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let chats: Vec<mongodb::bson::Document> = self
            .chats
            .find(doc! {"$and": [{"members": caller}, {"members": {"$in": &others}}]})
            .projection(doc! {"members": 1, "acceptedBy": 1, "blockedBy": 1})
            .await
            .map_err(DomainError::from)?
            .try_collect()
            .await
            .map_err(DomainError::from)?;
        let ids = |chat: &mongodb::bson::Document, field: &str| -> Vec<ObjectId> {
            chat.get_array(field)
                .map(|m| m.iter().filter_map(|v| v.as_object_id()).collect())
                .unwrap_or_default()
        };
        Ok(chats
            .iter()
            .filter(|chat| {
                let accepted = ids(chat, "acceptedBy");
                ids(chat, "blockedBy").is_empty()
                    && ids(chat, "members").iter().all(|m| accepted.contains(m))
            })
            .filter_map(|chat| chat.get_array("members").ok())
            .flatten()
            .filter_map(|member| member.as_object_id())
            .filter(|member| others.contains(member))
            .collect())
    }

    /// The unique email index (idempotent).
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        self.users
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"email": 1})
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// The user with this email, created on first login (exactly one, even
    /// when logins race: the unique index decides, the loser reads).
    pub async fn find_or_create(&self, email: &str, name: &str) -> Result<UserDoc, DomainError> {
        let found = find_or_insert(&self.users, doc! {"email": email}, || {
            let now = DateTime::now();
            UserDoc {
                id: ObjectId::new(),
                email: email.to_owned(),
                name: name.to_owned(),
                created_at: now,
                updated_at: now,
                last_seen_at: None,
            }
        })
        .await?;
        Ok(found.into_inner())
    }

    /// One user.
    pub async fn get(&self, id: &ObjectId) -> Result<Option<UserDoc>, DomainError> {
        self.users
            .find_one(doc! {"_id": id})
            .await
            .map_err(DomainError::from)
    }

    /// A page of users in id order, after `cursor`.
    pub async fn page(
        &self,
        cursor: Option<ObjectId>,
        limit: i64,
    ) -> Result<Vec<UserDoc>, DomainError> {
        let filter = match cursor {
            Some(after) => doc! {"_id": {"$gt": after}},
            None => doc! {},
        };
        self.users
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await
            .map_err(DomainError::from)?
            .try_collect()
            .await
            .map_err(DomainError::from)
    }

    /// The users among `ids` that exist.
    pub async fn many(&self, ids: &[ObjectId]) -> Result<Vec<UserDoc>, DomainError> {
        self.users
            .find(doc! {"_id": {"$in": ids}})
            .await
            .map_err(DomainError::from)?
            .try_collect()
            .await
            .map_err(DomainError::from)
    }

    /// Removes a user's document; false when there was none.
    pub async fn delete(&self, id: &ObjectId) -> Result<bool, DomainError> {
        Ok(self
            .users
            .delete_one(doc! {"_id": id})
            .await
            .map_err(DomainError::from)?
            .deleted_count
            == 1)
    }

    /// The chats `user` is a member of, oldest first.
    pub async fn chats_of(&self, user: &ObjectId) -> Result<Vec<ChatOfUser>, DomainError> {
        self.chats
            .clone_with_type::<ChatOfUser>()
            .find(doc! {"members": user})
            .projection(doc! {"members": 1, "createdAt": 1})
            .sort(doc! {"createdAt": 1, "_id": 1})
            .await
            .map_err(DomainError::from)?
            .try_collect()
            .await
            .map_err(DomainError::from)
    }

    /// Every message `user` sent and did not delete, chat by chat in order,
    /// as a stream (an export never holds them all at once).
    pub async fn messages_by(
        &self,
        user: &ObjectId,
    ) -> Result<mongodb::Cursor<SentMessage>, DomainError> {
        self.messages
            .find(doc! {"sender": user, "deletedAt": {"$exists": false}})
            .projection(doc! {
                "chatId": 1, "seq": 1, "text": 1, "image": 1, "sentAt": 1, "editedAt": 1,
            })
            .sort(doc! {"chatId": 1, "seq": 1})
            .await
            .map_err(DomainError::from)
    }

    /// Renames a user; returns the updated document.
    pub async fn rename(&self, id: &ObjectId, name: &str) -> Result<Option<UserDoc>, DomainError> {
        self.users
            .find_one_and_update(
                doc! {"_id": id},
                doc! {"$set": {"name": name, "updatedAt": DateTime::now()}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(DomainError::from)
    }
}
