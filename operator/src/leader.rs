//! Leader election on a `coordination.k8s.io/v1` Lease: of several operator
//! processes only the holder of an unexpired lease reconciles.
//!
//! Two rules keep two leaders from ever acting at once, whatever the clocks
//! of their nodes say:
//! - **Expiry by local observation.** A candidate never compares the
//!   holder's `renewTime` with its own clock. It notes, on its own monotonic
//!   clock, when it last saw the Lease change (resourceVersion, holder or
//!   renewTime) and takes it only once it has stayed unchanged for a whole
//!   `leaseDurationSeconds`, as client-go's leader election does.
//! - **Renew deadline.** The holder stops acting once it has not renewed
//!   successfully for `renew_deadline`, which is shorter than the lease's
//!   duration. A renewal that hangs counts as failed when the deadline
//!   passes, so a holder cut off from the API server gives up before anyone
//!   else may take over.
//!
//! kube-lease-manager (0.13, which supports kube 5) was evaluated: it computes
//! expiry as the holder's `renewTime` plus the duration on the local clock,
//! so a skewed holder clock still lets two leaders act; hence this module.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process's identity.
    pub identity: String,
    /// How long a lease stays valid without renewal (`leaseDurationSeconds`).
    pub duration: Duration,
    /// The holder gives up leadership when it has not renewed for this long;
    /// shorter than `duration`.
    pub renew_deadline: Duration,
    /// How often the holder renews, and a candidate retries.
    pub renew_every: Duration,
}

/// A failed attempt to read or write the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API server refused or could not be reached.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// The attempt did not finish in time (the API server hangs).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What to do with a Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free, or unchanged for a whole lease duration: take it.
    Take,
    /// Someone else holds it.
    Wait,
}

/// Decides from the Lease's spec, our identity and how long the Lease has
/// stayed unchanged as measured on our own clock (see [`Observer`]). The
/// holder's `renewTime` is deliberately not read: its clock may be skewed.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> Decision {
    let Some(spec) = spec else {
        return Decision::Take;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => return Decision::Renew,
        None | Some("") => return Decision::Take,
        Some(_) => {}
    }
    let secs = spec.lease_duration_seconds.unwrap_or(15).max(1);
    let duration = Duration::from_secs(u64::try_from(secs).unwrap_or(15));
    if unchanged_for >= duration {
        Decision::Take
    } else {
        Decision::Wait
    }
}

/// What identifies one renewal of a Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    resource_version: Option<String>,
    holder: Option<String>,
    renew_time: Option<Timestamp>,
}

impl Record {
    fn of(lease: Option<&Lease>) -> Option<Self> {
        let lease = lease?;
        let spec = lease.spec.as_ref();
        Some(Self {
            resource_version: lease.metadata.resource_version.clone(),
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
        })
    }
}

/// Our own view of the Lease: what it last said, and when (on our monotonic
/// clock) that changed.
#[derive(Debug, Default)]
pub struct Observer {
    last: Option<(Option<Record>, Instant)>,
}

impl Observer {
    /// Notes `lease` as read at `now`; returns how long it has stayed
    /// unchanged since we first saw it like this (zero when it just changed
    /// or is seen for the first time).
    pub fn observe(&mut self, lease: Option<&Lease>, now: Instant) -> Duration {
        let record = Record::of(lease);
        match &self.last {
            Some((seen, at)) if *seen == record => now.saturating_duration_since(*at),
            _ => {
                self.last = Some((record, now));
                Duration::ZERO
            }
        }
    }
}

fn spec_for(cfg: &LeaseConfig, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(&cfg.identity);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs().try_into().unwrap_or(15)),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            previous.and_then(|p| p.lease_transitions).unwrap_or(0) + i32::from(!ours),
        ),
        ..Default::default()
    }
}

/// One process's side of the election.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    observer: Observer,
}

impl Elector {
    /// An elector for the Lease `cfg` names.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observer: Observer::default(),
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// One attempt to take or renew the lease, abandoned after `within`;
    /// true when we hold it afterwards.
    pub async fn try_hold(&mut self, within: Duration) -> Result<bool, LeaderError> {
        match tokio::time::timeout(within, self.attempt()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(LeaderError::Timeout(within)),
        }
    }

    async fn attempt(&mut self) -> Result<bool, kube::Error> {
        let cfg = &self.cfg;
        let existing = self.api.get_opt(&cfg.name).await?;
        let unchanged_for = self.observer.observe(existing.as_ref(), Instant::now());
        let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide(spec, &cfg.identity, unchanged_for);
        if decision == Decision::Wait {
            return Ok(false);
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                resource_version: existing
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..Default::default()
            },
            // renewTime is for people reading the Lease; no one decides by it
            spec: Some(spec_for(cfg, spec, Timestamp::now())),
        };
        let result = match existing {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => {
                self.api
                    .replace(&cfg.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                if decision == Decision::Take {
                    tracing::info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
                }
                Ok(true)
            }
            // Someone else wrote first (optimistic concurrency): not ours.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the lease; returns when the winning
    /// attempt started (the start of its renew deadline), or `None` on
    /// `shutdown`.
    pub async fn acquire(&mut self, shutdown: &CancellationToken) -> Option<Instant> {
        loop {
            let started = Instant::now();
            let within = self.cfg.renew_deadline;
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return None,
                outcome = self.try_hold(within) => outcome,
            };
            match outcome {
                Ok(true) => return Some(started),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: lease not readable"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.cfg.renew_every) => {}
            }
        }
    }

    /// Renews the lease until `stop`; cancels `lost` when another process
    /// took it, or when no renewal succeeded within the renew deadline
    /// counted from `renewed` (the start of the last successful attempt).
    /// Returns the elector for [`Elector::release`].
    pub async fn keep(
        mut self,
        mut renewed: Instant,
        stop: CancellationToken,
        lost: CancellationToken,
    ) -> Self {
        loop {
            let deadline = renewed + self.cfg.renew_deadline;
            tokio::select! {
                () = stop.cancelled() => return self,
                () = tokio::time::sleep_until(deadline.into()) => {
                    tracing::error!(deadline = ?self.cfg.renew_deadline, "no lease renewal within the renew deadline; giving up leadership");
                    lost.cancel();
                    return self;
                }
                () = tokio::time::sleep(self.cfg.renew_every) => {}
            }
            let started = Instant::now();
            let left = deadline.saturating_duration_since(started);
            let outcome = tokio::select! {
                () = stop.cancelled() => return self,
                outcome = self.try_hold(left) => outcome,
            };
            match outcome {
                Ok(true) => renewed = started,
                Ok(false) => {
                    tracing::error!("leadership lost to another process");
                    lost.cancel();
                    return self;
                }
                Err(e) if renewed.elapsed() >= self.cfg.renew_deadline => {
                    tracing::error!(error = %e, deadline = ?self.cfg.renew_deadline, "no lease renewal within the renew deadline; giving up leadership");
                    lost.cancel();
                    return self;
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
            }
        }
    }

    /// Gives the lease up so another process takes over at once; abandoned
    /// after `within` (the lease then simply expires).
    pub async fn release(&self, within: Duration) -> Result<(), LeaderError> {
        match tokio::time::timeout(within, self.release_now()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(LeaderError::Timeout(within)),
        }
    }

    async fn release_now(&self) -> Result<(), kube::Error> {
        let cfg = &self.cfg;
        let Some(mut lease) = self.api.get_opt(&cfg.name).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(&cfg.identity);
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.acquire_time = None;
        }
        match self
            .api
            .replace(&cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(identity = %cfg.identity, "lease released");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn lease(by: &str, renewed: Timestamp, version: u32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(version.to_string()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(by.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn decisions() {
        let now = Timestamp::now();
        let held = |by| lease(by, now, 1).spec;
        assert_eq!(decide(None, "a", secs(0)), Decision::Take);
        assert_eq!(decide(held("a").as_ref(), "a", secs(0)), Decision::Renew);
        assert_eq!(decide(held("b").as_ref(), "a", secs(14)), Decision::Wait);
        assert_eq!(decide(held("b").as_ref(), "a", secs(15)), Decision::Take);
        let released = LeaseSpec::default();
        assert_eq!(decide(Some(&released), "a", secs(0)), Decision::Take);
    }

    /// Plays a candidate reading the Lease every 2 s (on its own clock
    /// `t0 + n·2 s`) while `holder_writes(n)` says what the Lease holds.
    fn first_take(holder_writes: impl Fn(u64) -> Lease, reads: u64) -> Option<u64> {
        let t0 = Instant::now();
        let mut observer = Observer::default();
        (0..reads).find_map(|n| {
            let lease = holder_writes(n);
            let unchanged = observer.observe(Some(&lease), t0 + secs(2 * n));
            (decide(lease.spec.as_ref(), "me", unchanged) == Decision::Take).then_some(2 * n)
        })
    }

    #[test]
    fn a_live_holder_whose_clock_is_an_hour_behind_keeps_its_lease() {
        // it renews every 2 s, but its renewTime reads an hour ago
        let behind = Timestamp::now() - SignedDuration::from_hours(1);
        let renewing = |n: u64| {
            let version = u32::try_from(n).unwrap_or(u32::MAX);
            lease(
                "skewed",
                behind + SignedDuration::from_secs(2 * n as i64),
                version,
            )
        };
        assert_eq!(first_take(renewing, 60), None, "took a live lease");
    }

    #[test]
    fn a_dead_holder_whose_clock_is_an_hour_ahead_loses_its_lease_after_one_duration() {
        // it stopped renewing; its last renewTime reads an hour from now
        let ahead = Timestamp::now() + SignedDuration::from_hours(1);
        let stopped = |_| lease("ghost", ahead, 7);
        assert_eq!(first_take(stopped, 60), Some(16));
    }

    #[test]
    fn a_changed_lease_restarts_the_count() {
        let t0 = Instant::now();
        let now = Timestamp::now();
        let mut observer = Observer::default();
        assert_eq!(observer.observe(Some(&lease("b", now, 1)), t0), secs(0));
        assert_eq!(
            observer.observe(Some(&lease("b", now, 1)), t0 + secs(10)),
            secs(10)
        );
        // a renewal (new resourceVersion) seen at t0 + 12 s
        assert_eq!(
            observer.observe(Some(&lease("b", now, 2)), t0 + secs(12)),
            secs(0)
        );
        assert_eq!(
            observer.observe(Some(&lease("b", now, 2)), t0 + secs(20)),
            secs(8)
        );
    }
}
