//! What a ChatCluster refers to and what the operator writes for it, on the
//! control plane: Secrets (field manager, which ones are watched, the
//! DependenciesReady condition) and the default store images the CRD names.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use parley_operator::api::ChatCluster;
use support::{admin, create, get, namespace, operator, plane, wait_for};

/// Generous bound for the operator's reaction on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(15);

/// (status, reason, message) of condition `t`.
fn condition(cc: &ChatCluster, t: &str) -> Option<(String, String, String)> {
    cc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `name`'s DependenciesReady condition satisfies `ok`; returns it.
async fn dependencies(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&(String, String, String)) -> bool,
) -> anyhow::Result<(String, String, String)> {
    let last = std::sync::Mutex::new(None);
    let waited = wait_for(what, SETTLE, || async {
        let found = get::<ChatCluster>(client, ns, name)
            .await
            .ok()
            .and_then(|cc| condition(&cc, "DependenciesReady"));
        let hit = found.as_ref().is_some_and(&ok);
        if let Ok(mut slot) = last.lock() {
            *slot = found;
        }
        hit
    })
    .await;
    let last = last.lock().map(|l| l.clone()).unwrap_or_default();
    waited.map_err(|e| anyhow::anyhow!("{e:#}; last DependenciesReady: {last:?}"))?;
    last.ok_or_else(|| anyhow::anyhow!("no condition"))
}

fn secret(name: &str, data: &[(&str, &str)]) -> anyhow::Result<Secret> {
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}, "stringData": data,
    }))?)
}

/// The labels the operator gives a Secret it makes for ChatCluster `cc`.
fn made_by_the_operator_for(cc: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("app.kubernetes.io/managed-by", "parley-operator"),
        ("app.kubernetes.io/instance", cc),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_the_operator_writes_carry_its_field_manager() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // an older operator's generated Secret, lacking keys: the operator adds them
    let as_tests = PostParams {
        field_manager: Some("parley-tests".into()),
        ..Default::default()
    };
    // (older operators labelled their Secrets as this one does)
    let mut old = secret("old-generated", &[("otp-secret", "kept")])?;
    old.metadata.labels = Some(made_by_the_operator_for("old"));
    secrets.create(&as_tests, &old).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "fresh", serde_json::json!({})).await?;
    create(&client, &ns, "old", serde_json::json!({})).await?;
    for name in ["fresh-jwt", "fresh-generated"] {
        wait_for(name, SETTLE, || async {
            secrets.get_opt(name).await.ok().flatten().is_some()
        })
        .await?;
    }
    wait_for("keys added to old-generated", SETTLE, || async {
        secrets
            .get_opt("old-generated")
            .await
            .ok()
            .flatten()
            .and_then(|s| s.data)
            .is_some_and(|d| d.contains_key("redis-password"))
    })
    .await?;
    for name in ["fresh-jwt", "fresh-generated", "old-generated"] {
        let managers: Vec<String> = secrets
            .get(name)
            .await?
            .managed_fields()
            .iter()
            .filter_map(|f| f.manager.clone())
            .collect();
        let expected: &[&str] = if name == "old-generated" {
            &["parley-tests", "parley-operator"]
        } else {
            &["parley-operator"]
        };
        let mut got = managers.clone();
        got.sort();
        let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        assert_eq!(got, want, "{name}: managers {managers:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_ready_is_not_claimed_while_paused_or_invalid() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "paused", serde_json::json!({"paused": true})).await?;
    create(
        &client,
        &ns,
        "invalid",
        serde_json::json!({"chat": {"autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 2}}}),
    )
    .await?;
    for (name, reason) in [("paused", "Paused"), ("invalid", "InvalidSpec")] {
        let deps = dependencies(&client, &ns, name, name, |_| true).await?;
        assert_eq!(deps.0, "Unknown", "{name}: {deps:?}");
        assert_eq!(deps.1, reason, "{name}: {deps:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_ready_checks_the_public_key_and_the_smtp_username() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &secret("keys", &[("private.pem", "priv")])?,
        )
        .await?;
    secrets
        .create(
            &PostParams::default(),
            &secret("smtp", &[("password", "p")])?,
        )
        .await?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(
        &client,
        &ns,
        "refs",
        serde_json::json!({
            "auth": {"signingKeySecret": "keys"},
            "smtp": {"credentialsSecret": "smtp"},
        }),
    )
    .await?;
    let deps = dependencies(&client, &ns, "refs", "both keys named", |d| {
        d.0 == "False" && d.2.contains("keys/public.pem") && d.2.contains("smtp/username")
    })
    .await?;
    assert_eq!(deps.1, "SecretMissing", "{deps:?}");
    // supplying them is noticed through the Secret watch
    secrets
        .replace(
            "keys",
            &PostParams::default(),
            &secret("keys", &[("private.pem", "priv"), ("public.pem", "pub")])?,
        )
        .await?;
    secrets
        .replace(
            "smtp",
            &PostParams::default(),
            &secret("smtp", &[("username", "u"), ("password", "p")])?,
        )
        .await?;
    dependencies(&client, &ns, "refs", "DependenciesReady True", |d| {
        d.0 == "True"
    })
    .await?;
    Ok(())
}

/// The rollout hash on the pod template of `kind/name`.
async fn config_hash(client: &Client, ns: &str, name: &str) -> Option<String> {
    let template = if name.starts_with("own-redis") {
        get::<StatefulSet>(client, ns, name)
            .await
            .ok()?
            .spec?
            .template
    } else {
        get::<Deployment>(client, ns, name)
            .await
            .ok()?
            .spec?
            .template
    };
    template
        .metadata?
        .annotations?
        .get("parley.dev/config-hash")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_secrets_under_own_key_names_are_checked_wired_and_rolled() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    for s in [
        secret("keys", &[("tls.key", "priv"), ("tls.pub", "pub")])?,
        secret("mailer", &[("user", "u"), ("pass", "p")])?,
        // not usable: a space, and a plain URL while a CA is given
        secret("redis-own", &[("pw", "has a space in it, 16+")])?,
        secret("mq", &[("url", "amqp://mq.example:5672/%2f"), ("ca", ca)])?,
    ] {
        secrets.create(&pp, &s).await?;
    }
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(
        &client,
        &ns,
        "own",
        serde_json::json!({
            "auth": {"signingKeySecret": "keys", "privateKeyKey": "tls.key", "publicKeyKey": "tls.pub"},
            "smtp": {"credentialsSecret": "mailer", "usernameKey": "user", "passwordKey": "pass"},
            "redis": {"managed": {"passwordSecret": {"name": "redis-own", "key": "pw"}}},
            "rabbitmq": {"external": {"urlSecret": {"name": "mq"}, "caSecret": {"name": "mq", "key": "ca"}}},
        }),
    )
    .await?;
    let deps = dependencies(&client, &ns, "own", "both problems named", |d| {
        d.0 == "False" && d.2.contains("redis-own/pw") && d.2.contains("mq/url")
    })
    .await?;
    assert_eq!(deps.1, "SecretUnusable", "{deps:?}");
    assert!(deps.2.contains("amqps://"), "{deps:?}");
    // fixed in place: noticed through the Secret watch
    secrets
        .replace(
            "redis-own",
            &pp,
            &secret("redis-own", &[("pw", "Own-redis-password-0123")])?,
        )
        .await?;
    secrets
        .replace(
            "mq",
            &pp,
            &secret("mq", &[("url", "amqps://mq.example:5671/%2f"), ("ca", ca)])?,
        )
        .await?;
    dependencies(&client, &ns, "own", "DependenciesReady True", |d| {
        d.0 == "True"
    })
    .await?;
    // the chat pods mount the CA under their file and read the own password
    let chat: Deployment = get(&client, &ns, "own-chat").await?;
    let pod = chat
        .spec
        .and_then(|s| s.template.spec)
        .ok_or_else(|| anyhow::anyhow!("no pod spec"))?;
    let env = serde_json::to_value(&pod.containers[0].env)?;
    let find = |name: &str| {
        env.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        find("PARLEY_AMQP_CA_FILE")["value"],
        "/etc/parley/ca/rabbitmq/ca.crt"
    );
    assert_eq!(
        find("REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]["name"],
        "redis-own"
    );
    let volumes = serde_json::to_value(&pod.volumes)?;
    assert!(
        volumes
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["name"] == "rabbitmq-ca"
                && v["secret"]["secretName"] == "mq"
                && v["secret"]["items"][0]["key"] == "ca"),
        "{volumes}"
    );
    // a new CA rolls the services, never the Redis the operator runs
    let services = ["own-user", "own-chat", "own-mail"];
    let mut before = Vec::new();
    for name in services.iter().chain(["own-redis"].iter()) {
        before.push(config_hash(&client, &ns, name).await);
    }
    secrets
        .replace(
            "mq",
            &pp,
            &secret(
                "mq",
                &[
                    ("url", "amqps://mq.example:5671/%2f"),
                    ("ca", &format!("{ca}{ca}")),
                ],
            )?,
        )
        .await?;
    wait_for("the services roll for the new CA", SETTLE, || async {
        let mut all = true;
        for (i, name) in services.iter().enumerate() {
            all &= config_hash(&client, &ns, name).await != before[i];
        }
        all
    })
    .await?;
    assert_eq!(
        config_hash(&client, &ns, "own-redis").await,
        before[3],
        "Redis rolled"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_names_the_store_images_the_operator_runs() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    // the CRD as the API server serves it (what `kubectl explain` shows)
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get("chatclusters.parley.dev")
        .await?;
    let schema = serde_json::to_value(&crd.spec.versions[0].schema)?;
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(&client, &ns, "images", serde_json::json!({})).await?;
    for store in ["redis", "rabbitmq", "mongodb"] {
        let name = format!("images-{store}");
        wait_for(&name, SETTLE, || async {
            support::exists::<StatefulSet>(&client, &ns, &name).await
        })
        .await?;
        let set: StatefulSet = get(&client, &ns, &name).await?;
        let image = set
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.containers.first().and_then(|c| c.image.clone()))
            .unwrap_or_default();
        let pointer = format!(
            "/openAPIV3Schema/properties/spec/properties/{store}/properties/managed/properties/image/description"
        );
        let text = schema
            .pointer(&pointer)
            .and_then(|d| d.as_str())
            .unwrap_or_default();
        assert!(
            !image.is_empty() && text.contains(&format!("`{image}`")),
            "{store} runs {image:?}, the CRD says {text:?}"
        );
    }
    Ok(())
}

/// Audit events (JSON) of Secret lists and watches in `ns`.
fn secret_reads(ns: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let log = std::fs::read_to_string(plane()?.dir.join("audit.log"))?;
    Ok(log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e.pointer("/objectRef/resource").and_then(|v| v.as_str()) == Some("secrets")
                && e.pointer("/objectRef/namespace").and_then(|v| v.as_str()) == Some(ns)
                && matches!(
                    e.get("verb").and_then(|v| v.as_str()),
                    Some("list" | "watch")
                )
        })
        .collect())
}

/// The request URI of an audit event, its selectors decoded.
fn request_uri(event: &serde_json::Value) -> String {
    event
        .get("requestURI")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%3D", "=")
        .replace("%3d", "=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_secrets_the_operator_creates_or_a_cluster_names_are_watched_as_metadata()
-> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (name, data) in [
        ("smtp", &[("username", "u"), ("password", "p")][..]),
        ("unrelated", &[("token", "not the operator's business")][..]),
    ] {
        secrets
            .create(&PostParams::default(), &secret(name, data)?)
            .await?;
    }
    let _op = operator(&plane()?.kubeconfig(), &ns, &[]).await?;
    create(
        &client,
        &ns,
        "watched",
        serde_json::json!({"smtp": {"credentialsSecret": "smtp"}}),
    )
    .await?;
    dependencies(&client, &ns, "watched", "DependenciesReady True", |d| {
        d.0 == "True"
    })
    .await?;
    let by_name = "fieldSelector=metadata.name=smtp";
    let by_label = "labelSelector=app.kubernetes.io/managed-by=parley-operator";
    // a watch starts with a list; an idle watch is audited only when it ends
    wait_for("a list of the named Secret", SETTLE, || async {
        secret_reads(&ns)
            .is_ok_and(|events| events.iter().any(|e| request_uri(e).contains(by_name)))
    })
    .await?;
    let events = secret_reads(&ns)?;
    assert!(
        events.iter().any(|e| request_uri(e).contains(by_label)),
        "no watch of the operator's own Secrets: {events:#?}"
    );
    for event in &events {
        let uri = request_uri(event);
        assert!(
            uri.contains(by_name) || uri.contains(by_label),
            "an unfiltered Secret read: {uri}"
        );
        if event.get("verb").and_then(|v| v.as_str()) == Some("list")
            && event.get("stage").and_then(|v| v.as_str()) == Some("ResponseComplete")
        {
            assert_eq!(
                event
                    .pointer("/responseObject/kind")
                    .and_then(|v| v.as_str()),
                Some("PartialObjectMetadataList"),
                "a Secret list with data: {uri}"
            );
        }
    }
    Ok(())
}
