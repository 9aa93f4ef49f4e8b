//! Reads what the spec refers to: Secrets (digests for the rollout hashes,
//! and to report missing ones) and which optional APIs the cluster serves.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::{ChatCluster, Store};
use crate::build::rollout::SecretDigests;
use crate::build::secret::{generated_secret_name, jwt_secret_name};
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

/// Secret references of a spec: (name, required key or None).
pub fn secret_refs(cc: &ChatCluster) -> Vec<(String, Option<String>)> {
    let mut refs = vec![
        (jwt_secret_name(cc), Some("private.pem".to_owned())),
        (generated_secret_name(cc), None),
    ];
    if let Some(s) = &cc.spec.smtp.credentials_secret {
        refs.push((s.clone(), Some("password".to_owned())));
    }
    for store in Store::ALL {
        if managed(cc, store).is_none()
            && let Some(ext) = &store.spec(&cc.spec).external
        {
            refs.push((
                ext.url_secret.name.clone(),
                Some(ext.url_secret.key.clone()),
            ));
        }
    }
    refs
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
    for (name, key) in secret_refs(cc) {
        let secret = api.get_opt(&name).await?;
        match (&secret, &key) {
            (None, _) => missing.push(name.clone()),
            (Some(s), Some(key)) if !s.data.as_ref().is_some_and(|d| d.contains_key(key)) => {
                missing.push(format!("{name}/{key}"))
            }
            _ => {}
        }
        secrets.push((name, secret));
    }
    Ok(Dereferenced {
        secrets: SecretDigests::new(&secrets),
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
}
