//! Liveness and readiness.
//!
//! `/healthz` answers while the process runs. `/readyz` asks every dependency
//! the binary needs, concurrently and with a deadline, and answers 503 naming
//! the ones that did not answer, or that the process is draining. Each round
//! also sets the gauge `dependency_up{dependency="…"}` (1 or 0) in `/metrics`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The named dependency checks of one binary.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<(&'static str, CheckFn)>,
    timeout: Duration,
    draining: CancellationToken,
}

/// The outcome of one readiness round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// True when every check passed and the process is not draining.
    pub ready: bool,
    /// Human summary: which dependencies failed.
    pub message: String,
    /// Names of the dependencies that did not answer.
    pub failing: Vec<&'static str>,
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

    /// Adds a dependency check named `name`.
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Runs every check concurrently and summarises.
    pub async fn report(&self) -> ReadinessReport {
        let timeout = self.timeout;
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let fut = check();
            async move {
                let outcome = match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                };
                (*name, outcome)
            }
        }))
        .await;
        // `dependency_up{dependency}`: 1 when the last check answered, else
        // 0, so an outage shows in /metrics as well as in /readyz.
        for (name, outcome) in &results {
            metrics::gauge!("dependency_up", "dependency" => *name).set(if outcome.is_ok() {
                1.0
            } else {
                0.0
            });
        }
        summarise(results, self.draining.is_cancelled())
    }
}

/// Pure: turns check outcomes into a report.
pub fn summarise(
    results: Vec<(&'static str, Result<(), String>)>,
    draining: bool,
) -> ReadinessReport {
    let mut checks = BTreeMap::new();
    let mut failing = Vec::new();
    for (name, outcome) in results {
        match outcome {
            Ok(()) => {
                checks.insert(name, "ok".to_owned());
            }
            Err(e) => {
                failing.push(name);
                checks.insert(name, e);
            }
        }
    }
    let ready = failing.is_empty() && !draining;
    let message = if draining {
        "shutting down".to_owned()
    } else if failing.is_empty() {
        "ready".to_owned()
    } else {
        format!("not ready: {} unavailable", failing.join(", "))
    };
    ReadinessReport {
        ready,
        message,
        failing,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ok_is_ready() {
        let r = summarise(vec![("redis", Ok(())), ("mongodb", Ok(()))], false);
        assert!(r.ready);
        assert_eq!(r.message, "ready");
        assert!(r.failing.is_empty());
    }

    #[test]
    fn failures_are_named() {
        let r = summarise(
            vec![
                ("redis", Err("refused".into())),
                ("mongodb", Ok(())),
                ("rabbitmq", Err("closed".into())),
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
        let r = summarise(vec![("redis", Ok(()))], true);
        assert!(!r.ready);
        assert_eq!(r.message, "shutting down");
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
