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
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::api::ChatCluster;
pub use crate::api::{Guarded, readable};
use crate::deletion::{self, Step};
use crate::dereference::{DiscoveryCache, dereference};
use crate::registry::AllowedRegistries;
use crate::status::{Observed, compute, observe_workloads};
use crate::{apply, build, status, validate};

/// The longest one reconcile may take, all its requests together (each
/// also has its own timeouts, see [`crate::client`]); beyond it the
/// reconcile fails as `timeout` and is retried with backoff, so one stuck
/// call cannot hold a ChatCluster forever.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// Where a ChatCluster's images may come from; empty allows any.
    pub allowed_registries: AllowedRegistries,
    /// How long one reconcile may take ([`RECONCILE_TIMEOUT`] by default).
    pub reconcile_timeout: Duration,
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
            allowed_registries: AllowedRegistries::default(),
            reconcile_timeout: RECONCILE_TIMEOUT,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses ChatClusters naming images outside `allowed`.
    pub fn with_allowed_registries(mut self, allowed: AllowedRegistries) -> Self {
        self.allowed_registries = allowed;
        self
    }

    /// Bounds one reconcile to `limit` instead of [`RECONCILE_TIMEOUT`].
    pub fn with_reconcile_timeout(mut self, limit: Duration) -> Self {
        self.reconcile_timeout = limit;
        self
    }

    /// Watches through `client` instead of the request client.
    pub fn with_watch_client(mut self, client: Client) -> Self {
        self.watch_client = client;
        self
    }

    /// Publishes an Event about `obj` (a ChatCluster, readable or not);
    /// failures are logged, never fatal.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
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
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
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
    /// Some desired objects could not be written (the others were).
    #[error("applying: {0}")]
    Apply(#[from] apply::ApplyErrors),
    /// The generated Secrets could not be made or adopted.
    #[error("generated secrets: {0}")]
    GeneratedSecrets(#[from] apply::GeneratedSecretError),
    /// The reconcile did not finish within its time bound.
    #[error("reconcile did not finish within {0:?}")]
    TimedOut(Duration),
}

impl Error {
    /// The kind of failure, for the `kind` label of
    /// `parley_operator_reconcile_errors_total`: `conflict` (HTTP 409),
    /// `api` (another answer from the API server), `transport` (no answer:
    /// connection, timeout), `apply` (some objects could not be written),
    /// `foreign_secret` (a Secret of a generated name the operator did not
    /// make), `internal` (no randomness or key pair on the operator's
    /// machine), `timeout` (the whole reconcile ran out of time).
    pub fn metric_label(&self) -> &'static str {
        use apply::GeneratedSecretError as G;
        match self {
            Error::Kube(e) => kube_label(e),
            Error::Apply(_) => "apply",
            Error::GeneratedSecrets(G::Kube { source, .. }) => kube_label(source),
            Error::GeneratedSecrets(G::Foreign { .. }) => "foreign_secret",
            Error::GeneratedSecrets(G::KeyGeneration(_) | G::NoRandomness(_)) => "internal",
            Error::TimedOut(_) => "timeout",
        }
    }
}

/// The kind of an API error: `conflict` (HTTP 409), `api` (another answer),
/// `transport` (no answer).
fn kube_label(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(status) if status.code == 409 => "conflict",
        kube::Error::Api(_) => "api",
        _ => "transport",
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Reconciles one ChatCluster; one that does not deserialize is reported
/// (warning Event, Degraded status) and otherwise left alone.
pub async fn reconcile(obj: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let work = async {
        if obj.meta().deletion_timestamp.is_some() {
            return finalize(&obj, &ctx).await;
        }
        match &obj.0 {
            Ok(cc) => reconcile_inner(cc, &ctx).await,
            Err(invalid) => report_unreadable(&obj, invalid, &ctx).await,
        }
    };
    let result = tokio::time::timeout(ctx.reconcile_timeout, work)
        .await
        .unwrap_or(Err(Error::TimedOut(ctx.reconcile_timeout)));
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("parley_operator_reconciles_total", "result" => outcome).increment(1);
    metrics::histogram!("parley_operator_reconcile_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&obj.uid().unwrap_or_default());
    }
    result
}

/// A ChatCluster being deleted (readable or not): one step of
/// [`deletion::finalize`], told as an Event when it deletes something.
async fn finalize(obj: &Guarded, ctx: &Context) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let (step, action) = deletion::finalize(&ctx.client, obj, &ns).await?;
    let note = match &step {
        Step::StatefulSets(names) if !names.is_empty() => Some(format!(
            "deleting the store StatefulSets before their volumes: {}",
            names.join(", ")
        )),
        Step::Claims(names) if !names.is_empty() => Some(format!(
            "deleting the volumes of stores with volumeReclaim Delete: {}",
            names.join(", ")
        )),
        _ => None,
    };
    if let Some(note) = note {
        tracing::info!(name = %obj.name_any(), namespace = %ns, "{note}");
        ctx.event(obj, false, "Deleting", note).await;
    }
    Ok(action)
}

/// A stored ChatCluster the operator cannot read (stored through an older
/// CRD without bounds, say): a warning Event and a Degraded status naming the
/// problem. Nothing else is touched; only an edit of the object can fix it.
async fn report_unreadable(
    obj: &Guarded,
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let message = format!("spec cannot be read: {}", invalid.error);
    tracing::warn!(name = %obj.name_any(), namespace = %ns, error = %invalid.error, "unreadable ChatCluster; nothing changed");
    ctx.event(obj, true, "InvalidSpec", message.clone()).await;
    // The status is written from an otherwise empty ChatCluster carrying the
    // object's metadata and its previous status (read apart from the spec),
    // so unchanged conditions keep their transition times.
    let ar = ApiResource::erase::<ChatCluster>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let previous = api
        .get_opt(&obj.name_any())
        .await?
        .and_then(|o| o.data.get("status").cloned())
        .and_then(|s| serde_json::from_value(s).ok());
    let stand_in = ChatCluster {
        metadata: invalid.metadata.clone(),
        spec: Default::default(),
        status: previous,
    };
    let observed = Observed {
        spec_errors: vec![message],
        ..Default::default()
    };
    write_status(ctx, &stand_in, &ns, &observed).await?;
    Ok(Action::await_change())
}

async fn reconcile_inner(cc: &ChatCluster, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = cc.namespace().unwrap_or_else(|| "default".into());
    tracing::debug!(name = %cc.name_any(), namespace = %ns, "reconciling");
    if cc.spec.paused {
        let observed = Observed {
            paused: true,
            components: observe_workloads(client, cc, &ns).await?.components,
            ..Default::default()
        };
        write_status(ctx, cc, &ns, &observed).await?;
        return Ok(Action::requeue(ctx.resync));
    }
    let valid = match validate::validate(cc) {
        Ok(valid) => valid,
        Err(errors) => {
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
    };
    // Before anything is created or changed: a refused image never runs,
    // and what an earlier, allowed spec made keeps running untouched.
    let refused = validate::refused_images(&valid, &ctx.allowed_registries);
    if !refused.is_empty() {
        let messages: Vec<String> = refused.iter().map(ToString::to_string).collect();
        tracing::warn!(name = %cc.name_any(), namespace = %ns, errors = %messages.join("; "), "image outside the allowed registries; nothing changed");
        let observed = Observed {
            refused_images: messages,
            ..Default::default()
        };
        ctx.event(
            cc,
            true,
            "ImageNotAllowed",
            observed.refused_images.join("; "),
        )
        .await;
        write_status(ctx, cc, &ns, &observed).await?;
        // A spec change fixes it; so may a restart with another list.
        return Ok(Action::await_change());
    }
    let deref = match prepare(cc, ctx, &ns).await {
        Ok(deref) => deref,
        Err(e) => {
            // Say so in the status too: the log alone leaves users guessing.
            let message = e.to_string();
            ctx.event(cc, true, "PrepareFailed", message.clone()).await;
            let observed = Observed {
                prepare_error: Some(message),
                ..Default::default()
            };
            if let Err(status_error) = write_status(ctx, cc, &ns, &observed).await {
                tracing::warn!(error = %status_error, "could not write the status");
            }
            return Err(e);
        }
    };
    let desired = build::desired(
        &valid,
        &build::Context {
            secrets: deref.secrets,
            apis: deref.apis,
        },
    );
    // before any volume is made, so that none can outlive a deletion
    deletion::set_finalizer(client, cc, &ns, deletion::wants_finalizer(cc)).await?;
    let mut applied = apply::apply_desired(client, cc, &ns, &desired, deref.apis).await;
    let result = applied.result();
    let apply_error = result.as_ref().err().map(ToString::to_string);
    if let Some(e) = &apply_error {
        ctx.event(cc, true, "ApplyFailed", e.clone()).await;
    }
    if !applied.volume_problems.is_empty() {
        let note = applied.volume_problems.join("; ");
        ctx.event(cc, true, "VolumeChangeUnsupported", note).await;
    }
    if result.is_ok() {
        apply::own_deletable_volumes(client, cc, &ns).await?;
    }
    let workloads = observe_workloads(client, cc, &ns).await?;
    let observed = Observed {
        apply_error: apply_error.clone(),
        volume_problems: std::mem::take(&mut applied.volume_problems),
        missing: deref.missing,
        unusable: deref.unusable,
        dependencies_checked: true,
        apis: Some(deref.apis),
        components: workloads.components,
        rollouts: workloads.rollouts,
        ..Default::default()
    };
    write_status(ctx, cc, &ns, &observed).await?;
    match result {
        Ok(()) => Ok(Action::requeue(ctx.resync)),
        Err(e) => Err(e.into()),
    }
}

/// What comes before building: the generated Secrets exist, and the
/// referenced Secrets and served APIs are read.
async fn prepare(
    cc: &ChatCluster,
    ctx: &Context,
    ns: &str,
) -> Result<crate::dereference::Dereferenced, Error> {
    let generated = apply::ensure_generated_secrets(&ctx.client, cc, ns).await?;
    if generated > 0 {
        let note = format!("created {generated} generated Secret(s); they are never replaced");
        ctx.event(cc, false, "SecretsGenerated", note).await;
    }
    Ok(dereference(&ctx.client, cc, ns, &ctx.discovery).await?)
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
pub fn clusters_reading<'a, K: Resource>(
    secret: &K,
    clusters: impl IntoIterator<Item = &'a ChatCluster>,
) -> Vec<ObjectRef<Guarded>> {
    let name = secret.name_any();
    clusters
        .into_iter()
        .filter(|cc| cc.namespace() == secret.namespace())
        .filter(|cc| {
            crate::dereference::secret_refs(cc)
                .iter()
                .any(|(n, _)| *n == name)
        })
        .map(|cc| ObjectRef::from_obj(cc).into_kind_unchecked(()))
        .collect()
}

/// Backoff after failures: 1 s, 2 s, 4 s … capped at 60 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

/// Requeues a failed ChatCluster with exponential backoff.
pub fn error_policy(cc: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    metrics::counter!("parley_operator_reconcile_errors_total", "kind" => error.metric_label())
        .increment(1);
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
        api::<Guarded>(&client, &namespace),
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
    let mut controller = controller
        .watches_stream(secrets, move |secret| {
            clusters_reading(&secret, readable(&store.state()))
        })
        // store volumes appear after their StatefulSet: `Delete` ones get owned then
        .watches(
            api::<PersistentVolumeClaim>(&client, &namespace),
            children.clone(),
            |pvc| {
                let instance = pvc.labels().get(build::INSTANCE_LABEL).cloned();
                let ns = pvc.namespace();
                instance.map(|name| {
                    let r = ObjectRef::<Guarded>::new(&name);
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
        .owns(api::<Ingress>(&client, &namespace), children.clone());
    // HPAs and PDBs in the version the cluster serves (found at start; an
    // upgraded cluster is picked up on the operator's next start, and the
    // periodic resync repairs drift meanwhile).
    match ctx.discovery.get(&client).await {
        Ok(apis) => {
            let kinds = [
                (
                    apis.hpa_version(),
                    "HorizontalPodAutoscaler",
                    "horizontalpodautoscalers",
                ),
                (
                    apis.pdb_version(),
                    "PodDisruptionBudget",
                    "poddisruptionbudgets",
                ),
            ];
            for (version, kind, plural) in kinds {
                let Some((group, version)) = version.and_then(|v| v.split_once('/')) else {
                    continue;
                };
                let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
                let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
                let api: Api<DynamicObject> = match &namespace {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                controller = controller.owns_with(api, ar, children.clone());
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "discovery failed: HorizontalPodAutoscalers and PodDisruptionBudgets are not watched")
        }
    }
    controller
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
            clusters_reading(s, clusters.iter().map(AsRef::as_ref))
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
