//! What a change of a managed store's volume settings (`storageSize`,
//! `storageClassName`, `volumeReclaim`) takes, from what exists. Pure: the
//! apply step reads the StatefulSet, its claims and their StorageClasses,
//! and carries the plan out.
//!
//! The API server refuses any change of a StatefulSet's volume claim
//! template. So, as peer operators do, a changed template means deleting
//! the StatefulSet with orphan cascading (its pods and claims stay) and
//! creating it anew; existing claims are grown in place when their
//! StorageClass allows expansion and relabelled for the reclaim policy.
//! What cannot be done (shrinking, changing a claim's class, growing a claim
//! whose class does not allow it) is reported naming the spec field.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::statefulset::RECLAIM_LABEL;
use crate::api::Store;

/// What to do about one store's volumes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumePlan {
    /// The StatefulSet's claim template differs from the desired one: delete
    /// it with orphan cascading before applying.
    pub recreate: bool,
    /// Claims to grow to the desired size: (claim name, size).
    pub resize: Vec<(String, Quantity)>,
    /// Claims whose reclaim label must change: (claim name, new value).
    pub relabel: Vec<(String, String)>,
    /// What cannot be done, each naming the spec field (`spec.…: …`).
    pub problems: Vec<String>,
}

/// The one claim template of a store StatefulSet.
fn template(set: &StatefulSet) -> Option<&PersistentVolumeClaim> {
    set.spec.as_ref()?.volume_claim_templates.as_ref()?.first()
}

fn requested(pvc: &PersistentVolumeClaim) -> Option<&Quantity> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

fn class(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.spec.as_ref()?.storage_class_name.as_deref()
}

fn reclaim(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.metadata
        .labels
        .as_ref()?
        .get(RECLAIM_LABEL)
        .map(String::as_str)
}

/// The parts of a claim template that matter, as the API server keeps them.
fn template_key(pvc: &PersistentVolumeClaim) -> (Option<f64>, Option<&str>, Option<&str>) {
    (requested(pvc).and_then(bytes), class(pvc), reclaim(pvc))
}

/// A quantity in bytes (`1Gi`, `1.5G`, `500Mi`, `1000`); `None` when it is not one.
pub fn bytes(q: &Quantity) -> Option<f64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(number * factor)
}

/// The plan for `store` given its desired StatefulSet, the existing one (if
/// any), the claims of the store and whether a StorageClass allows expansion.
pub fn plan(
    store: Store,
    desired: &StatefulSet,
    existing: Option<&StatefulSet>,
    claims: &[PersistentVolumeClaim],
    expandable: impl Fn(&str) -> bool,
) -> VolumePlan {
    let mut plan = VolumePlan::default();
    let Some(want) = template(desired) else {
        return plan;
    };
    let at = format!("spec.{}.managed", store.name());
    plan.recreate = existing
        .and_then(template)
        .is_some_and(|have| template_key(have) != template_key(want));
    let want_size = requested(want);
    for claim in claims {
        let name = claim.metadata.name.clone().unwrap_or_default();
        if let (Some(want_label), have_label) = (reclaim(want), reclaim(claim))
            && have_label != Some(want_label)
        {
            plan.relabel.push((name.clone(), want_label.to_owned()));
        }
        if class(want).is_some() && class(want) != class(claim) {
            plan.problems.push(format!(
                "{at}.storageClassName: volume {name} has StorageClass {}; a volume's class cannot change (move the data to a new volume)",
                class(claim).unwrap_or("(none)")
            ));
        }
        let (Some(want_q), Some(have_q)) = (want_size, requested(claim)) else {
            continue;
        };
        let (Some(want_b), Some(have_b)) = (bytes(want_q), bytes(have_q)) else {
            continue;
        };
        if want_b < have_b {
            plan.problems.push(format!(
                "{at}.storageSize: volume {name} holds {}; volumes cannot shrink",
                have_q.0
            ));
        } else if want_b > have_b {
            match class(claim) {
                Some(c) if expandable(c) => plan.resize.push((name, want_q.clone())),
                Some(c) => plan.problems.push(format!(
                    "{at}.storageSize: volume {name} stays {}: its StorageClass {c} does not allow expansion",
                    have_q.0
                )),
                None => plan.problems.push(format!(
                    "{at}.storageSize: volume {name} stays {}: it has no StorageClass that allows expansion",
                    have_q.0
                )),
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};

    use super::*;
    use crate::api::{ManagedStore, VolumeReclaim};
    use crate::build::fixtures::{ctx, valid};
    use crate::build::statefulset::statefulset;

    fn set(m: &ManagedStore) -> StatefulSet {
        statefulset(&valid(Default::default()), Store::Mongodb, m, &ctx())
    }

    fn claim(size: &str, class: Option<&str>, reclaim: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("data-demo-mongodb-0".into()),
                labels: Some(BTreeMap::from([(RECLAIM_LABEL.into(), reclaim.into())])),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: class.map(Into::into),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn store(size: &str, class: Option<&str>, reclaim: VolumeReclaim) -> ManagedStore {
        ManagedStore {
            storage_size: Some(size.into()),
            storage_class_name: class.map(Into::into),
            volume_reclaim: reclaim,
            ..Default::default()
        }
    }

    #[test]
    fn quantities_compare_across_suffixes() {
        let b = |s: &str| bytes(&Quantity(s.into()));
        assert_eq!(b("1Gi"), Some(1024.0 * 1024.0 * 1024.0));
        assert!(b("1.5Gi") > b("1500Mi"));
        assert!(b("2G") < b("2Gi"));
        assert_eq!(b("lots"), None);
    }

    #[test]
    fn an_unchanged_store_needs_nothing() {
        let m = store("1Gi", Some("fast"), VolumeReclaim::Retain);
        let p = plan(
            Store::Mongodb,
            &set(&m),
            Some(&set(&m)),
            &[claim("1Gi", Some("fast"), "Retain")],
            |_| true,
        );
        assert_eq!(p, VolumePlan::default());
    }

    #[test]
    fn growing_resizes_where_the_class_allows_and_reports_elsewhere() {
        let old = set(&store("1Gi", Some("fast"), VolumeReclaim::Retain));
        let new = set(&store("2Gi", Some("fast"), VolumeReclaim::Retain));
        let claims = [claim("1Gi", Some("fast"), "Retain")];
        let p = plan(Store::Mongodb, &new, Some(&old), &claims, |c| c == "fast");
        assert!(p.recreate);
        assert_eq!(
            p.resize,
            [("data-demo-mongodb-0".to_owned(), Quantity("2Gi".into()))]
        );
        assert!(p.problems.is_empty());
        let p = plan(Store::Mongodb, &new, Some(&old), &claims, |_| false);
        assert!(p.recreate && p.resize.is_empty());
        assert_eq!(p.problems.len(), 1);
        assert!(
            p.problems[0].starts_with(
                "spec.mongodb.managed.storageSize: volume data-demo-mongodb-0 stays 1Gi"
            ),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn shrinking_and_class_changes_are_reported_reclaim_changes_relabel() {
        let old = set(&store("2Gi", Some("fast"), VolumeReclaim::Retain));
        let new = set(&store("1Gi", Some("slow"), VolumeReclaim::Delete));
        let p = plan(
            Store::Mongodb,
            &new,
            Some(&old),
            &[claim("2Gi", Some("fast"), "Retain")],
            |_| true,
        );
        assert!(p.recreate);
        assert_eq!(
            p.relabel,
            [("data-demo-mongodb-0".to_owned(), "Delete".to_owned())]
        );
        let fields: Vec<&str> = p
            .problems
            .iter()
            .filter_map(|m| m.split(':').next())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.mongodb.managed.storageClassName",
                "spec.mongodb.managed.storageSize"
            ]
        );
    }
}
