//! Reads what the spec refers to: Secrets (digests for the rollout hashes,
//! and to report missing ones) and which optional APIs the cluster serves.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::{ChatCluster, Store};
use crate::build::rollout::SecretDigests;
use crate::build::secret::{
    generated_secret_name, jwt_secret_name, private_key_key, public_key_key,
};
use crate::build::{ApiSupport, managed};

/// What dereferencing found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dereferenced {
    /// Digests of the referenced Secrets (for the workloads' rollout hashes).
    pub secrets: SecretDigests,
    /// Referenced Secrets that do not exist (`name` or `name/key`).
    pub missing: Vec<String>,
    /// Referenced Secret keys that exist but cannot be used, each with why
    /// (`name/key: why`).
    pub unusable: Vec<String>,
    /// Optional APIs the cluster serves.
    pub apis: ApiSupport,
}

/// What a referenced Secret key must hold to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything.
    Any,
    /// A password that goes into a connection URL and a store's
    /// configuration unescaped: at least 16 of `A-Z a-z 0-9 - . _ ~`.
    Password,
    /// PEM CA certificates.
    Certificates,
    /// A connection URL of a store that is sent CA certificates: it must
    /// ask for TLS.
    TlsUrl(Store),
}

/// One referenced key of a Secret and what it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
    /// Key inside it.
    pub key: String,
    /// What its value must be.
    pub expect: Expect,
}

fn key_ref(name: &str, key: &str, expect: Expect) -> SecretRef {
    SecretRef {
        name: name.to_owned(),
        key: key.to_owned(),
        expect,
    }
}

/// The Secret keys a spec refers to, besides `<name>-generated` (which the
/// operator writes itself).
pub fn secret_key_refs(cc: &ChatCluster) -> Vec<SecretRef> {
    let jwt = jwt_secret_name(cc);
    // user pods read the private key, chat pods the public ones
    let mut refs = vec![
        key_ref(&jwt, private_key_key(cc), Expect::Any),
        key_ref(&jwt, public_key_key(cc), Expect::Any),
    ];
    let smtp = &cc.spec.smtp;
    if let Some(s) = &smtp.credentials_secret {
        // the mail pods read both (non-optional secretKeyRefs)
        refs.push(key_ref(s, &smtp.username_key, Expect::Any));
        refs.push(key_ref(s, &smtp.password_key, Expect::Any));
    }
    for store in Store::ALL {
        let spec = store.spec(&cc.spec);
        match (managed(cc, store), &spec.external) {
            (Some(m), _) => {
                if let Some(p) = &m.password_secret {
                    refs.push(key_ref(&p.name, &p.key, Expect::Password));
                }
            }
            (None, Some(ext)) => {
                let url = &ext.url_secret;
                match &ext.ca_secret {
                    Some(ca) => {
                        refs.push(key_ref(&url.name, &url.key, Expect::TlsUrl(store)));
                        refs.push(key_ref(&ca.name, &ca.key, Expect::Certificates));
                    }
                    None => refs.push(key_ref(&url.name, &url.key, Expect::Any)),
                }
            }
            (None, None) => {}
        }
    }
    refs
}

/// Secret references of a spec: (name, keys it must hold), one entry per
/// Secret in the order first referred to, `<name>-generated` included.
pub fn secret_refs(cc: &ChatCluster) -> Vec<(String, Vec<String>)> {
    by_secret(cc, &secret_key_refs(cc))
}

/// Pure: `refs` (of `cc`) grouped by Secret, as [`secret_refs`] gives them.
fn by_secret(cc: &ChatCluster, refs: &[SecretRef]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = vec![(generated_secret_name(cc), Vec::new())];
    for r in refs {
        match out.iter_mut().find(|(name, _)| *name == r.name) {
            Some((_, keys)) => {
                if !keys.contains(&r.key) {
                    keys.push(r.key.clone());
                }
            }
            None => out.push((r.name.clone(), vec![r.key.clone()])),
        }
    }
    out
}

/// Why `value` cannot be used as `expect` says, if it cannot.
pub fn unusable_because(expect: Expect, value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok();
    match expect {
        Expect::Any => None,
        Expect::Password => {
            let ok = value.len() >= 16
                && value
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
            (!ok).then(|| {
                "a store password must be at least 16 of A-Z a-z 0-9 - . _ ~ (it goes into URLs and the store's configuration unescaped)".to_owned()
            })
        }
        Expect::Certificates => {
            let ok = text.is_some_and(|t| t.contains("-----BEGIN CERTIFICATE-----"));
            (!ok).then(|| "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned())
        }
        Expect::TlsUrl(store) => {
            let scheme = match store {
                Store::Redis => Some("rediss://"),
                Store::Rabbitmq => Some("amqps://"),
                // a CA file turns TLS on for MongoDB whatever the URL says
                Store::Mongodb => None,
            };
            let ok = scheme.is_none_or(|s| text.is_some_and(|t| t.trim().starts_with(s)));
            (!ok).then(|| {
                format!(
                    "{}.external.caSecret is set, so the URL must ask for TLS ({})",
                    store.name(),
                    scheme.unwrap_or_default()
                )
            })
        }
    }
}

/// The referenced keys of `secrets` (as read: name, Secret or `None`)
/// that exist but cannot be used, as `name/key: why`.
pub fn unusable_parts(refs: &[SecretRef], secrets: &[(String, Option<Secret>)]) -> Vec<String> {
    refs.iter()
        .filter_map(|r| {
            let secret = secrets.iter().find(|(n, _)| *n == r.name)?.1.as_ref()?;
            let value = secret.data.as_ref()?.get(&r.key)?;
            let why = unusable_because(r.expect, &value.0)?;
            Some(format!("{}/{}: {why}", r.name, r.key))
        })
        .collect()
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
    let refs = secret_key_refs(cc);
    for (name, keys) in by_secret(cc, &refs) {
        let secret = api.get_opt(&name).await?;
        missing.extend(missing_parts(&name, secret.as_ref(), &keys));
        secrets.push((name, secret));
    }
    Ok(Dereferenced {
        unusable: unusable_parts(&refs, &secrets),
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
            ca_secret: None,
        });
        let names: Vec<_> = secret_refs(&cluster(spec))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["demo-generated", "demo-jwt", "smtp", "mongo"]);
    }

    #[test]
    fn own_secrets_are_required_under_their_key_names_and_checked() {
        let spec: crate::api::ChatClusterSpec = serde_json::from_value(serde_json::json!({
            "smtp": {"credentialsSecret": "mailer", "usernameKey": "user", "passwordKey": "pass"},
            "auth": {"signingKeySecret": "keys", "privateKeyKey": "tls.key", "publicKeyKey": "tls.pub"},
            "rabbitmq": {"managed": {"passwordSecret": {"name": "mq", "key": "pw"}}},
            "redis": {"external": {"urlSecret": {"name": "cache", "key": "url"},
                                   "caSecret": {"name": "cache"}}},
        }))
        .unwrap();
        let cc = cluster(spec);
        assert_eq!(
            secret_refs(&cc),
            [
                ("demo-generated".to_owned(), vec![]),
                ("keys".into(), vec!["tls.key".into(), "tls.pub".into()]),
                ("mailer".into(), vec!["user".into(), "pass".into()]),
                ("cache".into(), vec!["url".into(), "ca.crt".into()]),
                ("mq".into(), vec!["pw".into()]),
            ]
        );
        let with = |pairs: &[(&str, &str)]| {
            Some(Secret {
                data: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| {
                            (
                                (*k).to_owned(),
                                k8s_openapi::ByteString(v.as_bytes().to_vec()),
                            )
                        })
                        .collect(),
                ),
                ..Default::default()
            })
        };
        let secrets = vec![
            ("mq".to_owned(), with(&[("pw", "has space and is long")])),
            (
                "cache".to_owned(),
                with(&[("url", "redis://cache:6379"), ("ca.crt", "not a cert")]),
            ),
        ];
        let unusable = unusable_parts(&secret_key_refs(&cc), &secrets);
        assert_eq!(unusable.len(), 3, "{unusable:#?}");
        assert!(
            unusable[0].starts_with(
                "cache/url: redis.external.caSecret is set, so the URL must ask for TLS (rediss://)"
            ),
            "{}",
            unusable[0]
        );
        assert!(
            unusable[1].starts_with("cache/ca.crt: holds no PEM certificate"),
            "{}",
            unusable[1]
        );
        assert!(
            unusable[2].starts_with("mq/pw: a store password must be"),
            "{}",
            unusable[2]
        );
        let good = vec![
            ("mq".to_owned(), with(&[("pw", "Good-password_0123.~")])),
            (
                "cache".to_owned(),
                with(&[
                    ("url", "rediss://:p@cache:6379"),
                    (
                        "ca.crt",
                        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                    ),
                ]),
            ),
        ];
        assert_eq!(
            unusable_parts(&secret_key_refs(&cc), &good),
            Vec::<String>::new()
        );
        // short passwords are refused too; MongoDB URLs need no TLS scheme
        assert!(unusable_because(Expect::Password, b"short").is_some());
        assert!(unusable_because(Expect::TlsUrl(Store::Mongodb), b"mongodb://x").is_none());
        assert!(unusable_because(Expect::TlsUrl(Store::Rabbitmq), b"amqp://x").is_some());
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
