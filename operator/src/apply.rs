//! Server-side apply of the desired objects under one field manager, pruning
//! of children the spec no longer wants, create-once generated Secrets, and
//! volume ownership for managed stores whose volumes go with the cluster.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ChatCluster;
use crate::build::statefulset::RECLAIM_LABEL;
use crate::build::{self, Desired, INSTANCE_LABEL};

/// The field manager of every write.
pub const MANAGER: &str = "parley-operator";

/// What applying did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Objects applied.
    pub applied: usize,
    /// Objects deleted because the spec no longer wants them.
    pub pruned: usize,
}

/// Creates the generated Secrets when absent; never updates them.
pub async fn ensure_generated_secrets(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
) -> anyhow::Result<usize> {
    use anyhow::Context;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut created = 0;
    if cc.spec.auth.signing_key_secret.is_none()
        && api
            .get_opt(&build::secret::jwt_secret_name(cc))
            .await?
            .is_none()
    {
        let (private_pem, public_pem) = parley_common::token::generate_ed25519_pem()
            .context("generating the Ed25519 signing key")?;
        if let Some(secret) = build::jwt_secret(cc, &private_pem, &public_pem) {
            created += create_once(&api, &secret).await?;
        }
    }
    let name = build::secret::generated_secret_name(cc);
    let existing = api.get_opt(&name).await?;
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
            values.insert(key.to_owned(), random_hex(bytes)?);
        }
    }
    if existing.is_none() {
        created += create_once(&api, &build::generated_secret(cc, values)).await?;
    } else if !values.is_empty() {
        // A Secret from an older operator: add the new keys, keep the rest.
        // The resourceVersion makes a concurrent writer's change win.
        let rv = existing.and_then(|s| s.metadata.resource_version);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": rv},
            "stringData": values,
        });
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        api.patch(&name, &params, &Patch::Merge(&patch))
            .await
            .with_context(|| format!("adding {missing:?} to Secret {name}"))?;
        created += 1;
    }
    Ok(created)
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(buf))
}

async fn create_once(api: &Api<Secret>, secret: &Secret) -> anyhow::Result<usize> {
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match api.create(&params, secret).await {
        Ok(_) => Ok(1),
        // Another writer got there first: keep theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(0),
        Err(e) => Err(e.into()),
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

/// Applies `objs` and deletes this cluster's other objects of the same kind.
async fn sync_kind<K>(
    client: &Client,
    namespace: &str,
    instance: &str,
    objs: &[K],
    prune: bool,
) -> Result<Applied, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut result = Applied::default();
    let dry_run_first = K::kind(&()) == "StatefulSet";
    for obj in objs {
        if apply_one(&api, obj, dry_run_first).await? {
            result.applied += 1;
        }
    }
    if prune {
        let wanted: Vec<String> = objs.iter().map(|o| o.name_any()).collect();
        let lp = ListParams::default().labels(&format!("{INSTANCE_LABEL}={instance}"));
        for existing in api.list(&lp).await? {
            let owned = existing
                .owner_references()
                .iter()
                .any(|o| o.kind == "ChatCluster" && o.name == instance);
            if owned && !wanted.contains(&existing.name_any()) {
                api.delete(&existing.name_any(), &DeleteParams::background())
                    .await?;
                result.pruned += 1;
            }
        }
    }
    Ok(result)
}

fn add(a: &mut Applied, b: Applied) {
    a.applied += b.applied;
    a.pruned += b.pruned;
}

/// Applies every desired object of `cc`, pruning optional kinds.
pub async fn apply_desired(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
    desired: &Desired,
    apis: build::ApiSupport,
) -> Result<Applied, kube::Error> {
    let i = cc.name_any();
    let mut r = Applied::default();
    add(
        &mut r,
        sync_kind(client, namespace, &i, &desired.service_accounts, false).await?,
    );
    add(
        &mut r,
        sync_kind(client, namespace, &i, &desired.config_maps, false).await?,
    );
    add(
        &mut r,
        sync_kind(client, namespace, &i, &desired.services, true).await?,
    );
    add(
        &mut r,
        sync_kind(client, namespace, &i, &desired.statefulsets, true).await?,
    );
    add(
        &mut r,
        sync_kind(client, namespace, &i, &desired.deployments, false).await?,
    );
    add(
        &mut r,
        sync_kind(client, namespace, &i, &desired.network_policies, true).await?,
    );
    add(
        &mut r,
        sync_kind(client, namespace, &i, &desired.ingresses, true).await?,
    );
    if apis.autoscaling_v2 {
        add(
            &mut r,
            sync_kind(client, namespace, &i, &desired.hpas, true).await?,
        );
    }
    if apis.policy_v1 {
        add(
            &mut r,
            sync_kind(client, namespace, &i, &desired.pdbs, true).await?,
        );
    }
    Ok(r)
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
