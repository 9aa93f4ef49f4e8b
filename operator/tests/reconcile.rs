//! The operator against a real control plane: children, env wiring, status,
//! drift repair, minimal changes, deletion, invalid specs.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use parley_operator::api::{ChatCluster, Phase};
use support::{
    admin, all_children, create, exists, get, mark_ready, namespace, operator, plane, present,
    wait_for,
};

/// The issue's bound for children to appear.
const FIVE: Duration = Duration::from_secs(5);
/// Generous bound for follow-up changes on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(15);

fn env_of(d: &Deployment) -> BTreeMap<String, EnvVar> {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect()
}

async fn cluster(client: &Client, ns: &str, name: &str) -> anyhow::Result<ChatCluster> {
    get::<ChatCluster>(client, ns, name).await
}

fn condition(cc: &ChatCluster, t: &str) -> Option<(String, String, String)> {
    cc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn phase(client: &Client, ns: &str, name: &str) -> Option<Phase> {
    cluster(client, ns, name).await.ok()?.status?.phase
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_cluster_gets_wired_children_then_ready() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "demo", serde_json::json!({
        "image": {"repository": "registry.example/parley", "tag": "1.2.3"},
        "chat": {"replicas": 3},
        "smtp": {"credentialsSecret": "smtp-creds", "host": "mail.example", "port": 465, "tls": "tls"},
        "ingress": {"enabled": true, "host": "chat.example"},
    })).await?;
    let took = wait_for("every child", FIVE, || async {
        all_children(&client, &ns, "demo").await && exists::<Ingress>(&client, &ns, "demo").await
    })
    .await?;
    println!("children of one ChatCluster after {took:?}");

    let chat: Deployment = get(&client, &ns, "demo-chat").await?;
    assert_eq!(chat.spec.as_ref().unwrap().replicas, Some(3));
    let ctr = &chat
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(ctr.image.as_deref(), Some("registry.example/parley:1.2.3"));
    assert_eq!(
        ctr.command.as_deref(),
        Some(&["parley-chat".to_owned()][..])
    );
    let env = env_of(&chat);
    assert_eq!(
        env["PARLEY_HTTP_ADDR"].value.as_deref(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(
        env["PARLEY_REDIS_URL"].value.as_deref(),
        Some("redis://:$(REDIS_PASSWORD)@demo-redis:6379")
    );
    assert_eq!(
        env["PARLEY_JWT_PUBLIC_KEYS_FILE"].value.as_deref(),
        Some("/etc/parley/jwt/public.pem")
    );
    let cm: ConfigMap = get(&client, &ns, "demo-config").await?;
    let data = cm.data.unwrap_or_default();
    assert_eq!(data["PARLEY_USER_SERVICE_URL"], "http://demo-user:8080");
    assert_eq!(data["PARLEY_SMTP_PORT"], "465");
    let mail: Deployment = get(&client, &ns, "demo-mail").await?;
    let mail_env = env_of(&mail);
    let pw = mail_env["PARLEY_SMTP_PASSWORD"]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (pw.name.as_str(), pw.key.as_str()),
        ("smtp-creds", "password")
    );
    let user: Deployment = get(&client, &ns, "demo-user").await?;
    assert_eq!(user.spec.as_ref().unwrap().replicas, Some(2));
    let otp = env_of(&user)["PARLEY_OTP_SECRET"]
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(otp.name, "demo-generated");
    // the generated key pair is a real Ed25519 PEM
    let jwt: Secret = get(&client, &ns, "demo-jwt").await?;
    let private = String::from_utf8(jwt.data.unwrap()["private.pem"].0.clone())?;
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
    // owned by the ChatCluster
    let owner = &chat.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("ChatCluster", Some(true))
    );
    // Socket.IO long-polling needs every request of a session on one chat pod
    let chat_svc: Service = get(&client, &ns, "demo-chat").await?;
    let chat_svc = chat_svc.spec.unwrap_or_default();
    assert_eq!(chat_svc.session_affinity.as_deref(), Some("ClientIP"));
    let user_svc: Service = get(&client, &ns, "demo-user").await?;
    assert_eq!(
        user_svc
            .spec
            .unwrap_or_default()
            .session_affinity
            .as_deref(),
        Some("None")
    );
    // the API server keeps the store pods' restricted security settings
    for store in ["redis", "rabbitmq", "mongodb"] {
        let set: StatefulSet = get(&client, &ns, &format!("demo-{store}")).await?;
        let pod = set.spec.and_then(|s| s.template.spec).unwrap_or_default();
        let psc = pod.security_context.clone().unwrap_or_default();
        assert_eq!(psc.run_as_non_root, Some(true), "{store}");
        assert_eq!(
            psc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault"),
            "{store}"
        );
        let sc = pod.containers[0]
            .security_context
            .clone()
            .unwrap_or_default();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{store}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{store}");
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()]),
            "{store}"
        );
        assert!(pod.containers[0].liveness_probe.is_some(), "{store}");
    }

    // Progressing, with the missing smtp Secret and the 1.20 API gaps named
    wait_for("Progressing", FIVE, || async {
        phase(&client, &ns, "demo").await == Some(Phase::Progressing)
    })
    .await?;
    let cc = cluster(&client, &ns, "demo").await?;
    let deps = condition(&cc, "DependenciesReady").unwrap();
    assert_eq!(deps.0, "False");
    assert!(deps.2.contains("smtp-creds"), "{deps:?}");
    // 1.20 serves only the beta versions: used, and said
    let apis = condition(&cc, "APIsAvailable").unwrap();
    assert_eq!(
        (apis.0.as_str(), apis.1.as_str()),
        ("True", "OlderVersionsServed")
    );
    assert!(
        apis.2.contains("autoscaling/v2beta2") && apis.2.contains("policy/v1beta1"),
        "{apis:?}"
    );

    // once the Secret exists and the pods are ready: Ready
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let smtp: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "smtp-creds"}, "stringData": {"username": "u", "password": "p"}
    }))?;
    secrets.create(&PostParams::default(), &smtp).await?;
    // Secrets are watched: the new one is noticed without a spec change
    wait_for("Ready", Duration::from_secs(60), || async {
        let _ = mark_ready(&client, &ns).await;
        phase(&client, &ns, "demo").await == Some(Phase::Ready)
    })
    .await?;
    let cc = cluster(&client, &ns, "demo").await?;
    assert_eq!(condition(&cc, "Ready").unwrap().0, "True");
    let status = cc.status.unwrap();
    // the new Secret rolled the pods: during the surge more than 3 may be ready
    assert_eq!(status.components["chat"].desired_replicas, 3);
    assert!(status.components["chat"].ready_replicas >= 3);
    assert_eq!(status.observed_generation, cc.metadata.generation);
    Ok(())
}

async fn resource_versions(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for c in ["user", "chat", "mail"] {
        let d: Deployment = get(client, ns, &format!("{name}-{c}")).await?;
        out.insert(
            format!("deployment/{c}"),
            d.resource_version().unwrap_or_default(),
        );
        let s: Service = get(client, ns, &format!("{name}-{c}")).await?;
        out.insert(
            format!("service/{c}"),
            s.resource_version().unwrap_or_default(),
        );
    }
    for s in ["redis", "rabbitmq", "mongodb"] {
        let set: StatefulSet = get(client, ns, &format!("{name}-{s}")).await?;
        out.insert(
            format!("statefulset/{s}"),
            set.resource_version().unwrap_or_default(),
        );
    }
    for (kind, n) in [("configmap", "config")] {
        let cm: ConfigMap = get(client, ns, &format!("{name}-{n}")).await?;
        out.insert(kind.to_owned(), cm.resource_version().unwrap_or_default());
    }
    for n in ["jwt", "generated"] {
        let s: Secret = get(client, ns, &format!("{name}-{n}")).await?;
        out.insert(
            format!("secret/{n}"),
            s.resource_version().unwrap_or_default(),
        );
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_and_a_change_touches_only_what_it_must() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "drift", serde_json::json!({})).await?;
    wait_for("every child", FIVE, || all_children(&client, &ns, "drift")).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    deployments
        .delete("drift-user", &DeleteParams::default())
        .await?;
    wait_for("deleted Deployment restored", SETTLE, || {
        present::<Deployment>(&client, &ns, "drift-user")
    })
    .await?;

    deployments
        .patch(
            "drift-chat",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 7}})),
        )
        .await?;
    wait_for("edited replicas restored", SETTLE, || async {
        deployments
            .get("drift-chat")
            .await
            .ok()
            .and_then(|d| d.spec?.replicas)
            == Some(2)
    })
    .await?;

    // let the controllers settle, then change one component's replicas
    let before = wait_stable(&client, &ns, "drift").await?;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "drift",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"mail": {"replicas": 4}}})),
    )
    .await?;
    wait_for("mail scaled", SETTLE, || async {
        deployments
            .get("drift-mail")
            .await
            .ok()
            .and_then(|d| d.spec?.replicas)
            == Some(4)
    })
    .await?;
    let after = resource_versions(&client, &ns, "drift").await?;
    let changed: Vec<_> = before.keys().filter(|k| before[*k] != after[*k]).collect();
    assert_eq!(
        changed,
        ["deployment/mail"],
        "before {before:?} after {after:?}"
    );

    // an optional child comes and goes with the spec (pruning)
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    let toggle = |on: bool| serde_json::json!({"spec": {"ingress": {"enabled": on}}});
    api.patch(
        "drift",
        &PatchParams::default(),
        &Patch::Merge(toggle(true)),
    )
    .await?;
    wait_for("Ingress created", SETTLE, || async {
        ingresses.get_opt("drift").await.ok().flatten().is_some()
    })
    .await?;
    ingresses.delete("drift", &DeleteParams::default()).await?;
    wait_for("deleted Ingress restored", SETTLE, || {
        present::<Ingress>(&client, &ns, "drift")
    })
    .await?;
    api.patch(
        "drift",
        &PatchParams::default(),
        &Patch::Merge(toggle(false)),
    )
    .await?;
    wait_for("Ingress pruned", SETTLE, || async {
        ingresses.get_opt("drift").await.ok().flatten().is_none()
    })
    .await?;
    // once nothing else writes, a deleted NetworkPolicy is back at once
    // through its own watch, not at the next resync (300 s)
    wait_stable(&client, &ns, "drift").await?;
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .delete("drift-mongodb", &DeleteParams::default())
        .await?;
    wait_for("deleted NetworkPolicy restored", SETTLE, || {
        present::<NetworkPolicy>(&client, &ns, "drift-mongodb")
    })
    .await?;

    Ok(())
}

/// Resource versions once nothing (controller-manager included) writes for a second.
async fn wait_stable(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut last = resource_versions(client, ns, name).await?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = resource_versions(client, ns, name).await?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    anyhow::bail!("children kept changing: {last:?}")
}

/// A claim as the StatefulSet controller makes it from the store's claim
/// template: the set's labels, no owner.
fn stray_claim(cluster: &str, name: &str) -> anyhow::Result<PersistentVolumeClaim> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/instance": cluster,
                "app.kubernetes.io/component": "redis",
                "app.kubernetes.io/managed-by": "parley-operator",
                "parley.dev/volume-reclaim": "Delete",
            },
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_cluster_collects_children_and_honours_the_volume_policy() -> anyhow::Result<()>
{
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(
        &client,
        &ns,
        "gone",
        serde_json::json!({
            "redis": {"managed": {"volumeReclaim": "Delete"}},
            "mongodb": {"managed": {"volumeReclaim": "Retain", "storageSize": "2Gi"}},
        }),
    )
    .await?;
    wait_for("every child", FIVE, || all_children(&client, &ns, "gone")).await?;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the finalizer of a cluster deleting a volume",
        SETTLE,
        || async {
            api.get("gone").await.is_ok_and(|cc| {
                cc.finalizers()
                    .contains(&parley_operator::deletion::FINALIZER.to_owned())
            })
        },
    )
    .await?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "redis volume owned by the ChatCluster",
        Duration::from_secs(60),
        || async {
            pvcs.get_opt("data-gone-redis-0")
                .await
                .ok()
                .flatten()
                .is_some_and(|p| !p.owner_references().is_empty())
        },
    )
    .await?;
    // The StatefulSet controller makes each set's claim on its own
    // schedule: under load the MongoDB one can come after Redis's.
    wait_for(
        "mongodb volume created",
        Duration::from_secs(60),
        || async {
            pvcs.get_opt("data-gone-mongodb-0")
                .await
                .ok()
                .flatten()
                .is_some()
        },
    )
    .await?;
    let mongo_pvc = pvcs.get("data-gone-mongodb-0").await?;
    assert!(
        mongo_pvc.owner_references().is_empty(),
        "a retained volume is owned by nobody"
    );

    // A claim nobody owns, as a StatefulSet controller that has not yet seen
    // its set deleted makes for a pod it sees go (this once left a volume
    // behind). Paused, the operator does not adopt it before the deletion.
    api.patch(
        "gone",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"paused": true}})),
    )
    .await?;
    wait_for("the pause seen", SETTLE, || async {
        cluster(&client, &ns, "gone")
            .await
            .ok()
            .and_then(|cc| condition(&cc, "Progressing"))
            .is_some_and(|c| c.1 == "Paused")
    })
    .await?;
    pvcs.create(
        &PostParams::default(),
        &stray_claim("gone", "data-gone-redis-1")?,
    )
    .await?;
    api.delete("gone", &DeleteParams::background()).await?;
    wait_for(
        "children garbage-collected",
        Duration::from_secs(60),
        || async {
            !exists::<Deployment>(&client, &ns, "gone-chat").await
                && !exists::<StatefulSet>(&client, &ns, "gone-redis").await
                && !exists::<ConfigMap>(&client, &ns, "gone-config").await
                && !exists::<Secret>(&client, &ns, "gone-jwt").await
                && !exists::<ChatCluster>(&client, &ns, "gone").await
        },
    )
    .await
    .map_err(|e| {
        let log = std::fs::read_to_string(
            plane()
                .map(|p| p.dir.join("controller-manager.log"))
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        e.context(format!(
            "controller-manager log tail (newest first):\n{}",
            tail.join("\n")
        ))
    })?;
    // The finalizer let the ChatCluster go only once no `Delete` claim was
    // left: nothing to wait for.
    for claim in ["data-gone-redis-0", "data-gone-redis-1"] {
        let left = pvcs.get_opt(claim).await?.map(|p| {
            (
                p.metadata.finalizers,
                p.metadata.deletion_timestamp,
                p.metadata.owner_references,
            )
        });
        assert!(
            left.is_none(),
            "{claim} outlived its cluster (finalizers, deletion, owners): {left:?}"
        );
    }
    assert!(
        pvcs.get_opt("data-gone-mongodb-0").await?.is_some(),
        "retained volume was deleted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_is_degraded_naming_the_field_and_changes_nothing() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(
        &client,
        &ns,
        "bad",
        serde_json::json!({
            "redis": {"managed": {}, "external": {"urlSecret": {"name": "r"}}},
        }),
    )
    .await?;
    wait_for("Degraded", FIVE, || async {
        phase(&client, &ns, "bad").await == Some(Phase::Degraded)
    })
    .await?;
    let cc = cluster(&client, &ns, "bad").await?;
    let (status, reason, message) = condition(&cc, "Degraded").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.contains("spec.redis"), "{message}");
    assert!(!exists::<Deployment>(&client, &ns, "bad-user").await);
    assert!(!exists::<Secret>(&client, &ns, "bad-generated").await);

    // a valid cluster turned invalid keeps its children untouched
    create(&client, &ns, "good", serde_json::json!({})).await?;
    wait_for("every child", FIVE, || all_children(&client, &ns, "good")).await?;
    let before = wait_stable(&client, &ns, "good").await?;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    api.patch("good", &PatchParams::default(), &Patch::Merge(serde_json::json!({
        "spec": {"chat": {"replicas": 5, "autoscaling": {"enabled": true, "minReplicas": 4, "maxReplicas": 3}}}
    }))).await?;
    wait_for("Degraded", FIVE, || async {
        phase(&client, &ns, "good").await == Some(Phase::Degraded)
    })
    .await?;
    let cc = cluster(&client, &ns, "good").await?;
    assert!(
        condition(&cc, "Degraded")
            .unwrap()
            .2
            .contains("spec.chat.autoscaling.minReplicas")
    );
    assert_eq!(resource_versions(&client, &ns, "good").await?, before);
    Ok(())
}

fn config_hash(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("parley.dev/config-hash")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_change_rolls_pods_events_are_published_and_paused_changes_nothing()
-> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let smtp: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "smtp"}, "stringData": {"username": "u", "password": "one"}
    }))?;
    secrets.create(&PostParams::default(), &smtp).await?;
    create(
        &client,
        &ns,
        "roll",
        serde_json::json!({"smtp": {"credentialsSecret": "smtp"}}),
    )
    .await?;
    wait_for("every child", FIVE, || all_children(&client, &ns, "roll")).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let before = config_hash(&deployments.get("roll-mail").await?).unwrap_or_default();
    assert!(!before.is_empty());

    secrets
        .patch(
            "smtp",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"password": "two"}})),
        )
        .await?;
    wait_for("pods rolled by the new hash", SETTLE, || async {
        deployments
            .get("roll-mail")
            .await
            .ok()
            .and_then(|d| config_hash(&d))
            .is_some_and(|h| h != before)
    })
    .await
    .map_err(|e| e.context(op.output()))?;

    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    wait_for("SecretsGenerated event", SETTLE, || async {
        events.list(&Default::default()).await.is_ok_and(|l| {
            l.items.iter().any(|e| {
                e.reason.as_deref() == Some("SecretsGenerated")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("roll")
            })
        })
    })
    .await?;

    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "roll",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"paused": true, "mail": {"replicas": 4}}})),
    )
    .await?;
    wait_for("Paused reported", SETTLE, || async {
        cluster(&client, &ns, "roll")
            .await
            .ok()
            .and_then(|cc| condition(&cc, "Progressing"))
            .is_some_and(|c| c.1 == "Paused")
    })
    .await?;
    assert_eq!(
        deployments
            .get("roll-mail")
            .await?
            .spec
            .and_then(|s| s.replicas),
        Some(1)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_secret_from_an_older_operator_gains_store_passwords_and_keeps_the_rest()
-> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // labelled as every operator has labelled the Secrets it made (one
    // without them is someone else's, and left alone: tests/confinement.rs)
    let old: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "old-generated", "labels": {
            "app.kubernetes.io/managed-by": "parley-operator",
            "app.kubernetes.io/instance": "old",
        }},
        "stringData": {"otp-secret": "kept-otp-secret-0123456789abcdef", "rabbitmq-password": "kept"},
    }))?;
    secrets.create(&PostParams::default(), &old).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "old", serde_json::json!({})).await?;
    let keys = |s: &Secret| -> BTreeMap<String, String> {
        s.data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect()
    };
    wait_for("store passwords added", FIVE, || async {
        secrets
            .get("old-generated")
            .await
            .is_ok_and(|s| keys(&s).len() == 5)
    })
    .await?;
    let data = keys(&secrets.get("old-generated").await?);
    assert_eq!(data["otp-secret"], "kept-otp-secret-0123456789abcdef");
    assert_eq!(data["rabbitmq-password"], "kept");
    for key in ["redis-password", "mongodb-password", "mongodb-app-password"] {
        assert_eq!(data[key].len(), 48, "{key} is 24 random bytes in hex");
        assert!(data[key].chars().all(|c| c.is_ascii_hexdigit()));
    }
    assert_ne!(data["redis-password"], data["mongodb-password"]);
    assert_ne!(data["mongodb-password"], data["mongodb-app-password"]);
    wait_for("every child", FIVE, || all_children(&client, &ns, "old")).await?;
    Ok(())
}

/// The pod template of every StatefulSet and Deployment of `name`, by `kind/name`,
/// with the object's generation (a spec change bumps it).
async fn pod_templates(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<BTreeMap<String, (Option<i64>, serde_json::Value)>> {
    let mut out = BTreeMap::new();
    for s in ["redis", "rabbitmq", "mongodb"] {
        let set: StatefulSet = get(client, ns, &format!("{name}-{s}")).await?;
        let template = serde_json::to_value(set.spec.map(|s| s.template))?;
        out.insert(
            format!("statefulset/{s}"),
            (set.metadata.generation, template),
        );
    }
    for c in ["user", "chat", "mail"] {
        let d: Deployment = get(client, ns, &format!("{name}-{c}")).await?;
        let template = serde_json::to_value(d.spec.map(|s| s.template))?;
        out.insert(format!("deployment/{c}"), (d.metadata.generation, template));
    }
    Ok(out)
}

fn changed(
    before: &BTreeMap<String, (Option<i64>, serde_json::Value)>,
    after: &BTreeMap<String, (Option<i64>, serde_json::Value)>,
) -> Vec<String> {
    before
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_settings_and_their_secrets_roll_the_services_never_the_stores()
-> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let smtp: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "smtp"}, "stringData": {"username": "u", "password": "one"}
    }))?;
    secrets.create(&PostParams::default(), &smtp).await?;
    create(
        &client,
        &ns,
        "keep",
        serde_json::json!({"smtp": {"credentialsSecret": "smtp"}}),
    )
    .await?;
    wait_for("every child", FIVE, || all_children(&client, &ns, "keep")).await?;
    wait_stable(&client, &ns, "keep").await?;
    let before = pod_templates(&client, &ns, "keep").await?;

    // log level, SMTP server and the public host: settings of the services only
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "keep",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {
            "log": "debug",
            "smtp": {"host": "smtp.example", "port": 2525, "from": "chat@example.org"},
            "ingress": {"host": "chat.example"},
        }})),
    )
    .await?;
    // StatefulSets are applied before Deployments in one pass: once all three
    // Deployments have their new template, the stores have had their apply.
    wait_for("every Deployment rolled", SETTLE, || async {
        pod_templates(&client, &ns, "keep").await.is_ok_and(|now| {
            ["user", "chat", "mail"]
                .iter()
                .all(|c| changed(&before, &now).contains(&format!("deployment/{c}")))
        })
    })
    .await
    .map_err(|e| e.context(op.output()))?;
    let after = pod_templates(&client, &ns, "keep").await?;
    assert_eq!(
        changed(&before, &after),
        ["deployment/chat", "deployment/mail", "deployment/user"],
        "spec.log, smtp and ingress.host must not roll the stores"
    );

    // a new SMTP password rolls mail only
    let before = after;
    secrets
        .patch(
            "smtp",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"password": "two"}})),
        )
        .await?;
    wait_for("mail rolled by the new password", SETTLE, || async {
        pod_templates(&client, &ns, "keep")
            .await
            .is_ok_and(|now| changed(&before, &now).contains(&"deployment/mail".to_owned()))
    })
    .await
    .map_err(|e| e.context(op.output()))?;
    let after = pod_templates(&client, &ns, "keep").await?;
    assert_eq!(
        changed(&before, &after),
        ["deployment/mail"],
        "the SMTP password is read by mail only"
    );
    Ok(())
}

#[tokio::test]
async fn pod_overrides_reach_the_pods_and_cannot_replace_the_operators_wiring() -> anyhow::Result<()>
{
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(
        &client,
        &ns,
        "ov",
        serde_json::json!({
            "chat": {"podOverrides": {
                "metadata": {"annotations": {"example.com/team": "chat"},
                             "labels": {"app.kubernetes.io/instance": "hijack", "tier": "edge"}},
                "spec": {
                    "priorityClassName": "chat-critical",
                    "containers": [
                        {"name": "chat", "volumeMounts": [{"name": "ca", "mountPath": "/etc/ca", "readOnly": true}]},
                        {"name": "sidecar", "image": "localhost/sidecar:1"}
                    ],
                    "volumes": [{"name": "ca", "configMap": {"name": "ca-bundle"}}]
                }
            }},
            "redis": {"managed": {"podOverrides": {"spec": {"priorityClassName": "stores"}}}},
        }),
    )
    .await?;
    wait_for("every child", FIVE, || all_children(&client, &ns, "ov")).await?;
    let chat: Deployment = Api::namespaced(client.clone(), &ns).get("ov-chat").await?;
    let template = chat.spec.unwrap().template;
    let meta = template.metadata.unwrap();
    let labels = meta.labels.unwrap();
    assert_eq!(
        labels["app.kubernetes.io/instance"], "ov",
        "the operator's labels win"
    );
    assert_eq!(labels["tier"], "edge");
    assert_eq!(meta.annotations.unwrap()["example.com/team"], "chat");
    let pod = template.spec.unwrap();
    assert_eq!(pod.priority_class_name.as_deref(), Some("chat-critical"));
    let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["chat", "sidecar"]);
    let chat_ctr = &pod.containers[0];
    assert_eq!(
        chat_ctr.command.as_deref(),
        Some(&["parley-chat".to_owned()][..])
    );
    let mounts: Vec<_> = chat_ctr
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(
        mounts.contains(&"/etc/ca") && mounts.contains(&"/tmp"),
        "{mounts:?}"
    );
    assert!(env_of_container(chat_ctr).contains_key("PARLEY_MONGODB_URI"));
    assert!(pod.volumes.iter().flatten().any(|v| v.name == "ca"));
    let redis: StatefulSet = Api::namespaced(client.clone(), &ns).get("ov-redis").await?;
    assert_eq!(
        redis
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .priority_class_name
            .as_deref(),
        Some("stores")
    );
    // The user service is untouched by chat's overrides.
    let user: Deployment = Api::namespaced(client.clone(), &ns).get("ov-user").await?;
    assert_eq!(
        user.spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .priority_class_name,
        None
    );

    // Overriding the operator's wiring is refused, naming the field, and changes nothing.
    let before = wait_stable(&client, &ns, "ov").await?;
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    api.patch("ov", &PatchParams::default(), &Patch::Merge(serde_json::json!({
        "spec": {"user": {"podOverrides": {"spec": {"containers": [
            {"name": "user", "env": [{"name": "PARLEY_MONGODB_URI", "value": "mongodb://elsewhere/"}]}
        ]}}}}
    }))).await?;
    wait_for("Degraded", FIVE, || async {
        phase(&client, &ns, "ov").await == Some(Phase::Degraded)
    })
    .await?;
    let cc = cluster(&client, &ns, "ov").await?;
    let (_, reason, message) = condition(&cc, "Degraded").unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.user.podOverrides.spec.containers[0].env[0].name"),
        "{message}"
    );
    assert_eq!(resource_versions(&client, &ns, "ov").await?, before);
    Ok(())
}

fn env_of_container(c: &k8s_openapi::api::core::v1::Container) -> BTreeMap<String, EnvVar> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.clone()))
        .collect()
}

/// Issue 13 "rollout status": a Deployment past its progress deadline (no
/// kubelet here, so its pods never become ready) turns the cluster
/// Degraded with reason RolloutStuck naming the component, with a
/// per-component condition.
#[tokio::test]
async fn a_stuck_rollout_degrades_naming_the_component() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "stuck", serde_json::json!({})).await?;
    wait_for("every child", FIVE, || all_children(&client, &ns, "stuck")).await?;
    // Another manager shortens the deadline (the operator leaves the field alone).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .patch(
            "stuck-chat",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"progressDeadlineSeconds": 1}})),
        )
        .await?;
    wait_for("RolloutStuck", Duration::from_secs(60), || async {
        cluster(&client, &ns, "stuck")
            .await
            .ok()
            .and_then(|cc| condition(&cc, "Degraded"))
            .is_some_and(|(status, reason, _)| status == "True" && reason == "RolloutStuck")
    })
    .await?;
    let cc = cluster(&client, &ns, "stuck").await?;
    let (_, _, message) = condition(&cc, "Degraded").unwrap();
    assert!(
        message.starts_with("chat: ProgressDeadlineExceeded"),
        "{message}"
    );
    let (status, reason, _) = condition(&cc, "ChatReady").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RolloutStuck")
    );
    assert_eq!(phase(&client, &ns, "stuck").await, Some(Phase::Degraded));
    Ok(())
}
