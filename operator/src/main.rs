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
//! - `PARLEY_SHUTDOWN_GRACE_SECS` (default 20): the process ends within this after SIGTERM
//! - `PARLEY_ALLOWED_IMAGE_REGISTRIES`: registries a ChatCluster's images must come from (default: any)
//! - `KUBECONFIG` or the in-cluster service account: the API server
//!
//! Shutdown (SIGTERM) is bounded whatever the API server does: in-flight
//! reconciles get half the grace period, releasing the Lease a few seconds,
//! and a watchdog ends the process when the grace period is over. A second
//! SIGTERM ends it at once.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parley_operator::client::Clients;
use parley_operator::leader::Elector;
use parley_operator::reconcile::{self, Context};
use parley_operator::settings::Settings;
use parley_runtime::health::Readiness;
use tokio_util::sync::CancellationToken;

/// Longest wait for releasing the Lease on shutdown; it expires by itself otherwise.
const RELEASE_WITHIN: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> ExitCode {
    parley_runtime::entry::main("parley-operator", Settings::from_env, run).await
}

async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    parley_operator::install_crypto();
    parley_operator::shutdown::enforce(shutdown.clone(), settings.shutdown_grace);
    let config = kube::Config::infer()
        .await
        .context("reading the Kubernetes API configuration (KUBECONFIG or in-cluster)")?;
    let clients = Clients::new(config).context("building the Kubernetes client")?;
    let client = clients.requests.clone();

    let app =
        parley_runtime::server::with_ops(axum::Router::new(), Readiness::new(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    let server = tokio::spawn(parley_runtime::server::serve(
        listener,
        app,
        shutdown.clone(),
        Duration::from_secs(5),
    ));

    let lost = CancellationToken::new();
    // renewals go on while reconciles drain; stopped only after the drain
    let stop_renewing = CancellationToken::new();
    let mut renewer = None;
    if settings.leader_election {
        tracing::info!(identity = %settings.lease.identity, lease = %settings.lease.name, "waiting for leadership");
        let mut elector = Elector::new(client.clone(), settings.lease.clone());
        let Some(renewed) = elector.acquire(&shutdown).await else {
            let _ = tokio::time::timeout(settings.shutdown_grace / 2, server).await;
            return Ok(());
        };
        metrics::gauge!("parley_operator_leader").set(1.0);
        renewer = Some(tokio::spawn(elector.keep(
            renewed,
            stop_renewing.clone(),
            lost.clone(),
        )));
    }
    let stop = CancellationToken::new();
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
    let ctx = Arc::new(
        Context::new(client.clone(), settings.resync, &settings.lease.identity)
            .with_watch_client(clients.watches.clone())
            .with_allowed_registries(settings.allowed_registries.clone()),
    );
    tracing::info!(namespace = ?settings.namespace, "controller starting");
    let drain = settings.shutdown_grace / 2;
    let controller = reconcile::run(ctx, settings.namespace, stop.clone());
    tokio::pin!(controller);
    tokio::select! {
        () = &mut controller => {}
        // another process may lead soon: abandon in-flight work at once
        () = lost.cancelled() => {}
        () = async { stop.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "in-flight reconciles did not finish in time; abandoned");
        }
    }
    stop_renewing.cancel();
    let elector = match renewer {
        // keep() stops at once when told to, even mid-request
        Some(renewer) => renewer.await.ok(),
        None => None,
    };
    if lost.is_cancelled() {
        anyhow::bail!("leadership lost; exiting so a fresh process can campaign again");
    }
    if let Some(elector) = elector
        && let Err(e) = elector.release(RELEASE_WITHIN).await
    {
        tracing::warn!(error = %e, "could not release the lease; it expires by itself");
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}
