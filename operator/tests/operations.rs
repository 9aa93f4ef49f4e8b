//! Operating the operator: restricted RBAC, leader election, idling,
//! restarts half-way, metrics.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use parley_testkit::ServiceProcess;
use support::{admin, all_children, create, namespace, operator, plane, wait_for};

/// Sum of `parley_operator_reconciles_total` over its labels.
async fn reconciles(op: &ServiceProcess) -> anyhow::Result<f64> {
    let text = op
        .http()
        .get(op.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("parley_operator_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_under_the_chart_clusterrole_converges() -> anyhow::Result<()> {
    let client = admin().await?;
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rbac/clusterrole.yaml"
    ))?;
    let role: ClusterRole = serde_yaml::from_str(&yaml)?;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    roles
        .patch(
            "parley-operator",
            &PatchParams::apply("parley-tests").force(),
            &Patch::Apply(&role),
        )
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "parley-operator-test"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "parley-operator"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "parley-operator-test"}],
    }))?;
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    bindings
        .patch(
            "parley-operator-test",
            &PatchParams::apply("parley-tests").force(),
            &Patch::Apply(&binding),
        )
        .await?;

    // the plain user really is restricted: it may not read namespaces
    let user_client = support::client_for(&plane()?.user_kubeconfig()?).await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(user_client);
    assert!(
        namespaces.list(&ListParams::default()).await.is_err(),
        "the test user is not restricted"
    );

    let ns = namespace(&client).await?;
    // the leader-election Lease: a Role in the operator's own namespace only
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rbac/leader-election-role.yaml"
    ))?;
    let lease_role: Role = serde_yaml::from_str(&yaml)?;
    let lease_role_name = lease_role.name_any();
    Api::<Role>::namespaced(client.clone(), &ns)
        .patch(
            &lease_role_name,
            &PatchParams::apply("parley-tests").force(),
            &Patch::Apply(&lease_role),
        )
        .await?;
    let lease_binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "parley-operator-test-leader-election"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": lease_role_name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "parley-operator-test"}],
    }))?;
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .patch(
            "parley-operator-test-leader-election",
            &PatchParams::apply("parley-tests").force(),
            &Patch::Apply(&lease_binding),
        )
        .await?;

    let op = operator(&plane()?.user_kubeconfig()?, &ns, &[]).await?;
    create(
        &client,
        &ns,
        "rbac",
        serde_json::json!({"redis": {"managed": {"volumeReclaim": "Delete"}}}),
    )
    .await?;
    wait_for(
        "every child under restricted RBAC",
        Duration::from_secs(10),
        || all_children(&client, &ns, "rbac"),
    )
    .await?;
    wait_for(
        "status written under restricted RBAC",
        Duration::from_secs(5),
        || async {
            support::get::<parley_operator::api::ChatCluster>(&client, &ns, "rbac")
                .await
                .is_ok_and(|cc| cc.status.is_some())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\noutput:\n{}", op.output()))?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    assert!(
        leases.get_opt("parley-operator").await?.is_some(),
        "the operator took no Lease under its Role"
    );
    let out = op.output();
    assert!(
        !out.contains("forbidden"),
        "operator hit RBAC refusals:\n{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_operators_only_the_leader_acts_and_the_other_takes_over() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let kc = plane()?.kubeconfig();
    let mut a = operator(&kc, &ns, &[("PARLEY_IDENTITY", "op-a")]).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    wait_for("op-a holds the lease", Duration::from_secs(10), || async {
        leases
            .get_opt("parley-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .as_deref()
            == Some("op-a")
    })
    .await?;
    let b = operator(&kc, &ns, &[("PARLEY_IDENTITY", "op-b")]).await?;
    create(&client, &ns, "duo", serde_json::json!({})).await?;
    wait_for("every child", Duration::from_secs(5), || {
        all_children(&client, &ns, "duo")
    })
    .await?;
    wait_for(
        "the leader counts its reconciles",
        Duration::from_secs(5),
        || async { reconciles(&a).await.unwrap_or(0.0) >= 1.0 },
    )
    .await?;
    assert_eq!(
        reconciles(&b).await?,
        0.0,
        "the follower reconciled:\n{}",
        b.output()
    );
    assert!(!b.output().contains("controller starting"));

    // the leader stops cleanly and releases the lease: the follower takes over at once and repairs drift
    a.terminate(Duration::from_secs(10)).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .delete("duo-chat", &DeleteParams::default())
        .await?;
    wait_for(
        "op-b took over and restored the Deployment",
        Duration::from_secs(10),
        || async {
            deployments
                .get_opt("duo-chat")
                .await
                .ok()
                .flatten()
                .is_some_and(|d| d.metadata.deletion_timestamp.is_none())
        },
    )
    .await?;
    let holder = leases
        .get("parley-operator")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("op-b"));
    wait_for(
        "the new leader counts its reconciles",
        Duration::from_secs(5),
        || async { reconciles(&b).await.unwrap_or(0.0) >= 1.0 },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_operator_does_not_spin() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let op = operator(
        &plane()?.kubeconfig(),
        &ns,
        &[("PARLEY_RESYNC_SECS", "300")],
    )
    .await?;
    create(&client, &ns, "idle", serde_json::json!({})).await?;
    wait_for("every child", Duration::from_secs(5), || {
        all_children(&client, &ns, "idle")
    })
    .await?;
    // converged: the count stops moving for 3 s
    let mut last = reconciles(&op).await?;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = reconciles(&op).await?;
        if now == last {
            break;
        }
        last = now;
    }
    let converged = reconciles(&op).await?;
    assert!(converged >= 1.0, "no reconcile was counted");
    // measurement window, not a readiness wait
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle = reconciles(&op).await? - converged;
    println!("reconciles after convergence: {converged}; during 30 idle seconds: {idle}");
    assert_eq!(idle, 0.0, "reconcile loop spins while idle");
    let metrics = op
        .http()
        .get(op.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("parley_operator_reconcile_duration_seconds"));
    let health = op.http().get(op.url("/healthz")).send().await?;
    assert_eq!(health.status().as_u16(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restarted_half_way_converges_without_duplicates() -> anyhow::Result<()> {
    let client = admin().await?;
    let ns = namespace(&client).await?;
    let kc = plane()?.kubeconfig();
    let mut first = operator(&kc, &ns, &[("PARLEY_IDENTITY", "first")]).await?;
    let names: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
    for n in &names {
        create(&client, &ns, n, serde_json::json!({})).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    wait_for("a first signing key", Duration::from_secs(5), || async {
        secrets
            .list(&ListParams::default())
            .await
            .is_ok_and(|l| l.items.iter().any(|s| s.name_any().ends_with("-jwt")))
    })
    .await?;
    first.kill().await?;
    let keys_before: Vec<(String, String)> = secrets
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|s| s.name_any().ends_with("-jwt"))
        .map(|s| (s.name_any(), s.uid().unwrap_or_default()))
        .collect();
    // the killed holder's lease must expire before the second can lead
    let _second = operator(&kc, &ns, &[("PARLEY_IDENTITY", "second")]).await?;
    for n in &names {
        wait_for(&format!("children of {n}"), Duration::from_secs(40), || {
            all_children(&client, &ns, n)
        })
        .await?;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        deployments.list(&ListParams::default()).await?.items.len(),
        15
    );
    for (name, uid) in keys_before {
        assert_eq!(
            secrets.get(&name).await?.uid().unwrap_or_default(),
            uid,
            "{name} was replaced"
        );
    }
    Ok(())
}
