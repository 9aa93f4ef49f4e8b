//! Day two on a real control plane: what the schema refuses at admission,
//! re-creation on kept volumes, storage changes, autoscaling hand-over,
//! pruning by owner uid, and failures before apply.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use parley_operator::api::ChatCluster;
use support::{admin, all_children, create, exists, get, namespace, operator, plane, wait_for};

/// Bound for a change to land on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(20);

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
    let ns = namespace(&client).await?;
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

/// The generated store passwords, by key.
async fn passwords(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let secret: Secret = get(client, ns, &format!("{name}-generated")).await?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.ends_with("-password"))
        .map(|(k, v)| (k, v.0))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_re_created_on_kept_volumes_keeps_its_store_passwords() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "keep", serde_json::json!({})).await?;
    wait_for("every child", SETTLE, || all_children(&client, &ns, "keep")).await?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_for("the MongoDB volume", SETTLE, || async {
        pvcs.get_opt("data-keep-mongodb-0")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await?;
    let before = passwords(&client, &ns, "keep").await?;
    assert_eq!(before.len(), 4, "{before:?}");

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    let first_uid = api.get("keep").await?.uid();
    api.delete("keep", &DeleteParams::background()).await?;
    wait_for("the cluster and its children gone", SETTLE * 3, || async {
        !exists::<ChatCluster>(&client, &ns, "keep").await
            && !exists::<Deployment>(&client, &ns, "keep-chat").await
            && !exists::<StatefulSet>(&client, &ns, "keep-mongodb").await
            && !exists::<Secret>(&client, &ns, "keep-jwt").await
    })
    .await?;
    assert!(
        exists::<Secret>(&client, &ns, "keep-generated").await,
        "the store passwords went with the cluster while its volumes stay"
    );
    assert!(
        pvcs.get_opt("data-keep-mongodb-0").await?.is_some(),
        "retained volume gone"
    );

    create(&client, &ns, "keep", serde_json::json!({})).await?;
    wait_for("every child again", SETTLE, || {
        all_children(&client, &ns, "keep")
    })
    .await
    .map_err(|e| e.context(op.output()))?;
    assert_eq!(passwords(&client, &ns, "keep").await?, before);
    let secret: Secret = get(&client, &ns, "keep-generated").await?;
    assert!(
        secret
            .owner_references()
            .iter()
            .all(|o| Some(&o.uid) != first_uid.as_ref()),
        "{:?}",
        secret.owner_references()
    );

    // once no store keeps a volume, the passwords go with the cluster
    api.patch(
        "keep",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {
            "redis": {"managed": {"volumeReclaim": "Delete"}},
            "rabbitmq": {"managed": {"volumeReclaim": "Delete"}},
            "mongodb": {"managed": {"volumeReclaim": "Delete"}},
        }})),
    )
    .await?;
    let uid = api.get("keep").await?.uid().unwrap_or_default();
    wait_for("the Secret owned by the cluster", SETTLE, || async {
        get::<Secret>(&client, &ns, "keep-generated")
            .await
            .is_ok_and(|s| s.owner_references().iter().any(|o| o.uid == uid))
    })
    .await?;
    api.delete("keep", &DeleteParams::background()).await?;
    wait_for(
        "the Secret collected with the cluster",
        SETTLE * 3,
        || async { !exists::<Secret>(&client, &ns, "keep-generated").await },
    )
    .await?;
    Ok(())
}

fn template_size(set: &StatefulSet) -> Option<String> {
    let claim = set
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .first()?;
    let q = claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    Some(q.0.clone())
}

fn image_of(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

fn condition(cc: &ChatCluster, t: &str) -> Option<(String, String, String)> {
    cc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_change_never_blocks_later_updates() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "disk", serde_json::json!({})).await?;
    wait_for("every child", SETTLE, || all_children(&client, &ns, "disk")).await?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for("the MongoDB pod and volume", SETTLE, || async {
        pvcs.get_opt("data-disk-mongodb-0")
            .await
            .ok()
            .flatten()
            .is_some()
            && pods
                .get_opt("disk-mongodb-0")
                .await
                .ok()
                .flatten()
                .is_some()
    })
    .await?;
    let pvc_uid = pvcs.get("data-disk-mongodb-0").await?.uid();
    let pod_uid = pods.get("disk-mongodb-0").await?.uid();

    // a volume claim template change the API server refuses on the StatefulSet …
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "disk",
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"spec": {"mongodb": {"managed": {"storageSize": "2Gi"}}}}),
        ),
    )
    .await?;
    // … then an upgrade, which must still land
    api.patch(
        "disk",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"image": {"tag": "2.0.0"}}})),
    )
    .await?;
    for c in ["user", "chat", "mail"] {
        wait_for(&format!("the new image on {c}"), SETTLE, || async {
            get::<Deployment>(&client, &ns, &format!("disk-{c}"))
                .await
                .ok()
                .and_then(|d| image_of(&d))
                .is_some_and(|i| i.ends_with(":2.0.0"))
        })
        .await
        .map_err(|e| e.context(op.output()))?;
    }
    // the StatefulSet was re-created with the new template, its pod and volume kept
    wait_for("the new claim template", SETTLE, || async {
        get::<StatefulSet>(&client, &ns, "disk-mongodb")
            .await
            .ok()
            .and_then(|s| template_size(&s))
            .as_deref()
            == Some("2Gi")
    })
    .await?;
    assert_eq!(pvcs.get("data-disk-mongodb-0").await?.uid(), pvc_uid);
    assert_eq!(pods.get("disk-mongodb-0").await?.uid(), pod_uid);
    // the volume itself cannot grow here (no StorageClass allows it): said, naming the field
    wait_for("VolumesMatchSpec False", SETTLE, || async {
        get::<ChatCluster>(&client, &ns, "disk")
            .await
            .ok()
            .and_then(|cc| condition(&cc, "VolumesMatchSpec"))
            .is_some_and(|c| c.0 == "False")
    })
    .await?;
    let cc: ChatCluster = get(&client, &ns, "disk").await?;
    let (_, reason, message) = condition(&cc, "VolumesMatchSpec").unwrap_or_default();
    assert_eq!(reason, "VolumeChangeUnsupported");
    assert!(
        message
            .starts_with("spec.mongodb.managed.storageSize: volume data-disk-mongodb-0 stays 1Gi"),
        "{message}"
    );
    assert_ne!(
        condition(&cc, "Degraded").map(|c| c.0).as_deref(),
        Some("True"),
        "{:?}",
        cc.status
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_grows_in_place_where_its_storage_class_allows() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    // a StorageClass allowing expansion and a volume for the claim to bind to
    let class = format!("expandable-{ns}");
    let classes: Api<StorageClass> = Api::all(client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": class},
                "provisioner": "kubernetes.io/no-provisioner",
                "allowVolumeExpansion": true,
            }))?,
        )
        .await?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pvs.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("pv-{ns}")},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": class,
                "hostPath": {"path": format!("/var/tmp/parley/never-mounted/{ns}")},
                "claimRef": {"namespace": ns, "name": "data-grow-mongodb-0"},
            },
        }))?,
    )
    .await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(
        &client,
        &ns,
        "grow",
        serde_json::json!({"mongodb": {"managed": {"storageClassName": class, "storageSize": "1Gi"}}}),
    )
    .await?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_for("the MongoDB volume bound", SETTLE * 3, || async {
        pvcs.get_opt("data-grow-mongodb-0")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.status?.phase)
            .as_deref()
            == Some("Bound")
    })
    .await?;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "grow",
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"spec": {"mongodb": {"managed": {"storageSize": "2Gi"}}}}),
        ),
    )
    .await?;
    wait_for("the claim grown to 2Gi", SETTLE, || async {
        pvcs.get_opt("data-grow-mongodb-0")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.spec?.resources?.requests?.get("storage").cloned())
            .is_some_and(|q| q.0 == "2Gi")
    })
    .await?;
    wait_for("VolumesMatchSpec True", SETTLE, || async {
        get::<ChatCluster>(&client, &ns, "grow")
            .await
            .ok()
            .and_then(|cc| condition(&cc, "VolumesMatchSpec"))
            .is_some_and(|c| c.0 == "True")
    })
    .await?;
    wait_for("the new claim template", SETTLE, || async {
        get::<StatefulSet>(&client, &ns, "grow-mongodb")
            .await
            .ok()
            .and_then(|s| template_size(&s))
            .as_deref()
            == Some("2Gi")
    })
    .await?;
    Ok(())
}

/// A namespaced API of a kind in a version k8s-openapi has no type for.
fn dynamic_api(
    client: &Client,
    ns: &str,
    api_version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_autoscaling_on_hands_replicas_over_without_a_drop() -> anyhow::Result<()> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    let client = admin().await?;
    let ns = namespace(&client).await?;
    let op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(
        &client,
        &ns,
        "scale",
        serde_json::json!({"chat": {"replicas": 3, "resources": {"requests": {"cpu": "100m"}}}}),
    )
    .await?;
    wait_for("every child", SETTLE, || {
        all_children(&client, &ns, "scale")
    })
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);
    assert_eq!(replicas(&deployments.get("scale-chat").await?), Some(3));

    // every value spec.replicas takes from now on
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let (seen, deployments) = (seen.clone(), deployments.clone());
        tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=scale-chat");
            let mut stream = watcher(deployments, config).applied_objects().boxed();
            while let Some(Ok(d)) = stream.next().await {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(d.spec.and_then(|s| s.replicas));
                }
            }
        })
    };

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "scale",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"chat": {"autoscaling": {
            "enabled": true, "minReplicas": 2, "maxReplicas": 6}}}})),
    )
    .await?;
    // the 1.20 control plane serves autoscaling/v2beta2 and policy/v1beta1 only
    let hpas = dynamic_api(
        &client,
        &ns,
        "autoscaling/v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    );
    wait_for("the autoscaler (autoscaling/v2beta2)", SETTLE, || async {
        hpas.get_opt("scale-chat")
            .await
            .ok()
            .flatten()
            .is_some_and(|h| h.data["spec"]["maxReplicas"] == 6)
    })
    .await
    .map_err(|e| e.context(op.output()))?;
    let pdbs = dynamic_api(
        &client,
        &ns,
        "policy/v1beta1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    );
    assert!(
        pdbs.get_opt("scale-chat").await?.is_some(),
        "no policy/v1beta1 PodDisruptionBudget"
    );
    // the operator lets go of replicas; the count stays where it was
    let operator_applies_replicas = |d: &Deployment| {
        d.metadata.managed_fields.iter().flatten().any(|m| {
            m.manager.as_deref() == Some("parley-operator")
                && m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
    };
    wait_for("replicas released by the operator", SETTLE, || async {
        deployments
            .get("scale-chat")
            .await
            .is_ok_and(|d| !operator_applies_replicas(&d))
    })
    .await?;
    // a later pass (the resync is long; a spec change forces one) changes nothing
    api.patch(
        "scale",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"log": "debug"}})),
    )
    .await?;
    wait_for("the new log filter applied", SETTLE, || async {
        get::<ChatCluster>(&client, &ns, "scale")
            .await
            .ok()
            .and_then(|c| c.status?.observed_generation)
            >= Some(3)
    })
    .await?;
    assert_eq!(replicas(&deployments.get("scale-chat").await?), Some(3));
    recorder.abort();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| *r == Some(3)),
        "spec.replicas went {seen:?}"
    );

    // the autoscaler is watched: deleted, it is back at once (the resync is 5 minutes)
    hpas.delete("scale-chat", &DeleteParams::default()).await?;
    wait_for("the autoscaler restored", SETTLE, || async {
        hpas.get_opt("scale-chat")
            .await
            .ok()
            .flatten()
            .is_some_and(|h| h.metadata.deletion_timestamp.is_none())
    })
    .await?;

    // autoscaling without a CPU request is refused, naming the field
    api.patch(
        "scale",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"user": {"autoscaling": {"enabled": true}}}})),
    )
    .await?;
    wait_for("InvalidSpec naming the CPU request", SETTLE, || async {
        get::<ChatCluster>(&client, &ns, "scale")
            .await
            .ok()
            .and_then(|cc| condition(&cc, "Degraded"))
            .is_some_and(|c| {
                c.1 == "InvalidSpec" && c.2.contains("spec.user.resources.requests.cpu")
            })
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_only_what_this_cluster_owns_by_uid() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "demo", serde_json::json!({})).await?;
    wait_for("every child", SETTLE, || all_children(&client, &ns, "demo")).await?;
    // a Service carrying the instance label (as a Helm release named "demo"
    // would) and owned by a namesake of another API group
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": "demo-foreign",
                    "labels": {"app.kubernetes.io/instance": "demo"},
                    "ownerReferences": [{
                        "apiVersion": "other.example/v1", "kind": "ChatCluster",
                        "name": "demo", "uid": "6b0e8d8e-0000-4000-8000-000000000001",
                    }],
                },
                "spec": {"ports": [{"port": 80}]},
            }))?,
        )
        .await?;
    // a pass that prunes Services (a spec change forces one)
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"ingress": {"enabled": true}}})),
    )
    .await?;
    wait_for("the pass applied", SETTLE, || async {
        get::<ChatCluster>(&client, &ns, "demo")
            .await
            .ok()
            .and_then(|c| c.status?.observed_generation)
            >= Some(2)
    })
    .await?;
    assert!(
        exists::<Service>(&client, &ns, "demo-foreign").await,
        "the operator deleted another owner's Service"
    );
    // while its own unwanted children still go: the ingress turned off again
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"ingress": {"enabled": false}}})),
    )
    .await?;
    wait_for("its own Ingress pruned", SETTLE, || async {
        !exists::<k8s_openapi::api::networking::v1::Ingress>(&client, &ns, "demo").await
    })
    .await?;
    assert!(exists::<Service>(&client, &ns, "demo-foreign").await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_apply_is_reported_in_the_status() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    // the operator's own rules in this namespace, reading Secrets excepted
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rbac/clusterrole.yaml"
    ))?;
    let role: ClusterRole = serde_yaml::from_str(&yaml)?;
    let rules: Vec<PolicyRule> = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !r.resources.iter().flatten().any(|x| x == "secrets"))
        .collect();
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: kube::api::ObjectMeta {
                    name: Some("no-secrets".into()),
                    ..Default::default()
                },
                rules: Some(rules),
            },
        )
        .await?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "no-secrets"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-secrets"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "parley-operator-test"}],
            }))?,
        )
        .await?;
    let _op = operator(
        &plane()?.user_kubeconfig()?,
        &ns,
        &[("PARLEY_LEADER_ELECTION", "false")],
    )
    .await?;
    create(&client, &ns, "blind", serde_json::json!({})).await?;
    wait_for("Degraded naming the refusal", SETTLE, || async {
        get::<ChatCluster>(&client, &ns, "blind")
            .await
            .ok()
            .and_then(|cc| condition(&cc, "Degraded"))
            .is_some_and(|c| c.0 == "True" && c.1 == "PrepareFailed" && c.2.contains("secrets"))
    })
    .await?;
    let cc: ChatCluster = get(&client, &ns, "blind").await?;
    assert_eq!(
        cc.status.and_then(|s| s.phase),
        Some(parley_operator::api::Phase::Degraded)
    );
    Ok(())
}
