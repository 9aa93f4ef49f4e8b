//! The Ingress: user routes to user, Socket.IO and chat routes to chat.
//!
//! Socket.IO's websocket transport needs no sticky sessions (one long-lived
//! connection); its HTTP long-polling fallback does, so enable cookie
//! affinity through `ingress.annotations` when clients may poll.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::{HTTP_PORT, child_name, meta};
use crate::api::{ChatCluster, Component};

/// Path prefixes served by user.
pub const USER_PATHS: &[&str] = &[
    "/api/v1/login",
    "/api/v1/verify",
    "/api/v1/me",
    "/api/v1/user",
    "/api/v1/users",
];
/// Path prefixes served by chat.
pub const CHAT_PATHS: &[&str] = &[
    "/socket.io",
    "/api/v1/chat",
    "/api/v1/message",
    "/api/v1/media",
];

fn path(cc: &ChatCluster, prefix: &str, c: Component) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(prefix.into()),
        path_type: "Prefix".into(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: child_name(cc, c.name()),
                port: Some(ServiceBackendPort {
                    number: Some(HTTP_PORT),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        },
    }
}

/// The Ingress of a ChatCluster with `ingress.enabled`.
pub fn ingress(cc: &ChatCluster) -> Ingress {
    let spec = &cc.spec.ingress;
    let mut m = meta(cc, cc.metadata.name.clone().unwrap_or_default(), "ingress");
    if !spec.annotations.is_empty() {
        m.annotations = Some(spec.annotations.clone());
    }
    let paths = USER_PATHS
        .iter()
        .map(|p| path(cc, p, Component::User))
        .chain(CHAT_PATHS.iter().map(|p| path(cc, p, Component::Chat)))
        .collect();
    Ingress {
        metadata: m,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: spec.host.clone(),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: spec.host.clone().map(|h| vec![h]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
