//! What the services share in their stores: the MongoDB collections one
//! service reads or writes of another's, the typed views they read them
//! through, and the Redis keys of presence.
//!
//! Ownership: the user service owns `users` (chat writes only its
//! `lastSeenAt`); chat owns `chats` and `messages` (the user service reads
//! chats to tell who shares one; mail reads a chat's members, mutes, group
//! name and read watermarks, and its messages' seen flags and seqs, through
//! lenient views of its own in `parley_mail::audience`); chat owns presence
//! in Redis (mail reads the live count).

use serde::Deserialize;

/// MongoDB collection names.
pub mod collections {
    /// Users, by id: the user service's.
    pub const USERS: &str = "users";
    /// Chats, by id: the chat service's.
    pub const CHATS: &str = "chats";
    /// Messages, by id: the chat service's.
    pub const MESSAGES: &str = "messages";
}

/// A user's live socket count (a number, with the presence TTL), under the
/// deployment's Redis key prefix: the chat service writes it, mail reads it
/// to skip online users.
pub fn presence_count_key(user_hex: &str) -> String {
    format!("presence:{user_hex}")
}

/// The sorted set of a user's live sockets (scored by expiry), under the
/// deployment's Redis key prefix: the chat service's own.
pub fn presence_sockets_key(user_hex: &str) -> String {
    format!("presence:sockets:{user_hex}")
}

/// What mail reads of a user: where to write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UserContactView {
    /// The user's email address (`None` on a document without one: nothing
    /// to write to, never an error that would retry for ever).
    #[serde(default)]
    pub email: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_views_read_what_the_owners_write() {
        assert_eq!(presence_count_key("abc"), "presence:abc");
        assert_eq!(presence_sockets_key("abc"), "presence:sockets:abc");
        let user: UserContactView =
            serde_json::from_value(serde_json::json!({"email": "a@example.com", "name": "A"}))
                .unwrap_or_default();
        assert_eq!(user.email.as_deref(), Some("a@example.com"));
        let none: UserContactView =
            serde_json::from_value(serde_json::json!({"name": "A"})).unwrap_or_default();
        assert_eq!(none.email, None);
    }
}
