//! NetworkPolicies: only this ChatCluster's parley pods reach a managed store.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::{INSTANCE_LABEL, PART_OF_LABEL, child_name, instance, meta, selector_labels};
use crate::api::{ChatCluster, Component, Store};

/// The policy guarding one managed store.
pub fn store_network_policy(cc: &ChatCluster, s: Store) -> NetworkPolicy {
    let peers = Component::ALL
        .iter()
        .map(|c| NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (INSTANCE_LABEL.to_owned(), instance(cc)),
                    (PART_OF_LABEL.to_owned(), "parley".to_owned()),
                    (super::COMPONENT_LABEL.to_owned(), c.name().to_owned()),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    NetworkPolicy {
        metadata: meta(cc, child_name(cc, s.name()), s.name()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cc, s.name())),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(peers),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(s.port())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        }),
    }
}
