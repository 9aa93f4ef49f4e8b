//! Day two on a real control plane: what the schema refuses at admission,
//! re-creation on kept volumes, storage changes, autoscaling hand-over,
//! pruning by owner uid, and failures before apply.

mod support;

use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client};
use parley_operator::api::ChatCluster;
use support::admin;

/// Creates a ChatCluster from raw JSON (values no typed spec could hold).
async fn create_raw(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<DynamicObject, kube::Error> {
    let ar = ApiResource::erase::<ChatCluster>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let mut obj = DynamicObject::new(name, &ar);
    obj.data = serde_json::json!({ "spec": spec });
    api.create(&PostParams::default(), &obj).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_out_of_range_values_naming_the_field() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = support::namespace(&client).await?;
    let cases = [
        (
            serde_json::json!({"chat": {"replicas": 3_000_000_000u64}}),
            "spec.chat.replicas",
        ),
        (
            serde_json::json!({"user": {"replicas": -1}}),
            "spec.user.replicas",
        ),
        (
            serde_json::json!({"mail": {"autoscaling": {"targetCpuUtilization": 250}}}),
            "spec.mail.autoscaling.targetCpuUtilization",
        ),
        (
            serde_json::json!({"smtp": {"tls": "sometimes"}}),
            "spec.smtp.tls",
        ),
        (
            serde_json::json!({"smtp": {"port": 70000}}),
            "spec.smtp.port",
        ),
        (
            serde_json::json!({"image": {"pullPolicy": "Sometimes"}}),
            "spec.image.pullPolicy",
        ),
        (
            serde_json::json!({"mongodb": {"managed": {"storageSize": "lots"}}}),
            "spec.mongodb.managed.storageSize",
        ),
        (
            serde_json::json!({"ingress": {"host": "Not A Host"}}),
            "spec.ingress.host",
        ),
    ];
    for (i, (spec, field)) in cases.into_iter().enumerate() {
        match create_raw(&client, &ns, &format!("bad-{i}"), spec.clone()).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{spec}: {e:?}");
                assert!(e.message.contains(field), "{spec}: {}", e.message);
            }
            other => anyhow::bail!("{spec} was not refused at admission: {other:?}"),
        }
    }
    // the bounds themselves are accepted
    create_raw(
        &client,
        &ns,
        "edge",
        serde_json::json!({"chat": {"replicas": 1000}, "user": {"replicas": 0},
            "mongodb": {"managed": {"storageSize": "1.5Gi"}}, "ingress": {"host": "*.chat.example"}}),
    )
    .await?;
    Ok(())
}
