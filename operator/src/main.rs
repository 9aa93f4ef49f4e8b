//! parley-operator: reconciles ChatClusters into running parley stacks.
//!
//! Environment (all optional):
//! - `PARLEY_HTTP_ADDR` (default `0.0.0.0:8080`): `/healthz`, `/readyz`, `/metrics`
//! - `PARLEY_LOG` (default `info`)
//! - `PARLEY_WATCH_NAMESPACE`: only this namespace (default: all)
//! - `PARLEY_LEADER_ELECTION` (default `true`)
//! - `PARLEY_LEASE_NAMESPACE` (default: `POD_NAMESPACE`, else the watch namespace, else `default`)
//! - `PARLEY_LEASE_NAME` (default `parley-operator`)
//! - `PARLEY_IDENTITY` (default: `HOSTNAME`-pid)
//! - `PARLEY_RESYNC_SECS` (default 300): re-check of converged clusters
//! - `KUBECONFIG` or the in-cluster service account: the API server

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parley_common::health::Readiness;
use parley_operator::leader;
use parley_operator::reconcile::{self, Context};
use parley_operator::settings::Settings;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    parley_common::entry::main("parley-operator", Settings::from_env, run).await
}

async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    parley_operator::install_crypto();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster)")?;

    let app =
        parley_common::server::with_ops(axum::Router::new(), Readiness::new(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    let server = tokio::spawn(parley_common::server::serve(
        listener,
        app,
        shutdown.clone(),
        Duration::from_secs(5),
    ));

    let lost = tokio_util::sync::CancellationToken::new();
    if settings.leader_election {
        tracing::info!(identity = %settings.lease.identity, lease = %settings.lease.name, "waiting for leadership");
        if !leader::acquire(&client, &settings.lease, &shutdown).await {
            return Ok(());
        }
        metrics::gauge!("parley_operator_leader").set(1.0);
        tokio::spawn(leader::keep(
            client.clone(),
            settings.lease.clone(),
            shutdown.clone(),
            lost.clone(),
        ));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let (stop, shutdown, lost) = (stop.clone(), shutdown.clone(), lost.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = lost.cancelled() => {}
            }
            stop.cancel();
        });
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.resync,
        &settings.lease.identity,
    ));
    tracing::info!(namespace = ?settings.namespace, "controller starting");
    reconcile::run(ctx, settings.namespace, stop).await;
    if lost.is_cancelled() {
        anyhow::bail!("leadership lost; exiting so a fresh process can campaign again");
    }
    if settings.leader_election
        && let Err(e) = leader::release(&client, &settings.lease).await
    {
        tracing::warn!(error = %e, "could not release the lease");
    }
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}
