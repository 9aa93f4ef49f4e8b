//! Who an event reaches: user and chat rooms, and the emits to them on
//! every replica through socketioxide's Redis adapter.
//!
//! The service and the socket edge both emit through [`Fanout`]; it knows
//! rooms, the adapter and presence, and nothing of requests or sockets'
//! own state. Each socket joins `user:<id>`, so an event to a user reaches
//! all their devices on every replica.
//!
//! - **Messages and presence** always go through the adapter.
//! - **Relays** (typing, receipts) go through the local adapter only while
//!   this pod is alone on the adapter's channel (see [`peers`]).
//! - **Block changes** are handed to the hook the socket edge installs
//!   (its sockets forget what they knew of the two users' chat) and
//!   announced on a Redis channel for the other replicas.

pub mod peers;
pub mod redis_driver;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use mongodb::bson::oid::ObjectId;
use parley_common::redis::Redis;
use serde::Serialize;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Emitter;
use socketioxide_redis::CustomRedisAdapter;
use tokio_util::sync::CancellationToken;

use crate::error::ChatError;
use crate::fanout::peers::Peers;
use crate::fanout::redis_driver::ResilientDriver;
use crate::presence::Presence;
use crate::store::Store;

/// The adapter: socketioxide's Redis adapter on the resilient driver.
pub type Adapter = CustomRedisAdapter<Emitter, ResilientDriver>;

/// Partners whose `getOnlineUser` list is refreshed on a change of state.
pub const PRESENCE_REFRESH_LIMIT: usize = 200;

/// The user room every socket of `user` joins.
pub fn user_room(user: &ObjectId) -> String {
    format!("user:{}", user.to_hex())
}

/// The room of an open chat (joined through `joinChat`).
pub fn chat_room(chat: &ObjectId) -> String {
    format!("chat:{}", chat.to_hex())
}

/// The prefix of the adapter's Redis channels.
pub fn channel_prefix(redis: &Redis) -> String {
    redis.key("socket.io")
}

/// The pub/sub channel block and membership changes are announced on.
pub fn block_channel(redis: &Redis) -> String {
    redis.key("blocks")
}

/// What makes sockets forget chats they passed a membership check for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A block between two users changed: their sockets forget the chats
    /// they share.
    Block(ObjectId, ObjectId),
    /// A group's members changed: every socket forgets it, and the
    /// sockets of those no longer in it leave its room.
    Members {
        /// The group.
        chat: ObjectId,
        /// Who is no longer a member.
        removed: Vec<ObjectId>,
    },
}

/// Pure: an invalidation as published on [`block_channel`]: `"<a> <b>"`
/// for a block (the format older replicas read), `"members <chat>
/// [<removed>…]"` for a group (which older replicas ignore).
pub fn invalidation_message(change: &Invalidation) -> String {
    match change {
        Invalidation::Block(a, b) => format!("{} {}", a.to_hex(), b.to_hex()),
        Invalidation::Members { chat, removed } => {
            std::iter::once(format!("members {}", chat.to_hex()))
                .chain(removed.iter().map(|u| u.to_hex()))
                .collect::<Vec<_>>()
                .join(" ")
        }
    }
}

/// Pure: the change a published message announces.
pub fn parse_invalidation(payload: &str) -> Option<Invalidation> {
    let mut words = payload.split(' ');
    let first = words.next()?;
    if first == "members" {
        let chat = ObjectId::parse_str(words.next()?).ok()?;
        let removed = words
            .map(ObjectId::parse_str)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        return Some(Invalidation::Members { chat, removed });
    }
    let a = ObjectId::parse_str(first).ok()?;
    let b = ObjectId::parse_str(words.next()?).ok()?;
    words.next().is_none().then_some(Invalidation::Block(a, b))
}

/// What this pod does at once on an invalidation.
pub type InvalidationHook = Arc<dyn Fn(&Invalidation) + Send + Sync>;

/// Pure: what the sender hears when a relay could not be handed over. A
/// recipient whose bounded send buffer is full is not keeping up: the relay
/// is dropped for it (counted) rather than queued.
pub fn relay_error(socket_side: bool) -> ChatError {
    if socket_side {
        ChatError::Busy {
            message: "recipient is not keeping up: event dropped",
            retry_after_secs: 1,
        }
    } else {
        ChatError::unavailable("redis", "socket.io adapter")
    }
}

fn broadcast_error(error: socketioxide::BroadcastError) -> ChatError {
    let socket_side = matches!(error, socketioxide::BroadcastError::Socket(_));
    if socket_side {
        metrics::counter!("chat_socket_relays_dropped_total").increment(1);
    } else {
        tracing::warn!(%error, "relay not sent");
    }
    relay_error(socket_side)
}

/// Rooms and emits; cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    io: SocketIo<Adapter>,
    peers: Peers,
    store: Store,
    presence: Presence,
    redis: Redis,
    on_invalidation: Arc<OnceLock<InvalidationHook>>,
}

impl Fanout {
    /// Emits through `io`, reads contacts from `store` and online state
    /// from `presence`, and announces blocks on `redis`.
    pub fn new(io: SocketIo<Adapter>, store: Store, presence: Presence, redis: Redis) -> Self {
        Self {
            io,
            peers: Peers::default(),
            store,
            presence,
            redis,
            on_invalidation: Arc::default(),
        }
    }

    /// The Socket.IO handle (for the socket edge).
    pub fn io(&self) -> &SocketIo<Adapter> {
        &self.io
    }

    /// True while no other pod shares the adapter.
    pub fn alone(&self) -> bool {
        self.peers.alone()
    }

    /// Starts watching how many pods share the adapter. Call it once this
    /// pod's own subscription is in place.
    pub fn watch_peers(&self, shutdown: CancellationToken) {
        self.peers.watch(
            self.redis.clone(),
            peers::request_channel(&channel_prefix(&self.redis)),
            shutdown,
        );
    }

    /// Installs what this pod does at once on an invalidation (the first
    /// hook wins; the socket edge installs it at start).
    pub fn on_invalidation(&self, hook: InvalidationHook) {
        let _ = self.on_invalidation.set(hook);
    }

    /// Sends `event` to every device of `users` on every replica; a failure
    /// is logged (clients catch up through the REST history).
    pub async fn to_users<'a, T: Serialize + ?Sized>(
        &self,
        users: impl IntoIterator<Item = &'a ObjectId>,
        event: &'static str,
        body: &T,
    ) {
        let rooms: Vec<String> = users.into_iter().map(user_room).collect();
        if rooms.is_empty() {
            return;
        }
        if let Err(error) = self.io.to(rooms).emit(event, body).await {
            tracing::warn!(%error, event, "fan-out failed");
        }
    }

    /// Relays `event` to the given user rooms: on every replica, or only
    /// here while this pod is alone on the adapter. A recipient that is not
    /// keeping up makes it [`ChatError::Busy`].
    pub async fn relay<T: Serialize + ?Sized>(
        &self,
        rooms: &[String],
        event: &str,
        body: &T,
    ) -> Result<(), ChatError> {
        let io = if self.alone() {
            self.io.local()
        } else {
            self.io.broadcast()
        };
        let result = match rooms {
            [] => return Ok(()),
            [one] => io.to(one.clone()).emit(event, body).await,
            many => io.to(many.to_vec()).emit(event, body).await,
        };
        result.map_err(broadcast_error)
    }

    /// A relay to local sockets only, completed in place (no task, no
    /// Redis): for a pod alone on the adapter, or a chat whose relays stop
    /// here.
    pub fn relay_here_now<T: Serialize + ?Sized>(
        &self,
        rooms: &[String],
        event: &str,
        body: &T,
    ) -> Result<(), ChatError> {
        use futures::FutureExt;
        let io = self.io.local();
        let sent = match rooms {
            [] => Some(Ok(())),
            [one] => io.to(one.clone()).emit(event, body).now_or_never(),
            many => io.to(many.to_vec()).emit(event, body).now_or_never(),
        };
        match sent {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(broadcast_error(e)),
            None => Err(ChatError::internal("local emit did not complete at once")),
        }
    }

    /// A block between `a` and `b` changed: this pod acts at once (its
    /// hook), then the other replicas are told.
    pub async fn block_changed(&self, a: &ObjectId, b: &ObjectId) {
        self.invalidate(Invalidation::Block(*a, *b)).await;
    }

    /// A group's members changed (`removed` are out): this pod acts at
    /// once, then the other replicas are told.
    pub async fn members_changed(&self, chat: &ObjectId, removed: &[ObjectId]) {
        self.invalidate(Invalidation::Members {
            chat: *chat,
            removed: removed.to_vec(),
        })
        .await;
    }

    async fn invalidate(&self, change: Invalidation) {
        if let Some(hook) = self.on_invalidation.get() {
            hook(&change);
        }
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(block_channel(&self.redis))
            .arg(invalidation_message(&change))
            .query_async(&mut self.redis.conn())
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "invalidation not announced to other replicas");
        }
    }

    /// Tells the user's chat partners (only them) about a change of state.
    ///
    /// Old clients only read `getOnlineUser`, so each partner's list is
    /// resent: the partners' own contacts come from one query and their
    /// online state from one pipelined Redis round trip, whatever the
    /// number of partners (up to [`PRESENCE_REFRESH_LIMIT`]).
    pub async fn presence_changed(&self, user: &ObjectId, partners: &[ObjectId], online: bool) {
        if partners.is_empty() {
            return;
        }
        let body = json!({ "userId": user.to_hex(), "online": online, "at": chrono::Utc::now().to_rfc3339() });
        self.to_users(partners, "presence", &body).await;
        let partners = &partners[..partners.len().min(PRESENCE_REFRESH_LIMIT)];
        let contacts = match self.store.partners_of_many(partners).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "getOnlineUser refresh skipped");
                return;
            }
        };
        let mut everyone: Vec<ObjectId> = contacts.values().flatten().copied().collect();
        everyone.sort();
        everyone.dedup();
        let online_now: HashSet<ObjectId> = match self.presence.online(&everyone).await {
            Ok(o) => o.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "presence unavailable");
                return;
            }
        };
        for partner in partners {
            let list = crate::domain::online_list(
                contacts.get(partner).map(Vec::as_slice).unwrap_or_default(),
                &online_now,
            );
            self.to_users([partner], "getOnlineUser", &list).await;
        }
    }

    /// Sends each of `users` their `getOnlineUser` list again (after a chat
    /// was accepted, or a block changed who may see whom).
    pub async fn refresh_presence(&self, users: &[ObjectId]) {
        let contacts = match self.store.partners_of_many(users).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "getOnlineUser refresh skipped");
                return;
            }
        };
        for user in users {
            let partners = contacts.get(user).map(Vec::as_slice).unwrap_or_default();
            self.send_online_list(user, partners).await;
        }
    }

    /// Sends `getOnlineUser` (which of `contacts` are online) to every
    /// socket of `user`.
    pub async fn send_online_list(&self, user: &ObjectId, contacts: &[ObjectId]) {
        let online: HashSet<ObjectId> = match self.presence.online(contacts).await {
            Ok(o) => o.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "presence unavailable");
                return;
            }
        };
        let list = crate::domain::online_list(contacts, &online);
        self.to_users([user], "getOnlineUser", &list).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_recipient_is_a_dropped_relay_not_an_outage() {
        let full = relay_error(true);
        assert_eq!(full.code(), "busy");
        assert!(full.public_message().contains("not keeping up"), "{full}");
        assert_eq!(relay_error(false).code(), "unavailable");
        assert!(relay_error(false).public_message().contains("redis"));
    }

    #[test]
    fn invalidations_round_trip_and_blocks_keep_their_format() {
        let (a, b, c) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        let block = Invalidation::Block(a, b);
        assert_eq!(
            invalidation_message(&block),
            format!("{} {}", a.to_hex(), b.to_hex())
        );
        assert_eq!(
            parse_invalidation(&invalidation_message(&block)),
            Some(block)
        );
        for removed in [vec![], vec![b, c]] {
            let members = Invalidation::Members { chat: a, removed };
            assert_eq!(
                parse_invalidation(&invalidation_message(&members)),
                Some(members)
            );
        }
        assert_eq!(parse_invalidation("nope"), None);
        assert_eq!(parse_invalidation("a b"), None);
        assert_eq!(parse_invalidation("members"), None);
        assert_eq!(
            parse_invalidation(&format!("members {} x", a.to_hex())),
            None
        );
    }

    #[test]
    fn rooms_name_users_and_chats() {
        let id = ObjectId::new();
        assert_eq!(user_room(&id), format!("user:{}", id.to_hex()));
        assert_eq!(chat_room(&id), format!("chat:{}", id.to_hex()));
    }
}
