//! The operator process itself: shutdown while the API server is
//! unreachable, and leader election under clock skew and hung renewals.
//! Tests that freeze or kill the API server get a control plane of their own.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use parley_testkit::ServiceProcess;
use support::stall::StallingProxy;
use support::{
    ControlPlane, admin, admin_of, all_children, create, namespace, operator, plane, wait_for,
};
use tokio_util::sync::CancellationToken;

/// An operator leading in a fresh namespace of `plane`, with one converged
/// ChatCluster (so its watches and connections are in use).
async fn leading_operator(plane: &ControlPlane) -> anyhow::Result<ServiceProcess> {
    let client = admin_of(plane).await?;
    let ns = namespace(&client).await?;
    let op = operator(&plane.kubeconfig(), &ns, &[("PARLEY_IDENTITY", "op")]).await?;
    create(&client, &ns, "busy", serde_json::json!({})).await?;
    wait_for("every child", Duration::from_secs(20), || {
        all_children(&client, &ns, "busy")
    })
    .await?;
    Ok(op)
}

/// Sends SIGTERM and measures how long the operator takes to exit (at most `limit`).
async fn time_to_exit(op: &mut ServiceProcess, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    op.terminate(limit)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\noutput:\n{}", op.output()))?;
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_api_server_frozen_exits_within_the_grace_period() -> anyhow::Result<()> {
    let plane = ControlPlane::dedicated().await?;
    let mut op = leading_operator(&plane).await?;
    // connections stay open but nothing answers: every call hangs
    plane.freeze_apiserver()?;
    // the chart's terminationGracePeriodSeconds is 30
    let took = time_to_exit(&mut op, Duration::from_secs(30)).await?;
    println!("exited {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}:\n{}",
        op.output()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_api_server_gone_exits_within_the_grace_period() -> anyhow::Result<()> {
    let plane = ControlPlane::dedicated().await?;
    let mut op = leading_operator(&plane).await?;
    // connections are refused from now on
    plane.kill_apiserver()?;
    let took = time_to_exit(&mut op, Duration::from_secs(30)).await?;
    println!("exited {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}:\n{}",
        op.output()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_operator_at_once() -> anyhow::Result<()> {
    let plane = ControlPlane::dedicated().await?;
    let mut op = leading_operator(&plane).await?;
    plane.freeze_apiserver()?;
    let pid = op
        .pid()
        .ok_or_else(|| anyhow::anyhow!("operator has no pid"))?;
    support::signal(pid, "TERM")?;
    // the first SIGTERM has been seen: the operator logs it
    wait_for(
        "the first SIGTERM is logged",
        Duration::from_secs(5),
        || async { op.output().contains("shutdown requested") },
    )
    .await?;
    let took = time_to_exit(&mut op, Duration::from_secs(30)).await?;
    println!("exited {took:?} after the second SIGTERM");
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} after a second SIGTERM:\n{}",
        op.output()
    );
    assert!(op.output().contains("second signal"), "{}", op.output());
    Ok(())
}

/// The holder of the operator's Lease in `ns`.
async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

const LEASE: &str = "parley-operator";

/// A Lease held by `holder` whose `renewTime` is `renew_time`.
fn lease_held_by(holder: &str, renew_time: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(renew_time)),
            renew_time: Some(MicroTime(renew_time)),
            lease_transitions: Some(1),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_whose_clock_runs_an_hour_ahead_loses_the_lease_after_one_duration()
-> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // its last renewal claims a time an hour from now; it never renews again
    let ahead = Timestamp::now() + SignedDuration::from_hours(1);
    leases
        .create(&PostParams::default(), &lease_held_by("ghost", ahead))
        .await?;
    let started = Instant::now();
    let op = operator(&plane()?.kubeconfig(), &ns, &[("PARLEY_IDENTITY", "op")]).await?;
    wait_for(
        "op took the stale lease",
        Duration::from_secs(30),
        || async { holder(&leases).await.as_deref() == Some("op") },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\noutput:\n{}", op.output()))?;
    let took = started.elapsed();
    println!("took the lease {took:?} after start");
    // it waited a whole lease duration of its own clock: the ghost might have been alive
    assert!(
        took >= Duration::from_secs(14),
        "took it after only {took:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_holder_whose_clock_runs_an_hour_behind_keeps_the_lease() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let behind = SignedDuration::from_hours(1);
    leases
        .create(
            &PostParams::default(),
            &lease_held_by("skewed", Timestamp::now() - behind),
        )
        .await?;
    // the test is the live holder: it renews every 2 s, stamping its
    // renewTime from a clock an hour behind, until told to stop
    let renewing = CancellationToken::new();
    let renewer = {
        let (leases, renewing) = (leases.clone(), renewing.clone());
        tokio::spawn(async move {
            let mut conflicts = 0;
            while !renewing.is_cancelled() {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Ok(mut lease) = leases.get(LEASE).await else {
                    continue;
                };
                if let Some(spec) = lease.spec.as_mut() {
                    if spec.holder_identity.as_deref() != Some("skewed") {
                        break;
                    }
                    spec.renew_time = Some(MicroTime(Timestamp::now() - behind));
                }
                if leases
                    .replace(LEASE, &PostParams::default(), &lease)
                    .await
                    .is_err()
                {
                    conflicts += 1;
                }
            }
            conflicts
        })
    };
    let op = operator(&plane()?.kubeconfig(), &ns, &[("PARLEY_IDENTITY", "op")]).await?;
    // well past one lease duration, the live holder still holds it
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(22) {
        let now = holder(&leases).await;
        assert_eq!(
            now.as_deref(),
            Some("skewed"),
            "the operator took a live lease after {:?}:\n{}",
            watched.elapsed(),
            op.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!op.output().contains("became leader"), "{}", op.output());
    // the holder stops renewing: now the lease expires and the operator takes it
    renewing.cancel();
    let conflicts = renewer.await?;
    assert_eq!(conflicts, 0, "the holder's renewals were overwritten");
    wait_for(
        "op took the expired lease",
        Duration::from_secs(30),
        || async { holder(&leases).await.as_deref() == Some("op") },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\noutput:\n{}", op.output()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_hang_stops_before_another_takes_over() -> anyhow::Result<()> {
    let plane = plane()?;
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // op-a reaches the API server through a path that will drop everything
    let backend: std::net::SocketAddr = plane.server()?.trim_start_matches("https://").parse()?;
    let proxy = StallingProxy::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let via = plane.kubeconfig_via(
        &dir.path().join("kubeconfig"),
        &format!("https://127.0.0.1:{}", proxy.port()),
    )?;
    let mut a = operator(&via, &ns, &[("PARLEY_IDENTITY", "op-a")]).await?;
    wait_for("op-a leads", Duration::from_secs(10), || async {
        holder(&leases).await.as_deref() == Some("op-a")
    })
    .await?;
    create(&client, &ns, "cut", serde_json::json!({})).await?;
    wait_for("every child", Duration::from_secs(20), || {
        all_children(&client, &ns, "cut")
    })
    .await?;
    let b = operator(&plane.kubeconfig(), &ns, &[("PARLEY_IDENTITY", "op-b")]).await?;
    proxy.stall();
    let stalled = Instant::now();
    // op-a's renewals now hang; it must stop (exit) before op-b may lead
    let mut a_exited = None;
    let mut b_leads = None;
    while stalled.elapsed() < Duration::from_secs(40) && (a_exited.is_none() || b_leads.is_none()) {
        if a_exited.is_none() && a.wait_exit(Duration::from_millis(100)).await.is_ok() {
            a_exited = Some(stalled.elapsed());
        }
        if b_leads.is_none() && holder(&leases).await.as_deref() == Some("op-b") {
            b_leads = Some(stalled.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("after the stall: op-a exited at {a_exited:?}, op-b led at {b_leads:?}");
    let a_exited = a_exited.ok_or_else(|| {
        anyhow::anyhow!(
            "op-a still runs 40 s after its renewals hung (op-b led at {b_leads:?}):\n{}",
            a.output()
        )
    })?;
    let b_leads =
        b_leads.ok_or_else(|| anyhow::anyhow!("op-b never took over:\n{}", b.output()))?;
    assert!(
        a_exited < b_leads,
        "two leaders: op-b led at {b_leads:?}, op-a exited only at {a_exited:?}"
    );
    assert!(a.output().contains("renew deadline"), "{}", a.output());
    Ok(())
}
