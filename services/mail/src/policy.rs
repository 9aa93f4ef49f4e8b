//! What to do with a mail that could not be sent.

use std::time::Duration;

/// How a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again later (4xx, refused, timeout, Redis unreachable).
    Transient,
    /// Will never work (5xx, bad address, unreadable event).
    Permanent,
}

/// The decision after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay, as attempt number `attempt`.
    Retry {
        /// The attempt number of the next try (2, 3, …).
        attempt: u32,
        /// Index of the delay queue to wait in.
        level: usize,
        /// How long.
        delay: Duration,
    },
    /// Give up: move it to the dead-letter queue.
    Park,
}

/// Pure: the next step after failed attempt `attempt` (1-based).
pub fn after_failure(
    failure: Failure,
    attempt: u32,
    max_attempts: u32,
    delays: &[Duration],
) -> Next {
    if failure == Failure::Permanent || attempt >= max_attempts || delays.is_empty() {
        return Next::Park;
    }
    let level = usize::try_from(attempt.saturating_sub(1))
        .unwrap_or(usize::MAX)
        .min(delays.len() - 1);
    Next::Retry {
        attempt: attempt + 1,
        level,
        delay: delays[level],
    }
}

/// Classifies an SMTP transport error.
pub fn classify(error: &lettre::transport::smtp::Error) -> Failure {
    if error.is_permanent() {
        Failure::Permanent
    } else {
        Failure::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn retries_grow_then_park() {
        let delays = [d(10), d(20), d(40)];
        assert_eq!(
            after_failure(Failure::Transient, 1, 5, &delays),
            Next::Retry {
                attempt: 2,
                level: 0,
                delay: d(10)
            }
        );
        assert_eq!(
            after_failure(Failure::Transient, 2, 5, &delays),
            Next::Retry {
                attempt: 3,
                level: 1,
                delay: d(20)
            }
        );
        assert_eq!(
            after_failure(Failure::Transient, 4, 5, &delays),
            Next::Retry {
                attempt: 5,
                level: 2,
                delay: d(40)
            }
        );
        assert_eq!(after_failure(Failure::Transient, 5, 5, &delays), Next::Park);
        assert_eq!(after_failure(Failure::Permanent, 1, 5, &delays), Next::Park);
        assert_eq!(after_failure(Failure::Transient, 1, 5, &[]), Next::Park);
    }
}
