//! Leader election on a `coordination.k8s.io/v1` Lease: of several operator
//! processes only the holder of an unexpired lease reconciles.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
}

/// What to do with a Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Take,
    /// Someone else holds it.
    Wait,
}

/// Decides from the Lease's spec, our identity and the time now.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Take;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => return Decision::Renew,
        None | Some("") => return Decision::Take,
        Some(_) => {}
    }
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(MicroTime(t)) if *t + SignedDuration::from_secs(secs) > now => Decision::Wait,
        _ => Decision::Take,
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

/// One attempt to take or renew the lease; true when we hold it afterwards.
pub async fn try_hold(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let existing = api.get_opt(&cfg.name).await?;
    let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
    match decide(spec, &cfg.identity, now) {
        Decision::Wait => Ok(false),
        decision => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    resource_version: existing
                        .as_ref()
                        .and_then(|l| l.metadata.resource_version.clone()),
                    ..Default::default()
                },
                spec: Some(spec_for(cfg, spec, now)),
            };
            let result = match existing {
                None => api.create(&PostParams::default(), &lease).await,
                Some(_) => api.replace(&cfg.name, &PostParams::default(), &lease).await,
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
    }
}

/// Waits until this process holds the lease (or `shutdown`); returns whether it does.
pub async fn acquire(client: &Client, cfg: &LeaseConfig, shutdown: &CancellationToken) -> bool {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    loop {
        match try_hold(&api, cfg).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: lease not readable"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(cfg.renew_every) => {}
        }
    }
}

/// Renews the lease until `shutdown`; cancels `lost` when renewal fails for
/// longer than the lease lasts (another process may then take over).
pub async fn keep(
    client: Client,
    cfg: LeaseConfig,
    shutdown: CancellationToken,
    lost: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(cfg.renew_every) => {}
        }
        match try_hold(&api, &cfg).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!("leadership lost to another process");
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                if last_ok.elapsed() >= cfg.duration {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

/// Gives the lease up on a clean shutdown so another process takes over at once.
pub async fn release(client: &Client, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
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
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => {
            tracing::info!(identity = %cfg.identity, "lease released");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Take);
        assert_eq!(decide(Some(&held("a", now)), "a", now), Decision::Renew);
        assert_eq!(decide(Some(&held("b", now)), "a", now), Decision::Wait);
        let old = now - SignedDuration::from_secs(20);
        assert_eq!(decide(Some(&held("b", old)), "a", now), Decision::Take);
    }
}
