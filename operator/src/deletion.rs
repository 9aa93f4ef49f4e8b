//! What deleting a ChatCluster takes beyond garbage collection: the data
//! volumes of the stores that say `volumeReclaim: Delete`.
//!
//! Owner references alone leave a window. The garbage collector deletes a
//! store's claim and its StatefulSet at the same time; a StatefulSet
//! controller still holding the set in its cache sees the set's pod go,
//! makes the pod again and, the old claim being gone, a new claim for it.
//! Nothing owns that claim (its template carries no owner), so it and its
//! volume outlive the cluster that said Delete. So while any store says
//! Delete, the ChatCluster carries [`FINALIZER`], and its deletion goes in
//! order: the store StatefulSets in the foreground (their pods go first and
//! the controller makes none while the set is being deleted), then the
//! claims, and only when none is left does the ChatCluster go.
//!
//! [`next_step`] decides from what is left (pure); [`finalize`] and
//! [`set_finalizer`] are the requests.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::{ChatCluster, Store, VolumeReclaim};
use crate::build::statefulset::RECLAIM_LABEL;
use crate::build::{self, INSTANCE_LABEL};

/// The finalizer a ChatCluster carries while a store deletes its volume with it.
pub const FINALIZER: &str = "parley.dev/delete-volumes";

/// How often a deletion in progress is looked at again (the StatefulSet
/// and claim watches usually wake it sooner).
const RECHECK: Duration = Duration::from_secs(2);

/// Whether `cc` needs [`FINALIZER`]: some managed store deletes its volume.
pub fn wants_finalizer(cc: &ChatCluster) -> bool {
    Store::ALL
        .iter()
        .any(|s| build::managed(cc, *s).is_some_and(|m| m.volume_reclaim == VolumeReclaim::Delete))
}

/// Whether `obj` carries [`FINALIZER`].
pub fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// An object left while a ChatCluster is deleted: its name and whether its
/// own deletion has begun.
#[derive(Debug, Clone, PartialEq)]
pub struct Left {
    /// Object name.
    pub name: String,
    /// Its deletion has begun (it has a deletion timestamp).
    pub deleting: bool,
}

/// The next step of a ChatCluster's deletion.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Store StatefulSets are left: delete these (in the foreground), then
    /// wait for all of them to go.
    StatefulSets(Vec<String>),
    /// Only volume claims of `Delete` stores are left: delete these, then
    /// wait for all of them to go.
    Claims(Vec<String>),
    /// Nothing is left: remove the finalizer.
    Release,
}

/// The next step, from the store StatefulSets and the `Delete` claims left.
/// Claims are deleted only once no StatefulSet is left to make them again.
pub fn next_step(sets: &[Left], claims: &[Left]) -> Step {
    let not_yet = |left: &[Left]| -> Vec<String> {
        left.iter()
            .filter(|l| !l.deleting)
            .map(|l| l.name.clone())
            .collect()
    };
    if !sets.is_empty() {
        Step::StatefulSets(not_yet(sets))
    } else if !claims.is_empty() {
        Step::Claims(not_yet(claims))
    } else {
        Step::Release
    }
}

fn left<K: Resource>(obj: &K) -> Left {
    Left {
        name: obj.name_any(),
        deleting: obj.meta().deletion_timestamp.is_some(),
    }
}

/// The ChatCluster API, untyped: a ChatCluster whose spec cannot be read is
/// finalized all the same.
fn clusters(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<ChatCluster>(&());
    Api::namespaced_with(client.clone(), namespace, &ar)
}

/// Writes the finalizers of `obj` with [`FINALIZER`] present or not, as
/// `wanted`; nothing when it already is. The write names the resource
/// version it read, so a concurrent change makes it fail (409) and be retried.
pub async fn set_finalizer<K: Resource>(
    client: &Client,
    obj: &K,
    namespace: &str,
    wanted: bool,
) -> Result<(), kube::Error> {
    if has_finalizer(obj) == wanted {
        return Ok(());
    }
    let mut finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if wanted {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": obj.resource_version(),
        }
    });
    clusters(client, namespace)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// One step of the deletion of `obj` (a ChatCluster with a deletion
/// timestamp, readable or not): what [`next_step`] says, then wait for the
/// watches or [`RECHECK`]. Returns the step taken.
pub async fn finalize<K: Resource>(
    client: &Client,
    obj: &K,
    namespace: &str,
) -> Result<(Step, Action), kube::Error> {
    if !has_finalizer(obj) {
        return Ok((Step::Release, Action::await_change()));
    }
    let name = obj.name_any();
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let sets_api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let by_instance = ListParams::default().labels(&format!("{INSTANCE_LABEL}={name}"));
    let sets: Vec<Left> = sets_api
        .list(&by_instance)
        .await?
        .iter()
        .filter(|s| s.owner_references().iter().any(|o| o.uid == uid))
        .map(left)
        .collect();
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let deletable =
        ListParams::default().labels(&format!("{INSTANCE_LABEL}={name},{RECLAIM_LABEL}=Delete"));
    let claims: Vec<Left> = claims_api
        .list(&deletable)
        .await?
        .iter()
        .map(left)
        .collect();
    let step = next_step(&sets, &claims);
    match &step {
        Step::StatefulSets(names) => {
            for set in names {
                gone_is_fine(sets_api.delete(set, &DeleteParams::foreground()).await)?;
            }
        }
        Step::Claims(names) => {
            for claim in names {
                gone_is_fine(claims_api.delete(claim, &DeleteParams::default()).await)?;
            }
        }
        Step::Release => {
            set_finalizer(client, obj, namespace, false).await?;
            return Ok((step, Action::await_change()));
        }
    }
    Ok((step, Action::requeue(RECHECK)))
}

/// A delete that found the object already gone succeeded.
fn gone_is_fine<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ManagedStore;

    fn left(name: &str, deleting: bool) -> Left {
        Left {
            name: name.into(),
            deleting,
        }
    }

    #[test]
    fn claims_wait_for_every_statefulset_to_go() {
        let claims = [left("data-x-redis-0", false)];
        assert_eq!(
            next_step(&[left("x-redis", false), left("x-mongodb", true)], &claims),
            Step::StatefulSets(vec!["x-redis".into()]),
            "only the set not yet being deleted is deleted; the claim waits"
        );
        assert_eq!(
            next_step(&[left("x-mongodb", true)], &claims),
            Step::StatefulSets(vec![]),
            "a set still going holds the claims back"
        );
        assert_eq!(
            next_step(&[], &claims),
            Step::Claims(vec!["data-x-redis-0".into()])
        );
        assert_eq!(
            next_step(&[], &[left("data-x-redis-0", true)]),
            Step::Claims(vec![]),
            "a claim still going holds the finalizer"
        );
        assert_eq!(next_step(&[], &[]), Step::Release);
    }

    #[test]
    fn only_a_store_deleting_its_volume_wants_the_finalizer() {
        let mut cc = ChatCluster::new("x", Default::default());
        assert!(!wants_finalizer(&cc), "every store retains by default");
        cc.spec.redis.managed = Some(ManagedStore {
            volume_reclaim: VolumeReclaim::Delete,
            ..Default::default()
        });
        assert!(wants_finalizer(&cc));
        cc.spec.redis.managed = None;
        cc.spec.redis.external = Some(Default::default());
        assert!(
            !wants_finalizer(&cc),
            "an external store has no volume here"
        );
    }

    #[test]
    fn finalizer_is_read_from_the_object() {
        let mut cc = ChatCluster::new("x", Default::default());
        assert!(!has_finalizer(&cc));
        cc.metadata.finalizers = Some(vec!["other".into(), FINALIZER.into()]);
        assert!(has_finalizer(&cc));
    }
}
