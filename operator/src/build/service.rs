//! Services: one ClusterIP Service per component, one headless Service per managed store.

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{HTTP_PORT, child_name, meta, selector_labels};
use crate::api::{ChatCluster, Component, SessionAffinity, Store};

/// How long a client stays on its chat pod without traffic (the Kubernetes
/// default for `ClientIP` affinity: 3 hours).
pub const AFFINITY_TIMEOUT_SECONDS: i32 = 10_800;

/// The session affinity of a component's Service: chat's from the spec
/// (`ClientIP` unless set to `None`), none for user and mail (stateless).
pub fn session_affinity(cc: &ChatCluster, c: Component) -> SessionAffinity {
    match c {
        Component::Chat => cc.spec.chat.session_affinity,
        Component::User | Component::Mail => SessionAffinity::None,
    }
}

/// The ClusterIP Service in front of a component.
pub fn component_service(cc: &ChatCluster, c: Component) -> Service {
    let (session_affinity, session_affinity_config) = match session_affinity(cc, c) {
        SessionAffinity::ClientIp => (
            Some("ClientIP".to_owned()),
            Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(AFFINITY_TIMEOUT_SECONDS),
                }),
            }),
        ),
        SessionAffinity::None if c == Component::Chat => (Some("None".to_owned()), None),
        // user and mail keep the server's default (None) without naming it
        SessionAffinity::None => (None, None),
    };
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
            session_affinity,
            session_affinity_config,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::cluster;

    #[test]
    fn chat_sticks_clients_to_one_pod_by_default_and_user_and_mail_do_not() {
        let cc = cluster(Default::default());
        let spec = |c| component_service(&cc, c).spec.unwrap();
        let chat = spec(Component::Chat);
        assert_eq!(chat.session_affinity.as_deref(), Some("ClientIP"));
        let timeout = chat
            .session_affinity_config
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds);
        assert!(
            timeout.is_some_and(|t| (1..=86_400).contains(&t)),
            "{timeout:?}"
        );
        for c in [Component::User, Component::Mail] {
            let s = spec(c);
            assert_ne!(s.session_affinity.as_deref(), Some("ClientIP"), "{c:?}");
            assert!(s.session_affinity_config.is_none(), "{c:?}");
        }
    }

    #[test]
    fn chat_affinity_can_be_turned_off() {
        let spec: crate::api::ChatClusterSpec = serde_json::from_value(
            serde_json::json!({"chat": {"sessionAffinity": "None", "replicas": 4}}),
        )
        .unwrap();
        assert_eq!(spec.chat.component.replicas, Some(4));
        let chat = component_service(&cluster(spec), Component::Chat)
            .spec
            .unwrap();
        assert_eq!(chat.session_affinity.as_deref(), Some("None"));
        assert!(chat.session_affinity_config.is_none());
    }
}
