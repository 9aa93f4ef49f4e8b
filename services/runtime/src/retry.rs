//! The one way parley waits between retries of something that should heal
//! by itself (a broker connection, a subscription, index creation):
//! exponential from 100 ms, doubling up to 5 s, each wait with random
//! jitter so that replicas restarted together do not retry in step.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// The shortest wait.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest wait (jitter may add up to as much again).
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// The waits between attempts, without end.
pub fn backoff() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Runs `attempt` until it succeeds (its value) or `shutdown` is
/// cancelled (`None`), waiting [`backoff`] in between and logging each
/// failure with `what`.
pub async fn until_ok<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut waits = backoff();
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => tracing::warn!(%error, failures, "{what}: failed; retrying"),
        }
        failures = failures.saturating_add(1);
        let wait = waits.next().unwrap_or(MAX_DELAY);
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_jitter_and_never_end() {
        let waits: Vec<Duration> = backoff().take(40).collect();
        assert_eq!(waits.len(), 40, "no end");
        assert!(
            waits.iter().all(|w| *w >= MIN_DELAY && *w <= MAX_DELAY * 2),
            "{waits:?}"
        );
        assert!(
            waits[30..].iter().all(|w| *w >= MAX_DELAY),
            "capped: {waits:?}"
        );
        // two replicas starting together do not wait in step
        let other: Vec<Duration> = backoff().take(40).collect();
        assert_ne!(waits, other);
    }

    #[tokio::test]
    async fn until_ok_retries_then_returns_and_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let got = until_ok("test", &shutdown, || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err("not yet") } else { Ok(n) } }
        })
        .await;
        assert_eq!(got, Some(3));
        shutdown.cancel();
        let never: Option<()> =
            until_ok("test", &shutdown, || async { Err::<(), _>("down") }).await;
        assert_eq!(never, None);
    }
}
