//! Reads what the spec refers to: Secrets (digests for the rollout hashes,
//! and to report missing ones) and which optional APIs the cluster serves.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::{ChatCluster, Store};
use crate::build::rollout::SecretDigests;
use crate::build::secret::{PRIVATE_KEY, PUBLIC_KEY, generated_secret_name, jwt_secret_name};
use crate::build::{ApiSupport, managed};

/// What dereferencing found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dereferenced {
    /// Digests of the referenced Secrets (for the workloads' rollout hashes).
    pub secrets: SecretDigests,
    /// Referenced Secrets that do not exist (`name` or `name/key`).
    pub missing: Vec<String>,
    /// Optional APIs the cluster serves.
    pub apis: ApiSupport,
}

/// Secret references of a spec: (name, keys it must hold).
pub fn secret_refs(cc: &ChatCluster) -> Vec<(String, Vec<String>)> {
    let keys = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
    let mut refs = vec![
        // user pods read private.pem, chat pods public.pem
        (jwt_secret_name(cc), keys(&[PRIVATE_KEY, PUBLIC_KEY])),
        (generated_secret_name(cc), Vec::new()),
    ];
    if let Some(s) = &cc.spec.smtp.credentials_secret {
        // the mail pods read both (non-optional secretKeyRefs)
        refs.push((s.clone(), keys(&["username", "password"])));
    }
    for store in Store::ALL {
        if managed(cc, store).is_none()
            && let Some(ext) = &store.spec(&cc.spec).external
        {
            refs.push((
                ext.url_secret.name.clone(),
                vec![ext.url_secret.key.clone()],
            ));
        }
    }
    refs
}

/// What `secret` (None: absent) lacks of `required`: the name alone when it
/// is absent, else `name/key` per missing key.
pub fn missing_parts(name: &str, secret: Option<&Secret>, required: &[String]) -> Vec<String> {
    let Some(secret) = secret else {
        return vec![name.to_owned()];
    };
    let has = |key: &str| {
        secret.data.as_ref().is_some_and(|d| d.contains_key(key))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key))
    };
    required
        .iter()
        .filter(|key| !has(key))
        .map(|key| format!("{name}/{key}"))
        .collect()
}

/// Which optional APIs a list of served group versions contains.
pub fn api_support(group_versions: &[String]) -> ApiSupport {
    ApiSupport {
        autoscaling_v2: group_versions.iter().any(|g| g == "autoscaling/v2"),
        policy_v1: group_versions.iter().any(|g| g == "policy/v1"),
        autoscaling_v2beta2: group_versions.iter().any(|g| g == "autoscaling/v2beta2"),
        policy_v1beta1: group_versions.iter().any(|g| g == "policy/v1beta1"),
    }
}

/// Discovery results, refreshed at most once a minute.
#[derive(Default)]
pub struct DiscoveryCache {
    cached: Mutex<Option<(Instant, ApiSupport)>>,
}

impl DiscoveryCache {
    /// The optional APIs the cluster serves.
    pub async fn get(&self, client: &Client) -> Result<ApiSupport, kube::Error> {
        if let Ok(guard) = self.cached.lock()
            && let Some((at, apis)) = *guard
            && at.elapsed() < Duration::from_secs(60)
        {
            return Ok(apis);
        }
        let groups = client.list_api_groups().await?;
        let versions: Vec<String> = groups
            .groups
            .iter()
            .flat_map(|g| g.versions.iter().map(|v| v.group_version.clone()))
            .collect();
        let apis = api_support(&versions);
        if let Ok(mut guard) = self.cached.lock() {
            *guard = Some((Instant::now(), apis));
        }
        Ok(apis)
    }
}

/// Reads every referenced Secret and the served APIs.
pub async fn dereference(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
    discovery: &DiscoveryCache,
) -> Result<Dereferenced, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secrets = Vec::new();
    let mut missing = Vec::new();
    for (name, keys) in secret_refs(cc) {
        let secret = api.get_opt(&name).await?;
        missing.extend(missing_parts(&name, secret.as_ref(), &keys));
        secrets.push((name, secret));
    }
    Ok(Dereferenced {
        secrets: SecretDigests::new(&secrets, &generated_secret_name(cc)),
        missing,
        apis: discovery.get(client).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::cluster;

    #[test]
    fn discovery_of_a_1_20_server_lacks_v2_and_policy_v1() {
        let served: Vec<String> = [
            "apps/v1",
            "autoscaling/v1",
            "autoscaling/v2beta2",
            "policy/v1beta1",
        ]
        .map(String::from)
        .to_vec();
        let apis = api_support(&served);
        assert!(!apis.autoscaling_v2 && !apis.policy_v1);
        assert_eq!(apis.hpa_version(), Some("autoscaling/v2beta2"));
        assert_eq!(apis.pdb_version(), Some("policy/v1beta1"));
        let served: Vec<String> = ["autoscaling/v2", "policy/v1"].map(String::from).to_vec();
        assert_eq!(api_support(&served), ApiSupport::default());
    }

    #[test]
    fn external_stores_and_smtp_credentials_are_referenced() {
        let mut spec = crate::api::ChatClusterSpec::default();
        spec.smtp.credentials_secret = Some("smtp".into());
        spec.mongodb.external = Some(crate::api::ExternalStore {
            url_secret: crate::api::SecretKeyRef {
                name: "mongo".into(),
                key: "uri".into(),
            },
        });
        let names: Vec<_> = secret_refs(&cluster(spec))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["demo-jwt", "demo-generated", "smtp", "mongo"]);
    }

    #[test]
    fn the_public_key_and_the_smtp_username_are_required() {
        let mut spec = crate::api::ChatClusterSpec::default();
        spec.smtp.credentials_secret = Some("smtp".into());
        let refs = secret_refs(&cluster(spec));
        let keys = |name: &str| refs.iter().find(|(n, _)| n == name).map(|(_, k)| k.clone());
        assert_eq!(keys("demo-jwt").unwrap(), ["private.pem", "public.pem"]);
        assert_eq!(keys("smtp").unwrap(), ["username", "password"]);
        let only_password = Secret {
            data: Some(std::collections::BTreeMap::from([(
                "password".to_owned(),
                k8s_openapi::ByteString(b"p".to_vec()),
            )])),
            ..Default::default()
        };
        let required = keys("smtp").unwrap();
        assert_eq!(
            missing_parts("smtp", Some(&only_password), &required),
            ["smtp/username"]
        );
        assert_eq!(missing_parts("smtp", None, &required), ["smtp"]);
    }
}
