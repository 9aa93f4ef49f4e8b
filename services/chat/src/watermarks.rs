//! Receipts in groups: each member has two watermarks on the chat, the
//! highest seq they read and the highest one a device of theirs received.
//! A read or a delivered receipt moves one number (never per message per
//! member); each message's "seen by N of M" is computed from them when it
//! is shown, and every watermark move is told to the other members
//! (`memberRead`, `memberDelivered`) so senders update at once.

use mongodb::bson::oid::ObjectId;
use serde_json::json;

use crate::error::ChatError;
use crate::model::{ChatDoc, GroupReceipts, MessageDoc, MessageView};
use crate::realtime::socket::AuthorisedChat;
use crate::state::AppState;
use crate::store::Mark;

/// Groups of at most this many members list who received and read each
/// message; larger ones show counts only.
pub const LISTED_UP_TO: usize = 32;

/// Pure: a group message's receipts: of the current members but the
/// sender who joined before it was sent, who received it (a device said
/// so, or they read that far) and who read it.
pub fn receipts_of(chat: &ChatDoc, message: &MessageDoc) -> GroupReceipts {
    let recipients: Vec<&ObjectId> = chat
        .roster
        .iter()
        .filter(|e| e.user != message.sender && e.joined_seq < message.seq)
        .map(|e| &e.user)
        .collect();
    let seen: Vec<&ObjectId> = recipients
        .iter()
        .filter(|u| chat.read_up_to(u) >= message.seq)
        .copied()
        .collect();
    let delivered: Vec<&ObjectId> = recipients
        .iter()
        .filter(|u| chat.read_up_to(u).max(chat.delivered_up_to(u)) >= message.seq)
        .copied()
        .collect();
    let listed = chat.roster.len() <= LISTED_UP_TO;
    let hex = |users: &[&ObjectId]| users.iter().map(|u| u.to_hex()).collect::<Vec<_>>();
    GroupReceipts {
        of: recipients.len(),
        delivered: delivered.len(),
        seen: seen.len(),
        delivered_to: listed.then(|| hex(&delivered)),
        seen_by: listed.then(|| hex(&seen)),
    }
}

/// Pure: a message as `viewer` sees it in `chat`: in a group, with its
/// receipts, and its status from them (`seen` once every recipient read
/// it, `delivered` once every one received it).
pub fn view(chat: &ChatDoc, message: &MessageDoc, viewer: &ObjectId) -> MessageView {
    let mut view = MessageView::for_viewer(message, viewer);
    if chat.is_group() && message.message_type != "system" {
        let receipts = receipts_of(chat, message);
        let all = |n: usize| receipts.of > 0 && n == receipts.of;
        view.seen = all(receipts.seen);
        view.status = if view.seen {
            "seen"
        } else if all(receipts.delivered) {
            "delivered"
        } else {
            "sent"
        };
        view.receipts = Some(receipts);
    }
    view
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `reader` read a group up to its latest message: their watermark moves
/// (one write), their other devices hear `chatRead` and the other members
/// `memberRead`. Nothing is written or told when `chat` (just read) shows
/// them there already.
pub async fn read(state: &AppState, chat: &ChatDoc, reader: &ObjectId) -> Result<(), ChatError> {
    let up_to = chat.last_seq;
    if chat.read_up_to(reader) >= up_to {
        return Ok(());
    }
    let Some(after) = state
        .store
        .advance(&chat.id, reader, Mark::Read, up_to)
        .await?
    else {
        return Ok(());
    };
    let at = now();
    let mine = json!({
        "chatId": chat.id.to_hex(),
        "unseenCount": 0,
        "readUpTo": up_to,
        "readAt": at,
    });
    state.fanout.to_users([reader], "chatRead", &mine).await;
    let theirs = json!({
        "chatId": chat.id.to_hex(),
        "userId": reader.to_hex(),
        "readUpTo": up_to,
        "readAt": at,
    });
    let others = after.members.iter().filter(|m| *m != reader);
    state.fanout.to_users(others, "memberRead", &theirs).await;
    Ok(())
}

/// A delivered receipt in a group, from a socket that passed its
/// membership check (`entry`): the recipient's delivery watermark moves to
/// the highest of `ids` sent there by others after they joined (one
/// query, one write) and the other members hear `memberDelivered`.
/// Returns the seq it moved to, `None` when it did not move.
pub async fn delivered(
    state: &AppState,
    chat: &ObjectId,
    entry: &AuthorisedChat,
    recipient: &ObjectId,
    ids: &[ObjectId],
) -> Result<Option<i64>, ChatError> {
    let Some(seq) = state
        .store
        .highest_seq_of(chat, ids, recipient, entry.floor)
        .await?
    else {
        return Ok(None);
    };
    if state
        .store
        .advance(chat, recipient, Mark::Delivered, seq)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let body = json!({
        "chatId": chat.to_hex(),
        "userId": recipient.to_hex(),
        "deliveredUpTo": seq,
        "deliveredAt": now(),
    });
    state
        .fanout
        .relay(&entry.others, "memberDelivered", &body)
        .await?;
    Ok(Some(seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChatKind, Role, RosterEntry};
    use mongodb::bson::DateTime;

    fn member(user: ObjectId, joined_seq: i64) -> RosterEntry {
        RosterEntry {
            user,
            role: Role::Member,
            joined_seq,
            joined_at: DateTime::now(),
        }
    }

    fn message(sender: ObjectId, seq: i64) -> MessageDoc {
        MessageDoc {
            text: "hi".into(),
            ..MessageDoc::new(ObjectId::new(), seq, seq, sender, DateTime::now())
        }
    }

    fn group(
        roster: Vec<RosterEntry>,
        reads: &[(ObjectId, i64)],
        delivered: &[(ObjectId, i64)],
    ) -> ChatDoc {
        let members = roster.iter().map(|e| e.user).collect();
        ChatDoc {
            last_seq: 10,
            last_change: 10,
            kind: ChatKind::Group,
            name: Some("g".into()),
            roster,
            reads: reads.iter().map(|(u, s)| (u.to_hex(), *s)).collect(),
            delivered: delivered.iter().map(|(u, s)| (u.to_hex(), *s)).collect(),
            ..ChatDoc::empty(ObjectId::new(), members, "group:x".into(), DateTime::now())
        }
    }

    #[test]
    fn seen_by_n_of_m_counts_members_who_were_there() {
        let [sender, a, b, c, late] = std::array::from_fn(|_| ObjectId::new());
        let chat = group(
            vec![
                member(sender, 0),
                member(a, 0),
                member(b, 0),
                member(c, 0),
                member(late, 6),
            ],
            &[(a, 5), (b, 4)],
            &[(c, 5), (b, 3)],
        );
        let r = receipts_of(&chat, &message(sender, 5));
        assert_eq!(
            (r.of, r.delivered, r.seen),
            (3, 2, 1),
            "late joined after it"
        );
        assert_eq!(r.seen_by, Some(vec![a.to_hex()]));
        assert_eq!(r.delivered_to, Some(vec![a.to_hex(), c.to_hex()]));
        let v = view(&chat, &message(sender, 5), &sender);
        assert_eq!((v.status, v.seen), ("sent", false));
        let r = receipts_of(&chat, &message(sender, 7));
        assert_eq!(
            (r.of, r.seen),
            (4, 0),
            "the late member counts from then on"
        );
        let all_read = group(vec![member(sender, 0), member(a, 0)], &[(a, 9)], &[]);
        let v = view(&all_read, &message(sender, 9), &a);
        assert_eq!((v.status, v.seen), ("seen", true));
    }

    #[test]
    fn large_groups_show_counts_only_and_direct_chats_nothing() {
        let sender = ObjectId::new();
        let roster: Vec<RosterEntry> = std::iter::once(member(sender, 0))
            .chain((0..LISTED_UP_TO).map(|_| member(ObjectId::new(), 0)))
            .collect();
        let chat = group(roster, &[], &[]);
        let r = receipts_of(&chat, &message(sender, 1));
        assert_eq!((r.of, r.seen_by), (LISTED_UP_TO, None));
        let mut direct = chat.clone();
        direct.kind = ChatKind::Direct;
        assert!(
            view(&direct, &message(sender, 1), &sender)
                .receipts
                .is_none()
        );
    }
}
