//! Forgetting a deleted account (`user.deleted.v1` from the user service):
//! their messages become tombstones in every chat (which keeps working for
//! the others), they leave their groups (an owner's passes on), their
//! images and quota record go, their blocks go, and their cached profile
//! is dropped. Their sockets were already closed by
//! the revocation that came with the deletion.

use lapin::options::{BasicAckOptions, BasicNackOptions};
use mongodb::bson::oid::ObjectId;
use parley_common::amqp::{Amqp, QueueSpec, consume};
use parley_common::events::{Envelope, Event, UserDeleted};
use tokio_util::sync::CancellationToken;

use crate::error::ChatError;
use crate::state::AppState;

/// What forgetting one account did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Chats touched.
    pub chats: usize,
    /// Messages turned into tombstones.
    pub messages: u64,
    /// Images removed.
    pub images: u64,
}

/// Rounds of erasure per chat and pass (each after a message changed
/// concurrently); what is left, the second pass takes.
const ERASE_ROUNDS: usize = 4;

/// How long a failed erasure waits before its event is handed back for
/// another try (so a store outage is not retried in a tight loop).
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Forgets `user` (idempotent: a redelivered event finds nothing left to
/// do). A replica may still take a token it read as valid within its
/// revocation cache period, so after that period a second pass turns
/// anything sent meanwhile into a tombstone too. A shutdown during the
/// wait gives the event back (another replica redoes both passes).
pub async fn forget_twice(
    state: &AppState,
    user: &ObjectId,
    shutdown: &CancellationToken,
) -> Result<Forgotten, ChatError> {
    let first = forget(state, user).await?;
    tokio::select! {
        () = shutdown.cancelled() => {
            return Err(ChatError::unavailable("chat", "shutting down before the second pass"));
        }
        () = tokio::time::sleep(state.config.revocation.cache_ttl) => {}
    }
    let second = forget(state, user).await?;
    Ok(Forgotten {
        chats: first.chats.max(second.chats),
        messages: first.messages + second.messages,
        images: first.images + second.images,
    })
}

/// One pass of forgetting `user`. Members of a chat where messages became
/// tombstones get `chatChanged {chatId, changeSeq}`: their open clients
/// catch up through the change feed.
pub async fn forget(state: &AppState, user: &ObjectId) -> Result<Forgotten, ChatError> {
    let mut done = Forgotten::default();
    let mut blocked_partners = Vec::new();
    for chat_id in state.store.chat_ids_of(user).await? {
        let Some(chat) = state.store.chat(&chat_id).await? else {
            continue;
        };
        let others: Vec<ObjectId> = chat
            .members
            .iter()
            .filter(|m| *m != user)
            .copied()
            .collect();
        if !chat.blocked_by.is_empty() {
            blocked_partners.extend(others.iter().copied());
        }
        // Counted first: a chat without their words takes no change number.
        // A message changed under a later number meanwhile waits for
        // another round, with a number above it.
        let mut erased = 0;
        let mut last = None;
        for _ in 0..ERASE_ROUNDS {
            if !state.store.has_words_of(&chat_id, user).await? {
                break;
            }
            let Some(seq) = state.store.next_change(&chat_id, None).await? else {
                break;
            };
            erased += state.store.erase_author(&chat_id, user, seq).await?;
            last = Some(seq);
        }
        done.messages += erased;
        done.chats += 1;
        if let Some(seq) = last {
            let hint = serde_json::json!({ "chatId": chat_id.to_hex(), "changeSeq": seq });
            state.fanout.to_users(&others, "chatChanged", &hint).await;
        }
        if chat.is_group() {
            crate::groups::act_as(state, user, &chat_id, crate::groups::rules::Action::Leave)
                .await?;
        }
    }
    done.images = state.store.erase_media_of(user).await?;
    state.store.erase_blocks_of(user).await?;
    // The others' sockets forget the block they knew of.
    for partner in &blocked_partners {
        state.fanout.block_changed(user, partner).await;
    }
    if let Err(error) = state.profiles.invalidate(&user.to_hex()).await {
        tracing::warn!(%error, "cached profile of a deleted account not dropped; it expires");
    }
    Ok(done)
}

/// Consumes `user.deleted.v1` (one shared queue: any replica may handle
/// one); a failure is retried by redelivery.
pub fn follow_deletions(
    amqp: Amqp,
    state: AppState,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let spec = QueueSpec {
        queue: "chat.account-deletion".to_owned(),
        routing_keys: vec![UserDeleted::TYPE.to_owned()],
        arguments: Default::default(),
        prefetch: 4,
    };
    let stop = shutdown.clone();
    tokio::spawn(consume(amqp, spec, shutdown, move |delivery| {
        let state = state.clone();
        let stop = stop.clone();
        async move {
            let parsed: Result<Envelope<UserDeleted>, _> = serde_json::from_slice(&delivery.data);
            let user = parsed
                .ok()
                .and_then(|e| ObjectId::parse_str(&e.data.user_id).ok());
            let Some(user) = user else {
                tracing::warn!("unreadable user.deleted event dropped");
                let _ = delivery.ack(BasicAckOptions::default()).await;
                return;
            };
            match forget_twice(&state, &user, &stop).await {
                Ok(done) => {
                    metrics::counter!("chat_accounts_forgotten_total").increment(1);
                    tracing::info!(user = %user, chats = done.chats, messages = done.messages, images = done.images, "deleted account forgotten");
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
                Err(error) => {
                    tracing::warn!(%error, user = %user, "deleted account not forgotten yet; retrying");
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                    let _ = delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                }
            }
        }
    }))
}
