//! Pure rules of a message's life after it was sent: who may edit,
//! delete, hide or react, within which bounds, and what each change writes.

use std::time::Duration;

use mongodb::bson::DateTime;
use mongodb::bson::oid::ObjectId;

use crate::domain;
use crate::error::ChatError;
use crate::model::{MessageDoc, Reaction, ReplyRef};

/// Different emoji one user may put on one message.
pub const MAX_EMOJI_PER_USER: usize = 8;
/// Different emoji one message may carry in all.
pub const MAX_EMOJI_PER_MESSAGE: usize = 32;
/// Longest emoji, in bytes (a flag or a family sequence fits).
pub const MAX_EMOJI_BYTES: usize = 32;
/// The chat list's preview of a message deleted for everyone.
pub const DELETED_PREVIEW: &str = "Message deleted";

/// A change a member asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The sender replaces the text (or an image's caption).
    Edit(String),
    /// The sender removes the message for every member: a tombstone stays.
    DeleteForEveryone,
    /// The caller no longer sees the message; the others still do.
    DeleteForMe,
    /// The caller adds (`on`) or takes back an emoji.
    React {
        /// The emoji, validated by [`validate_emoji`].
        emoji: String,
        /// True to add, false to remove.
        on: bool,
    },
}

/// What a change writes to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Nothing: the message is already as asked (a repeated request).
    Nothing,
    /// New text, edited now.
    Edit {
        /// The validated text.
        text: String,
        /// When.
        at: DateTime,
    },
    /// The tombstone: text, image, reactions and quote removed.
    Tombstone {
        /// When.
        at: DateTime,
    },
    /// Hidden for one more member.
    Hide(ObjectId),
    /// The whole new reaction list.
    Reactions(Vec<Reaction>),
}

/// Which deletion a request asks for: `everyone` (the default) or `me`.
pub fn delete_scope(scope: Option<&str>) -> Result<Change, ChatError> {
    match scope {
        None | Some("everyone") => Ok(Change::DeleteForEveryone),
        Some("me") => Ok(Change::DeleteForMe),
        Some(_) => Err(ChatError::invalid("for must be everyone or me")),
    }
}

/// Checks an emoji: 1 to [`MAX_EMOJI_BYTES`] bytes, no letters, digits,
/// spaces or control characters (so no words pass as reactions).
pub fn validate_emoji(raw: &str) -> Result<String, ChatError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_EMOJI_BYTES
        && raw
            .chars()
            .all(|c| !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ChatError::invalid(format!(
            "emoji must be 1 to {MAX_EMOJI_BYTES} bytes of emoji, without letters, digits or spaces"
        )))
    }
}

/// Decides what `change` by `actor` writes to `message` at `now`, or why
/// it may not happen. `edit_window` bounds how long after sending the
/// sender may edit; a `moderator` (a group's owner or admin) may delete
/// anyone's message for everyone. A group's system messages only hide.
pub fn decide(
    change: &Change,
    message: &MessageDoc,
    actor: &ObjectId,
    moderator: bool,
    now: DateTime,
    edit_window: Duration,
) -> Result<Update, ChatError> {
    let deleted = message.deleted_at.is_some();
    if message.system.is_some() && *change != Change::DeleteForMe {
        return Err(ChatError::Forbidden("a group's notices cannot be changed"));
    }
    match change {
        Change::Edit(raw) => {
            if message.sender != *actor {
                return Err(ChatError::Forbidden("only the sender can edit a message"));
            }
            if deleted {
                return Err(ChatError::Conflict("the message was deleted"));
            }
            let age = now.timestamp_millis() - message.sent_at.timestamp_millis();
            if u128::try_from(age).unwrap_or(0) > edit_window.as_millis() {
                return Err(ChatError::Forbidden(
                    "the time to edit this message has passed",
                ));
            }
            let text = if message.image.is_some() {
                domain::validate_caption(Some(raw))?
            } else {
                domain::validate_text(raw)?
            };
            if text == message.text {
                return Ok(Update::Nothing);
            }
            Ok(Update::Edit { text, at: now })
        }
        Change::DeleteForEveryone => {
            if message.sender != *actor && !moderator {
                return Err(ChatError::Forbidden(
                    "only the sender (or a group's admin) can delete a message for everyone",
                ));
            }
            Ok(if deleted {
                Update::Nothing
            } else {
                Update::Tombstone { at: now }
            })
        }
        Change::DeleteForMe => Ok(if message.hidden_for.contains(actor) {
            Update::Nothing
        } else {
            Update::Hide(*actor)
        }),
        Change::React { emoji, on } => {
            if deleted {
                return Err(ChatError::Conflict("the message was deleted"));
            }
            react(&message.reactions, actor, emoji, *on)
        }
    }
}

/// The reaction list after `actor` adds or removes `emoji`.
fn react(
    reactions: &[Reaction],
    actor: &ObjectId,
    emoji: &str,
    on: bool,
) -> Result<Update, ChatError> {
    let mut next = reactions.to_vec();
    let existing = next.iter().position(|r| r.emoji == emoji);
    let has = existing.is_some_and(|i| next[i].users.contains(actor));
    if has == on {
        return Ok(Update::Nothing);
    }
    if on {
        let mine = next.iter().filter(|r| r.users.contains(actor)).count();
        if mine >= MAX_EMOJI_PER_USER {
            return Err(ChatError::invalid(format!(
                "at most {MAX_EMOJI_PER_USER} different reactions per user on a message"
            )));
        }
        match existing {
            Some(i) => next[i].users.push(*actor),
            None if next.len() >= MAX_EMOJI_PER_MESSAGE => {
                return Err(ChatError::invalid(format!(
                    "at most {MAX_EMOJI_PER_MESSAGE} different reactions on a message"
                )));
            }
            None => next.push(Reaction {
                emoji: emoji.to_owned(),
                users: vec![*actor],
            }),
        }
    } else if let Some(i) = existing {
        next[i].users.retain(|u| u != actor);
        if next[i].users.is_empty() {
            next.remove(i);
        }
    }
    Ok(Update::Reactions(next))
}

/// The message as it is once `update` was written with change number `seq`.
pub fn applied(mut message: MessageDoc, update: &Update, seq: i64) -> MessageDoc {
    match update {
        Update::Nothing => return message,
        Update::Edit { text, at } => {
            message.text = text.clone();
            message.edited_at = Some(*at);
        }
        Update::Tombstone { at } => {
            message.deleted_at = Some(*at);
            message.text = String::new();
            message.image = None;
            message.message_type = "deleted".to_owned();
            message.reactions = Vec::new();
            message.reply_to = None;
        }
        Update::Hide(user) => message.hidden_for.push(*user),
        Update::Reactions(reactions) => message.reactions = reactions.clone(),
    }
    message.change_seq = seq;
    message
}

/// The quote a reply to `original` carries.
pub fn quote(original: &MessageDoc) -> ReplyRef {
    let deleted = original.deleted_at.is_some();
    ReplyRef {
        message_id: original.id,
        seq: original.seq,
        sender: original.sender,
        preview: if deleted {
            String::new()
        } else {
            domain::preview(&original.text, original.image.is_some())
        },
        deleted,
    }
}

/// The chat list's preview of a message after a change.
pub fn latest_preview(message: &MessageDoc) -> String {
    if message.deleted_at.is_some() {
        DELETED_PREVIEW.to_owned()
    } else {
        domain::preview(&message.text, message.image.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ImageRef;

    const WINDOW: Duration = Duration::from_secs(900);

    fn message(sender: ObjectId, sent_at: DateTime) -> MessageDoc {
        MessageDoc {
            text: "hello".to_owned(),
            ..MessageDoc::new(ObjectId::new(), 7, 7, sender, sent_at)
        }
    }

    fn at(millis: i64) -> DateTime {
        DateTime::from_millis(millis)
    }

    #[test]
    fn only_the_sender_edits_and_only_within_the_window() {
        let (alice, bob) = (ObjectId::new(), ObjectId::new());
        let m = message(alice, at(1_000_000));
        let edit = Change::Edit(" fixed ".to_owned());
        assert_eq!(
            decide(&edit, &m, &alice, false, at(1_000_000 + 900_000), WINDOW),
            Ok(Update::Edit {
                text: "fixed".to_owned(),
                at: at(1_900_000)
            })
        );
        assert!(matches!(
            decide(&edit, &m, &bob, false, at(1_000_001), WINDOW),
            Err(ChatError::Forbidden(_))
        ));
        assert!(matches!(
            decide(&edit, &m, &alice, false, at(1_000_000 + 900_001), WINDOW),
            Err(ChatError::Forbidden(_))
        ));
        assert!(matches!(
            decide(
                &Change::Edit("  ".into()),
                &m,
                &alice,
                false,
                at(1_000_001),
                WINDOW
            ),
            Err(ChatError::Invalid(_))
        ));
        assert_eq!(
            decide(
                &Change::Edit("hello".into()),
                &m,
                &alice,
                false,
                at(1_000_001),
                WINDOW
            ),
            Ok(Update::Nothing),
            "the same text changes nothing"
        );
    }

    #[test]
    fn an_image_caption_may_be_emptied_but_a_text_may_not() {
        let alice = ObjectId::new();
        let mut m = message(alice, at(0));
        m.image = Some(ImageRef {
            media_id: ObjectId::new(),
            content_type: "image/png".into(),
            size: 10,
        });
        assert_eq!(
            decide(
                &Change::Edit(String::new()),
                &m,
                &alice,
                false,
                at(1),
                WINDOW
            ),
            Ok(Update::Edit {
                text: String::new(),
                at: at(1)
            })
        );
    }

    #[test]
    fn deletion_for_everyone_is_the_senders_and_leaves_a_tombstone() {
        let (alice, bob) = (ObjectId::new(), ObjectId::new());
        let mut m = message(alice, at(0));
        m.reactions = vec![Reaction {
            emoji: "👍".into(),
            users: vec![bob],
        }];
        assert!(matches!(
            decide(&Change::DeleteForEveryone, &m, &bob, false, at(1), WINDOW),
            Err(ChatError::Forbidden(_))
        ));
        let update = decide(&Change::DeleteForEveryone, &m, &alice, false, at(5), WINDOW).unwrap();
        let gone = applied(m, &update, 12);
        assert_eq!(gone.text, "");
        assert_eq!(gone.message_type, "deleted");
        assert!(gone.reactions.is_empty());
        assert_eq!((gone.deleted_at, gone.change_seq), (Some(at(5)), 12));
        assert_eq!(
            decide(
                &Change::DeleteForEveryone,
                &gone,
                &alice,
                false,
                at(6),
                WINDOW
            ),
            Ok(Update::Nothing),
            "deleting twice is harmless"
        );
        assert!(matches!(
            decide(
                &Change::Edit("x".into()),
                &gone,
                &alice,
                false,
                at(6),
                WINDOW
            ),
            Err(ChatError::Conflict(_))
        ));
        assert!(matches!(
            decide(
                &Change::React {
                    emoji: "👍".into(),
                    on: true
                },
                &gone,
                &bob,
                false,
                at(6),
                WINDOW
            ),
            Err(ChatError::Conflict(_))
        ));
        assert_eq!(latest_preview(&gone), DELETED_PREVIEW);
        let q = quote(&gone);
        assert!(q.deleted && q.preview.is_empty(), "{q:?}");
    }

    #[test]
    fn anyone_hides_a_message_for_themselves_once() {
        let (alice, bob) = (ObjectId::new(), ObjectId::new());
        let m = message(alice, at(0));
        let update = decide(&Change::DeleteForMe, &m, &bob, false, at(1), WINDOW).unwrap();
        assert!(
            decide(&Change::DeleteForEveryone, &m, &bob, true, at(1), WINDOW).is_ok(),
            "a group's admin deletes anyone's message"
        );
        assert!(
            decide(&Change::Edit("x".into()), &m, &bob, true, at(1), WINDOW).is_err(),
            "but edits none"
        );
        let mut notice = m.clone();
        notice.system = Some(crate::model::Notice {
            action: "added".into(),
            actor: alice,
            users: vec![bob],
            name: None,
            role: None,
        });
        for change in [
            Change::Edit("x".into()),
            Change::DeleteForEveryone,
            Change::React {
                emoji: "👍".into(),
                on: true,
            },
        ] {
            assert_eq!(
                decide(&change, &notice, &alice, true, at(1), WINDOW)
                    .unwrap_err()
                    .code(),
                "forbidden"
            );
        }
        assert!(decide(&Change::DeleteForMe, &notice, &bob, false, at(1), WINDOW).is_ok());
        assert_eq!(update, Update::Hide(bob));
        let hidden = applied(m, &update, 9);
        assert_eq!(
            decide(&Change::DeleteForMe, &hidden, &bob, false, at(2), WINDOW),
            Ok(Update::Nothing)
        );
    }

    #[test]
    fn reactions_count_per_emoji_and_are_bounded() {
        let (alice, bob) = (ObjectId::new(), ObjectId::new());
        let react = |emoji: &str, on| Change::React {
            emoji: emoji.to_owned(),
            on,
        };
        let mut m = message(alice, at(0));
        for (who, emoji) in [(alice, "👍"), (bob, "👍"), (bob, "🎉")] {
            let update = decide(&react(emoji, true), &m, &who, false, at(1), WINDOW).unwrap();
            m = applied(m, &update, 1);
        }
        assert_eq!(m.reactions.len(), 2);
        assert_eq!(m.reactions[0].users, vec![alice, bob]);
        assert_eq!(
            decide(&react("👍", true), &m, &bob, false, at(1), WINDOW),
            Ok(Update::Nothing),
            "the same reaction twice counts once"
        );
        let update = decide(&react("🎉", false), &m, &bob, false, at(1), WINDOW).unwrap();
        m = applied(m, &update, 2);
        assert_eq!(m.reactions.len(), 1, "an emoji nobody uses any more goes");
        assert_eq!(
            decide(&react("🎉", false), &m, &bob, false, at(1), WINDOW),
            Ok(Update::Nothing)
        );
        // Bounded per user.
        let many = ["😀", "😁", "😂", "🤣", "😃", "😄", "😅", "😆"];
        let mut busy = message(alice, at(0));
        for emoji in many {
            let update = decide(&react(emoji, true), &busy, &bob, false, at(1), WINDOW).unwrap();
            busy = applied(busy, &update, 1);
        }
        assert!(matches!(
            decide(&react("😇", true), &busy, &bob, false, at(1), WINDOW),
            Err(ChatError::Invalid(_))
        ));
        assert!(decide(&react("😇", true), &busy, &alice, false, at(1), WINDOW).is_ok());
    }

    #[test]
    fn emoji_are_checked() {
        assert_eq!(validate_emoji("👍🏽").unwrap(), "👍🏽");
        assert_eq!(validate_emoji("🇫🇷").unwrap(), "🇫🇷");
        for bad in ["", "lol", "a", "1", "👍 ", "\n", &"😀".repeat(9)] {
            assert!(validate_emoji(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_quote_follows_its_original() {
        let alice = ObjectId::new();
        let m = message(alice, at(0));
        let q = quote(&m);
        assert_eq!((q.message_id, q.seq, q.sender), (m.id, 7, alice));
        assert_eq!(q.preview, "hello");
        assert!(!q.deleted);
    }
}
