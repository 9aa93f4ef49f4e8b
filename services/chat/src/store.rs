//! MongoDB access for chats, messages, media and last-seen times.

mod groups;

pub use groups::{Mark, system_message};

use std::collections::HashMap;

use futures::{AsyncWriteExt, Stream, TryStreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use mongodb::error::{ErrorKind, GridFsErrorKind};
use mongodb::gridfs::GridFsBucket;
use mongodb::options::{GridFsBucketOptions, IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::Deserialize;

use crate::changes::rules::Update;
use crate::domain::{ChunkPlan, Window, pair_key};
use crate::error::ChatError;
use crate::model::{ChatDoc, ImageRef, MessageDoc, ReplyRef};

/// A driver error in the domain's words (unavailable or internal).
pub fn db_error(error: mongodb::error::Error) -> ChatError {
    error.into()
}
use parley_common::mongo::{Found, find_or_insert, is_duplicate_key};
use parley_common::storage::collections;

/// Pure: the write that turns a message into a tombstone at `at`, as
/// change number `seq` (`sender_deleted`: its sender's account is gone).
fn tombstone(at: DateTime, seq: i64, sender_deleted: bool) -> Document {
    let mut set = doc! {
        "text": "",
        "messageType": "deleted",
        "deletedAt": at,
        "reactions": [],
        "changeSeq": seq,
    };
    if sender_deleted {
        set.insert("senderDeleted", true);
    }
    doc! {"$set": set, "$unset": {"image": "", "replyTo": ""}}
}

/// A new message before it is stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The chat.
    pub chat_id: ObjectId,
    /// The sender.
    pub sender: ObjectId,
    /// Validated text.
    pub text: String,
    /// Stored image.
    pub image: Option<ImageRef>,
    /// Idempotency key.
    pub client_message_id: Option<String>,
    /// Preview for the chat list.
    pub preview: String,
    /// The quoted message of a reply.
    pub reply_to: Option<ReplyRef>,
}

/// A message a delivered receipt may mark: not yet delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The message.
    pub id: ObjectId,
    /// Its chat.
    pub chat: ObjectId,
    /// Its sender.
    pub sender: ObjectId,
}

/// The outcome of [`Store::append_message`].
#[derive(Debug)]
pub enum Appended {
    /// Stored now; the chat as updated.
    Created(MessageDoc, Box<ChatDoc>),
    /// The idempotency key was already used: the first message.
    Duplicate(MessageDoc),
    /// No such chat, the sender is not a member, or a member blocked the other.
    NotMember,
}

/// The GridFS bucket images live in (`media.files`, `media.chunks`).
pub const MEDIA_BUCKET: &str = "media";

/// Chunks (255 KiB each by default) fetched per round trip while an image
/// is streamed out.
pub const MEDIA_CHUNKS_PER_BATCH: u32 = 4;

/// A stored image's GridFS file document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFile {
    /// The file id (the media id clients see).
    pub id: ObjectId,
    /// The chat it was sent in.
    pub chat: ObjectId,
    /// Sniffed MIME type.
    pub content_type: String,
    /// Bytes.
    pub length: u64,
    /// Bytes per GridFS chunk.
    pub chunk_size: u32,
}

/// One GridFS chunk as stored (`media.chunks`).
#[derive(Debug, Deserialize)]
struct ChunkDoc {
    n: i64,
    data: Binary,
}

/// The chat service's collections.
#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
    chats: Collection<ChatDoc>,
    messages: Collection<MessageDoc>,
    /// Image bytes stored per uploader: `{_id: userId, bytes, updatedAt}`.
    media_usage: Collection<Document>,
    blocks: Collection<mongodb::bson::Document>,
}

/// The fields `projection` names of every document of `collection` that
/// `filter` finds.
async fn projected(
    collection: &Collection<Document>,
    filter: Document,
    projection: Document,
) -> Result<Vec<Document>, ChatError> {
    collection
        .find(filter)
        .projection(projection)
        .await
        .map_err(db_error)?
        .try_collect()
        .await
        .map_err(db_error)
}

/// The id in `field` of every document of `collection` that `filter`
/// finds (only that field is read).
async fn ids_of(
    collection: &Collection<Document>,
    filter: Document,
    field: &str,
) -> Result<Vec<ObjectId>, ChatError> {
    let found = projected(collection, filter, doc! {field: 1}).await?;
    Ok(found
        .iter()
        .filter_map(|d| d.get_object_id(field).ok())
        .collect())
}

/// A block as its author sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The blocked user.
    pub blocked: ObjectId,
    /// When.
    pub at: DateTime,
}

impl Store {
    /// Handles on `db`'s collections.
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            chats: db.collection(collections::CHATS),
            messages: db.collection(collections::MESSAGES),
            media_usage: db.collection("mediaUsage"),
            blocks: db.collection("blocks"),
        }
    }

    /// Creates the indexes every query path needs (idempotent).
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let index = |keys: Document, options: Option<IndexOptions>| {
            IndexModel::builder().keys(keys).options(options).build()
        };
        let unique = || Some(IndexOptions::builder().unique(true).build());
        self.chats
            .create_indexes([
                index(doc! {"pairKey": 1}, unique()),
                index(doc! {"members": 1, "updatedAt": -1, "_id": -1}, None),
            ])
            .await?;
        let client_ids = IndexOptions::builder()
            .unique(true)
            .partial_filter_expression(doc! {"clientMessageId": {"$exists": true}})
            .build();
        self.messages
            .create_indexes([
                index(doc! {"chatId": 1, "seq": 1}, unique()),
                index(doc! {"chatId": 1, "changeSeq": 1, "_id": 1}, None),
                index(doc! {"chatId": 1, "replyTo.messageId": 1}, None),
                index(doc! {"sentAt": 1}, None),
                index(doc! {"sender": 1, "chatId": 1, "seq": 1}, None),
                index(
                    doc! {"chatId": 1, "sender": 1, "clientMessageId": 1},
                    Some(client_ids),
                ),
            ])
            .await?;
        self.blocks
            .create_indexes([
                index(doc! {"blocker": 1, "blocked": 1}, unique()),
                index(doc! {"blocked": 1}, None),
            ])
            .await?;
        Ok(())
    }

    /// Records that `blocker` blocked `blocked` (and marks their chat, if
    /// any); false when it was already so.
    pub async fn block(&self, blocker: &ObjectId, blocked: &ObjectId) -> Result<bool, ChatError> {
        let created = match self
            .blocks
            .insert_one(doc! {"blocker": blocker, "blocked": blocked, "createdAt": DateTime::now()})
            .await
        {
            Ok(_) => true,
            Err(e) if is_duplicate_key(&e) => false,
            Err(e) => return Err(db_error(e)),
        };
        // Always (also when the block existed): repairs a chat created
        // concurrently with the block.
        self.chats
            .update_one(
                doc! {"pairKey": pair_key(blocker, blocked)},
                doc! {"$addToSet": {"blockedBy": blocker}},
            )
            .await
            .map_err(db_error)?;
        Ok(created)
    }

    /// Lifts `blocker`'s block of `blocked`; false when there was none.
    pub async fn unblock(&self, blocker: &ObjectId, blocked: &ObjectId) -> Result<bool, ChatError> {
        let deleted = self
            .blocks
            .delete_one(doc! {"blocker": blocker, "blocked": blocked})
            .await
            .map_err(db_error)?;
        self.chats
            .update_one(
                doc! {"pairKey": pair_key(blocker, blocked)},
                doc! {"$pull": {"blockedBy": blocker}},
            )
            .await
            .map_err(db_error)?;
        Ok(deleted.deleted_count > 0)
    }

    /// Who of `a` and `b` blocked the other (both when both did).
    pub async fn blockers_between(
        &self,
        a: &ObjectId,
        b: &ObjectId,
    ) -> Result<Vec<ObjectId>, ChatError> {
        ids_of(
            &self.blocks,
            doc! {"$or": [
                {"blocker": a, "blocked": b},
                {"blocker": b, "blocked": a},
            ]},
            "blocker",
        )
        .await
    }

    /// The users `blocker` blocked, newest first (at most 1,000).
    pub async fn blocks_of(&self, blocker: &ObjectId) -> Result<Vec<Block>, ChatError> {
        let found: Vec<mongodb::bson::Document> = self
            .blocks
            .find(doc! {"blocker": blocker})
            .sort(doc! {"blocker": 1, "blocked": 1})
            .limit(1000)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let mut blocks: Vec<Block> = found
            .iter()
            .filter_map(|d| {
                Some(Block {
                    blocked: d.get_object_id("blocked").ok()?,
                    at: d.get_datetime("createdAt").ok().copied()?,
                })
            })
            .collect();
        blocks.sort_by_key(|b| std::cmp::Reverse(b.at));
        Ok(blocks)
    }

    /// `user` accepts the chat (when a member); the chat as it is now.
    pub async fn accept(
        &self,
        chat: &ObjectId,
        user: &ObjectId,
    ) -> Result<Option<ChatDoc>, ChatError> {
        self.chats
            .find_one_and_update(
                doc! {"_id": chat, "members": user},
                doc! {"$addToSet": {"acceptedBy": user}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)
    }

    /// Adds `user` to (`on`) or removes them from the chat's `mutedBy`.
    pub async fn set_mute(
        &self,
        chat: &ObjectId,
        user: &ObjectId,
        on: bool,
    ) -> Result<Option<ChatDoc>, ChatError> {
        let update = if on {
            doc! {"$addToSet": {"mutedBy": user}}
        } else {
            doc! {"$pull": {"mutedBy": user}}
        };
        self.chats
            .find_one_and_update(doc! {"_id": chat, "members": user}, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)
    }

    /// True when a user with this id exists.
    pub async fn user_exists(&self, id: &ObjectId) -> Result<bool, ChatError> {
        let users = self.db.collection::<Document>(collections::USERS);
        let found = users
            .find_one(doc! {"_id": id})
            .projection(doc! {"_id": 1})
            .await
            .map_err(db_error)?;
        Ok(found.is_some())
    }

    /// Stores when the user's last socket closed.
    pub async fn set_last_seen(&self, user: &ObjectId, at: DateTime) -> Result<(), ChatError> {
        let users = self.db.collection::<Document>(collections::USERS);
        users
            .update_one(doc! {"_id": user}, doc! {"$set": {"lastSeenAt": at}})
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The 1:1 chat of `a` and `b`, created when missing; true when created now.
    pub async fn find_or_create_pair(
        &self,
        a: &ObjectId,
        b: &ObjectId,
    ) -> Result<(ChatDoc, bool), ChatError> {
        let key = pair_key(a, b);
        let found = find_or_insert(&self.chats, doc! {"pairKey": &key}, || {
            ChatDoc {
                // Opening a chat accepts it for its opener only.
                accepted_by: vec![*a],
                ..ChatDoc::empty(ObjectId::new(), vec![*a, *b], key.clone(), DateTime::now())
            }
        })
        .await?;
        let chat = match found {
            Found::Existing(chat) => return Ok((chat, false)),
            Found::Created(chat) => chat,
        };
        // A block stored while this chat was created found no chat to
        // mark: mark it now.
        let blockers = self.blockers_between(a, b).await?;
        if blockers.is_empty() {
            return Ok((chat, true));
        }
        let chat = self
            .chats
            .find_one_and_update(
                doc! {"_id": chat.id},
                doc! {"$addToSet": {"blockedBy": {"$each": blockers}}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)?
            .unwrap_or(chat);
        Ok((chat, true))
    }

    /// One chat.
    pub async fn chat(&self, id: &ObjectId) -> Result<Option<ChatDoc>, ChatError> {
        self.chats
            .find_one(doc! {"_id": id})
            .await
            .map_err(db_error)
    }

    /// The member's chats, newest activity first, after the `(updatedAt, id)` cursor.
    pub async fn chats_of(
        &self,
        member: &ObjectId,
        cursor: Option<(DateTime, ObjectId)>,
        limit: i64,
    ) -> Result<Vec<ChatDoc>, ChatError> {
        let mut filter = doc! {"members": member};
        if let Some((at, id)) = cursor {
            filter.insert(
                "$or",
                vec![
                    doc! {"updatedAt": {"$lt": at}},
                    doc! {"updatedAt": at, "_id": {"$lt": id}},
                ],
            );
        }
        self.chats
            .find(filter)
            .sort(doc! {"updatedAt": -1, "_id": -1})
            .limit(limit)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// Every chat partner of `user` who may see their presence (see
    /// [`ChatDoc::presence_partners`]; never across a block).
    pub async fn partners_of(&self, user: &ObjectId) -> Result<Vec<ObjectId>, ChatError> {
        let mut partners = self.partners_of_many(std::slice::from_ref(user)).await?;
        Ok(partners.remove(user).unwrap_or_default())
    }

    /// The chat partners of each of `users` (as [`Store::partners_of`]):
    /// one query for their chats, and one for blocks when a group is among
    /// them (a 1:1 chat carries its blocks).
    pub async fn partners_of_many(
        &self,
        users: &[ObjectId],
    ) -> Result<HashMap<ObjectId, Vec<ObjectId>>, ChatError> {
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let chats: Vec<ChatDoc> = self
            .chats
            .find(doc! {"members": {"$in": users}})
            .projection(doc! {
                "members": 1, "_id": 1, "pairKey": 1, "createdAt": 1, "updatedAt": 1,
                "acceptedBy": 1, "blockedBy": 1, "kind": 1,
            })
            .limit(i64::try_from(users.len() * 1000).unwrap_or(i64::MAX))
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let blocks = if chats.iter().any(ChatDoc::is_group) {
            self.block_peers(users).await?
        } else {
            Vec::new()
        };
        Ok(crate::domain::partners_by_user(users, &chats, &blocks))
    }

    /// The message the sender already stored under this idempotency key.
    pub async fn by_client_id(
        &self,
        chat: &ObjectId,
        sender: &ObjectId,
        client_id: &str,
    ) -> Result<Option<MessageDoc>, ChatError> {
        self.messages
            .find_one(doc! {"chatId": chat, "sender": sender, "clientMessageId": client_id})
            .await
            .map_err(db_error)
    }

    /// Stores a message in two writes: one `findAndModify` on the chat,
    /// filtered on the sender's membership, allocates the sequence number and
    /// sets the chat's latest message atomically (so the latest message can
    /// never move backwards); then the insert.
    ///
    /// A repeated idempotency key that races past the caller's check is
    /// answered with the first message; its sequence number stays unused
    /// (sequence numbers are cursors and may have gaps).
    pub async fn append_message(&self, new: NewMessage) -> Result<Appended, ChatError> {
        let now = DateTime::now();
        let pipeline = vec![
            doc! {"$set": {
                "lastSeq": {"$add": [{"$ifNull": ["$lastSeq", 0_i64]}, 1_i64]},
                "lastChange": {"$add": [{"$ifNull": ["$lastChange", 0_i64]}, 1_i64]},
            }},
            doc! {"$set": {
                "latestMessage": {
                    "text": {"$literal": new.preview.as_str()},
                    "sender": new.sender,
                    "sentAt": now,
                    "seq": "$lastSeq",
                },
                "updatedAt": now,
            }},
        ];
        let Some(chat) = self
            .chats
            .find_one_and_update(
                // Nobody blocked anybody in it (no first element).
                doc! {"_id": new.chat_id, "members": new.sender, "blockedBy.0": {"$exists": false}},
                pipeline,
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)?
        else {
            return Ok(Appended::NotMember);
        };
        let message = MessageDoc {
            text: new.text,
            message_type: if new.image.is_some() { "image" } else { "text" }.to_owned(),
            image: new.image,
            client_message_id: new.client_message_id.clone(),
            reply_to: new.reply_to,
            ..MessageDoc::new(
                new.chat_id,
                chat.last_seq,
                chat.last_change,
                new.sender,
                now,
            )
        };
        if let Err(e) = self.messages.insert_one(&message).await {
            if is_duplicate_key(&e)
                && let Some(cid) = &new.client_message_id
                && let Some(existing) = self.by_client_id(&new.chat_id, &new.sender, cid).await?
            {
                return Ok(Appended::Duplicate(existing));
            }
            return Err(db_error(e));
        }
        Ok(Appended::Created(message, Box::new(chat)))
    }

    /// Unseen message counts (messages from others) of each of `chats`, in
    /// one aggregation; chats without unseen messages are absent.
    pub async fn unseen_counts(
        &self,
        chats: &[ChatDoc],
        reader: &ObjectId,
    ) -> Result<HashMap<ObjectId, u64>, ChatError> {
        if chats.is_empty() {
            return Ok(HashMap::new());
        }
        // 1:1 chats by their messages' seen flags; each group by the
        // reader's watermark (and where they joined), system messages aside.
        let direct: Vec<ObjectId> = chats
            .iter()
            .filter(|c| !c.is_group())
            .map(|c| c.id)
            .collect();
        let mut which = vec![doc! {"chatId": {"$in": direct}, "seen": false}];
        which.extend(chats.iter().filter(|c| c.is_group()).map(|c| {
            doc! {
                "chatId": c.id,
                "seq": {"$gt": c.read_up_to(reader).max(c.visible_after(reader))},
                "messageType": {"$ne": "system"},
            }
        }));
        let rows: Vec<mongodb::bson::Document> = self
            .messages
            .aggregate(vec![
                doc! {"$match": {
                    "$or": which,
                    "sender": {"$ne": reader},
                    "deletedAt": {"$exists": false},
                    "hiddenFor": {"$ne": reader},
                }},
                doc! {"$group": {"_id": "$chatId", "n": {"$sum": 1}}},
            ])
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let chat = row.get_object_id("_id").ok()?;
                let n = match row.get("n")? {
                    Bson::Int32(n) => u64::try_from(*n).ok()?,
                    Bson::Int64(n) => u64::try_from(*n).ok()?,
                    Bson::Double(n) => *n as u64,
                    _ => return None,
                };
                Some((chat, n))
            })
            .collect())
    }

    /// A page of a chat's messages as `viewer` sees them (without those
    /// they deleted for themselves, nor any up to seq `floor`: a group's
    /// messages from before they joined), oldest first.
    pub async fn messages(
        &self,
        chat: &ObjectId,
        viewer: &ObjectId,
        floor: i64,
        window: Window,
        limit: i64,
    ) -> Result<Vec<MessageDoc>, ChatError> {
        let (mut filter, ascending) = match window {
            Window::Latest => (doc! {"chatId": chat, "seq": {"$gt": floor}}, false),
            Window::Before(seq) => (
                doc! {"chatId": chat, "seq": {"$lt": seq, "$gt": floor}},
                false,
            ),
            Window::After(seq) => (doc! {"chatId": chat, "seq": {"$gt": seq.max(floor)}}, true),
        };
        filter.insert("hiddenFor", doc! {"$ne": viewer});
        let mut page: Vec<MessageDoc> = self
            .messages
            .find(filter)
            .sort(doc! {"seq": if ascending { 1 } else { -1 }})
            .limit(limit)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        if !ascending {
            page.reverse();
        }
        Ok(page)
    }

    /// One message.
    pub async fn message(&self, id: &ObjectId) -> Result<Option<MessageDoc>, ChatError> {
        self.messages
            .find_one(doc! {"_id": id})
            .await
            .map_err(db_error)
    }

    /// Takes the chat's next change number: for a member only when one is
    /// named (`None` when there is no such chat or they are not one), or
    /// for the service's own changes (such as a deleted account's
    /// tombstones) with `None`.
    pub async fn next_change(
        &self,
        chat: &ObjectId,
        member: Option<&ObjectId>,
    ) -> Result<Option<i64>, ChatError> {
        let mut filter = doc! {"_id": chat};
        if let Some(member) = member {
            filter.insert("members", member);
        }
        Ok(self
            .chats
            .find_one_and_update(filter, doc! {"$inc": {"lastChange": 1_i64}})
            .return_document(ReturnDocument::After)
            .await
            .map_err(db_error)?
            .map(|c| c.last_change))
    }

    /// Writes `update` to `message` as change number `seq`, only if nobody
    /// changed the message since it was read (its `changeSeq` is still the
    /// one read). False when somebody did: read it again and decide anew.
    pub async fn apply_change(
        &self,
        message: &MessageDoc,
        update: &Update,
        seq: i64,
    ) -> Result<bool, ChatError> {
        let mut filter = doc! {"_id": message.id};
        if message.change_seq == 0 {
            filter.insert(
                "$or",
                vec![
                    doc! {"changeSeq": 0_i64},
                    doc! {"changeSeq": {"$exists": false}},
                ],
            );
        } else {
            filter.insert("changeSeq", message.change_seq);
        }
        let write = match update {
            Update::Nothing => return Ok(true),
            Update::Edit { text, at } => {
                doc! {"$set": {"text": text, "editedAt": at, "changeSeq": seq}}
            }
            Update::Tombstone { at } => tombstone(*at, seq, false),
            Update::Hide(user) => doc! {
                "$addToSet": {"hiddenFor": user},
                "$set": {"changeSeq": seq},
            },
            Update::Reactions(reactions) => {
                let reactions = mongodb::bson::to_bson(reactions)
                    .map_err(|e| ChatError::internal(format!("reactions: {e}")))?;
                doc! {"$set": {"reactions": reactions, "changeSeq": seq}}
            }
        };
        let result = self
            .messages
            .update_one(filter, write)
            .await
            .map_err(db_error)?;
        Ok(result.matched_count == 1)
    }

    /// Refreshes the quote in every reply to `original` (its new preview,
    /// or emptied once deleted), as part of change number `seq`.
    pub async fn refresh_quotes(&self, original: &MessageDoc, seq: i64) -> Result<u64, ChatError> {
        let quote = crate::changes::rules::quote(original);
        let mut filter = doc! {"chatId": original.chat_id, "replyTo.messageId": original.id};
        if !quote.deleted {
            // An edit never brings back the words of a quote already emptied.
            filter.insert("replyTo.deleted", doc! {"$ne": true});
        }
        let result = self
            .messages
            .update_many(
                filter,
                doc! {
                    "$set": {"replyTo.preview": &quote.preview, "replyTo.deleted": quote.deleted},
                    "$max": {"changeSeq": seq},
                },
            )
            .await
            .map_err(db_error)?;
        Ok(result.modified_count)
    }

    /// Sets the chat list's preview, if the chat's latest message is still
    /// the one with sequence number `seq` (and, for an edit, not deleted).
    pub async fn set_latest_preview(
        &self,
        chat: &ObjectId,
        seq: i64,
        preview: &str,
        deleted: bool,
    ) -> Result<(), ChatError> {
        let mut filter = doc! {"_id": chat, "latestMessage.seq": seq};
        if !deleted {
            filter.insert("latestMessage.deleted", doc! {"$ne": true});
        }
        self.chats
            .update_one(
                filter,
                doc! {"$set": {"latestMessage.text": preview, "latestMessage.deleted": deleted}},
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The messages of `chat` changed after `cursor` (created, edited,
    /// deleted, hidden, reacted to), in change order, then id order within
    /// one change number.
    pub async fn changes(
        &self,
        chat: &ObjectId,
        cursor: crate::changes::FeedCursor,
        limit: i64,
    ) -> Result<Vec<MessageDoc>, ChatError> {
        let filter = match cursor.after {
            None => doc! {"chatId": chat, "changeSeq": {"$gt": cursor.since}},
            Some(after) => doc! {"chatId": chat, "$or": [
                {"changeSeq": {"$gt": cursor.since}},
                {"changeSeq": cursor.since, "_id": {"$gt": after}},
            ]},
        };
        self.messages
            .find(filter)
            .sort(doc! {"changeSeq": 1, "_id": 1})
            .limit(limit)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// Up to `limit` messages of any chat sent before `cutoff`, oldest first.
    pub async fn sent_before(
        &self,
        cutoff: DateTime,
        limit: i64,
    ) -> Result<Vec<MessageDoc>, ChatError> {
        self.messages
            .find(doc! {"sentAt": {"$lt": cutoff}})
            .sort(doc! {"sentAt": 1})
            .limit(limit)
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)
    }

    /// Deletes the messages `ids`; returns how many were there.
    pub async fn delete_messages(&self, ids: &[ObjectId]) -> Result<u64, ChatError> {
        Ok(self
            .messages
            .delete_many(doc! {"_id": {"$in": ids}})
            .await
            .map_err(db_error)?
            .deleted_count)
    }

    /// Clears the chat list preview of chats whose latest message was sent
    /// before `cutoff` (it was deleted with the retention period).
    pub async fn clear_previews_before(&self, cutoff: DateTime) -> Result<(), ChatError> {
        self.chats
            .update_many(
                doc! {"latestMessage.sentAt": {"$lt": cutoff}},
                doc! {"$set": {"latestMessage": Bson::Null}},
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Ids of every chat `member` is in.
    pub async fn chat_ids_of(&self, member: &ObjectId) -> Result<Vec<ObjectId>, ChatError> {
        ids_of(
            &self.chats.clone_with_type(),
            doc! {"members": member},
            "_id",
        )
        .await
    }

    /// Whether `author` has a message in `chat` that is not a tombstone,
    /// or a quote of theirs that still shows their words.
    pub async fn has_words_of(
        &self,
        chat: &ObjectId,
        author: &ObjectId,
    ) -> Result<bool, ChatError> {
        let found = self
            .messages
            .clone_with_type::<Document>()
            .find_one(doc! {"chatId": chat, "$or": [
                {"sender": author, "deletedAt": {"$exists": false}},
                {"replyTo.sender": author, "replyTo.deleted": false},
            ]})
            .projection(doc! {"_id": 1})
            .await
            .map_err(db_error)?;
        Ok(found.is_some())
    }

    /// Turns the messages `author` sent in `chat` into tombstones of a
    /// deleted account, as change number `seq`; empties the quotes of
    /// them and the chat list's preview. A message changed meanwhile under
    /// a later change number is left for the next pass (its number must
    /// never go down: a client past it would miss the tombstone), which
    /// [`Store::has_words_of`] tells of. Idempotent.
    pub async fn erase_author(
        &self,
        chat: &ObjectId,
        author: &ObjectId,
        seq: i64,
    ) -> Result<u64, ChatError> {
        let now = DateTime::now();
        let erased = self
            .messages
            .update_many(
                doc! {
                    "chatId": chat,
                    "sender": author,
                    "deletedAt": {"$exists": false},
                    "$or": [{"changeSeq": {"$lt": seq}}, {"changeSeq": {"$exists": false}}],
                },
                tombstone(now, seq, true),
            )
            .await
            .map_err(db_error)?
            .modified_count;
        self.messages
            .update_many(
                doc! {"chatId": chat, "replyTo.sender": author, "replyTo.deleted": false},
                doc! {
                    "$set": {"replyTo.preview": "", "replyTo.deleted": true},
                    "$max": {"changeSeq": seq},
                },
            )
            .await
            .map_err(db_error)?;
        self.chats
            .update_one(
                doc! {"_id": chat, "latestMessage.sender": author},
                doc! {"$set": {
                    "latestMessage.text": crate::changes::rules::DELETED_PREVIEW,
                    "latestMessage.deleted": true,
                }},
            )
            .await
            .map_err(db_error)?;
        Ok(erased)
    }

    /// Removes every image `uploader` stored, and their quota record.
    pub async fn erase_media_of(&self, uploader: &ObjectId) -> Result<u64, ChatError> {
        let files: Vec<Document> = self
            .db
            .collection::<Document>(&format!("{MEDIA_BUCKET}.files"))
            .find(doc! {"metadata.uploader": uploader})
            .projection(doc! {"_id": 1})
            .await
            .map_err(db_error)?
            .try_collect()
            .await
            .map_err(db_error)?;
        let mut removed = 0;
        for id in files.iter().filter_map(|f| f.get_object_id("_id").ok()) {
            if self.delete_media(&id).await? {
                removed += 1;
            }
        }
        self.media_usage
            .delete_one(doc! {"_id": uploader})
            .await
            .map_err(db_error)?;
        Ok(removed)
    }

    /// Removes every block by or of `user`, and unmarks their chats.
    pub async fn erase_blocks_of(&self, user: &ObjectId) -> Result<(), ChatError> {
        self.blocks
            .delete_many(doc! {"$or": [{"blocker": user}, {"blocked": user}]})
            .await
            .map_err(db_error)?;
        self.chats
            .update_many(
                doc! {"members": user, "blockedBy.0": {"$exists": true}},
                doc! {"$set": {"blockedBy": []}},
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Empties the quotes of the messages `ids` (deleted by retention).
    pub async fn empty_quotes_of(&self, ids: &[ObjectId]) -> Result<(), ChatError> {
        self.messages
            .update_many(
                doc! {"replyTo.messageId": {"$in": ids}},
                doc! {"$set": {"replyTo.preview": "", "replyTo.deleted": true}},
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Marks every message from others in `chat` seen by `reader`; returns their ids.
    pub async fn mark_seen(
        &self,
        chat: &ObjectId,
        reader: &ObjectId,
    ) -> Result<(Vec<ObjectId>, DateTime), ChatError> {
        let filter = doc! {"chatId": chat, "seen": false, "sender": {"$ne": reader}};
        let ids: Vec<ObjectId> = self
            .messages
            .clone_with_type::<mongodb::bson::Document>()
            .find(filter.clone())
            .projection(doc! {"_id": 1})
            .await
            .map_err(db_error)?
            .try_collect::<Vec<_>>()
            .await
            .map_err(db_error)?
            .into_iter()
            .filter_map(|d| d.get_object_id("_id").ok())
            .collect();
        let now = DateTime::now();
        if !ids.is_empty() {
            self.messages
                .update_many(
                    doc! {"_id": {"$in": &ids}, "seen": false},
                    doc! {"$set": {"seen": true, "seenAt": now, "deliveredAt": now}},
                )
                .await
                .map_err(db_error)?;
        }
        Ok((ids, now))
    }

    /// The messages among `ids` not yet marked delivered, with their chat
    /// and sender (one query for a whole batch of receipts).
    pub async fn undelivered(&self, ids: &[ObjectId]) -> Result<Vec<Candidate>, ChatError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw = self.messages.clone_with_type::<mongodb::bson::Document>();
        let mut cursor = raw
            .find(doc! {"_id": {"$in": ids}, "deliveredAt": Bson::Null})
            .projection(doc! {"_id": 1, "chatId": 1, "sender": 1})
            .await
            .map_err(db_error)?;
        let mut found = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(db_error)? {
            if let (Ok(id), Ok(chat), Ok(sender)) = (
                d.get_object_id("_id"),
                d.get_object_id("chatId"),
                d.get_object_id("sender"),
            ) {
                found.push(Candidate { id, chat, sender });
            }
        }
        Ok(found)
    }

    /// Sets `deliveredAt` on those of `ids` that have none yet; returns
    /// how many changed.
    pub async fn set_delivered(&self, ids: &[ObjectId]) -> Result<u64, ChatError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let result = self
            .messages
            .update_many(
                doc! {"_id": {"$in": ids}, "deliveredAt": Bson::Null},
                doc! {"$set": {"deliveredAt": DateTime::now()}},
            )
            .await
            .map_err(db_error)?;
        Ok(result.modified_count)
    }

    fn media_bucket(&self) -> GridFsBucket {
        self.db.gridfs_bucket(
            GridFsBucketOptions::builder()
                .bucket_name(MEDIA_BUCKET.to_owned())
                .build(),
        )
    }

    /// Stores image bytes in the `media` GridFS bucket, tagged with the chat
    /// and the uploader. A failed upload leaves no chunks behind.
    pub async fn put_media(
        &self,
        chat: &ObjectId,
        uploader: &ObjectId,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<ImageRef, ChatError> {
        let mut upload = self
            .media_bucket()
            .open_upload_stream(format!("chat-{}", chat.to_hex()))
            .metadata(doc! {"chatId": chat, "uploader": uploader, "contentType": content_type})
            .await
            .map_err(db_error)?;
        let id = upload
            .id()
            .as_object_id()
            .ok_or_else(|| ChatError::internal("gridfs id is not an ObjectId"))?;
        if let Err(error) = upload.write_all(bytes).await {
            // The stream removes its chunks itself when a write fails.
            return Err(ChatError::unavailable("mongodb", error));
        }
        upload
            .close()
            .await
            .map_err(|e| ChatError::unavailable("mongodb", e))?;
        Ok(ImageRef {
            media_id: id,
            content_type: content_type.to_owned(),
            size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        })
    }

    /// Removes a stored image (file document and chunks); true when it existed.
    pub async fn delete_media(&self, id: &ObjectId) -> Result<bool, ChatError> {
        match self.media_bucket().delete(Bson::ObjectId(*id)).await {
            Ok(()) => Ok(true),
            Err(error)
                if matches!(
                    &*error.kind,
                    ErrorKind::GridFs(GridFsErrorKind::FileNotFound { .. })
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(db_error(error)),
        }
    }

    /// An image's GridFS file document: chat, type and length, read
    /// without a single byte of the image.
    pub async fn media_file(&self, id: &ObjectId) -> Result<Option<MediaFile>, ChatError> {
        let Some(file) = self
            .media_bucket()
            .find_one(doc! {"_id": id})
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let meta = file.metadata.unwrap_or_default();
        let chat = meta.get_object_id("chatId").map_err(ChatError::internal)?;
        let content_type = meta
            .get_str("contentType")
            .unwrap_or("application/octet-stream")
            .to_owned();
        Ok(Some(MediaFile {
            id: *id,
            chat,
            content_type,
            length: file.length,
            chunk_size: file.chunk_size_bytes,
        }))
    }

    /// The image's bytes, chunk by chunk in order, fetched
    /// [`MEDIA_CHUNKS_PER_BATCH`] chunks at a time, so a download holds
    /// about 1 MiB however large the image. A missing, misplaced or
    /// wrongly sized chunk ends the stream with an error (never a panic).
    pub async fn media_chunks(
        &self,
        file: &MediaFile,
    ) -> Result<impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static, ChatError> {
        let plan = ChunkPlan::new(file.length, file.chunk_size);
        let cursor = self
            .db
            .collection::<ChunkDoc>(&format!("{MEDIA_BUCKET}.chunks"))
            .find(doc! {"files_id": file.id})
            .sort(doc! {"n": 1})
            .batch_size(MEDIA_CHUNKS_PER_BATCH)
            .await
            .map_err(db_error)?;
        Ok(futures::stream::try_unfold(
            (cursor, 0_u64),
            move |(mut cursor, n)| async move {
                if n == plan.chunks {
                    return Ok::<_, std::io::Error>(None);
                }
                let chunk = cursor
                    .try_next()
                    .await
                    .map_err(std::io::Error::other)?
                    .ok_or_else(|| std::io::Error::other(format!("media chunk {n} is missing")))?;
                plan.check(n, chunk.n, chunk.data.bytes.len())
                    .map_err(std::io::Error::other)?;
                Ok(Some((chunk.data.bytes, (cursor, n + 1))))
            },
        ))
    }

    /// Adds `size` bytes to `user`'s stored media when that keeps it within
    /// `quota` (always when `quota` is `None`): one conditional `$inc`, so
    /// parallel uploads can never take the total past the quota. False
    /// (nothing changed) when it would.
    pub async fn reserve_media_bytes(
        &self,
        user: &ObjectId,
        size: u64,
        quota: Option<u64>,
    ) -> Result<bool, ChatError> {
        let size = i64::try_from(size).map_err(ChatError::internal)?;
        let filter = match quota {
            Some(quota) => {
                let quota = i64::try_from(quota).map_err(ChatError::internal)?;
                doc! {"_id": user, "bytes": {"$lte": quota - size}}
            }
            None => doc! {"_id": user},
        };
        let update = doc! {"$inc": {"bytes": size}, "$set": {"updatedAt": DateTime::now()}};
        let reserved = |result: mongodb::results::UpdateResult| result.matched_count == 1;
        if reserved(
            self.media_usage
                .update_one(filter.clone(), update.clone())
                .await
                .map_err(db_error)?,
        ) {
            return Ok(true);
        }
        // Over quota, or the user's first upload: make sure the usage
        // document exists (nothing changes when it does), then try once more.
        match self
            .media_usage
            .update_one(
                doc! {"_id": user},
                doc! {"$setOnInsert": {"bytes": 0_i64, "updatedAt": DateTime::now()}},
            )
            .upsert(true)
            .await
        {
            Ok(_) => {}
            // A parallel upload of the same user created it.
            Err(error) if is_duplicate_key(&error) => {}
            Err(error) => return Err(db_error(error)),
        }
        Ok(reserved(
            self.media_usage
                .update_one(filter, update)
                .await
                .map_err(db_error)?,
        ))
    }

    /// Gives back bytes [`Store::reserve_media_bytes`] counted for an image
    /// that was not kept.
    pub async fn release_media_bytes(&self, user: &ObjectId, size: u64) -> Result<(), ChatError> {
        let size = i64::try_from(size).map_err(ChatError::internal)?;
        self.media_usage
            .update_one(
                doc! {"_id": user},
                doc! {"$inc": {"bytes": -size}, "$set": {"updatedAt": DateTime::now()}},
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
