//! How long 50 ChatClusters take to get all their children, against the real
//! control plane of the integration tests (one operator, one namespace).
//!
//! `cargo bench -p parley-operator --bench fifty_clusters` (add `--profile dev`
//! to reuse the test build). Prints the figure; asserts nothing about time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ListParams;
use kube::{Api, Client};
use parley_operator::reconcile::CHILD_SELECTOR;

const CLUSTERS: usize = 50;

async fn count<K>(client: &Client, ns: &str) -> usize
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(CHILD_SELECTOR))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

async fn complete(client: &Client, ns: &str) -> bool {
    count::<Deployment>(client, ns).await == 3 * CLUSTERS
        && count::<StatefulSet>(client, ns).await == 3 * CLUSTERS
        && count::<Service>(client, ns).await == 6 * CLUSTERS
        && count::<NetworkPolicy>(client, ns).await == 3 * CLUSTERS
        && count::<ConfigMap>(client, ns).await == CLUSTERS
        && count::<Secret>(client, ns).await == 2 * CLUSTERS
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = support::admin().await?;
    let ns = support::namespace(&client).await?;
    let op = support::operator(
        &support::plane()?.kubeconfig(),
        &ns,
        &[("PARLEY_LOG", "warn")],
    )
    .await?;
    let started = Instant::now();
    for i in 0..CLUSTERS {
        support::create(&client, &ns, &format!("c{i:02}"), serde_json::json!({})).await?;
    }
    let created = started.elapsed();
    support::wait_for(
        "all children of 50 ChatClusters",
        Duration::from_secs(600),
        || complete(&client, &ns),
    )
    .await?;
    let took = started.elapsed();
    let metrics = op
        .http()
        .get(op.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let reconciles: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("parley_operator_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!(
        "{CLUSTERS} ChatClusters: created in {created:.2?}, all {} children present after {took:.2?} ({reconciles} reconciles so far)",
        CLUSTERS * 20
    );
    Ok(())
}
