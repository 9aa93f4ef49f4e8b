//! The Ingress: user routes to user, Socket.IO and chat routes to chat.
//!
//! Socket.IO's websocket transport needs no sticky sessions (one long-lived
//! connection); its HTTP long-polling transport does. Ingress controllers
//! send traffic to the pods directly, past the chat Service's `ClientIP`
//! affinity, so with chat affinity on and the `nginx` class (ingress-nginx)
//! the Ingress asks for cookie affinity; other controllers need their own
//! setting in `ingress.annotations`, which always win.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use std::collections::BTreeMap;

use super::service::session_affinity;
use super::{HTTP_PORT, child_name, meta};
use crate::api::{ChatCluster, Component, SessionAffinity};

/// The IngressClass name of ingress-nginx, whose annotations the operator knows.
pub const NGINX_CLASS: &str = "nginx";

/// ingress-nginx annotations for cookie affinity. `persistent` keeps a
/// session on its pod when pods are added (the default `balanced` mode
/// moves some, breaking their long-polling sessions).
pub const NGINX_AFFINITY: [(&str, &str); 2] = [
    ("nginx.ingress.kubernetes.io/affinity", "cookie"),
    ("nginx.ingress.kubernetes.io/affinity-mode", "persistent"),
];

/// The Ingress annotations: cookie affinity for ingress-nginx when chat
/// wants affinity, then `ingress.annotations`, which override them.
pub fn annotations(cc: &ChatCluster) -> BTreeMap<String, String> {
    let spec = &cc.spec.ingress;
    let mut out = BTreeMap::new();
    if spec.class_name.as_deref() == Some(NGINX_CLASS)
        && session_affinity(cc, Component::Chat) == SessionAffinity::ClientIp
    {
        out.extend(NGINX_AFFINITY.map(|(k, v)| (k.to_owned(), v.to_owned())));
    }
    out.extend(spec.annotations.clone());
    out
}

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
    let annotations = annotations(cc);
    if !annotations.is_empty() {
        m.annotations = Some(annotations);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::cluster;

    fn annotations_for(spec: serde_json::Value) -> BTreeMap<String, String> {
        let spec = serde_json::from_value(spec).unwrap();
        ingress(&cluster(spec))
            .metadata
            .annotations
            .unwrap_or_default()
    }

    #[test]
    fn nginx_gets_cookie_affinity_while_chat_wants_affinity() {
        let on = annotations_for(serde_json::json!({
            "ingress": {"enabled": true, "className": "nginx",
                        "annotations": {"nginx.ingress.kubernetes.io/affinity-mode": "balanced"}}
        }));
        assert_eq!(on["nginx.ingress.kubernetes.io/affinity"], "cookie");
        // the user's own annotations win
        assert_eq!(on["nginx.ingress.kubernetes.io/affinity-mode"], "balanced");
        let off = annotations_for(serde_json::json!({
            "chat": {"sessionAffinity": "None"},
            "ingress": {"enabled": true, "className": "nginx"}
        }));
        assert!(off.is_empty(), "{off:?}");
        // another controller's annotations are not guessed
        let alb = annotations_for(serde_json::json!({
            "ingress": {"enabled": true, "className": "alb"}
        }));
        assert!(alb.is_empty(), "{alb:?}");
    }
}
