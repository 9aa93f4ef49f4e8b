//! The shared ConfigMap: every non-secret setting the services read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{HTTP_PORT, child_name, meta};
use kube::ResourceExt;

use crate::api::ChatCluster;
use crate::validated::ValidatedCluster;

/// Name of the shared ConfigMap.
pub fn config_map_name(cc: &ChatCluster) -> String {
    child_name(cc, "config")
}

/// Public base URL used in e-mail links.
pub fn app_base_url(cc: &ChatCluster) -> String {
    if let Some(url) = &cc.spec.app_base_url {
        return url.clone();
    }
    match (&cc.spec.ingress.host, &cc.spec.ingress.tls_secret_name) {
        (Some(host), Some(_)) => format!("https://{host}"),
        (Some(host), None) => format!("http://{host}"),
        _ => "http://localhost".into(),
    }
}

/// In-cluster URL of the user service.
pub fn user_service_url(cc: &ChatCluster) -> String {
    format!("http://{}:{HTTP_PORT}", child_name(cc, "user"))
}

/// `iss` of the tokens: `spec.auth.issuer`, else the services' default.
pub fn token_issuer(cc: &ChatCluster) -> String {
    cc.spec
        .auth
        .issuer
        .clone()
        .unwrap_or_else(|| parley_contracts::token::DEFAULT_ISSUER.to_owned())
}

/// `aud` of the tokens: `spec.auth.audience`, else `<namespace>/<name>`,
/// which no other ChatCluster shares.
pub fn token_audience(cc: &ChatCluster) -> String {
    cc.spec.auth.audience.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            cc.namespace().unwrap_or_else(|| "default".into()),
            cc.name_any()
        )
    })
}

/// The ConfigMap's data, keyed by env var name.
pub fn config_data(cc: &ValidatedCluster) -> BTreeMap<String, String> {
    let s = &cc.spec;
    let log = s
        .log
        .clone()
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    BTreeMap::from([
        ("PARLEY_LOG".into(), log),
        (
            "PARLEY_TOKEN_TTL_SECS".into(),
            s.auth.token_ttl_seconds.to_string(),
        ),
        ("PARLEY_TOKEN_ISSUER".into(), token_issuer(cc)),
        ("PARLEY_TOKEN_AUDIENCE".into(), token_audience(cc)),
        ("PARLEY_SMTP_HOST".into(), s.smtp.host.clone()),
        ("PARLEY_SMTP_PORT".into(), s.smtp.port.to_string()),
        ("PARLEY_SMTP_TLS".into(), cc.smtp_tls().as_str().into()),
        ("PARLEY_MAIL_FROM".into(), s.smtp.from.clone()),
        ("PARLEY_APP_BASE_URL".into(), app_base_url(cc)),
        ("PARLEY_USER_SERVICE_URL".into(), user_service_url(cc)),
    ])
}

/// The shared ConfigMap.
pub fn config_map(cc: &ValidatedCluster) -> ConfigMap {
    ConfigMap {
        metadata: meta(cc, config_map_name(cc), "config"),
        data: Some(config_data(cc)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::valid;

    #[test]
    fn defaults_give_a_complete_config() {
        let cm = config_map(&valid(Default::default()));
        let data = cm.data.unwrap();
        assert_eq!(data["PARLEY_USER_SERVICE_URL"], "http://demo-user:8080");
        assert_eq!(data["PARLEY_LOG"], "info");
        assert_eq!(data["PARLEY_SMTP_TLS"], "starttls");
        assert_eq!(data["PARLEY_APP_BASE_URL"], "http://localhost");
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-config"));
        assert_eq!(data["PARLEY_TOKEN_ISSUER"], "parley-user");
        assert_eq!(data["PARLEY_TOKEN_AUDIENCE"], "team/demo");
    }

    #[test]
    fn the_token_scope_follows_the_spec() {
        let mut spec = crate::api::ChatClusterSpec::default();
        spec.auth.issuer = Some("https://chat.example.com".into());
        spec.auth.audience = Some("parley".into());
        let data = config_data(&valid(spec));
        assert_eq!(data["PARLEY_TOKEN_ISSUER"], "https://chat.example.com");
        assert_eq!(data["PARLEY_TOKEN_AUDIENCE"], "parley");
        // two ChatClusters never share the default audience
        let mut other = crate::build::fixtures::cluster(Default::default());
        other.metadata.namespace = Some("team-b".into());
        let other = crate::validate::validate(&other).unwrap();
        assert_ne!(
            config_data(&other)["PARLEY_TOKEN_AUDIENCE"],
            config_data(&valid(Default::default()))["PARLEY_TOKEN_AUDIENCE"]
        );
    }
}
