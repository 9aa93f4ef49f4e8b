//! Delivered receipts: one background writer marks the messages of every
//! receipt that queued while its previous round ran, in two MongoDB round
//! trips per round whatever the number of receipts (one query for the
//! candidates, one update), and tells each receipt which of its messages it
//! actually marked. Only those are acknowledged and broadcast: ids of other
//! chats, of the recipient's own messages, of messages already delivered or
//! of no message at all are dropped, so a client cannot make the server
//! announce receipts for messages it never got.
//!
//! The queue is bounded: when it is full the receipt is refused (`busy`, counted
//! in `chat_receipts_refused_total`) and the client may send it again.

use std::collections::HashSet;

use mongodb::bson::oid::ObjectId;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::ChatError;
use crate::store::{Candidate, Store};

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

/// Pure: which ids each receipt of a round marks, given the messages not
/// yet delivered among them. A message counts for a receipt when it is in
/// the receipt's chat and was sent by someone else; each message counts
/// once, for the first receipt that names it.
pub fn assign(batch: &[Receipt], undelivered: &[Candidate]) -> Vec<Vec<ObjectId>> {
    let by_id: std::collections::HashMap<ObjectId, &Candidate> =
        undelivered.iter().map(|c| (c.id, c)).collect();
    let mut claimed: HashSet<ObjectId> = HashSet::new();
    batch
        .iter()
        .map(|r| {
            r.ids
                .iter()
                .filter(|id| {
                    by_id
                        .get(id)
                        .is_some_and(|c| c.chat == r.chat && c.sender != r.recipient)
                })
                .filter(|id| claimed.insert(**id))
                .copied()
                .collect()
        })
        .collect()
}

/// What a queued receipt is answered with: the ids it marked.
pub type Marked = Result<Vec<ObjectId>, ChatError>;

struct Job {
    receipt: Receipt,
    reply: oneshot::Sender<Marked>,
}

/// The queue of receipt writes; cheap to clone.
#[derive(Clone)]
pub struct Receipts {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Receipts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipts").finish_non_exhaustive()
    }
}

impl Receipts {
    /// Starts the writer; it drains the queue and stops after `shutdown`.
    pub fn start(store: Store, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(store, rx, shutdown));
        (Self { tx }, writer)
    }

    /// Queues a receipt and waits for its round: the ids it marked.
    /// [`ChatError::Busy`] when the queue is full, the store's error when
    /// the write failed.
    pub async fn mark(&self, receipt: Receipt) -> Marked {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(Job { receipt, reply }).map_err(|_| {
            metrics::counter!("chat_receipts_refused_total").increment(1);
            ChatError::Busy {
                message: "server busy: receipt refused, try again shortly",
                retry_after_secs: 1,
            }
        })?;
        answer
            .await
            .map_err(|_| ChatError::unavailable("mongodb", "receipt writer stopped"))?
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<Job>, shutdown: CancellationToken) {
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
        let (receipts, replies): (Vec<Receipt>, Vec<oneshot::Sender<Marked>>) =
            batch.into_iter().map(|j| (j.receipt, j.reply)).unzip();
        match round(&store, &receipts).await {
            Ok(marked) => {
                for (reply, ids) in replies.into_iter().zip(marked) {
                    let _ = reply.send(Ok(ids));
                }
            }
            Err(error) => {
                metrics::counter!("chat_receipts_failed_total").increment(1);
                tracing::warn!(%error, "deliveredAt not stored");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// One round: the candidates of every receipt in one query, then one update.
async fn round(store: &Store, receipts: &[Receipt]) -> Result<Vec<Vec<ObjectId>>, ChatError> {
    let mut all: Vec<ObjectId> = receipts
        .iter()
        .flat_map(|r| r.ids.iter().copied())
        .collect();
    all.sort();
    all.dedup();
    let undelivered = store.undelivered(&all).await?;
    let marked = assign(receipts, &undelivered);
    let ids: Vec<ObjectId> = marked.iter().flatten().copied().collect();
    store.set_delivered(&ids).await?;
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_undelivered_messages_of_others_in_the_chat_are_marked_once() {
        let (c1, c2) = (ObjectId::new(), ObjectId::new());
        let (me, you) = (ObjectId::new(), ObjectId::new());
        let (theirs, mine, elsewhere, gone, twice) = (
            ObjectId::new(),
            ObjectId::new(),
            ObjectId::new(),
            ObjectId::new(),
            ObjectId::new(),
        );
        let undelivered = [
            Candidate {
                id: theirs,
                chat: c1,
                sender: you,
            },
            Candidate {
                id: mine,
                chat: c1,
                sender: me,
            },
            Candidate {
                id: elsewhere,
                chat: c2,
                sender: you,
            },
            Candidate {
                id: twice,
                chat: c1,
                sender: you,
            },
        ];
        let batch = [
            Receipt {
                chat: c1,
                recipient: me,
                ids: vec![theirs, mine, elsewhere, gone, twice],
            },
            Receipt {
                chat: c1,
                recipient: me,
                ids: vec![twice],
            },
            Receipt {
                chat: c2,
                recipient: me,
                ids: vec![elsewhere],
            },
        ];
        assert_eq!(
            assign(&batch, &undelivered),
            vec![vec![theirs, twice], vec![], vec![elsewhere]]
        );
        assert!(assign(&[], &undelivered).is_empty());
    }
}
