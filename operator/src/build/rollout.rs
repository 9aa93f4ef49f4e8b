//! Rollout hashes: each pod template carries a hash of exactly what its pods
//! read from outside the template (keys of the shared ConfigMap, keys of
//! Secrets), so a change restarts only the pods that read it. A store never
//! restarts because a service setting (log level, SMTP, ingress host) or a
//! service's Secret changed.
//!
//! The inputs are found in the built pod spec itself (env `valueFrom`,
//! `envFrom`, Secret and ConfigMap volumes), so the hash cannot drift from
//! what the pods really read. Everything else a pod sees is in its template
//! already, and changes to it roll the pods by themselves.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PodSpec, Secret};
use sha2::{Digest, Sha256};

use super::configmap::{config_data, config_map_name};
use crate::validated::ValidatedCluster;

/// Digests of the Secrets a ChatCluster refers to, by Secret name and key;
/// `None` for a Secret that does not exist. Only digests are kept, so no
/// secret material travels into the builders (or their `Debug` output).
///
/// The rollout hash they feed is an annotation on pod templates, which
/// anyone who may read Deployments sees, also people who may not read
/// Secrets. So the values of every Secret but the operator's own
/// `<name>-generated` are digested under a key only that Secret gives
/// (HMAC-SHA-256 under a key derived from its `otp-secret`): the annotation
/// cannot be used to test guesses of an SMTP password or a store URL
/// without reading `<name>-generated` too. The generated values themselves
/// are 24 or 32 random bytes and digested plainly. Without that key the
/// other Secrets count as not read (their reference alone is hashed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDigests(BTreeMap<String, Option<BTreeMap<String, [u8; 32]>>>);

type Hmac = hmac::Hmac<Sha256>;

/// The digest key of the other Secrets, derived from `generated`'s OTP secret.
fn digest_key(generated: Option<&Secret>) -> Option<[u8; 32]> {
    use hmac::Mac as _;
    let otp = generated?.data.as_ref()?.get(super::secret::OTP_SECRET)?;
    let mut mac = Hmac::new_from_slice(&otp.0).ok()?;
    mac.update(b"parley.dev/config-hash secret digests");
    Some(mac.finalize().into_bytes().into())
}

impl SecretDigests {
    /// Digests of `secrets`, as read: (name, the Secret or `None` when
    /// absent). `generated` names the operator's `<name>-generated` Secret,
    /// whose OTP secret keys the digests of the others.
    pub fn new(secrets: &[(String, Option<Secret>)], generated: &str) -> Self {
        use hmac::Mac as _;
        let key = digest_key(
            secrets
                .iter()
                .find(|(name, _)| name == generated)
                .and_then(|(_, s)| s.as_ref()),
        );
        let digests = secrets
            .iter()
            .filter_map(|(name, secret)| {
                let digest = |value: &[u8]| -> Option<[u8; 32]> {
                    if name == generated {
                        return Some(Sha256::digest(value).into());
                    }
                    let mut mac = Hmac::new_from_slice(&key?).ok()?;
                    mac.update(value);
                    Some(mac.finalize().into_bytes().into())
                };
                let keys = match secret {
                    None => None,
                    Some(s) => Some(
                        s.data
                            .iter()
                            .flatten()
                            .map(|(k, v)| Some((k.clone(), digest(&v.0)?)))
                            .collect::<Option<BTreeMap<_, _>>>()?,
                    ),
                };
                Some((name.clone(), keys))
            })
            .collect();
        Self(digests)
    }

    /// What is known of `name`/`key`: its digest, or why there is none.
    fn lookup(&self, name: &str, key: &str) -> Value<'_> {
        match self.0.get(name) {
            None => Value::Unread,
            Some(None) => Value::Absent,
            Some(Some(keys)) => keys.get(key).map_or(Value::Absent, |d| Value::Bytes(d)),
        }
    }

    /// Every key of `name`, with its digest.
    fn keys(&self, name: &str) -> Vec<(String, Value<'_>)> {
        match self.0.get(name) {
            None => vec![(String::new(), Value::Unread)],
            Some(None) => vec![(String::new(), Value::Absent)],
            Some(Some(keys)) => keys
                .iter()
                .map(|(k, d)| (k.clone(), Value::Bytes(d)))
                .collect(),
        }
    }
}

/// Something a pod reads from outside its template.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input {
    /// One key of a ConfigMap.
    ConfigMapKey(String, String),
    /// Every key of a ConfigMap.
    ConfigMap(String),
    /// One key of a Secret.
    SecretKey(String, String),
    /// Every key of a Secret.
    Secret(String),
}

/// The current value of an input, as hashed.
enum Value<'a> {
    Bytes(&'a [u8]),
    /// The object or key does not exist (yet): its arrival changes the hash.
    Absent,
    /// Not read by the operator (e.g. a ConfigMap a user's env refers to):
    /// only the reference itself is hashed.
    Unread,
}

/// Every ConfigMap and Secret (key) the pod's containers and volumes read.
pub fn inputs(pod: &PodSpec) -> BTreeSet<Input> {
    let mut out = BTreeSet::new();
    let containers = pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter());
    for c in containers {
        for source in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(r) = &source.config_map_key_ref {
                out.insert(Input::ConfigMapKey(r.name.clone(), r.key.clone()));
            }
            if let Some(r) = &source.secret_key_ref {
                out.insert(Input::SecretKey(r.name.clone(), r.key.clone()));
            }
        }
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                out.insert(Input::ConfigMap(r.name.clone()));
            }
            if let Some(r) = &from.secret_ref {
                out.insert(Input::Secret(r.name.clone()));
            }
        }
    }
    for v in pod.volumes.iter().flatten() {
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            match &s.items {
                Some(items) => out.extend(
                    items
                        .iter()
                        .map(|i| Input::SecretKey(name.clone(), i.key.clone())),
                ),
                None => {
                    out.insert(Input::Secret(name));
                }
            }
        }
        if let Some(c) = &v.config_map {
            match &c.items {
                Some(items) => out.extend(
                    items
                        .iter()
                        .map(|i| Input::ConfigMapKey(c.name.clone(), i.key.clone())),
                ),
                None => {
                    out.insert(Input::ConfigMap(c.name.clone()));
                }
            }
        }
    }
    out
}

/// The rollout hash of a pod spec of `cc`: over every input the pod reads
/// (see [`inputs`]) and its current value. The shared ConfigMap's values
/// come from the spec (the operator writes them), Secrets' from `secrets`.
pub fn rollout_hash(cc: &ValidatedCluster, pod: &PodSpec, secrets: &SecretDigests) -> String {
    let config_name = config_map_name(cc);
    let config = config_data(cc);
    let config_value = |name: &str, key: &str| {
        if name != config_name {
            Value::Unread
        } else {
            config
                .get(key)
                .map_or(Value::Absent, |v| Value::Bytes(v.as_bytes()))
        }
    };
    let mut h = Sha256::new();
    let mut field = |tag: u8, name: &str, key: &str, value: Value| {
        h.update([tag]);
        for part in [name, key] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        match value {
            Value::Bytes(b) => {
                h.update([0]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
            Value::Absent => h.update([1]),
            Value::Unread => h.update([2]),
        }
    };
    for input in inputs(pod) {
        match &input {
            Input::ConfigMapKey(name, key) => field(0, name, key, config_value(name, key)),
            Input::ConfigMap(name) => {
                if *name == config_name {
                    for (key, value) in &config {
                        field(1, name, key, Value::Bytes(value.as_bytes()));
                    }
                } else {
                    field(1, name, "", Value::Unread);
                }
            }
            Input::SecretKey(name, key) => field(2, name, key, secrets.lookup(name, key)),
            Input::Secret(name) => {
                for (key, value) in secrets.keys(name) {
                    field(3, name, &key, value);
                }
            }
        }
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::valid;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        Container, EnvVar, EnvVarSource, SecretKeySelector, SecretVolumeSource, Volume,
    };

    fn secret(data: &str) -> Option<Secret> {
        Some(Secret {
            data: Some(BTreeMap::from([(
                "k".to_owned(),
                ByteString(data.as_bytes().to_vec()),
            )])),
            ..Default::default()
        })
    }

    fn reading(secret: &str, key: &str) -> PodSpec {
        PodSpec {
            containers: vec![Container {
                env: Some(vec![EnvVar {
                    name: "X".into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret.into(),
                            key: key.into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "whole".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("mounted".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn generated(otp: &str) -> Option<Secret> {
        Some(Secret {
            data: Some(BTreeMap::from([(
                crate::build::secret::OTP_SECRET.to_owned(),
                ByteString(otp.as_bytes().to_vec()),
            )])),
            ..Default::default()
        })
    }

    #[test]
    fn hash_follows_the_read_secret_keys_only() {
        let cc = valid(Default::default());
        let digests = |s: Option<Secret>, m: Option<Secret>| {
            SecretDigests::new(
                &[
                    ("g".into(), generated("key")),
                    ("s".into(), s),
                    ("mounted".into(), m),
                ],
                "g",
            )
        };
        let pod = reading("s", "k");
        let a = rollout_hash(&cc, &pod, &digests(secret("one"), secret("m")));
        assert_eq!(
            a,
            rollout_hash(&cc, &pod, &digests(secret("one"), secret("m")))
        );
        assert_ne!(
            a,
            rollout_hash(&cc, &pod, &digests(secret("two"), secret("m")))
        );
        // a whole mounted Secret counts with every key
        assert_ne!(
            a,
            rollout_hash(&cc, &pod, &digests(secret("one"), secret("n")))
        );
        // absent, then created: a change
        assert_ne!(a, rollout_hash(&cc, &pod, &digests(None, secret("m"))));
        // a key the pod does not read changes nothing
        let other = reading("s", "other");
        assert_eq!(
            rollout_hash(&cc, &other, &digests(secret("one"), secret("m"))),
            rollout_hash(&cc, &other, &digests(secret("two"), secret("m")))
        );
        // the shared ConfigMap's values do not matter to a pod that reads none of them
        let mut spec = crate::api::ChatClusterSpec::default();
        spec.smtp.port = 2525;
        let changed = valid(spec);
        assert_eq!(
            a,
            rollout_hash(&changed, &pod, &digests(secret("one"), secret("m")))
        );
    }

    #[test]
    fn digests_hold_no_secret_material() {
        let d = SecretDigests::new(
            &[
                ("g".into(), generated("key")),
                ("s".into(), secret("hunter2-password")),
            ],
            "g",
        );
        assert!(!format!("{d:?}").contains("hunter2"));
    }

    /// What someone who may read Deployments but not Secrets could try: hash
    /// guesses of a referenced Secret's value with everything else the pod
    /// template shows, and compare with its annotation. The guess is right,
    /// yet nothing matches without the key in `<name>-generated`.
    #[test]
    fn a_guess_of_a_secret_value_cannot_be_checked_against_the_annotation() {
        let cc = valid(Default::default());
        let pod = reading("s", "k");
        let annotation = rollout_hash(
            &cc,
            &pod,
            &SecretDigests::new(
                &[
                    (
                        "g".into(),
                        generated("32 random bytes only Secret readers see"),
                    ),
                    ("s".into(), secret("hunter2")),
                ],
                "g",
            ),
        );
        // the attacker's candidates: plain digests of the right guess, or
        // keyed with a guessed key
        let plain = {
            let mut d = SecretDigests::default();
            d.0.insert(
                "s".into(),
                Some(BTreeMap::from([(
                    "k".to_owned(),
                    Sha256::digest(b"hunter2").into(),
                )])),
            );
            d
        };
        assert_ne!(annotation, rollout_hash(&cc, &pod, &plain));
        for guessed_key in ["", "key", "otp"] {
            let guess = SecretDigests::new(
                &[
                    ("g".into(), generated(guessed_key)),
                    ("s".into(), secret("hunter2")),
                ],
                "g",
            );
            assert_ne!(annotation, rollout_hash(&cc, &pod, &guess));
        }
        // the operator's own generated values are digested plainly (random
        // bytes; a store's hash needs no key), and without a key the
        // others count as unread
        let unkeyed = SecretDigests::new(&[("s".into(), secret("hunter2"))], "g");
        assert_eq!(
            rollout_hash(&cc, &pod, &unkeyed),
            rollout_hash(
                &cc,
                &pod,
                &SecretDigests::new(&[("s".into(), secret("other"))], "g")
            )
        );
    }
}
