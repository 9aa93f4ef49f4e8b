//! Blocks and group membership changes reach live sockets on every replica.
//!
//! A socket remembers the chats it passed a membership check for, with
//! their other members and whether a member blocked the other (read from
//! the chat in that same check, so typing and receipts never wait on
//! MongoDB). A change is stored first, then announced on a Redis channel
//! every replica follows (see [`crate::fanout::Invalidation`]):
//!
//! - a block or unblock: the sockets of the two users forget the chats
//!   they share;
//! - a group's members changed: every socket forgets the group (its next
//!   event there is checked again, with the new members), and the sockets
//!   of those no longer in it leave its room.
//!
//! The replica where the change was made acts before it answers; the
//! others as the announcement arrives. When the subscription is (re)made,
//! announcements may have been missed, so every local socket forgets all
//! its chats once.
//!
//! Sends never rely on this: the store refuses a message from a non-member
//! or into a blocked chat in the same write that appends it.

use std::sync::Arc;

use mongodb::bson::oid::ObjectId;
use socketioxide::SocketIo;
use tokio_util::sync::CancellationToken;

use crate::error::ChatError;
use crate::fanout::{
    Adapter, Invalidation, block_channel, chat_room, parse_invalidation, user_room,
};
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

/// Makes this pod's sockets of `a` and `b` forget each other's chats.
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

/// Makes this pod's sockets forget `chat`; those of `removed` leave its room.
pub fn forget_group(io: &SocketIo<Adapter>, chat: &ObjectId, removed: &[ObjectId]) {
    for socket in io.local().sockets() {
        if let Some(SocketUser(s)) = socket_user(&socket) {
            s.forget_chat(chat);
            if removed.contains(&s.id) {
                socket.leave(chat_room(chat));
            }
        }
    }
}

/// Acts on one invalidation on this pod.
pub fn apply(io: &SocketIo<Adapter>, change: &Invalidation) {
    match change {
        Invalidation::Block(a, b) => forget_between(io, a, b),
        Invalidation::Members { chat, removed } => forget_group(io, chat, removed),
    }
}

fn forget_everything(io: &SocketIo<Adapter>) {
    for socket in io.local().sockets() {
        if let Some(SocketUser(s)) = socket_user(&socket) {
            s.forget_all();
        }
    }
}

/// Makes this pod's sockets forget at once on a change made here (the
/// fan-out's hook), and follows the changes other replicas announce until
/// `shutdown`.
pub fn follow(state: &AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let io = state.fanout.io().clone();
    let here = io.clone();
    state
        .fanout
        .on_invalidation(Arc::new(move |change| apply(&here, change)));
    let (resubscribed, announced) = (io.clone(), io);
    parley_common::redis::follow_channel(
        state.redis.clone(),
        block_channel(&state.redis),
        "invalidations",
        shutdown,
        move || forget_everything(&resubscribed),
        move |payload| {
            if let Some(change) = parse_invalidation(&payload) {
                apply(&announced, &change);
            }
        },
    )
}
