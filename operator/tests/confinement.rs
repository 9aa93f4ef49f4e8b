//! What a ChatCluster's author can make the operator do, on a real control
//! plane (issue 14 item 14): images only from the allowed registries, no
//! Secret of someone else's changed or adopted, no Secret read that the
//! ChatCluster does not name, no Secret value copied anywhere the author or
//! a reader of Deployments could see it, and all of it under a namespaced
//! Role.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use parley_operator::api::ChatCluster;
use serde_json::{Value, json};
use support::{admin, create, exists, get, namespace, operator, plane, wait_for};

/// Generous bound for the operator's reaction on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(20);

/// (status, reason, message) of condition `t`.
fn condition(cc: &ChatCluster, t: &str) -> Option<(String, String, String)> {
    cc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `name`'s Degraded condition satisfies `ok` for its current
/// generation; returns it.
async fn degraded(
    client: &Client,
    ns: &str,
    name: &str,
    ok: impl Fn(&(String, String, String)) -> bool,
) -> anyhow::Result<(String, String, String)> {
    let last = std::sync::Mutex::new(None);
    let waited = wait_for(&format!("{name}: Degraded"), SETTLE, || async {
        let cc = get::<ChatCluster>(client, ns, name).await.ok();
        let current = cc.as_ref().is_some_and(|cc| {
            cc.status.as_ref().and_then(|s| s.observed_generation) == cc.metadata.generation
        });
        let found = cc.as_ref().and_then(|cc| condition(cc, "Degraded"));
        let hit = current && found.as_ref().is_some_and(&ok);
        if let Ok(mut slot) = last.lock() {
            *slot = found;
        }
        hit
    })
    .await;
    let last = last.lock().map(|l| l.clone()).unwrap_or_default();
    waited.map_err(|e| anyhow::anyhow!("{e:#}; last Degraded: {last:?}"))?;
    last.ok_or_else(|| anyhow::anyhow!("no condition"))
}

fn secret(name: &str, data: &[(&str, &str)]) -> anyhow::Result<Secret> {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name}, "stringData": data,
    }))?)
}

/// Names of the objects of kind `K` in `ns`.
async fn names<K: support::Namespaced>(client: &Client, ns: &str) -> anyhow::Result<Vec<String>> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|o| o.name_any())
        .collect())
}

/// Store images an allow-list of example registries accepts.
fn allowed_stores() -> Value {
    json!({
        "redis": {"managed": {"image": "registry.example.com/team/redis:7.4-alpine"}},
        "rabbitmq": {"managed": {"image": "team/rabbitmq:3.13-alpine"}},
        "mongodb": {"managed": {"image": "localhost:5000/mongo:7.0"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_outside_the_allowed_registries_are_refused_and_nothing_changes()
-> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let op = operator(
        &plane()?.kubeconfig(),
        &ns,
        &[(
            "PARLEY_ALLOWED_IMAGE_REGISTRIES",
            "registry.example.com/team/, localhost:5000, team/",
        )],
    )
    .await?;

    // an author naming an image elsewhere gets nothing at all
    let mut spec = allowed_stores();
    spec["image"] = json!({"repository": "registry.example.org/elsewhere/parley", "tag": "1.0"});
    create(&client, &ns, "refused", spec).await?;
    let (_, reason, message) = degraded(&client, &ns, "refused", |d| d.0 == "True").await?;
    assert_eq!(reason, "ImageNotAllowed", "{message}");
    assert!(
        message.contains("spec.image.repository")
            && message.contains("registry.example.org/elsewhere/parley:1.0")
            && message.contains("registry.example.com/team/"),
        "{message}"
    );
    // the default store images name no registry host: on the runtime's
    // default registry, which `team/` does not cover, and named with their
    // field
    create(
        &client,
        &ns,
        "defaults",
        json!({"image": {"repository": "registry.example.com/team/parley"}}),
    )
    .await?;
    let (_, reason, message) = degraded(&client, &ns, "defaults", |d| d.0 == "True").await?;
    assert_eq!(reason, "ImageNotAllowed", "{message}");
    for (store, repository) in [
        ("redis", "library/redis"),
        ("rabbitmq", "library/rabbitmq"),
        ("mongodb", "library/mongo"),
    ] {
        assert!(
            message.contains(&format!("spec.{store}.managed.image"))
                && message.contains(&format!(
                    "{repository} on the container runtime's default registry"
                )),
            "{store}: {message}"
        );
    }
    assert!(
        message
            .contains("write `library/` to allow the runtime's default registry's official images"),
        "{message}"
    );
    assert!(
        !message.contains("spec.image.repository"),
        "an allowed image refused: {message}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let warned = wait_for("an ImageNotAllowed Event", SETTLE, || async {
        events.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.iter().any(|e| {
                e.reason.as_deref() == Some("ImageNotAllowed")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("registry.example.org/elsewhere/parley"))
            })
        })
    })
    .await;
    warned.map_err(|e| anyhow::anyhow!("{e:#}\n{}", op.output()))?;
    for cc in ["refused", "defaults"] {
        for kind_names in [
            names::<Deployment>(&client, &ns).await?,
            names::<StatefulSet>(&client, &ns).await?,
            names::<ConfigMap>(&client, &ns).await?,
            names::<Secret>(&client, &ns).await?,
            names::<Service>(&client, &ns).await?,
        ] {
            assert!(
                !kind_names.iter().any(|n| n.starts_with(&format!("{cc}-"))),
                "something was made for {cc}: {kind_names:?}"
            );
        }
    }

    // allowed images converge
    let mut spec = allowed_stores();
    spec["image"] = json!({"repository": "registry.example.com/team/parley", "tag": "1.0"});
    create(&client, &ns, "allowed", spec).await?;
    wait_for("every child of the allowed cluster", SETTLE, || {
        support::all_children(&client, &ns, "allowed")
    })
    .await?;
    let chat: Deployment = get(&client, &ns, "allowed-chat").await?;
    let image_of = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].image.clone())
            .unwrap_or_default()
    };
    assert_eq!(image_of(&chat), "registry.example.com/team/parley:1.0");
    // a host-less image under a host-less entry runs as written
    let rabbitmq: StatefulSet = get(&client, &ns, "allowed-rabbitmq").await?;
    assert_eq!(
        rabbitmq
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].image.clone())
            .as_deref(),
        Some("team/rabbitmq:3.13-alpine")
    );

    // an edit to a refused image changes nothing that runs
    let config_before: ConfigMap = get(&client, &ns, "allowed-config").await?;
    let ccs: Api<ChatCluster> = Api::namespaced(client.clone(), &ns);
    ccs.patch(
        "allowed",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {
            "chat": {"image": {"repository": "localhost/team/chat"}},
            "log": "debug",
        }})),
    )
    .await?;
    let (_, reason, message) =
        degraded(&client, &ns, "allowed", |d| d.1 == "ImageNotAllowed").await?;
    // `team/` covers no registry named by its host, localhost included
    assert!(
        message.contains("spec.chat.image.repository")
            && message.contains("localhost/team/chat:1.0")
            && message.contains("list `localhost/`"),
        "{message}"
    );
    assert_eq!(reason, "ImageNotAllowed");
    let chat_after: Deployment = get(&client, &ns, "allowed-chat").await?;
    assert_eq!(
        image_of(&chat_after),
        "registry.example.com/team/parley:1.0"
    );
    // the spec, not the resourceVersion: kube-controller-manager writes
    // the Deployment's status on its own schedule
    assert_eq!(
        (chat_after.metadata.generation, &chat_after.spec),
        (chat.metadata.generation, &chat.spec),
        "the running chat Deployment was changed"
    );
    let config_after: ConfigMap = get(&client, &ns, "allowed-config").await?;
    assert_eq!(
        config_after.resource_version(),
        config_before.resource_version(),
        "spec.log reached the ConfigMap of a refused spec"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_someone_else_made_under_a_generated_name_is_neither_changed_nor_adopted()
-> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // not the operator's: no labels of its own
    secrets
        .create(
            &PostParams::default(),
            &secret("victim-generated", &[("token", "someone else's")])?,
        )
        .await?;
    let before = secrets.get("victim-generated").await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    // every store's volume goes with the ChatCluster: adopting the Secret
    // would make it the ChatCluster's, deleted with it
    let delete = json!({"managed": {"volumeReclaim": "Delete"}});
    create(
        &client,
        &ns,
        "victim",
        json!({"redis": delete, "rabbitmq": delete, "mongodb": delete}),
    )
    .await?;
    let (_, reason, message) = degraded(&client, &ns, "victim", |d| d.0 == "True").await?;
    assert_eq!(reason, "PrepareFailed", "{message}");
    assert!(
        message.contains("victim-generated") && message.contains("not made by parley-operator"),
        "{message}"
    );
    let after = secrets.get("victim-generated").await?;
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "the Secret was changed: {after:#?}"
    );
    assert!(after.owner_references().is_empty());
    assert!(
        !exists::<Deployment>(&client, &ns, "victim-user").await,
        "the cluster ran on a Secret that is not its own"
    );
    Ok(())
}

/// Audit events (JSON) of requests on Secrets in `ns`.
fn secret_requests(ns: &str) -> anyhow::Result<Vec<Value>> {
    let log = std::fs::read_to_string(plane()?.dir.join("audit.log"))?;
    Ok(log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            support::str_at(e, "/objectRef/resource") == "secrets"
                && support::str_at(e, "/objectRef/namespace") == ns
        })
        .collect())
}

/// The request URI of an audit event, its selectors decoded.
fn request_uri(event: &Value) -> String {
    support::str_at(event, "/requestURI")
        .replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%3D", "=")
        .replace("%3d", "=")
}

/// Whether `text` holds `value`, as is or base64-encoded (as Secret data is).
fn holds(text: &str, value: &str) -> bool {
    // Secret data serializes as base64
    let encoded = serde_json::to_string(&k8s_openapi::ByteString(value.as_bytes().to_vec()))
        .unwrap_or_default();
    text.contains(value) || text.contains(encoded.trim_matches('"'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_namespaced_role_the_operator_reads_only_named_secrets_and_copies_no_value()
-> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;

    // the chart's one-namespace RBAC: every rule but the cluster-scoped last
    // one, as a Role in the watched namespace, for the plain test user
    let file: ClusterRole = serde_yaml::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rbac/clusterrole.yaml"
    ))?)?;
    let mut rules: Vec<PolicyRule> = file.rules.unwrap_or_default();
    let cluster_scoped = rules.pop();
    assert!(cluster_scoped.is_some_and(|r| r.resources == Some(vec!["storageclasses".to_owned()])));
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &Role {
                metadata: kube::api::ObjectMeta {
                    name: Some("parley-operator".into()),
                    ..Default::default()
                },
                rules: Some(rules),
            },
        )
        .await?;
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "parley-operator"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "parley-operator"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "parley-operator-test"}],
            }))?,
        )
        .await?;

    // values no object but their own Secret may ever show
    let markers = [
        "smtp-user-7f3a",
        "smtp-pass-9c21",
        "rediss://:redis-pass-4b8e@redis.example.com:6380",
        "private-pem-51d0",
        "public-pem-e6a9",
        "env-only-2c77",
        "unrelated-0d4f",
    ];
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (name, data) in [
        (
            "smtp",
            vec![("username", markers[0]), ("password", markers[1])],
        ),
        ("redis-url", vec![("url", markers[2])]),
        (
            "keys",
            vec![("private.pem", markers[3]), ("public.pem", markers[4])],
        ),
        ("env-only", vec![("token", markers[5])]),
        ("unrelated", vec![("token", markers[6])]),
    ] {
        secrets
            .create(&PostParams::default(), &secret(name, &data)?)
            .await?;
    }
    let op = operator(
        &plane()?.user_kubeconfig()?,
        &ns,
        &[("PARLEY_LEADER_ELECTION", "false")],
    )
    .await?;
    create(
        &client,
        &ns,
        "named",
        json!({
            "smtp": {"credentialsSecret": "smtp"},
            "redis": {"external": {"urlSecret": {"name": "redis-url", "key": "url"}}},
            "auth": {"signingKeySecret": "keys"},
            // the pods read it; the operator has no business with it
            "user": {"env": [{"name": "EXTRA_TOKEN", "valueFrom": {"secretKeyRef": {"name": "env-only", "key": "token"}}}]},
        }),
    )
    .await?;
    let converged = wait_for("the cluster converges under the Role", SETTLE, || async {
        let deployments = names::<Deployment>(&client, &ns).await.unwrap_or_default();
        let ready = get::<ChatCluster>(&client, &ns, "named")
            .await
            .is_ok_and(|cc| {
                condition(&cc, "DependenciesReady").is_some_and(|c| c.0 == "True")
                    && condition(&cc, "Degraded").is_some_and(|c| c.0 == "False")
            });
        ready && deployments.len() == 3
    })
    .await;
    converged.map_err(|e| anyhow::anyhow!("{e:#}\noperator output:\n{}", op.output()))?;
    // what the pods get: the ChatCluster's own token audience
    let config: ConfigMap = get(&client, &ns, "named-config").await?;
    let data = config.data.unwrap_or_default();
    assert_eq!(data["PARLEY_TOKEN_AUDIENCE"], format!("{ns}/named"));
    assert_eq!(data["PARLEY_TOKEN_ISSUER"], "parley-user");

    // every Secret request the operator made names a Secret the cluster
    // names or the one the operator makes for it, or selects by its label
    let named: BTreeSet<&str> = ["smtp", "redis-url", "keys", "named-generated"].into();
    let by_label = "labelSelector=app.kubernetes.io/managed-by=parley-operator";
    let operator_requests: Vec<Value> = secret_requests(&ns)?
        .into_iter()
        .filter(|e| support::str_at(e, "/user/username") == "parley-operator-test")
        .collect();
    let verbs: BTreeSet<&str> = operator_requests
        .iter()
        .map(|e| support::str_at(e, "/verb"))
        .collect();
    // (a watch is audited when it ends; each starts with a list)
    for verb in ["get", "list", "create"] {
        assert!(verbs.contains(verb), "no {verb} audited: {verbs:?}");
    }
    for event in &operator_requests {
        let uri = request_uri(event);
        let verb = support::str_at(event, "/verb");
        let code = event
            .pointer("/responseStatus/code")
            .and_then(Value::as_i64)
            .unwrap_or(200);
        assert_ne!(code, 403, "refused under the namespaced Role: {verb} {uri}");
        for other in ["unrelated", "env-only"] {
            assert!(
                !uri.contains(other),
                "the operator touched {other}: {verb} {uri}"
            );
        }
        match verb {
            "list" | "watch" => {
                let by_name = named
                    .iter()
                    .any(|n| uri.contains(&format!("fieldSelector=metadata.name={n}")));
                assert!(
                    by_name || uri.contains(by_label),
                    "an unfiltered Secret {verb}: {uri}"
                );
            }
            _ => {
                let name = support::str_at(event, "/objectRef/name");
                assert!(named.contains(name), "{verb} of Secret {name:?}: {uri}");
                if verb != "get" {
                    assert_eq!(name, "named-generated", "the operator wrote {name}");
                }
            }
        }
    }

    // no value of a Secret anywhere but in that Secret: not in the status,
    // Events, ConfigMaps, workloads or Services, nor in the Secret the
    // operator made, nor in its log
    let mut shown = Vec::new();
    let cc: ChatCluster = get(&client, &ns, "named").await?;
    shown.push((
        "ChatCluster status".to_owned(),
        serde_json::to_string(&cc.status)?,
    ));
    async fn all_of<K: support::Namespaced + serde::Serialize>(
        client: &Client,
        ns: &str,
        what: &str,
        shown: &mut Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        for o in api.list(&ListParams::default()).await?.items {
            shown.push((
                format!("{what} {}", o.name_any()),
                serde_json::to_string(&o)?,
            ));
        }
        Ok(())
    }
    all_of::<Event>(&client, &ns, "Event", &mut shown).await?;
    all_of::<ConfigMap>(&client, &ns, "ConfigMap", &mut shown).await?;
    all_of::<Deployment>(&client, &ns, "Deployment", &mut shown).await?;
    all_of::<StatefulSet>(&client, &ns, "StatefulSet", &mut shown).await?;
    all_of::<Service>(&client, &ns, "Service", &mut shown).await?;
    let generated: Secret = get(&client, &ns, "named-generated").await?;
    shown.push((
        "Secret named-generated".into(),
        serde_json::to_string(&generated)?,
    ));
    shown.push(("operator log".into(), op.output()));
    for (what, text) in &shown {
        for marker in markers {
            assert!(!holds(text, marker), "{what} shows {marker:?}");
        }
    }
    Ok(())
}
