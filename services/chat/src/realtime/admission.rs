//! Admission of socket events: how much work may be in flight, per socket
//! and per pod, before more is refused.
//!
//! Nothing is queued: an event either gets a slot of its socket and a ticket
//! of its class at once, or it is refused, counted in
//! `chat_socket_events_refused_total{event,reason}` and its sender told.
//! Two classes keep relays (typing and receipts of chats the socket already
//! passed a membership check for: no MongoDB) from waiting behind work that
//! reaches MongoDB (sends, first-time checks).

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Histogram};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::AdmissionConfig;
use crate::error::ChatError;

/// The kind of work an event needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Emits only (authorised from the socket's state).
    Relay,
    /// Reaches MongoDB.
    Store,
}

impl Class {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::Store => "store",
        }
    }
}

/// Why an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The socket already has its limit of events in flight.
    Socket,
    /// The pod is at its limit for the event's class.
    Pod,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Pod => "pod",
        }
    }

    /// What the sender is told: rate limited for its own excess, busy for
    /// the pod's.
    pub fn error(self) -> ChatError {
        match self {
            Self::Socket => ChatError::RateLimited {
                message: "too many events in flight on this socket".to_owned(),
                retry_after_secs: 1,
            },
            Self::Pod => ChatError::Busy {
                message: "server busy: event refused, try again shortly",
                retry_after_secs: 1,
            },
        }
    }
}

/// Admission of one pod.
pub struct Admission {
    per_socket: u32,
    relay: Arc<Semaphore>,
    store: Arc<Semaphore>,
}

/// Held while an admitted event's work runs.
pub struct Ticket(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admission {
    /// Admission with these limits.
    pub fn new(config: &AdmissionConfig) -> Self {
        Self {
            per_socket: config.per_socket.max(1),
            relay: Arc::new(Semaphore::new(config.relay.max(1))),
            store: Arc::new(Semaphore::new(config.store.max(1))),
        }
    }

    /// Events one socket may have in flight.
    pub fn per_socket(&self) -> u32 {
        self.per_socket
    }

    /// A ticket of `class`, or `None` when the pod is at its limit.
    pub fn admit(&self, class: Class) -> Option<Ticket> {
        let pool = match class {
            Class::Relay => &self.relay,
            Class::Store => &self.store,
        };
        pool.clone().try_acquire_owned().ok().map(Ticket)
    }
}

const EVENTS: [&str; 6] = [
    "joinChat",
    "leaveChat",
    "typing",
    "stopTyping",
    "sendMessage",
    "messageDelivered",
];

struct Counters {
    events: Vec<Counter>,
    refused: Vec<[Counter; 2]>,
    handled: [Histogram; 2],
}

/// Counter handles, looked up once (after the recorder is installed, which
/// happens before the server accepts a connection).
fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| Counters {
        events: EVENTS
            .iter()
            .map(|e| metrics::counter!("chat_socket_events_total", "event" => *e))
            .collect(),
        refused: EVENTS
            .iter()
            .map(|e| {
                [Refusal::Socket, Refusal::Pod].map(|r| {
                    metrics::counter!("chat_socket_events_refused_total", "event" => *e, "reason" => r.label())
                })
            })
            .collect(),
        handled: [Class::Relay, Class::Store].map(|c| {
            metrics::histogram!("chat_socket_event_seconds", "class" => c.label())
        }),
    })
}

fn index(event: &str) -> Option<usize> {
    EVENTS.iter().position(|e| *e == event)
}

/// Records how long an admitted event took in the service, from its read
/// to its answer (`chat_socket_event_seconds{class}`): the service's own
/// latency, without what a client's queues add before the read.
pub fn record_handled(class: Class, started: std::time::Instant) {
    let i = match class {
        Class::Relay => 0,
        Class::Store => 1,
    };
    counters().handled[i].record(started.elapsed().as_secs_f64());
}

/// Counts a received event.
pub fn count_event(event: &'static str) {
    if let Some(i) = index(event) {
        counters().events[i].increment(1);
    }
}

/// Counts a refused event.
pub fn count_refusal(event: &'static str, refusal: Refusal) {
    if let Some(i) = index(event) {
        let r = match refusal {
            Refusal::Socket => 0,
            Refusal::Pod => 1,
        };
        counters().refused[i][r].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_run_out_and_come_back() {
        let admission = Admission::new(&AdmissionConfig {
            per_socket: 2,
            relay: 2,
            store: 1,
        });
        let a = admission.admit(Class::Relay).expect("first");
        let _b = admission.admit(Class::Relay).expect("second");
        assert!(admission.admit(Class::Relay).is_none(), "third refused");
        // The classes are separate pools.
        let s = admission
            .admit(Class::Store)
            .expect("store has its own pool");
        assert!(admission.admit(Class::Store).is_none());
        drop(a);
        assert!(admission.admit(Class::Relay).is_some(), "freed on drop");
        drop(s);
        assert!(admission.admit(Class::Store).is_some());
        assert_eq!(admission.per_socket(), 2);
    }

    #[test]
    fn refusals_say_who_is_over_the_limit() {
        assert_eq!(Refusal::Socket.error().code(), "rate_limited");
        assert_eq!(Refusal::Pod.error().code(), "busy");
        assert_eq!(Refusal::Pod.error().retry_after_secs(), Some(1));
        assert_eq!(Refusal::Socket.label(), "socket");
    }
}
