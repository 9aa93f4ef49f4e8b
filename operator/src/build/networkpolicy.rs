//! NetworkPolicies: only this ChatCluster's parley pods reach a managed
//! store; when `ingress.controllerPeers` is set, only those peers and the
//! chat pods reach the user pods.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::{
    HTTP_PORT, INSTANCE_LABEL, PART_OF_LABEL, child_name, instance, meta, selector_labels,
};
use crate::api::{ChatCluster, Component, Store};

/// This ChatCluster's pods of component `c`, as a peer.
fn component_peer(cc: &ChatCluster, c: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([
                (INSTANCE_LABEL.to_owned(), instance(cc)),
                (PART_OF_LABEL.to_owned(), "parley".to_owned()),
                (super::COMPONENT_LABEL.to_owned(), c.name().to_owned()),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The policy guarding the user pods' HTTP port: the chat pods and
/// `ingress.controllerPeers` only; `None` when no peers are given.
pub fn user_network_policy(cc: &ChatCluster) -> Option<NetworkPolicy> {
    let extra = &cc.spec.ingress.controller_peers;
    if extra.is_empty() {
        return None;
    }
    let user = Component::User.name();
    let mut peers = vec![component_peer(cc, Component::Chat)];
    peers.extend(extra.iter().cloned());
    Some(NetworkPolicy {
        metadata: meta(cc, child_name(cc, user), user),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cc, user)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(peers),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(HTTP_PORT)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        }),
    })
}

/// The policy guarding one managed store.
pub fn store_network_policy(cc: &ChatCluster, s: Store) -> NetworkPolicy {
    let peers = Component::ALL
        .iter()
        .map(|c| component_peer(cc, *c))
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

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;
    use crate::api::ChatClusterSpec;
    use crate::build::fixtures::cluster;

    #[test]
    fn user_pods_admit_only_chat_and_the_named_peers() {
        assert!(user_network_policy(&cluster(ChatClusterSpec::default())).is_none());
        let controller = NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    "ingress-nginx".to_owned(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut spec = ChatClusterSpec::default();
        spec.ingress.enabled = true;
        spec.ingress.controller_peers = vec![controller.clone()];
        let cc = cluster(spec);
        let policy = user_network_policy(&cc).unwrap();
        let spec = policy.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap(),
            selector_labels(&cc, "user")
        );
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1);
        let from = rules[0].from.clone().unwrap();
        assert_eq!(from, vec![component_peer(&cc, Component::Chat), controller]);
        let ports = rules[0].ports.clone().unwrap();
        assert_eq!(ports[0].port, Some(IntOrString::Int(HTTP_PORT)));
    }
}
