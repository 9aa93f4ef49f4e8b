//! A real Kubernetes control plane for the operator's integration tests.
//!
//! `e2e/controlplane/start.sh` (which builds or finds the binaries through
//! `ensure.sh`) runs etcd, kube-apiserver and kube-controller-manager once per
//! test binary; it stops them when this process exits. Each test gets its own
//! namespace and its own operator process watching only that namespace.

#![allow(dead_code)]

pub mod stall;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Api, Client, Resource};
use parley_operator::api::ChatCluster;
use parley_testkit::ServiceProcess;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The running control plane.
pub struct ControlPlane {
    pub dir: PathBuf,
    child: Child,
    /// Stopped (SIGTERM to the script, which stops every process) on drop.
    dedicated: bool,
}

static PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// Removes the state of earlier test runs whose process is gone.
fn remove_stale_state(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rest = name.trim_start_matches("cp-").trim_end_matches(".log");
        let pid = rest.split('-').next().unwrap_or(rest);
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

fn start() -> anyhow::Result<ControlPlane> {
    remove_stale_state(Path::new("/var/tmp/parley/operator-tests"));
    start_in(PathBuf::from(format!(
        "/var/tmp/parley/operator-tests/cp-{}",
        std::process::id()
    )))
}

fn start_in(dir: PathBuf) -> anyhow::Result<ControlPlane> {
    let root = parley_testkit::workspace_root();
    let script = root.join("e2e/controlplane/start.sh");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.with_extension("log"))?;
    let mut child = Command::new(&script)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("running {}", script.display()))?;
    // scripts/test builds the binaries first; a first run without it may
    // build them from source here (7 minutes on an idle machine).
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    while !dir.join("ready").exists() {
        if let Some(status) = child.try_wait()? {
            let out = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
            bail!("control plane failed to start ({status}):\n{out}");
        }
        if Instant::now() > deadline {
            bail!(
                "control plane not ready after 20 minutes; see {}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ControlPlane {
        dir,
        child,
        dedicated: false,
    })
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`, `KILL`) to `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// The shared control plane, started on first use. Fails (never skips) with the reason.
pub fn plane() -> anyhow::Result<&'static ControlPlane> {
    match PLANE.get_or_init(|| start().map_err(|e| format!("{e:#}"))) {
        Ok(p) => Ok(p),
        Err(e) => bail!("no Kubernetes control plane: {e}"),
    }
}

impl ControlPlane {
    /// A control plane of the calling test's own, which it may freeze or
    /// kill; stopped when dropped.
    pub async fn dedicated() -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!(
            "/var/tmp/parley/operator-tests/cp-{}-{}",
            std::process::id(),
            parley_testkit::short_id()
        ));
        let mut plane = tokio::task::spawn_blocking(move || start_in(dir)).await??;
        plane.dedicated = true;
        Ok(plane)
    }

    /// The kube-apiserver's process id.
    pub fn apiserver_pid(&self) -> anyhow::Result<u32> {
        let pid = std::fs::read_to_string(self.dir.join("apiserver.pid"))
            .context("no apiserver.pid: start.sh too old?")?;
        Ok(pid.trim().parse()?)
    }

    /// Freezes the API server (SIGSTOP): connections open but nothing
    /// answers, as when the network to it drops packets.
    pub fn freeze_apiserver(&self) -> anyhow::Result<()> {
        signal(self.apiserver_pid()?, "STOP")
    }

    /// Lets a frozen API server run again.
    pub fn thaw_apiserver(&self) -> anyhow::Result<()> {
        signal(self.apiserver_pid()?, "CONT")
    }

    /// Kills the API server (SIGKILL): connections are refused from now
    /// on. The rest of a dedicated plane stops with it.
    pub fn kill_apiserver(&self) -> anyhow::Result<()> {
        signal(self.apiserver_pid()?, "KILL")
    }

    /// The server URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("server"))?
            .trim()
            .to_owned())
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A kubeconfig authenticating with the plain user's token.
    pub fn user_kubeconfig(&self) -> anyhow::Result<PathBuf> {
        let user_token = std::fs::read_to_string(self.dir.join("user-token"))?;
        self.kubeconfig_with_token(&self.dir.join("user-kubeconfig"), user_token.trim())
    }

    /// Writes to `path` a copy of the admin kubeconfig that reaches the API
    /// server at `server` (a proxy in front of it) instead.
    pub fn kubeconfig_via(&self, path: &Path, server: &str) -> anyhow::Result<PathBuf> {
        let admin = std::fs::read_to_string(self.kubeconfig())?;
        let own = self.server()?;
        ensure!(admin.contains(&own), "server {own} not found");
        std::fs::write(path, admin.replace(&own, server))?;
        Ok(path.to_path_buf())
    }

    /// Writes to `path` a copy of the admin kubeconfig that authenticates with `token`.
    pub fn kubeconfig_with_token(&self, path: &Path, token: &str) -> anyhow::Result<PathBuf> {
        let admin = std::fs::read_to_string(self.kubeconfig())?;
        let admin_token = std::fs::read_to_string(self.dir.join("admin-token"))?;
        ensure!(admin.contains(admin_token.trim()), "admin token not found");
        std::fs::write(path, admin.replace(admin_token.trim(), token))?;
        Ok(path.to_path_buf())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if !self.dedicated {
            return;
        }
        // SIGTERM: the script's trap wakes and stops every process it started
        let _ = signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// A client for `kubeconfig`.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<Client> {
    parley_operator::install_crypto();
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// An admin client, with the CRD installed and established.
pub async fn admin() -> anyhow::Result<Client> {
    admin_of(plane()?).await
}

/// An admin client of `plane`, with the CRD installed and established.
pub async fn admin_of(plane: &ControlPlane) -> anyhow::Result<Client> {
    let client = client_for(&plane.kubeconfig()).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Tests start together: concurrent first applies race to create it (409).
    let mut attempt = 0;
    loop {
        let applied = crds
            .patch(
                "chatclusters.parley.dev",
                &PatchParams::apply("parley-tests").force(),
                &Patch::Apply(parley_operator::crd::crd()),
            )
            .await;
        match applied {
            Ok(_) => break,
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing_free_note(&e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("installing the ChatCluster CRD"),
        }
    }
    wait_for("CRD established", Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            crds.get_opt("chatclusters.parley.dev")
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        }
    })
    .await?;
    Ok(client)
}

fn tracing_free_note(e: &kube::Error) {
    eprintln!("retrying the CRD install after: {e}");
}

/// A fresh namespace.
pub async fn namespace(client: &Client) -> anyhow::Result<String> {
    let name = format!("t-{}", parley_testkit::short_id().to_lowercase());
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name }
    }))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(name)
}

/// Starts the operator binary watching `namespace` with `kubeconfig`.
pub async fn operator(
    kubeconfig: &Path,
    namespace: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<ServiceProcess> {
    let mut env = vec![
        ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
        ("PARLEY_WATCH_NAMESPACE".to_owned(), namespace.to_owned()),
        ("PARLEY_LEASE_NAMESPACE".to_owned(), namespace.to_owned()),
        (
            "PARLEY_LOG".to_owned(),
            "info,parley_operator=debug".to_owned(),
        ),
    ];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let op = ServiceProcess::spawn(env!("CARGO_BIN_EXE_parley-operator"), &env)?;
    op.wait_ready(Duration::from_secs(20)).await?;
    Ok(op)
}

/// Polls until `probe` holds (50 ms steps).
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, probe: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    parley_testkit::wait_until(what, timeout, probe).await
}

/// Marks every pod in `ns` running and ready, as a kubelet would; the real
/// ReplicaSet, Deployment and StatefulSet controllers then count them ready.
/// Returns how many pods it marked.
pub async fn mark_ready(client: &Client, ns: &str) -> anyhow::Result<usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut marked = 0;
    for pod in pods.list(&Default::default()).await? {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
        }});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        marked += 1;
    }
    Ok(marked)
}

/// Creates a ChatCluster `name` with `spec` (JSON).
pub async fn create(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), ns);
    let cc: ChatCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "parley.dev/v1alpha1", "kind": "ChatCluster",
        "metadata": {"name": name}, "spec": spec,
    }))?;
    api.create(&PostParams::default(), &cc).await?;
    Ok(())
}

/// A namespaced Kubernetes object kind the helpers below can read.
pub trait Namespaced:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// Whether the object exists.
pub async fn exists<K: Namespaced>(client: &Client, ns: &str, name: &str) -> bool {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    matches!(api.get_opt(name).await, Ok(Some(_)))
}

/// Whether the object exists and is not being deleted (a child the operator restored).
pub async fn present<K: Namespaced>(client: &Client, ns: &str, name: &str) -> bool {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    matches!(api.get_opt(name).await, Ok(Some(o)) if o.meta().deletion_timestamp.is_none())
}

/// The string at JSON `pointer`, or "".
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn gvk_of(doc: &Value) -> GroupVersionKind {
    let api_version = str_at(doc, "/apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, str_at(doc, "/kind"))
}

/// Server-side applies every object (as JSON) the server serves, namespaced
/// ones into their own namespace or else `default_ns`; returns the
/// `apiVersion/Kind` of those it skipped because it does not serve their API.
pub async fn apply_all(
    client: &Client,
    discovery: &Discovery,
    docs: &[Value],
    default_ns: Option<&str>,
) -> anyhow::Result<BTreeSet<String>> {
    let mut skipped = BTreeSet::new();
    let params = PatchParams::apply("parley-tests").force();
    for doc in docs {
        let gvk = gvk_of(doc);
        let name = str_at(doc, "/metadata/name");
        let Some((ar, caps)) = discovery.resolve_gvk(&gvk) else {
            skipped.insert(format!("{}/{}", str_at(doc, "/apiVersion"), gvk.kind));
            continue;
        };
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &ar),
            Scope::Namespaced => {
                let ns = Some(str_at(doc, "/metadata/namespace"))
                    .filter(|ns| !ns.is_empty())
                    .or(default_ns)
                    .with_context(|| format!("{} {name} has no namespace", gvk.kind))?;
                Api::namespaced_with(client.clone(), ns, &ar)
            }
        };
        api.patch(name, &params, &Patch::Apply(doc))
            .await
            .with_context(|| format!("applying {} {name}", gvk.kind))?;
    }
    Ok(skipped)
}

/// Reads an object.
pub async fn get<K: Namespaced>(client: &Client, ns: &str, name: &str) -> anyhow::Result<K> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(api.get(name).await?)
}

/// Every child a default ChatCluster named `name` must have.
pub async fn all_children(client: &Client, ns: &str, name: &str) -> bool {
    for c in ["user", "chat", "mail"] {
        if !exists::<Deployment>(client, ns, &format!("{name}-{c}")).await
            || !exists::<Service>(client, ns, &format!("{name}-{c}")).await
        {
            return false;
        }
    }
    for s in ["redis", "rabbitmq", "mongodb"] {
        if !exists::<StatefulSet>(client, ns, &format!("{name}-{s}")).await
            || !exists::<Service>(client, ns, &format!("{name}-{s}")).await
            || !exists::<NetworkPolicy>(client, ns, &format!("{name}-{s}")).await
        {
            return false;
        }
    }
    exists::<ConfigMap>(client, ns, &format!("{name}-config")).await
        && exists::<Secret>(client, ns, &format!("{name}-jwt")).await
        && exists::<Secret>(client, ns, &format!("{name}-generated")).await
        && exists::<ServiceAccount>(client, ns, &format!("{name}-parley")).await
}
