//! MongoDB access for groups: creating them, writing a membership change
//! with its system message, and the members' read and delivery watermarks.

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;
use parley_common::storage::collections;

use super::{Store, db_error};
use crate::error::ChatError;
use crate::groups::rules::Outcome;
use crate::model::{ChatDoc, MessageDoc};

/// Which watermark of a group a receipt moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Read up to (`reads`).
    Read,
    /// Received up to (`delivered`).
    Delivered,
}

impl Mark {
    fn field(self) -> &'static str {
        match self {
            Self::Read => "reads",
            Self::Delivered => "delivered",
        }
    }
}

impl Store {
    /// Stores a new group and its first (system) message.
    pub async fn create_group(&self, chat: &ChatDoc, first: &MessageDoc) -> Result<(), ChatError> {
        self.chats.insert_one(chat).await.map_err(db_error)?;
        self.messages.insert_one(first).await.map_err(db_error)?;
        Ok(())
    }

    /// Writes a membership change as the chat's next message, only if no
    /// message was appended since `chat` was read (its `lastSeq` is still
    /// the one read: new members see messages after it). `None` when one
    /// was: read again and decide anew. Then stores the system message.
    pub async fn apply_group(
        &self,
        chat: &ChatDoc,
        outcome: &Outcome,
        notice_text: &str,
        now: DateTime,
    ) -> Result<Option<(ChatDoc, MessageDoc)>, ChatError> {
        let roster = mongodb::bson::to_bson(&outcome.roster)
            .map_err(|e| ChatError::internal(format!("roster: {e}")))?;
        let seq = chat.last_seq + 1;
        let mut update = doc! {
            "$set": {
                "members": outcome.members(),
                "roster": roster,
                "name": &outcome.name,
                "updatedAt": now,
                "latestMessage": {
                    "text": notice_text,
                    "sender": outcome.notice.actor,
                    "sentAt": now,
                    "seq": seq,
                },
            },
            "$inc": {"lastSeq": 1_i64, "lastChange": 1_i64},
        };
        if !outcome.removed.is_empty() {
            update.insert(
                "$pull",
                doc! {
                    "acceptedBy": {"$in": &outcome.removed},
                    "mutedBy": {"$in": &outcome.removed},
                },
            );
            let mut gone = Document::new();
            for user in &outcome.removed {
                gone.insert(format!("reads.{}", user.to_hex()), "");
                gone.insert(format!("delivered.{}", user.to_hex()), "");
            }
            update.insert("$unset", gone);
        }
        let Some(after) = self
            .chats
            .find_one_and_update(
                doc! {"_id": chat.id, "kind": "group", "lastSeq": chat.last_seq},
                update,
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let message = system_message(&after, notice_text, &outcome.notice, now);
        self.messages.insert_one(&message).await.map_err(db_error)?;
        Ok(Some((after, message)))
    }

    /// Moves `user`'s watermark in a group up to `seq` (never down); the
    /// chat as it is now when it moved, `None` when it was there already
    /// (or `user` is not a member).
    pub async fn advance(
        &self,
        chat: &ObjectId,
        user: &ObjectId,
        mark: Mark,
        seq: i64,
    ) -> Result<Option<ChatDoc>, ChatError> {
        let key = format!("{}.{}", mark.field(), user.to_hex());
        self.chats
            .find_one_and_update(
                doc! {
                    "_id": chat,
                    "members": user,
                    "$or": [{&key: {"$lt": seq}}, {&key: {"$exists": false}}],
                },
                doc! {"$set": {&key: seq}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)
    }

    /// The highest seq among `ids` in `chat` sent by others than `reader`
    /// after seq `after` (what a delivered receipt in a group may mark).
    pub async fn highest_seq_of(
        &self,
        chat: &ObjectId,
        ids: &[ObjectId],
        reader: &ObjectId,
        after: i64,
    ) -> Result<Option<i64>, ChatError> {
        let found = self
            .messages
            .clone_with_type::<Document>()
            .find_one(doc! {
                "_id": {"$in": ids},
                "chatId": chat,
                "sender": {"$ne": reader},
                "seq": {"$gt": after},
            })
            .sort(doc! {"seq": -1})
            .projection(doc! {"seq": 1, "_id": 0})
            .await
            .map_err(db_error)?;
        Ok(found.as_ref().and_then(seq_of))
    }

    /// The seq of the message of `chat` carrying image `media`.
    pub async fn media_seq(
        &self,
        chat: &ObjectId,
        media: &ObjectId,
    ) -> Result<Option<i64>, ChatError> {
        let found = self
            .messages
            .clone_with_type::<Document>()
            .find_one(doc! {"chatId": chat, "image.mediaId": media})
            .projection(doc! {"seq": 1, "_id": 0})
            .await
            .map_err(db_error)?;
        Ok(found.as_ref().and_then(seq_of))
    }

    /// Which of `ids` are no user at all.
    pub async fn unknown_users(&self, ids: &[ObjectId]) -> Result<Vec<ObjectId>, ChatError> {
        let users = self.db.collection::<Document>(collections::USERS);
        let known = super::ids_of(&users, doc! {"_id": {"$in": ids}}, "_id").await?;
        Ok(ids
            .iter()
            .filter(|id| !known.contains(id))
            .copied()
            .collect())
    }

    /// Which of `users` blocked `actor`.
    pub async fn blocking_among(
        &self,
        users: &[ObjectId],
        actor: &ObjectId,
    ) -> Result<Vec<ObjectId>, ChatError> {
        let pairs = self
            .block_pairs(doc! {"blocker": {"$in": users}, "blocked": actor})
            .await?;
        Ok(pairs.into_iter().map(|(blocker, _)| blocker).collect())
    }

    /// Every block (blocker, blocked) by or of any of `users`.
    pub async fn block_peers(
        &self,
        users: &[ObjectId],
    ) -> Result<Vec<(ObjectId, ObjectId)>, ChatError> {
        self.block_pairs(doc! {"$or": [{"blocker": {"$in": users}}, {"blocked": {"$in": users}}]})
            .await
    }

    async fn block_pairs(&self, filter: Document) -> Result<Vec<(ObjectId, ObjectId)>, ChatError> {
        let projection = doc! {"blocker": 1, "blocked": 1, "_id": 0};
        let found = super::projected(&self.blocks, filter, projection).await?;
        Ok(found
            .iter()
            .filter_map(|d| {
                Some((
                    d.get_object_id("blocker").ok()?,
                    d.get_object_id("blocked").ok()?,
                ))
            })
            .collect())
    }
}

/// Pure: a projected document's `seq`.
fn seq_of(found: &Document) -> Option<i64> {
    match found.get("seq") {
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Pure: the system message recording a group change, as the chat's
/// latest seq and change number (`chat` as the change left it).
pub fn system_message(
    chat: &ChatDoc,
    text: &str,
    notice: &crate::model::Notice,
    now: DateTime,
) -> MessageDoc {
    MessageDoc {
        text: text.to_owned(),
        message_type: "system".to_owned(),
        system: Some(notice.clone()),
        ..MessageDoc::new(chat.id, chat.last_seq, chat.last_change, notice.actor, now)
    }
}
