//! The deployment's message retention: messages older than
//! `PARLEY_MESSAGE_RETENTION_DAYS` are deleted in the background, in
//! batches, by one replica at a time (a Redis lease), with their images.

use std::time::Duration;

use mongodb::bson::DateTime;
use tokio_util::sync::CancellationToken;

use crate::error::ChatError;
use crate::state::AppState;

/// Messages deleted per round trip.
pub const BATCH: i64 = 500;

/// How long one replica holds the sweep (renewed by finishing it sooner).
const LEASE: Duration = Duration::from_secs(600);

/// Pure: the oldest send time kept at `now` when messages are kept `keep`.
pub fn cutoff(now: DateTime, keep: Duration) -> DateTime {
    let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    DateTime::from_millis(now.timestamp_millis().saturating_sub(keep))
}

/// Sweeps every `every` while `keep` is set, until `shutdown`.
pub fn start(
    state: &AppState,
    keep: Option<Duration>,
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let Some(keep) = keep else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match sweep_once(&state, keep, &shutdown).await {
                Ok(Some(deleted)) if deleted > 0 => {
                    tracing::info!(deleted, "messages past the retention period deleted");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "retention sweep failed; next round retries"),
            }
        }
    })
}

/// One sweep, if this replica wins the lease: `None` when another holds it.
async fn sweep_once(
    state: &AppState,
    keep: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<u64>, ChatError> {
    let lease = state.redis.key("chat:retention-lease");
    let token = uuid::Uuid::new_v4().to_string();
    let mut conn = state.redis.conn();
    let won: Option<String> = redis::cmd("SET")
        .arg(&lease)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX))
        .query_async(&mut conn)
        .await
        .map_err(|e| ChatError::unavailable("redis", e))?;
    if won.is_none() {
        return Ok(None);
    }
    let result = sweep(state, cutoff(DateTime::now(), keep), shutdown).await;
    // Given back only if still ours (a sweep that outlived the lease lost it).
    let _: Result<i64, _> = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
    .key(&lease)
    .arg(&token)
    .invoke_async(&mut conn)
    .await;
    result.map(Some)
}

/// Deletes every message sent before `cutoff`, [`BATCH`] at a time, then
/// clears chat previews that point at deleted messages.
async fn sweep(
    state: &AppState,
    cutoff: DateTime,
    shutdown: &CancellationToken,
) -> Result<u64, ChatError> {
    let mut deleted = 0;
    while !shutdown.is_cancelled() {
        let batch = state.store.sent_before(cutoff, BATCH).await?;
        if batch.is_empty() {
            break;
        }
        // Images first: a message is only deleted once its image is.
        let mut done = Vec::with_capacity(batch.len());
        for message in &batch {
            if let Some(image) = &message.image
                && let Err(error) = crate::media::remove(state, &message.sender, image).await
            {
                tracing::warn!(%error, message_id = %message.id, "expired image not removed; the next sweep retries");
                continue;
            }
            done.push(message.id);
        }
        let removed = state.store.delete_messages(&done).await?;
        deleted += removed;
        state.store.empty_quotes_of(&done).await?;
        metrics::counter!("chat_messages_expired_total").increment(removed);
        // A short batch was the last; one with images left behind waits
        // for the next sweep rather than spin on them.
        if (batch.len() as i64) < BATCH || done.len() < batch.len() {
            break;
        }
    }
    state.store.clear_previews_before(cutoff).await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_now_minus_the_period() {
        let now = DateTime::from_millis(10 * 86_400_000);
        assert_eq!(
            cutoff(now, Duration::from_secs(86_400)),
            DateTime::from_millis(9 * 86_400_000)
        );
        assert_eq!(
            cutoff(now, Duration::MAX),
            DateTime::from_millis(10 * 86_400_000 - i64::MAX),
            "a period longer than time itself keeps everything"
        );
    }
}
