//! One ChatCluster the operator cannot read never stops the others.
//!
//! This binary has a control plane of its own: it replaces the CRD with one
//! that has no bounds (as an older CRD, or one applied by hand, would be), so
//! that an object no `i32` can hold gets stored.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use parley_operator::api::{ChatCluster, Phase};
use support::{admin, all_children, exists, get, namespace, operator, plane, wait_for};

const SETTLE: Duration = Duration::from_secs(20);

/// The ChatCluster CRD with its schema reduced to "any object".
async fn install_unbounded_crd(client: &Client) -> anyhow::Result<()> {
    let mut crd = serde_json::to_value(parley_operator::crd::crd())?;
    let open = serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = serde_json::json!({
        "type": "object",
        "properties": {"spec": open, "status": open},
    });
    let crd: CustomResourceDefinition = serde_json::from_value(crd)?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "chatclusters.parley.dev",
        &PatchParams::apply("parley-tests").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    Ok(())
}

fn raw(name: &str, spec: serde_json::Value) -> DynamicObject {
    let ar = ApiResource::erase::<ChatCluster>(&());
    let mut obj = DynamicObject::new(name, &ar);
    obj.data = serde_json::json!({ "spec": spec });
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_cluster_is_reported_and_the_others_converge() -> anyhow::Result<()> {
    let client = admin().await?;
    install_unbounded_crd(&client).await?;
    let ns = namespace(&client).await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<ChatCluster>(&()));
    // The API server takes a moment to serve the new schema: retry until
    // the value the bounded schema refuses is stored.
    let bad = raw(
        "bad",
        serde_json::json!({"chat": {"replicas": 3_000_000_000u64}}),
    );
    wait_for("the unbounded CRD in effect", SETTLE, || async {
        api.create(&PostParams::default(), &bad).await.is_ok()
    })
    .await?;
    api.create(&PostParams::default(), &raw("good", serde_json::json!({})))
        .await?;

    // An operator starting now lists both (as after a restart or a re-list).
    let op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    wait_for("children of the valid cluster", SETTLE, || {
        all_children(&client, &ns, "good")
    })
    .await
    .map_err(|e| e.context(op.output()))?;
    wait_for("status of the valid cluster", SETTLE, || async {
        get::<ChatCluster>(&client, &ns, "good")
            .await
            .ok()
            .and_then(|c| c.status?.phase)
            == Some(Phase::Progressing)
    })
    .await?;

    // The unreadable one: Degraded naming the problem, a warning Event, no children.
    let status_of_bad = || async {
        api.get("bad")
            .await
            .ok()
            .and_then(|o| o.data.get("status").cloned())
            .unwrap_or_default()
    };
    wait_for(
        "Degraded status of the unreadable cluster",
        SETTLE,
        || async { status_of_bad().await["phase"] == "Degraded" },
    )
    .await?;
    let status = status_of_bad().await;
    let degraded = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Degraded")
        .cloned()
        .unwrap_or_default();
    assert_eq!(degraded["status"], "True", "{status}");
    assert_eq!(degraded["reason"], "InvalidSpec", "{status}");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(message.contains("3000000000"), "{message}");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "warning Event about the unreadable cluster",
        SETTLE,
        || async {
            events.list(&Default::default()).await.is_ok_and(|l| {
                l.items.iter().any(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("InvalidSpec")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad")
                })
            })
        },
    )
    .await?;
    assert!(!exists::<Deployment>(&client, &ns, "bad-chat").await);
    Ok(())
}
