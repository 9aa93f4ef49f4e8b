//! What a socket carries from its handshake on: who it belongs to, its
//! rate bucket and events in flight, and the chats it passed a membership
//! check for (so typing and receipts never wait on MongoDB).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mongodb::bson::oid::ObjectId;
use parley_common::token::Claims;
use socketioxide::socket::Socket;

use crate::fanout::{Adapter, user_room};
use crate::realtime::admission::Class;
use crate::realtime::lifecycle::Lifecycle;
use crate::realtime::rate::TokenBucket;

/// Chats one socket remembers as authorised (beyond that, each use is checked).
pub const MAX_AUTHORISED_CHATS: usize = 512;

/// A chat a socket passed the membership check for.
///
/// A passed check stays true until a change of the chat's members (a
/// group's) or of a block between them makes every replica's sockets
/// forget it (see the `invalidation` module). Failed checks are never
/// remembered. Whether a member blocked the other is read in the same check.
#[derive(Debug)]
pub struct AuthorisedChat {
    /// The chat id, hex.
    pub chat_hex: String,
    /// The user rooms of the other members.
    pub others: Vec<String>,
    /// A member blocked the other: no typing or receipts.
    pub blocked: bool,
    /// A group: receipts move the members' watermarks.
    pub group: bool,
    /// The seq after which this socket's user sees the chat's messages
    /// (where they joined a group; 0 otherwise).
    pub floor: i64,
}

/// The chats a socket passed its check for, and how many times it was
/// told to forget some (a check read before a forget is not remembered).
#[derive(Default)]
struct Remembered {
    chats: HashMap<ObjectId, Arc<AuthorisedChat>>,
    forgets: u64,
}

/// Who a socket belongs to and what it may do, set by the handshake check.
pub struct SocketState {
    /// The user.
    pub id: ObjectId,
    /// The user id, hex.
    pub hex: String,
    /// Verified token claims.
    pub claims: Claims,
    bucket: Mutex<TokenBucket>,
    chats: Mutex<Remembered>,
    /// Events in flight, per class (relays do not wait behind sends).
    in_flight: [AtomicU32; 2],
    /// Presence registration, whichever of connect and disconnect runs first.
    pub lifecycle: Lifecycle,
}

impl SocketState {
    /// A fresh state for `claims` with a full rate bucket.
    pub fn new(id: ObjectId, claims: Claims, rate: u32, burst: u32) -> Self {
        Self {
            id,
            hex: id.to_hex(),
            claims,
            bucket: Mutex::new(TokenBucket::new(rate, burst, Instant::now())),
            chats: Mutex::new(Remembered::default()),
            in_flight: [AtomicU32::new(0), AtomicU32::new(0)],
            lifecycle: Lifecycle::default(),
        }
    }

    /// Takes one event from the socket's rate bucket; false when empty.
    pub fn allow(&self) -> bool {
        self.bucket
            .lock()
            .map(|mut b| b.try_take(Instant::now()))
            .unwrap_or(false)
    }

    /// The chat, when this socket already passed its membership check.
    pub fn authorised(&self, chat: &ObjectId) -> Option<Arc<AuthorisedChat>> {
        self.chats.lock().ok()?.chats.get(chat).cloned()
    }

    /// Where the socket stands before a membership check reads the chat:
    /// [`SocketState::remember`] keeps the check only if nothing was
    /// forgotten since (else a change announced while the check read the
    /// old members would be undone).
    pub fn checkpoint(&self) -> u64 {
        self.chats.lock().map(|r| r.forgets).unwrap_or(u64::MAX)
    }

    /// Remembers a passed membership check, read after `checkpoint` (up to
    /// [`MAX_AUTHORISED_CHATS`], and only if nothing was forgotten since).
    pub fn remember(&self, chat: &crate::model::ChatDoc, checkpoint: u64) -> Arc<AuthorisedChat> {
        let (id, members) = (chat.id, &chat.members);
        let entry = Arc::new(AuthorisedChat {
            chat_hex: id.to_hex(),
            others: members
                .iter()
                .filter(|m| **m != self.id)
                .map(user_room)
                .collect(),
            blocked: !chat.blocked_by.is_empty(),
            group: chat.is_group(),
            floor: chat.visible_after(&self.id),
        });
        if let Ok(mut remembered) = self.chats.lock()
            && remembered.forgets == checkpoint
            && remembered.chats.len() < MAX_AUTHORISED_CHATS
        {
            remembered.chats.insert(id, entry.clone());
        }
        entry
    }

    /// Forgets the chats shared with the user of `room` (their next use is
    /// checked again).
    pub fn forget_peer(&self, room: &str) {
        if let Ok(mut remembered) = self.chats.lock() {
            remembered.forgets += 1;
            remembered
                .chats
                .retain(|_, entry| !entry.others.iter().any(|o| o == room));
        }
    }

    /// Forgets one chat (its next use is checked again).
    pub fn forget_chat(&self, chat: &ObjectId) {
        if let Ok(mut remembered) = self.chats.lock() {
            remembered.forgets += 1;
            remembered.chats.remove(chat);
        }
    }

    /// Forgets every chat.
    pub fn forget_all(&self) {
        if let Ok(mut remembered) = self.chats.lock() {
            remembered.forgets += 1;
            remembered.chats.clear();
        }
    }

    /// How many chats this socket remembers.
    pub fn authorised_count(&self) -> usize {
        self.chats.lock().map(|r| r.chats.len()).unwrap_or(0)
    }
}

/// The per-socket state as kept in the socket's extensions (cheap to clone).
#[derive(Clone)]
pub struct SocketUser(pub Arc<SocketState>);

/// The state of a socket, when its handshake passed.
pub fn socket_user(socket: &Socket<Adapter>) -> Option<SocketUser> {
    socket.extensions.get::<SocketUser>()
}

/// Releases the socket's in-flight slot when the event's work ends.
pub struct SocketSlot(Arc<SocketState>, usize);

impl SocketSlot {
    /// Takes a slot of `class`; also returns how many were taken before.
    pub fn take(state: &Arc<SocketState>, class: Class) -> (Self, u32) {
        let i = match class {
            Class::Relay => 0,
            Class::Store => 1,
        };
        let previous = state.in_flight[i].fetch_add(1, Ordering::AcqRel);
        (Self(state.clone(), i), previous)
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.in_flight[self.1].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(id: &ObjectId) -> Claims {
        Claims {
            sub: id.to_hex(),
            email: "a@example.com".into(),
            name: "a".into(),
            iat: 0,
            exp: i64::MAX,
            iss: parley_common::token::DEFAULT_ISSUER.into(),
            aud: parley_common::token::DEFAULT_AUDIENCE.into(),
            generation: 0,
        }
    }

    #[test]
    fn authorised_chats_address_the_other_members_and_are_bounded() {
        let me = ObjectId::new();
        let other = ObjectId::new();
        let state = SocketState::new(me, claims(&me), 10, 10);
        let doc = |members: Vec<ObjectId>| {
            crate::model::ChatDoc::empty(
                ObjectId::new(),
                members,
                String::new(),
                mongodb::bson::DateTime::now(),
            )
        };
        let pair = doc(vec![me, other]);
        let chat = pair.id;
        assert!(state.authorised(&chat).is_none());
        state.remember(&pair, state.checkpoint());
        let entry = state.authorised(&chat).expect("remembered");
        assert_eq!(entry.others, vec![user_room(&other)]);
        assert_eq!(entry.chat_hex, chat.to_hex());
        for _ in 0..MAX_AUTHORISED_CHATS + 10 {
            state.remember(&doc(vec![me, other]), state.checkpoint());
        }
        assert_eq!(state.authorised_count(), MAX_AUTHORISED_CHATS);
        state.forget_chat(&chat);
        assert!(state.authorised(&chat).is_none());
        assert_eq!(state.authorised_count(), MAX_AUTHORISED_CHATS - 1);
        state.forget_peer(&user_room(&ObjectId::new()));
        assert_eq!(state.authorised_count(), MAX_AUTHORISED_CHATS - 1);
        state.forget_peer(&user_room(&other));
        assert_eq!(state.authorised_count(), 0);
    }

    #[test]
    fn a_check_read_before_a_forget_is_not_remembered() {
        let me = ObjectId::new();
        let state = SocketState::new(me, claims(&me), 10, 10);
        let group = crate::model::ChatDoc::empty(
            ObjectId::new(),
            vec![me, ObjectId::new()],
            String::new(),
            mongodb::bson::DateTime::now(),
        );
        let before = state.checkpoint();
        // The members change while the check reads the old ones.
        state.forget_chat(&group.id);
        let entry = state.remember(&group, before);
        assert_eq!(entry.chat_hex, group.id.to_hex(), "this event may proceed");
        assert!(
            state.authorised(&group.id).is_none(),
            "but the next one checks again"
        );
        state.remember(&group, state.checkpoint());
        assert!(state.authorised(&group.id).is_some());
    }

    #[test]
    fn slots_count_events_in_flight_per_class() {
        let me = ObjectId::new();
        let state = Arc::new(SocketState::new(me, claims(&me), 10, 10));
        let (a, before) = SocketSlot::take(&state, Class::Relay);
        assert_eq!(before, 0);
        let (_b, before) = SocketSlot::take(&state, Class::Relay);
        assert_eq!(before, 1);
        let (_s, before) = SocketSlot::take(&state, Class::Store);
        assert_eq!(before, 0, "classes are counted apart");
        drop(a);
        let (_c, before) = SocketSlot::take(&state, Class::Relay);
        assert_eq!(before, 1, "a dropped slot is given back");
    }
}
