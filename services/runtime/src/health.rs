//! Liveness and readiness.
//!
//! `/healthz` answers while the process runs. `/readyz` asks every dependency
//! the binary needs, concurrently and with a deadline, and answers 503 naming
//! the ones that did not answer, or that the process is draining. Each round
//! also sets the gauge `dependency_up{dependency="…"}` (1 or 0) in `/metrics`.
//!
//! A dependency that only some requests need ([`Readiness::degraded_without`],
//! RabbitMQ for the user and chat services) makes the pod unready only until
//! it first answers. An outage after that leaves the pod ready and lists the
//! dependency under `degraded`: the requests that need it answer 503 on
//! their own, and the others go on. Were it to make every replica unready at
//! once, the Service would drop them all and refuse every connection, a
//! clear 503 and all the requests that did not need it included.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// What a failing check does to readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impact {
    /// The pod cannot serve without it: not ready.
    Unready,
    /// Only some requests need it: listed as degraded, still ready.
    Degraded,
}

/// One named check and what its failure means.
#[derive(Clone)]
struct Check {
    name: &'static str,
    run: CheckFn,
    /// `None` for a required check; for one that only degrades, whether it
    /// has answered since the process started.
    answered_once: Option<Arc<AtomicBool>>,
}

impl Check {
    /// Pure: what a failure of this check means now.
    fn impact(&self) -> Impact {
        match &self.answered_once {
            Some(seen) if seen.load(Ordering::Relaxed) => Impact::Degraded,
            _ => Impact::Unready,
        }
    }
}

/// The named dependency checks of one binary.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<Check>,
    timeout: Duration,
    draining: CancellationToken,
}

/// The outcome of one readiness round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// True when every check that makes the pod unready passed and the
    /// process is not draining.
    pub ready: bool,
    /// Human summary: which dependencies failed.
    pub message: String,
    /// Names of the dependencies that did not answer and make the pod unready.
    pub failing: Vec<&'static str>,
    /// Names of the dependencies that did not answer and that only some
    /// requests need (those answer 503); the pod stays ready.
    pub degraded: Vec<&'static str>,
    /// Per dependency: `ok` or the error.
    pub checks: BTreeMap<&'static str, String>,
}

impl Readiness {
    /// No checks yet; reports not ready once `draining` is cancelled.
    pub fn new(draining: CancellationToken) -> Self {
        Self {
            checks: Vec::new(),
            timeout: Duration::from_secs(2),
            draining,
        }
    }

    /// Sets the per-check deadline (default 2 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a dependency check named `name`: while it fails, the pod is not ready.
    pub fn check<F, Fut>(self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.with_check(name, check, None)
    }

    /// Adds a check of a dependency that only some requests need: it makes
    /// the pod unready until it first answers (a wrong address stops a
    /// rollout), and after that only degraded while it fails.
    pub fn degraded_without<F, Fut>(self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.with_check(name, check, Some(Arc::new(AtomicBool::new(false))))
    }

    fn with_check<F, Fut>(
        mut self,
        name: &'static str,
        check: F,
        answered_once: Option<Arc<AtomicBool>>,
    ) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push(Check {
            name,
            run: Arc::new(move || Box::pin(check())),
            answered_once,
        });
        self
    }

    /// Runs every check concurrently and summarises.
    pub async fn report(&self) -> ReadinessReport {
        let timeout = self.timeout;
        let results = futures::future::join_all(self.checks.iter().map(|check| {
            let fut = (check.run)();
            async move {
                let outcome = match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                };
                if outcome.is_ok()
                    && let Some(seen) = &check.answered_once
                {
                    seen.store(true, Ordering::Relaxed);
                }
                (check.name, check.impact(), outcome)
            }
        }))
        .await;
        // `dependency_up{dependency}`: 1 when the last check answered, else
        // 0, so an outage shows in /metrics as well as in /readyz.
        for (name, _, outcome) in &results {
            metrics::gauge!("dependency_up", "dependency" => *name).set(if outcome.is_ok() {
                1.0
            } else {
                0.0
            });
        }
        summarise(results, self.draining.is_cancelled())
    }
}

/// Pure: turns check outcomes, each with what its failure means, into a report.
pub fn summarise(
    results: Vec<(&'static str, Impact, Result<(), String>)>,
    draining: bool,
) -> ReadinessReport {
    let mut checks = BTreeMap::new();
    let mut failing = Vec::new();
    let mut degraded = Vec::new();
    for (name, impact, outcome) in results {
        match outcome {
            Ok(()) => {
                checks.insert(name, "ok".to_owned());
            }
            Err(e) => {
                match impact {
                    Impact::Unready => failing.push(name),
                    Impact::Degraded => degraded.push(name),
                }
                checks.insert(name, e);
            }
        }
    }
    let ready = failing.is_empty() && !draining;
    let message = if draining {
        "shutting down".to_owned()
    } else if !failing.is_empty() {
        format!("not ready: {} unavailable", failing.join(", "))
    } else if !degraded.is_empty() {
        format!(
            "ready, degraded: {} unavailable (requests that need it answer 503)",
            degraded.join(", ")
        )
    } else {
        "ready".to_owned()
    };
    ReadinessReport {
        ready,
        message,
        failing,
        degraded,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ok_is_ready() {
        let r = summarise(
            vec![
                ("redis", Impact::Unready, Ok(())),
                ("mongodb", Impact::Unready, Ok(())),
            ],
            false,
        );
        assert!(r.ready);
        assert_eq!(r.message, "ready");
        assert!(r.failing.is_empty());
    }

    #[test]
    fn failures_are_named() {
        let r = summarise(
            vec![
                ("redis", Impact::Unready, Err("refused".into())),
                ("mongodb", Impact::Unready, Ok(())),
                ("rabbitmq", Impact::Unready, Err("closed".into())),
            ],
            false,
        );
        assert!(!r.ready);
        assert_eq!(r.failing, vec!["redis", "rabbitmq"]);
        assert_eq!(r.message, "not ready: redis, rabbitmq unavailable");
        assert_eq!(r.checks["redis"], "refused");
    }

    #[test]
    fn draining_is_never_ready() {
        let r = summarise(vec![("redis", Impact::Unready, Ok(()))], true);
        assert!(!r.ready);
        assert_eq!(r.message, "shutting down");
    }

    #[test]
    fn a_degrading_dependency_keeps_the_pod_ready_and_is_named() {
        let r = summarise(
            vec![
                ("mongodb", Impact::Unready, Ok(())),
                ("rabbitmq", Impact::Degraded, Err("closed".into())),
            ],
            false,
        );
        assert!(r.ready);
        assert!(r.failing.is_empty());
        assert_eq!(r.degraded, vec!["rabbitmq"]);
        assert!(r.message.contains("degraded: rabbitmq"), "{}", r.message);
    }

    #[tokio::test]
    async fn a_degrading_dependency_is_required_until_it_first_answers() {
        let up = Arc::new(AtomicBool::new(false));
        let probe = up.clone();
        let readiness =
            Readiness::new(CancellationToken::new()).degraded_without("rabbitmq", move || {
                let up = probe.load(Ordering::Relaxed);
                async move { if up { Ok(()) } else { Err("refused".into()) } }
            });
        let before = readiness.report().await;
        assert!(!before.ready, "never answered: {before:?}");
        assert_eq!(before.failing, vec!["rabbitmq"]);
        up.store(true, Ordering::Relaxed);
        assert!(readiness.report().await.ready);
        up.store(false, Ordering::Relaxed);
        let outage = readiness.report().await;
        assert!(outage.ready, "an outage after the first answer: {outage:?}");
        assert_eq!(outage.degraded, vec!["rabbitmq"]);
    }

    #[tokio::test]
    async fn slow_check_times_out() {
        let readiness = Readiness::new(CancellationToken::new())
            .with_timeout(Duration::from_millis(50))
            .check("slow", || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            });
        let r = readiness.report().await;
        assert_eq!(r.failing, vec!["slow"]);
        assert!(r.checks["slow"].contains("no answer"));
    }
}
