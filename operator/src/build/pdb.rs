//! PodDisruptionBudgets (policy/v1).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_name, meta, selector_labels};
use crate::api::{ChatCluster, Component};

/// The disruption budget of one component.
pub fn pdb(cc: &ChatCluster, c: Component) -> PodDisruptionBudget {
    let p = &c.spec(&cc.spec).pod_disruption_budget;
    PodDisruptionBudget {
        metadata: meta(cc, child_name(cc, c.name()), c.name()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(p.max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cc, c.name())),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
