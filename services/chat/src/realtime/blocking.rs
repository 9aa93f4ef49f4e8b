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

use std::sync::Arc;

use mongodb::bson::oid::ObjectId;
use socketioxide::SocketIo;
use tokio_util::sync::CancellationToken;

use crate::error::ChatError;
use crate::fanout::{Adapter, block_channel, parse_block_message, user_room};
use crate::realtime::socket::{AuthorisedChat, SocketUser, socket_user};
use crate::state::AppState;

/// Pure: refuses ephemeral events (typing, receipts) in a blocked chat.
pub fn usable(entry: &AuthorisedChat) -> Result<(), ChatError> {
    if entry.blocked {
        Err(ChatError::Forbidden("you cannot write in this chat"))
    } else {
        Ok(())
    }
}

/// Makes this pod's sockets of `a` and `b` forget each other's chat.
pub fn forget_between(io: &SocketIo<Adapter>, a: &ObjectId, b: &ObjectId) {
    for (user, other) in [(a, b), (b, a)] {
        let other_room = user_room(other);
        for socket in io.local().to(user_room(user)).sockets() {
            if let Some(SocketUser(s)) = socket_user(&socket) {
                s.forget_peer(&other_room);
            }
        }
    }
}

fn forget_everything(io: &SocketIo<Adapter>) {
    for socket in io.local().sockets() {
        if let Some(SocketUser(s)) = socket_user(&socket) {
            s.forget_all();
        }
    }
}

/// Makes this pod's sockets forget at once on a block changed here (the
/// fan-out's hook), and follows the changes other replicas announce until
/// `shutdown`.
pub fn follow(state: &AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let io = state.fanout.io().clone();
    let here = io.clone();
    state
        .fanout
        .on_block_change(Arc::new(move |a, b| forget_between(&here, a, b)));
    let (resubscribed, announced) = (io.clone(), io);
    parley_common::redis::follow_channel(
        state.redis.clone(),
        block_channel(&state.redis),
        "blocks",
        shutdown,
        move || forget_everything(&resubscribed),
        move |payload| {
            if let Some((a, b)) = parse_block_message(&payload) {
                forget_between(&announced, &a, &b);
            }
        },
    )
}
