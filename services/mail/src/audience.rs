//! Who is mailed about a new message, decided from the chat document as it
//! is at notify time (the source of truth: a mute, a removal or a rename
//! after the send is honoured).
//!
//! The views are read from raw BSON leniently: a field that is missing or
//! of an unexpected type counts as empty, so a malformed document never
//! fails a delivery for ever; at worst nobody is mailed about it.

use std::collections::HashMap;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};

/// What mail reads of a chat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatView {
    /// Its current members.
    pub members: Vec<ObjectId>,
    /// Members who muted it.
    pub muted_by: Vec<ObjectId>,
    /// Set for a group chat; `None` for a 1:1 chat.
    pub group: Option<GroupView>,
}

/// What mail reads of a group chat beyond its members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    /// The group's name as stored: user-chosen, sanitised only when shown.
    pub name: String,
    /// Members who accepted the group (created it, wrote in it or accepted
    /// it): the others were added by someone else and never agreed.
    pub accepted_by: Vec<ObjectId>,
    /// The `seq` of the last message each member joined after, by member.
    pub joined_seq: HashMap<ObjectId, i64>,
    /// The `seq` each member has read up to, by the member's hex id.
    pub reads: HashMap<String, i64>,
}

/// What mail reads of the new message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageView {
    /// Seen by its recipient (1:1 chats only; always false in a group).
    pub seen: bool,
    /// Its number in the chat, when known.
    pub seq: Option<i64>,
}

fn int(value: Option<&Bson>) -> Option<i64> {
    match value {
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

fn ids(doc: &Document, key: &str) -> Vec<ObjectId> {
    doc.get_array(key)
        .map(|items| items.iter().filter_map(Bson::as_object_id).collect())
        .unwrap_or_default()
}

impl ChatView {
    /// The fields [`ChatView::from_document`] reads.
    pub fn projection() -> Document {
        doc! {"members": 1, "mutedBy": 1, "kind": 1, "name": 1, "acceptedBy": 1, "roster": 1, "reads": 1}
    }

    /// Reads a `chats` document.
    pub fn from_document(chat: &Document) -> Self {
        let group = (chat.get_str("kind").ok() == Some("group")).then(|| GroupView {
            name: chat.get_str("name").unwrap_or_default().to_owned(),
            accepted_by: ids(chat, "acceptedBy"),
            joined_seq: chat
                .get_array("roster")
                .map(|roster| {
                    roster
                        .iter()
                        .filter_map(Bson::as_document)
                        .filter_map(|entry| {
                            let user = entry.get_object_id("user").ok()?;
                            Some((user, int(entry.get("joinedSeq")).unwrap_or(0)))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            reads: chat
                .get_document("reads")
                .map(|reads| {
                    reads
                        .iter()
                        .filter_map(|(user, seq)| Some((user.clone(), int(Some(seq))?)))
                        .collect()
                })
                .unwrap_or_default(),
        });
        Self {
            members: ids(chat, "members"),
            muted_by: ids(chat, "mutedBy"),
            group,
        }
    }
}

impl GroupView {
    /// The `seq` after which messages are new to `recipient`: what they
    /// read, or when they joined if later (history from before they joined
    /// is not theirs to be told about).
    pub fn unseen_after(&self, recipient: &ObjectId) -> i64 {
        let read = self.reads.get(&recipient.to_hex()).copied().unwrap_or(0);
        let joined = self.joined_seq.get(recipient).copied().unwrap_or(0);
        read.max(joined)
    }

    /// Pure: the group's name as a mail to `recipient` may carry it (raw;
    /// the template sanitises it), or "" when it may not. Anyone can add
    /// anyone to a group and name it anything, so only a member who
    /// accepted the group chose to be in it; to the others the name would
    /// be a stranger's words in their inbox, so their mail names no group.
    pub fn name_for(&self, recipient: &ObjectId) -> &str {
        if self.accepted_by.contains(recipient) {
            &self.name
        } else {
            ""
        }
    }
}

impl MessageView {
    /// The fields [`MessageView::from_document`] reads.
    pub fn projection() -> Document {
        doc! {"seen": 1, "seq": 1}
    }

    /// Reads a `messages` document.
    pub fn from_document(message: &Document) -> Self {
        Self {
            seen: message.get_bool("seen").unwrap_or(false),
            seq: int(message.get("seq")),
        }
    }
}

/// Pure: whether `recipient` has read up to the message numbered `seq` in
/// `group` (an unknown `seq` counts as unread).
pub fn seen_in_group(group: &GroupView, recipient: &ObjectId, seq: Option<i64>) -> bool {
    let read = group.reads.get(&recipient.to_hex()).copied().unwrap_or(0);
    seq.is_some_and(|seq| read >= seq)
}

/// Pure: whether `recipient` may be mailed about `message` in `chat`: still
/// a member, has not muted the chat, and has not seen the message.
/// (Whether they are online, or were mailed within the window, is asked
/// after this.)
pub fn should_notify(chat: &ChatView, recipient: &ObjectId, message: &MessageView) -> bool {
    if !chat.members.contains(recipient) || chat.muted_by.contains(recipient) {
        return false;
    }
    match &chat.group {
        Some(group) => !seen_in_group(group, recipient, message.seq),
        None => !message.seen,
    }
}

/// Pure: the `messages` filter counting what waits for `recipient` in a
/// 1:1 chat: the messages of the other member not yet seen.
pub fn direct_unseen_filter(chat_id: ObjectId, recipient: ObjectId) -> Document {
    doc! {"chatId": chat_id, "seen": false, "sender": {"$ne": recipient}}
}

/// Pure: the `messages` filter counting what waits for `recipient` in a
/// group: messages after `after` (see [`GroupView::unseen_after`]) by
/// someone else, not deleted, not membership notices.
pub fn group_unseen_filter(chat_id: ObjectId, recipient: ObjectId, after: i64) -> Document {
    doc! {
        "chatId": chat_id,
        "seq": {"$gt": after},
        "sender": {"$ne": recipient},
        "deletedAt": {"$exists": false},
        "messageType": {"$ne": "system"},
    }
}

/// Pure: the filter counting what waits for `recipient` in `chat`.
pub fn unseen_filter(chat: &ChatView, chat_id: ObjectId, recipient: ObjectId) -> Document {
    match &chat.group {
        Some(group) => group_unseen_filter(chat_id, recipient, group.unseen_after(&recipient)),
        None => direct_unseen_filter(chat_id, recipient),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::DateTime;

    fn group_doc(members: &[ObjectId]) -> Document {
        let [owner, reader, offline, ..] = members else {
            return Document::new();
        };
        doc! {
            "_id": ObjectId::new(),
            "kind": "group",
            "name": "Design team",
            "members": members.to_vec(),
            "mutedBy": [*owner],
            "acceptedBy": [*owner, *reader],
            "roster": [
                {"user": *owner, "role": "owner", "joinedSeq": 0_i64, "joinedAt": DateTime::now()},
                {"user": *reader, "role": "member", "joinedSeq": 2_i64, "joinedAt": DateTime::now()},
                {"user": *offline, "role": "admin", "joinedSeq": 4_i64, "joinedAt": DateTime::now()},
                "not an entry",
            ],
            "reads": {reader.to_hex(): 7_i64, offline.to_hex(): 3_i64, "junk": "x"},
        }
    }

    #[test]
    fn reads_a_group_document() {
        let (a, b, c) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        let chat = ChatView::from_document(&group_doc(&[a, b, c]));
        assert_eq!(chat.members, vec![a, b, c]);
        assert_eq!(chat.muted_by, vec![a]);
        let group = chat.group.unwrap_or_default();
        assert_eq!(group.name, "Design team");
        assert_eq!(group.accepted_by, vec![a, b]);
        assert_eq!(group.joined_seq.len(), 3);
        assert_eq!(group.reads.len(), 2, "non-numbers are skipped");
        // read 7, joined 2 / read 3, joined 4 / nothing read
        assert_eq!(group.unseen_after(&b), 7);
        assert_eq!(group.unseen_after(&c), 4);
        assert_eq!(group.unseen_after(&ObjectId::new()), 0);
    }

    #[test]
    fn reads_a_direct_document_and_malformed_ones() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        let direct = ChatView::from_document(&doc! {"members": [a, b], "name": "ignored"});
        assert_eq!(direct.members, vec![a, b]);
        assert!(direct.muted_by.is_empty(), "mutedBy may be absent");
        assert_eq!(direct.group, None);
        let explicit = ChatView::from_document(&doc! {"kind": "direct", "members": [a, b]});
        assert_eq!(explicit.group, None);
        let junk = ChatView::from_document(
            &doc! {"kind": "group", "members": "x", "roster": 3, "reads": [1], "name": 5},
        );
        assert!(junk.members.is_empty());
        assert_eq!(junk.group, Some(GroupView::default()));
        let message = MessageView::from_document(&doc! {"seen": true, "seq": 5_i32});
        assert_eq!(
            message,
            MessageView {
                seen: true,
                seq: Some(5)
            }
        );
        assert_eq!(MessageView::from_document(&doc! {}), MessageView::default());
    }

    #[test]
    fn only_members_who_accepted_are_told_the_name() {
        let (a, b, c) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        let group = ChatView::from_document(&group_doc(&[a, b, c]))
            .group
            .unwrap_or_default();
        assert_eq!(group.name_for(&a), "Design team");
        assert_eq!(group.name_for(&b), "Design team");
        assert_eq!(group.name_for(&c), "", "added by someone else");
    }

    #[test]
    fn seen_in_a_group_is_read_up_to_the_seq() {
        let (reader, other) = (ObjectId::new(), ObjectId::new());
        let group = GroupView {
            reads: HashMap::from([(reader.to_hex(), 5)]),
            ..GroupView::default()
        };
        assert!(seen_in_group(&group, &reader, Some(5)));
        assert!(seen_in_group(&group, &reader, Some(4)));
        assert!(!seen_in_group(&group, &reader, Some(6)));
        assert!(!seen_in_group(&group, &other, Some(1)), "absent means 0");
        assert!(!seen_in_group(&group, &reader, None));
    }

    #[test]
    fn who_is_notified_in_a_group() {
        let (muted, reader, offline, removed) = (
            ObjectId::new(),
            ObjectId::new(),
            ObjectId::new(),
            ObjectId::new(),
        );
        let chat = ChatView::from_document(&group_doc(&[muted, reader, offline]));
        let message = MessageView {
            seen: false,
            seq: Some(7),
        };
        assert!(!should_notify(&chat, &muted, &message), "muted");
        assert!(!should_notify(&chat, &reader, &message), "read up to 7");
        assert!(should_notify(&chat, &offline, &message), "read up to 3");
        assert!(!should_notify(&chat, &removed, &message), "not a member");
        // The `seen` flag means nothing in a group.
        let flagged = MessageView {
            seen: true,
            ..message
        };
        assert!(should_notify(&chat, &offline, &flagged));
    }

    #[test]
    fn who_is_notified_in_a_direct_chat() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        let mut chat = ChatView::from_document(&doc! {"members": [a, b]});
        let unseen = MessageView {
            seen: false,
            seq: Some(1),
        };
        assert!(should_notify(&chat, &b, &unseen));
        assert!(!should_notify(
            &chat,
            &b,
            &MessageView {
                seen: true,
                ..unseen
            }
        ));
        chat.muted_by.push(b);
        assert!(!should_notify(&chat, &b, &unseen), "muted");
        assert!(!should_notify(&chat, &ObjectId::new(), &unseen));
    }

    #[test]
    fn unseen_filters() {
        let (chat_id, me) = (ObjectId::new(), ObjectId::new());
        assert_eq!(
            unseen_filter(&ChatView::default(), chat_id, me),
            doc! {"chatId": chat_id, "seen": false, "sender": {"$ne": me}}
        );
        let group = ChatView {
            group: Some(GroupView {
                joined_seq: HashMap::from([(me, 9)]),
                reads: HashMap::from([(me.to_hex(), 4)]),
                ..GroupView::default()
            }),
            ..ChatView::default()
        };
        assert_eq!(
            unseen_filter(&group, chat_id, me),
            doc! {
                "chatId": chat_id,
                "seq": {"$gt": 9_i64},
                "sender": {"$ne": me},
                "deletedAt": {"$exists": false},
                "messageType": {"$ne": "system"},
            }
        );
    }
}
