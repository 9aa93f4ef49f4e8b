//! Every manifest in `examples/` applies to a real API server as written (no
//! field pruned by the schema) and the operator accepts it: not Degraded,
//! status for the current generation, and the children the example asks for.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::discovery::Discovery;
use parley_operator::api::ChatCluster;
use serde::Deserialize as _;
use serde_json::Value;
use support::{admin, apply_all, exists, get, namespace, operator, plane, str_at, wait_for};

/// Applies every document of `examples/<file>` into `ns`; returns the ChatClusters as written.
async fn apply_example(client: &Client, ns: &str, file: &str) -> anyhow::Result<Vec<Value>> {
    let path = parley_testkit::workspace_root().join("examples").join(file);
    let text = std::fs::read_to_string(&path)?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde_json::to_value(serde_yaml::Value::deserialize(doc)?)?;
        match str_at(&value, "/kind") {
            _ if value.is_null() => {}
            "Secret" | "ChatCluster" => docs.push(value),
            other => anyhow::bail!("{file}: unexpected kind {other:?}"),
        }
    }
    let discovery = Discovery::new(client.clone()).run().await?;
    let skipped = apply_all(client, &discovery, &docs, Some(ns)).await?;
    anyhow::ensure!(skipped.is_empty(), "{file}: not served: {skipped:?}");
    Ok(docs
        .into_iter()
        .filter(|d| str_at(d, "/kind") == "ChatCluster")
        .collect())
}

/// Whether `written` is contained in `stored` (the server may add defaults, never drop fields).
fn contained(written: &Value, stored: &Value, at: &str, missing: &mut Vec<String>) {
    match (written, stored) {
        (Value::Object(w), Value::Object(s)) => {
            for (k, v) in w {
                match s.get(k) {
                    Some(sv) => contained(v, sv, &format!("{at}.{k}"), missing),
                    None => missing.push(format!("{at}.{k}")),
                }
            }
        }
        (Value::Array(w), Value::Array(s)) if w.len() == s.len() => {
            for (i, (wv, sv)) in w.iter().zip(s).enumerate() {
                contained(wv, sv, &format!("{at}[{i}]"), missing);
            }
        }
        (w, s) if w == s => {}
        // YAML may write a quoted number where the schema says string, and vice versa.
        (w, s) if w.to_string().trim_matches('"') == s.to_string().trim_matches('"') => {}
        _ => missing.push(format!("{at} (wrote {written}, stored {stored})")),
    }
}

/// Applies the example, runs the operator on it, and returns the accepted cluster.
async fn accepted(file: &str) -> anyhow::Result<(Client, String, ChatCluster)> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    let written = apply_example(&client, &ns, file).await?;
    assert_eq!(written.len(), 1, "{file} holds one ChatCluster");
    let name = written[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let stored: ChatCluster = get(&client, &ns, &name).await?;
    let stored_json = serde_json::to_value(&stored)?;
    let mut pruned = Vec::new();
    contained(
        &written[0]["spec"],
        &stored_json["spec"],
        "spec",
        &mut pruned,
    );
    assert!(
        pruned.is_empty(),
        "{file}: the API server dropped or changed {pruned:?}"
    );

    wait_for(
        &format!("{file}: status for the current generation"),
        Duration::from_secs(20),
        || async {
            get::<ChatCluster>(&client, &ns, &name)
                .await
                .is_ok_and(|cc| {
                    cc.status.as_ref().and_then(|s| s.observed_generation) == cc.metadata.generation
                })
        },
    )
    .await?;
    let cc: ChatCluster = get(&client, &ns, &name).await?;
    let status = cc.status.clone().unwrap_or_default();
    let conditions: BTreeMap<_, _> = status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), (c.status.as_str(), c.message.as_str())))
        .collect();
    assert_eq!(
        conditions.get("Degraded").map(|c| c.0),
        Some("False"),
        "{file}: operator refused it: {conditions:?}"
    );
    for component in ["user", "chat", "mail"] {
        let deployment = format!("{name}-{component}");
        wait_for(&deployment, Duration::from_secs(10), || {
            exists::<Deployment>(&client, &ns, &deployment)
        })
        .await?;
    }
    Ok((client, ns, cc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_example_runs_every_store_in_cluster() -> anyhow::Result<()> {
    let (client, ns, cc) = accepted("minimal.yaml").await?;
    let name = cc.metadata.name.unwrap_or_default();
    for store in ["redis", "rabbitmq", "mongodb"] {
        assert!(
            exists::<StatefulSet>(&client, &ns, &format!("{name}-{store}")).await,
            "minimal: no managed {store}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eks_example_uses_external_stores_an_alb_and_an_iam_role() -> anyhow::Result<()> {
    let (client, ns, cc) = accepted("eks.yaml").await?;
    let name = cc.metadata.name.unwrap_or_default();
    for store in ["redis", "rabbitmq", "mongodb"] {
        assert!(
            !exists::<StatefulSet>(&client, &ns, &format!("{name}-{store}")).await,
            "eks: {store} should be external"
        );
    }
    let conditions = cc.status.unwrap_or_default().conditions;
    let deps = conditions.iter().find(|c| c.type_ == "DependenciesReady");
    assert!(
        deps.is_some_and(|c| c.status == "True"),
        "eks: every referenced Secret exists, yet {deps:?}"
    );
    let ingress: Ingress = get(&client, &ns, &name).await?;
    let spec = ingress.spec.unwrap_or_default();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("alb"));
    let annotations = ingress.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("alb.ingress.kubernetes.io/target-type")
            .map(String::as_str),
        Some("ip")
    );
    let sa: ServiceAccount = get(&client, &ns, &format!("{name}-parley")).await?;
    let role = sa.metadata.annotations.unwrap_or_default();
    assert!(
        role.get("eks.amazonaws.com/role-arn")
            .is_some_and(|a| a.starts_with("arn:aws:iam::")),
        "eks: no IAM role on the pods' ServiceAccount: {role:?}"
    );
    let user: Deployment = get(&client, &ns, &format!("{name}-user")).await?;
    let pod = user.spec.and_then(|s| s.template.spec).unwrap_or_default();
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let volumes = pod.volumes.clone().unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "PARLEY_TRUSTED_PROXY_HOPS" && e.value.as_deref() == Some("1")),
        "eks: the user service does not trust the ALB hop"
    );
    // DocumentDB's certificate is checked against the RDS CA bundle of the
    // example's Secret, mounted where PARLEY_MONGODB_CA_FILE points
    let ca_file = env
        .iter()
        .find(|e| e.name == "PARLEY_MONGODB_CA_FILE")
        .and_then(|e| e.value.clone());
    assert_eq!(
        ca_file.as_deref(),
        Some("/etc/parley/ca/mongodb/ca.crt"),
        "eks: DocumentDB without the RDS CA bundle"
    );
    assert!(
        volumes.iter().any(|v| v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("parley-rds-ca"))),
        "eks: the RDS CA Secret is not mounted: {volumes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_example_sizes_spreads_and_names_missing_apis() -> anyhow::Result<()> {
    let (client, ns, cc) = accepted("production.yaml").await?;
    let name = cc.metadata.name.clone().unwrap_or_default();
    let chat: Deployment = get(&client, &ns, &format!("{name}-chat")).await?;
    let pod = chat.spec.and_then(|s| s.template.spec).unwrap_or_default();
    let spread = pod.topology_spread_constraints.unwrap_or_default();
    assert_eq!(spread.len(), 2, "chat: both spread constraints");
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    let resources = pod.containers[0].resources.clone().unwrap_or_default();
    assert_eq!(
        resources
            .requests
            .unwrap_or_default()
            .get("cpu")
            .map(|q| q.0.as_str()),
        Some("250m")
    );
    let mongo: StatefulSet = get(&client, &ns, &format!("{name}-mongodb")).await?;
    let claim = mongo
        .spec
        .and_then(|s| s.volume_claim_templates)
        .and_then(|t| t.into_iter().next())
        .and_then(|c| c.spec)
        .unwrap_or_default();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast-ssd"));
    // The test control plane (1.20) serves neither autoscaling/v2 nor policy/v1:
    // the operator uses their beta versions and says so rather than fail.
    let apis = cc
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "APIsAvailable");
    let apis = apis.map(|c| (c.status, c.message)).unwrap_or_default();
    assert_eq!(apis.0, "True", "production: {apis:?}");
    assert!(
        apis.1.contains("autoscaling/v2beta2") && apis.1.contains("policy/v1beta1"),
        "production: APIsAvailable should name the older versions used: {}",
        apis.1
    );
    Ok(())
}
