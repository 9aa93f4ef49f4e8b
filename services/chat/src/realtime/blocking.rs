//! Blocks reach live sockets on every replica.
//!
//! A socket remembers the chats it passed a membership check for, and with
//! each whether a member blocked the other (read from the chat in that same
//! check, so typing and receipts never wait on MongoDB). A block or unblock
//! is stored first, then announced on a Redis channel every replica
//! follows: each drops what its sockets of the two users remember of each
//! other's chat, so their next event there is checked again. When the
//! subscription is (re)made, messages may have been missed, so every local
//! socket forgets all its chats once.
//!
//! Sends never rely on this: the store refuses a message into a blocked
//! chat in the same write that appends it.

use mongodb::bson::oid::ObjectId;
use parley_common::api_error::ApiError;
use tokio_util::sync::CancellationToken;

use crate::realtime::{AuthorisedChat, SocketUser, socket_user};
use crate::service::user_room;
use crate::state::AppState;

/// The pub/sub channel blocks are announced on.
pub fn channel(state: &AppState) -> String {
    state.redis.key("blocks")
}

/// Pure: `"<a> <b>"` as published on the channel.
pub fn parse_message(payload: &str) -> Option<(ObjectId, ObjectId)> {
    let (a, b) = payload.split_once(' ')?;
    Some((ObjectId::parse_str(a).ok()?, ObjectId::parse_str(b).ok()?))
}

/// Pure: refuses ephemeral events (typing, receipts) in a blocked chat.
pub fn usable(entry: &AuthorisedChat) -> Result<(), ApiError> {
    if entry.blocked {
        Err(ApiError::forbidden("you cannot write in this chat"))
    } else {
        Ok(())
    }
}

/// Tells every replica that the block between `a` and `b` changed. Local
/// sockets forget at once, whatever Redis says.
pub async fn announce(state: &AppState, a: &ObjectId, b: &ObjectId) {
    forget_between(state, a, b);
    let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg(channel(state))
        .arg(format!("{} {}", a.to_hex(), b.to_hex()))
        .query_async(&mut state.redis.conn())
        .await;
    if let Err(error) = published {
        tracing::warn!(%error, "block not announced to other replicas");
    }
}

/// Makes this pod's sockets of `a` and `b` forget each other's chat.
pub fn forget_between(state: &AppState, a: &ObjectId, b: &ObjectId) {
    for (user, other) in [(a, b), (b, a)] {
        let other_room = user_room(other);
        for socket in state.io.local().to(user_room(user)).sockets() {
            if let Some(SocketUser(s)) = socket_user(&socket) {
                s.forget_peer(&other_room);
            }
        }
    }
}

fn forget_everything(state: &AppState) {
    for socket in state.io.local().sockets() {
        if let Some(SocketUser(s)) = socket_user(&socket) {
            s.forget_all();
        }
    }
}

/// Follows announced blocks until `shutdown`.
pub fn follow(state: &AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let (resubscribed, announced) = (state.clone(), state.clone());
    parley_common::cache::follow_channel(
        state.redis.clone(),
        channel(state),
        "blocks",
        shutdown,
        move || forget_everything(&resubscribed),
        move |payload| {
            if let Some((a, b)) = parse_message(&payload) {
                forget_between(&announced, &a, &b);
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        let (a, b) = (ObjectId::new(), ObjectId::new());
        assert_eq!(
            parse_message(&format!("{} {}", a.to_hex(), b.to_hex())),
            Some((a, b))
        );
        assert_eq!(parse_message("nope"), None);
        assert_eq!(parse_message("a b"), None);
    }
}
