//! Delivered receipts: the senders are told at once; the `deliveredAt`
//! writes are coalesced in the background, one update per chat and
//! recipient for whatever queued while the previous write ran.
//!
//! The queue is bounded: when it is full the receipt is refused (503, counted
//! in `chat_receipts_refused_total`) and the client may send it again.

use std::collections::HashMap;

use mongodb::bson::oid::ObjectId;
use parley_common::api_error::ApiError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Receipts waiting for their write, at most.
pub const QUEUE: usize = 8192;
/// Receipts taken into one round of writes, at most.
pub const BATCH: usize = 512;

/// Messages of `chat` delivered to `recipient`'s device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The chat (the ids must belong to it to be marked).
    pub chat: ObjectId,
    /// Who received them.
    pub recipient: ObjectId,
    /// The messages.
    pub ids: Vec<ObjectId>,
}

/// Pure: one receipt per (chat, recipient), ids merged without repeats,
/// in first-seen order.
pub fn coalesce(batch: Vec<Receipt>) -> Vec<Receipt> {
    let mut order: Vec<(ObjectId, ObjectId)> = Vec::new();
    let mut merged: HashMap<(ObjectId, ObjectId), Vec<ObjectId>> = HashMap::new();
    for r in batch {
        let key = (r.chat, r.recipient);
        let ids = merged.entry(key).or_insert_with(|| {
            order.push(key);
            Vec::new()
        });
        for id in r.ids {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|key| {
            merged.remove(&key).map(|ids| Receipt {
                chat: key.0,
                recipient: key.1,
                ids,
            })
        })
        .collect()
}

/// The queue of receipt writes; cheap to clone.
#[derive(Clone, Debug)]
pub struct Receipts {
    tx: mpsc::Sender<Receipt>,
}

impl Receipts {
    /// Starts the writer; it drains the queue and stops after `shutdown`.
    pub fn start(store: Store, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(store, rx, shutdown));
        (Self { tx }, writer)
    }

    /// Queues a receipt; 503 when the queue is full.
    pub fn submit(&self, receipt: Receipt) -> Result<(), ApiError> {
        self.tx.try_send(receipt).map_err(|_| {
            metrics::counter!("chat_receipts_refused_total").increment(1);
            ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "server busy: receipt refused, try again shortly",
                )
            }
        })
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<Receipt>, shutdown: CancellationToken) {
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            () = shutdown.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        for r in coalesce(batch) {
            if let Err(error) = store.mark_delivered(&r.chat, &r.recipient, &r.ids).await {
                metrics::counter!("chat_receipts_failed_total").increment(1);
                tracing::warn!(error = %error.message, "deliveredAt not stored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_of_one_chat_and_recipient_become_one_write() {
        let (c1, c2, r1, r2) = (
            ObjectId::new(),
            ObjectId::new(),
            ObjectId::new(),
            ObjectId::new(),
        );
        let (m1, m2, m3) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        let out = coalesce(vec![
            Receipt {
                chat: c1,
                recipient: r1,
                ids: vec![m1],
            },
            Receipt {
                chat: c2,
                recipient: r1,
                ids: vec![m3],
            },
            Receipt {
                chat: c1,
                recipient: r1,
                ids: vec![m2, m1],
            },
            Receipt {
                chat: c1,
                recipient: r2,
                ids: vec![m1],
            },
        ]);
        assert_eq!(
            out,
            vec![
                Receipt {
                    chat: c1,
                    recipient: r1,
                    ids: vec![m1, m2]
                },
                Receipt {
                    chat: c2,
                    recipient: r1,
                    ids: vec![m3]
                },
                Receipt {
                    chat: c1,
                    recipient: r2,
                    ids: vec![m1]
                },
            ]
        );
        assert!(coalesce(Vec::new()).is_empty());
    }
}
