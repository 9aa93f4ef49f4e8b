//! Services: one ClusterIP Service per component, one headless Service per managed store.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{HTTP_PORT, child_name, meta, selector_labels};
use crate::api::{ChatCluster, Component, Store};

/// The ClusterIP Service in front of a component.
pub fn component_service(cc: &ChatCluster, c: Component) -> Service {
    Service {
        metadata: meta(cc, child_name(cc, c.name()), c.name()),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(cc, c.name())),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The headless Service governing a managed store's StatefulSet.
pub fn store_service(cc: &ChatCluster, s: Store) -> Service {
    Service {
        metadata: meta(cc, child_name(cc, s.name()), s.name()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(cc, s.name())),
            ports: Some(vec![ServicePort {
                name: Some(s.name().into()),
                port: s.port(),
                target_port: Some(IntOrString::Int(s.port())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}
