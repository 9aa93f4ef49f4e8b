//! The reconcile loop: validate → ensure generated Secrets → dereference →
//! build → apply → status. Each step lives in its own module; this file only
//! strings them together and runs the kube-runtime controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::api::ChatCluster;
use crate::dereference::{DiscoveryCache, dereference};
use crate::status::{Observed, compute, observe_workloads};
use crate::{apply, build, status, validate};

/// Label selector for the children the controller watches.
pub const CHILD_SELECTOR: &str = "app.kubernetes.io/managed-by=parley-operator";

/// Shared state of the reconciler.
pub struct Context {
    /// API client for requests (with read timeouts).
    pub client: Client,
    /// API client for the controller's watches (see [`crate::client::Clients`]).
    pub watch_client: Client,
    /// Discovery results.
    pub discovery: DiscoveryCache,
    /// How often a converged ChatCluster is checked again without any event.
    pub resync: Duration,
    /// Publishes Kubernetes Events about ChatClusters.
    pub recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A reconciler context.
    pub fn new(client: Client, resync: Duration, identity: &str) -> Self {
        let reporter = Reporter {
            controller: "parley-operator".into(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            watch_client: client.clone(),
            client,
            discovery: DiscoveryCache::default(),
            resync,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Watches through `client` instead of the request client.
    pub fn with_watch_client(mut self, client: Client) -> Self {
        self.watch_client = client;
        self
    }

    /// Publishes an Event about `cc`; failures are logged, never fatal.
    pub async fn event(&self, cc: &ChatCluster, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &cc.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// Anything else, with context.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Reconciles one ChatCluster.
pub async fn reconcile(cc: Arc<ChatCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&cc, &ctx).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("parley_operator_reconciles_total", "result" => outcome).increment(1);
    metrics::histogram!("parley_operator_reconcile_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&cc.uid().unwrap_or_default());
    }
    result
}

async fn reconcile_inner(cc: &ChatCluster, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = cc.namespace().unwrap_or_else(|| "default".into());
    if cc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    tracing::debug!(name = %cc.name_any(), namespace = %ns, "reconciling");
    if cc.spec.paused {
        let observed = Observed {
            paused: true,
            components: observe_workloads(client, cc, &ns).await?,
            ..Default::default()
        };
        write_status(ctx, cc, &ns, &observed).await?;
        return Ok(Action::requeue(ctx.resync));
    }
    if let Err(errors) = validate::validate(&cc.spec) {
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        tracing::warn!(name = %cc.name_any(), namespace = %ns, errors = %messages.join("; "), "invalid spec; nothing changed");
        let observed = Observed {
            spec_errors: messages,
            ..Default::default()
        };
        ctx.event(cc, true, "InvalidSpec", observed.spec_errors.join("; "))
            .await;
        write_status(ctx, cc, &ns, &observed).await?;
        // A spec change (a watch event) is the only thing that can fix it.
        return Ok(Action::await_change());
    }
    let generated = apply::ensure_generated_secrets(client, cc, &ns).await?;
    if generated > 0 {
        let note = format!("created {generated} generated Secret(s); they are never replaced");
        ctx.event(cc, false, "SecretsGenerated", note).await;
    }
    let deref = dereference(client, cc, &ns, &ctx.discovery).await?;
    let desired = build::desired(
        cc,
        &build::Context {
            secrets: deref.secrets,
            apis: deref.apis,
        },
    );
    let applied = apply::apply_desired(client, cc, &ns, &desired, deref.apis).await;
    let apply_error = applied.as_ref().err().map(ToString::to_string);
    if let Some(e) = &apply_error {
        ctx.event(cc, true, "ApplyFailed", e.clone()).await;
    }
    if applied.is_ok() {
        apply::own_deletable_volumes(client, cc, &ns).await?;
    }
    let observed = Observed {
        apply_error: apply_error.clone(),
        missing: deref.missing,
        dependencies_checked: true,
        apis: Some(deref.apis),
        components: observe_workloads(client, cc, &ns).await?,
        ..Default::default()
    };
    write_status(ctx, cc, &ns, &observed).await?;
    match applied {
        Ok(_) => Ok(Action::requeue(ctx.resync)),
        Err(e) => Err(e.into()),
    }
}

/// Computes and writes the status; publishes an Event when the phase changes.
async fn write_status(
    ctx: &Context,
    cc: &ChatCluster,
    ns: &str,
    observed: &Observed,
) -> Result<(), kube::Error> {
    let new = compute(cc, observed, &now());
    let before = cc.status.as_ref().and_then(|s| s.phase);
    let after = new.phase;
    if status::write(&ctx.client, cc, ns, new).await? && before != after {
        let note = format!("phase {before:?} -> {after:?}");
        ctx.event(cc, false, "PhaseChanged", note).await;
    }
    Ok(())
}

/// The ChatClusters in `secret`'s namespace that read it (`secret` may be
/// the whole Secret or only its metadata).
pub fn clusters_reading<K: Resource>(
    secret: &K,
    clusters: &[Arc<ChatCluster>],
) -> Vec<ObjectRef<ChatCluster>> {
    let name = secret.name_any();
    clusters
        .iter()
        .filter(|cc| cc.namespace() == secret.namespace())
        .filter(|cc| {
            crate::dereference::secret_refs(cc)
                .iter()
                .any(|(n, _)| *n == name)
        })
        .map(|cc| ObjectRef::from_obj(cc.as_ref()))
        .collect()
}

/// Backoff after failures: 1 s, 2 s, 4 s … capped at 60 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

/// Requeues a failed ChatCluster with exponential backoff.
pub fn error_policy(cc: Arc<ChatCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    metrics::counter!("parley_operator_reconcile_errors_total").increment(1);
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(cc.uid().unwrap_or_default()).or_insert(0);
            *n += 1;
            *n
        })
        .unwrap_or(1);
    tracing::warn!(name = %cc.name_any(), error = %error, failures = n, "reconcile failed");
    Action::requeue(backoff(n - 1))
}

/// Runs the controller until `shutdown` is cancelled. `namespace` limits it to one namespace.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let client = ctx.watch_client.clone();
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let children = watcher::Config::default().labels(CHILD_SELECTOR);
    let controller = Controller::new(
        api::<ChatCluster>(&client, &namespace),
        watcher::Config::default(),
    );
    let store = controller.store();
    // a changed Secret (signing key, SMTP credentials, store URLs) rolls the
    // pods; only the operator's own and the named ones are watched, metadata only
    let secrets = crate::secret_watch::events(
        client.clone(),
        namespace.clone(),
        store.clone(),
        CHILD_SELECTOR,
    );
    controller
        .watches_stream(secrets, move |secret| {
            clusters_reading(&secret, &store.state())
        })
        // store volumes appear after their StatefulSet: `Delete` ones get owned then
        .watches(
            api::<PersistentVolumeClaim>(&client, &namespace),
            children.clone(),
            |pvc| {
                let instance = pvc.labels().get(build::INSTANCE_LABEL).cloned();
                let ns = pvc.namespace();
                instance.map(|name| {
                    let r = ObjectRef::<ChatCluster>::new(&name);
                    match ns {
                        Some(ns) => r.within(&ns),
                        None => r,
                    }
                })
            },
        )
        .owns(api::<Deployment>(&client, &namespace), children.clone())
        .owns(api::<StatefulSet>(&client, &namespace), children.clone())
        .owns(api::<Service>(&client, &namespace), children.clone())
        .owns(api::<ConfigMap>(&client, &namespace), children.clone())
        .owns(api::<ServiceAccount>(&client, &namespace), children.clone())
        .owns(api::<NetworkPolicy>(&client, &namespace), children.clone())
        // HPAs and PDBs are not watched: their API version depends on the
        // cluster; the periodic resync repairs drift in them.
        .owns(api::<Ingress>(&client, &namespace), children)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;

    #[test]
    fn a_secret_maps_to_the_clusters_in_its_namespace_that_read_it() {
        let mut a = ChatCluster::new("a", Default::default());
        a.metadata.namespace = Some("team".into());
        a.spec.smtp.credentials_secret = Some("smtp".into());
        let mut b = ChatCluster::new("b", Default::default());
        b.metadata.namespace = Some("team".into());
        let mut c = a.clone();
        c.metadata.name = Some("c".into());
        c.metadata.namespace = Some("other".into());
        let clusters: Vec<_> = [a, b, c].into_iter().map(Arc::new).collect();
        let secret = |name: &str| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let names = |s: &Secret| -> Vec<String> {
            clusters_reading(s, &clusters)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(&secret("smtp")), ["a"]);
        assert_eq!(names(&secret("b-jwt")), ["b"]);
        assert!(names(&secret("unrelated")).is_empty());
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), Duration::from_secs(60));
    }
}
