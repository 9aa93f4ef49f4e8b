//! Server-side apply of the desired objects under one field manager, pruning
//! of children the spec no longer wants, create-once generated Secrets,
//! volume changes of managed stores, and volume ownership for managed stores
//! whose volumes go with the cluster.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    PropagationPolicy,
};
use kube::core::GroupVersionKind;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ChatCluster, Store};
use crate::build::statefulset::RECLAIM_LABEL;
use crate::build::{self, COMPONENT_LABEL, Desired, INSTANCE_LABEL, volumes};

/// The field manager of every write.
pub const MANAGER: &str = "parley-operator";

/// The field manager that holds a Deployment's `replicas` while they pass
/// from the operator to a HorizontalPodAutoscaler (the server-side apply
/// ownership transfer: the apply step holds the current count under this
/// manager before it drops the field from its own apply).
pub const HANDOVER_MANAGER: &str = "parley-operator-handover";

/// How long a StatefulSet deleted for a new volume claim template may take
/// to go (the garbage collector first releases its pods).
const ORPHAN_DELETE_DEADLINE: Duration = Duration::from_secs(20);

/// Why one write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API server refused or failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A StatefulSet deleted for a new volume claim template is still there.
    #[error("still being deleted with its pods orphaned; created anew on a later pass")]
    StillDeleting,
}

/// One write that failed; the others were still made.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {name}: {source}")]
pub struct ApplyFailure {
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// What went wrong.
    #[source]
    pub source: WriteError,
}

/// Every failed write of one apply pass.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ApplyErrors(pub Vec<ApplyFailure>);

/// What applying did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Objects applied.
    pub applied: usize,
    /// Objects deleted because the spec no longer wants them.
    pub pruned: usize,
    /// Volume changes the spec asks for that cannot be made, each naming its
    /// field (see [`volumes::plan`]).
    pub volume_problems: Vec<String>,
    /// Writes that failed; applying went on past each.
    pub failures: Vec<ApplyFailure>,
}

impl Applied {
    /// `Err` with every failure when any write failed.
    pub fn result(&mut self) -> Result<(), ApplyErrors> {
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(ApplyErrors(std::mem::take(&mut self.failures)))
        }
    }

    fn failed(&mut self, kind: &str, name: &str, source: impl Into<WriteError>) {
        self.failures.push(ApplyFailure {
            kind: kind.to_owned(),
            name: name.to_owned(),
            source: source.into(),
        });
    }
}

/// Why the generated Secrets could not be made or adopted.
#[derive(Debug, thiserror::Error)]
pub enum GeneratedSecretError {
    /// Reading or writing one failed at the API server.
    #[error("{doing} Secret {name}: {source}")]
    Kube {
        /// What was being done: `reading`, `creating` or `updating`.
        doing: &'static str,
        /// The Secret.
        name: String,
        /// The API server's answer, or why there was none.
        source: kube::Error,
    },
    /// No key pair could be generated.
    #[error("generating the Ed25519 signing key: {0}")]
    KeyGeneration(#[from] parley_contracts::token::TokenError),
    /// The system gave no randomness for the passwords.
    #[error("no randomness for the generated passwords: {0}")]
    NoRandomness(getrandom::Error),
    /// A Secret of the generated name exists that the operator did not make
    /// for this ChatCluster; it is left alone.
    #[error(
        "Secret {name} exists but was not made by parley-operator for this ChatCluster \
         (it lacks the labels {MANAGED_BY_LABEL}={MANAGER}, {INSTANCE_LABEL}={instance}); \
         it is left alone: rename the ChatCluster, or move that Secret away"
    )]
    Foreign {
        /// The Secret.
        name: String,
        /// The ChatCluster's name.
        instance: String,
    },
}

/// Wraps an API error of `doing` on Secret `name`.
fn kube_error<'a>(
    doing: &'static str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> GeneratedSecretError + 'a {
    move |source| GeneratedSecretError::Kube {
        doing,
        name: name.to_owned(),
        source,
    }
}

/// Creates the generated Secrets when absent; never updates them.
pub async fn ensure_generated_secrets(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
) -> Result<usize, GeneratedSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut created = 0;
    let jwt = build::secret::jwt_secret_name(cc);
    if cc.spec.auth.signing_key_secret.is_none()
        && api
            .get_opt(&jwt)
            .await
            .map_err(kube_error("reading", &jwt))?
            .is_none()
    {
        let (private_pem, public_pem) = parley_contracts::token::generate_ed25519_pem()?;
        if let Some(secret) = build::jwt_secret(cc, &private_pem, &public_pem) {
            created += create_once(&api, &secret)
                .await
                .map_err(kube_error("creating", &jwt))?;
        }
    }
    let name = build::secret::generated_secret_name(cc);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(kube_error("reading", &name))?;
    let missing = match &existing {
        Some(secret) => build::secret::missing_generated_keys(secret),
        None => build::secret::GENERATED_KEYS
            .iter()
            .map(|(k, _)| *k)
            .collect(),
    };
    let mut values = std::collections::BTreeMap::new();
    for (key, bytes) in build::secret::GENERATED_KEYS {
        if missing.contains(&key) {
            let value = random_hex(bytes).map_err(GeneratedSecretError::NoRandomness)?;
            values.insert(key.to_owned(), value);
        }
    }
    let Some(existing) = existing else {
        created += create_once(&api, &build::generated_secret(cc, values))
            .await
            .map_err(kube_error("creating", &name))?;
        return Ok(created);
    };
    // Kept from an earlier ChatCluster of this name, or made by an older
    // operator: adopt it, add any new keys, keep the present ones. Only
    // then: a Secret someone else made under that name is neither changed
    // nor used (the operator may write Secrets the ChatCluster's author
    // may not; adopting one would hand it to the garbage collector).
    if !made_for(cc, &existing) {
        return Err(GeneratedSecretError::Foreign {
            name,
            instance: cc.name_any(),
        });
    }
    let owners = build::secret::generated_secret_owners(cc, existing.owner_references());
    if values.is_empty() && owners == existing.owner_references() {
        return Ok(created);
    }
    // The resourceVersion makes a concurrent writer's change win.
    let mut patch = serde_json::json!({
        "metadata": {
            "resourceVersion": existing.metadata.resource_version,
            "ownerReferences": owners,
        },
    });
    if !values.is_empty() {
        patch["stringData"] = serde_json::json!(values);
        created += 1;
    }
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    api.patch(&name, &params, &Patch::Merge(&patch))
        .await
        .map_err(kube_error("updating", &name))?;
    Ok(created)
}

/// The label every object the operator makes carries (value [`MANAGER`]).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Whether `secret` carries the labels the operator gives the Secrets it
/// makes for `cc` (an earlier ChatCluster of the same name included).
pub fn made_for(cc: &ChatCluster, secret: &Secret) -> bool {
    let labels = secret.labels();
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
        && labels.get(INSTANCE_LABEL) == Some(&cc.name_any())
}

fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)?;
    Ok(hex::encode(buf))
}

async fn create_once(api: &Api<Secret>, secret: &Secret) -> Result<usize, kube::Error> {
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match api.create(&params, secret).await {
        Ok(_) => Ok(1),
        // Another writer got there first: keep theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(0),
        Err(e) => Err(e),
    }
}

/// The parts of an object a no-op apply may still touch (bookkeeping).
fn comparable<K: Serialize>(obj: &K) -> serde_json::Value {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
    }
    v
}

/// Server-side applies `obj`. With `dry_run_first`, a dry run decides
/// whether anything would change; some API servers (1.20 with StatefulSet
/// volume claim templates) otherwise write a new resourceVersion on every no-op apply.
async fn apply_one<K>(api: &Api<K>, obj: &K, dry_run_first: bool) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(MANAGER).force();
    if dry_run_first && let Some(existing) = api.get_opt(&name).await? {
        let mut dry = params.clone();
        dry.dry_run = true;
        let would_be = api.patch(&name, &dry, &Patch::Apply(obj)).await?;
        if comparable(&would_be) == comparable(&existing) {
            return Ok(false);
        }
    }
    api.patch(&name, &params, &Patch::Apply(obj)).await?;
    Ok(true)
}

/// Applies `objs` of a kind whose Rust type is fixed, then prunes (see [`sync_objects`]).
async fn sync_kind<K>(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
    objs: &[K],
    prune: bool,
    out: &mut Applied,
) where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    sync_objects(&api, &K::kind(&()), cc, objs, prune, out).await;
}

/// Applies `objs` of `kind` written in `api_version` (an older version the
/// cluster serves in place of the one the objects were built in).
#[allow(clippy::too_many_arguments)]
async fn sync_in_version<K: Serialize>(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
    (api_version, kind, plural): (&str, &str, &str),
    objs: &[K],
    out: &mut Applied,
) {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let mut converted = Vec::new();
    for obj in objs {
        match build::in_version(obj, api_version) {
            Ok(o) => converted.push(o),
            Err(e) => tracing::error!(error = %e, kind, "cannot convert to {api_version}"),
        }
    }
    sync_objects(&api, kind, cc, &converted, true, out).await;
}

/// Applies `objs` and, with `prune`, deletes the other objects of the same
/// kind that this ChatCluster owns (matched by its uid: an object merely
/// labelled with its name, or owned by a namesake of another kind or an
/// earlier incarnation, is not its to delete). A failed write is recorded
/// in `out` and the next object is still applied.
async fn sync_objects<K>(
    api: &Api<K>,
    kind: &str,
    cc: &ChatCluster,
    objs: &[K],
    prune: bool,
    out: &mut Applied,
) where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let dry_run_first = kind == "StatefulSet";
    for obj in objs {
        match apply_one(api, obj, dry_run_first).await {
            Ok(true) => out.applied += 1,
            Ok(false) => {}
            Err(e) => out.failed(kind, &obj.name_any(), e),
        }
    }
    if !prune {
        return;
    }
    let wanted: Vec<String> = objs.iter().map(|o| o.name_any()).collect();
    let lp = ListParams::default().labels(&format!("{INSTANCE_LABEL}={}", cc.name_any()));
    let Some(uid) = cc.uid() else {
        return;
    };
    let existing = match api.list(&lp).await {
        Ok(list) => list,
        Err(e) => return out.failed(kind, "(list)", e),
    };
    for existing in existing {
        let owned = existing.owner_references().iter().any(|o| o.uid == uid);
        let name = existing.name_any();
        if owned && !wanted.contains(&name) {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => out.pruned += 1,
                Err(e) => out.failed(kind, &name, e),
            }
        }
    }
}

/// Whether `manager`'s server-side apply owns the Deployment's `spec.replicas`.
fn applies_replicas(d: &Deployment, manager: &str) -> bool {
    d.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(manager)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    })
}

/// The Deployments to apply, with `replicas` handed over to autoscalers the
/// documented server-side apply way: where a desired Deployment leaves
/// `replicas` to an autoscaler but the operator still owns the field, the
/// current count is first applied under [`HANDOVER_MANAGER`], so that
/// dropping the field from the operator's apply leaves it as it is (instead
/// of resetting it to 1) until the autoscaler sets it. A Deployment created
/// with autoscaling on starts at the autoscaler's minimum.
async fn hand_over_replicas(
    api: &Api<Deployment>,
    deployments: &[Deployment],
    hpas: &[HorizontalPodAutoscaler],
    out: &mut Applied,
) -> Vec<Deployment> {
    let mut result = Vec::with_capacity(deployments.len());
    for d in deployments {
        let mut d = d.clone();
        let name = d.name_any();
        let left_to_autoscaler = d.spec.as_ref().is_some_and(|s| s.replicas.is_none());
        if !left_to_autoscaler {
            result.push(d);
            continue;
        }
        match api.get_opt(&name).await {
            Ok(None) => {
                let min = hpas
                    .iter()
                    .find(|h| h.name_any() == name)
                    .and_then(|h| h.spec.as_ref()?.min_replicas);
                if let Some(spec) = d.spec.as_mut() {
                    spec.replicas = min;
                }
            }
            Ok(Some(existing)) if applies_replicas(&existing, MANAGER) => {
                let current = existing.spec.as_ref().and_then(|s| s.replicas);
                let patch = serde_json::json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name},
                    "spec": {"replicas": current},
                });
                match api
                    .patch(
                        &name,
                        &PatchParams::apply(HANDOVER_MANAGER),
                        &Patch::Apply(&patch),
                    )
                    .await
                {
                    Ok(_) => {}
                    // The autoscaler set it already: nothing to hold.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => {
                        // Keep owning the count rather than reset it.
                        out.failed("Deployment", &name, e);
                        if let Some(spec) = d.spec.as_mut() {
                            spec.replicas = current;
                        }
                    }
                }
            }
            Ok(Some(_)) => {}
            Err(e) => {
                out.failed("Deployment", &name, e);
                continue;
            }
        }
        result.push(d);
    }
    result
}

/// Applies every desired object of `cc`, pruning optional kinds. Every kind
/// is applied even when an earlier one failed (a refused StatefulSet must not
/// hold back a Deployment's new image); the failures are in the result.
pub async fn apply_desired(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
    desired: &Desired,
    apis: build::ApiSupport,
) -> Applied {
    let Desired {
        service_accounts,
        config_maps,
        services,
        deployments,
        statefulsets,
        hpas,
        pdbs,
        network_policies,
        ingresses,
    } = desired;
    let mut r = Applied::default();
    sync_kind(client, cc, namespace, service_accounts, false, &mut r).await;
    sync_kind(client, cc, namespace, config_maps, false, &mut r).await;
    sync_kind(client, cc, namespace, services, true, &mut r).await;
    for set in statefulsets {
        prepare_volumes(client, cc, namespace, set, &mut r).await;
    }
    sync_kind(client, cc, namespace, statefulsets, true, &mut r).await;
    let deployment_api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployments = hand_over_replicas(&deployment_api, deployments, hpas, &mut r).await;
    sync_objects(
        &deployment_api,
        "Deployment",
        cc,
        &deployments,
        false,
        &mut r,
    )
    .await;
    sync_kind(client, cc, namespace, network_policies, true, &mut r).await;
    sync_kind(client, cc, namespace, ingresses, true, &mut r).await;
    match apis.hpa_version() {
        Some("autoscaling/v2") => sync_kind(client, cc, namespace, hpas, true, &mut r).await,
        Some(v) => {
            let kind = (v, "HorizontalPodAutoscaler", "horizontalpodautoscalers");
            sync_in_version(client, cc, namespace, kind, hpas, &mut r).await;
        }
        None => {}
    }
    match apis.pdb_version() {
        Some("policy/v1") => sync_kind(client, cc, namespace, pdbs, true, &mut r).await,
        Some(v) => {
            let kind = (v, "PodDisruptionBudget", "poddisruptionbudgets");
            sync_in_version(client, cc, namespace, kind, pdbs, &mut r).await;
        }
        None => {}
    }
    r
}

/// Carries out the [`volumes::plan`] of the store whose StatefulSet is
/// `desired`: grows claims, relabels them for the reclaim policy, and deletes
/// the StatefulSet (orphaning its pods) when its claim template must change,
/// so that the apply that follows creates it anew. What cannot be done is
/// added to `out.volume_problems`.
async fn prepare_volumes(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
    desired: &StatefulSet,
    out: &mut Applied,
) {
    let name = desired.name_any();
    if let Err(e) = try_prepare_volumes(client, cc, namespace, desired, out).await {
        out.failed("StatefulSet", &name, e);
    }
}

async fn try_prepare_volumes(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
    desired: &StatefulSet,
    out: &mut Applied,
) -> Result<(), WriteError> {
    let component = desired.labels().get(COMPONENT_LABEL).cloned();
    let Some(store) = Store::ALL
        .into_iter()
        .find(|s| Some(s.name()) == component.as_deref())
    else {
        return Ok(());
    };
    let name = desired.name_any();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let existing = sets.get_opt(&name).await?;
    let lp = ListParams::default().labels(&format!(
        "{INSTANCE_LABEL}={},{COMPONENT_LABEL}={}",
        cc.name_any(),
        store.name()
    ));
    let claims = pvcs.list(&lp).await?.items;
    let classes: Api<StorageClass> = Api::all(client.clone());
    let mut expandable = BTreeMap::new();
    let names: std::collections::BTreeSet<String> = claims
        .iter()
        .filter_map(|c| c.spec.as_ref()?.storage_class_name.clone())
        .collect();
    for class in names {
        let allows = classes
            .get_opt(&class)
            .await?
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false);
        expandable.insert(class, allows);
    }
    let plan = volumes::plan(store, desired, existing.as_ref(), &claims, |c| {
        expandable.get(c).copied().unwrap_or(false)
    });
    out.volume_problems.extend(plan.problems);
    for (claim, size) in &plan.resize {
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
        if let Err(e) = pvcs
            .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            out.volume_problems.push(format!(
                "spec.{}.managed.storageSize: growing volume {claim} to {} failed: {e}",
                store.name(),
                size.0
            ));
        }
    }
    let uid = cc.uid().unwrap_or_default();
    for (claim, reclaim) in &plan.relabel {
        let Some(current) = claims.iter().find(|c| c.name_any() == *claim) else {
            continue;
        };
        // A volume now retained must no longer go with the ChatCluster.
        let owners: Vec<_> = current
            .owner_references()
            .iter()
            .filter(|o| o.uid != uid || reclaim != "Retain")
            .cloned()
            .collect();
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": current.metadata.resource_version,
            "labels": {RECLAIM_LABEL: reclaim},
            "ownerReferences": owners,
        }});
        pvcs.patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if plan.recreate
        && let Some(old) = existing
    {
        tracing::info!(statefulset = %name, "volume claim template changed: re-creating the StatefulSet, its pods orphaned");
        let orphan = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..Default::default()
        };
        sets.delete(&name, &orphan).await?;
        let deadline = tokio::time::Instant::now() + ORPHAN_DELETE_DEADLINE;
        loop {
            match sets.get_opt(&name).await? {
                Some(s) if s.uid() == old.uid() => {}
                _ => break,
            }
            if tokio::time::Instant::now() > deadline {
                return Err(WriteError::StillDeleting);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Makes the ChatCluster own the data volumes whose store says `Delete`, so
/// that garbage collection removes them with it; `Retain` volumes stay unowned.
pub async fn own_deletable_volumes(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
) -> Result<usize, kube::Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!(
        "{INSTANCE_LABEL}={},{RECLAIM_LABEL}=Delete",
        cc.name_any()
    ));
    let owner = build::owner_ref(cc);
    let mut patched = 0;
    for pvc in api.list(&lp).await? {
        if pvc.owner_references().iter().any(|o| o.uid == owner.uid) {
            continue;
        }
        let patch = serde_json::json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": { "name": pvc.name_any(), "ownerReferences": [owner] }
        });
        api.patch(
            &pvc.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        patched += 1;
    }
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_secrets_labelled_for_the_cluster_are_adopted() {
        let mut cc = ChatCluster::new("demo", Default::default());
        cc.metadata.namespace = Some("team".into());
        let made = build::generated_secret(&cc, BTreeMap::new());
        assert!(made_for(&cc, &made), "its own generated Secret");
        let mut other = cc.clone();
        other.metadata.name = Some("other".into());
        assert!(!made_for(&other, &made), "another ChatCluster's");
        let mut foreign = made.clone();
        foreign.metadata.labels = None;
        assert!(!made_for(&cc, &foreign), "unlabelled");
        foreign.metadata.labels = Some(BTreeMap::from([(
            INSTANCE_LABEL.to_owned(),
            "demo".to_owned(),
        )]));
        assert!(!made_for(&cc, &foreign), "not managed by the operator");
    }
}
