//! Generated Secrets: created once, never replaced (the apply step only
//! creates them when absent). Random material is passed in, so these stay pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use super::{child_name, instance, managed, meta, owner_ref};
use crate::api::{ChatCluster, Store, VolumeReclaim};

/// Key of the private signing key in the signing-key Secret.
pub const PRIVATE_KEY: &str = "private.pem";
/// Key of the public key in the signing-key Secret.
pub const PUBLIC_KEY: &str = "public.pem";
/// Key of the one-time-code secret in the generated Secret.
pub const OTP_SECRET: &str = "otp-secret";
/// Key of the managed RabbitMQ password in the generated Secret.
pub const RABBITMQ_PASSWORD: &str = "rabbitmq-password";
/// Key of the managed Redis password in the generated Secret.
pub const REDIS_PASSWORD: &str = "redis-password";
/// Key of the managed MongoDB root password in the generated Secret.
pub const MONGODB_PASSWORD: &str = "mongodb-password";
/// Key of the password of the services' own (`readWrite` only) user of the
/// managed MongoDB in the generated Secret.
pub const MONGODB_APP_PASSWORD: &str = "mongodb-app-password";

/// Every key of the generated Secret and how many random bytes it holds
/// (hex-encoded, so it needs no escaping in a URL).
pub const GENERATED_KEYS: [(&str, usize); 5] = [
    (OTP_SECRET, 32),
    (RABBITMQ_PASSWORD, 24),
    (REDIS_PASSWORD, 24),
    (MONGODB_PASSWORD, 24),
    (MONGODB_APP_PASSWORD, 24),
];

/// Keys of [`GENERATED_KEYS`] that `existing` lacks (a Secret made by an
/// older operator); they are added, the present ones never replaced.
pub fn missing_generated_keys(existing: &Secret) -> Vec<&'static str> {
    let has = |key: &str| {
        existing.data.as_ref().is_some_and(|d| d.contains_key(key))
            || existing
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key))
    };
    GENERATED_KEYS
        .iter()
        .map(|(key, _)| *key)
        .filter(|key| !has(key))
        .collect()
}

/// Where a managed store's password is read from: the store's
/// `passwordSecret` when set, else its key of `<name>-generated`. For
/// MongoDB this is the root password; the services' own user's password
/// is always generated ([`MONGODB_APP_PASSWORD`]).
pub fn store_password(cc: &ChatCluster, store: Store) -> (String, String) {
    let own = store
        .spec(&cc.spec)
        .managed
        .as_ref()
        .and_then(|m| m.password_secret.as_ref());
    match own {
        Some(r) => (r.name.clone(), r.key.clone()),
        None => {
            let key = match store {
                Store::Redis => REDIS_PASSWORD,
                Store::Rabbitmq => RABBITMQ_PASSWORD,
                Store::Mongodb => MONGODB_PASSWORD,
            };
            (generated_secret_name(cc), key.to_owned())
        }
    }
}

/// The key of the private signing key in the signing-key Secret: the
/// spec's `privateKeyKey` for a named Secret, [`PRIVATE_KEY`] in the
/// generated one.
pub fn private_key_key(cc: &ChatCluster) -> &str {
    match cc.spec.auth.signing_key_secret {
        Some(_) => &cc.spec.auth.private_key_key,
        None => PRIVATE_KEY,
    }
}

/// The key of the public keys in the signing-key Secret: the spec's
/// `publicKeyKey` for a named Secret, [`PUBLIC_KEY`] in the generated one.
pub fn public_key_key(cc: &ChatCluster) -> &str {
    match cc.spec.auth.signing_key_secret {
        Some(_) => &cc.spec.auth.public_key_key,
        None => PUBLIC_KEY,
    }
}

/// Name of the Secret holding the signing key pair (named or generated).
pub fn jwt_secret_name(cc: &ChatCluster) -> String {
    cc.spec
        .auth
        .signing_key_secret
        .clone()
        .unwrap_or_else(|| child_name(cc, "jwt"))
}

/// Name of the Secret of generated credentials (OTP secret, managed store passwords).
pub fn generated_secret_name(cc: &ChatCluster) -> String {
    child_name(cc, "generated")
}

/// The generated signing-key Secret, or `None` when the spec names one.
pub fn jwt_secret(cc: &ChatCluster, private_pem: &str, public_pem: &str) -> Option<Secret> {
    if cc.spec.auth.signing_key_secret.is_some() {
        return None;
    }
    Some(Secret {
        metadata: meta(cc, jwt_secret_name(cc), "auth"),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            (PRIVATE_KEY.into(), private_pem.into()),
            (PUBLIC_KEY.into(), public_pem.into()),
        ])),
        ..Default::default()
    })
}

/// Whether `<name>-generated` goes with the ChatCluster: only when no
/// managed store keeps its volume. The store images apply these passwords
/// only to an empty data directory, so while a kept volume may outlive the
/// ChatCluster its passwords must too; a ChatCluster re-created under the
/// same name then finds and adopts them.
pub fn generated_secret_goes_with_cluster(cc: &ChatCluster) -> bool {
    Store::ALL
        .iter()
        .all(|s| managed(cc, *s).is_none_or(|m| m.volume_reclaim == VolumeReclaim::Delete))
}

/// The owner references `<name>-generated` should carry, given those it has:
/// references to any ChatCluster of this name (this one, or an earlier one
/// whose kept volumes this one inherits) are dropped, others kept, and this
/// ChatCluster's added when the Secret goes with it.
pub fn generated_secret_owners(
    cc: &ChatCluster,
    current: &[OwnerReference],
) -> Vec<OwnerReference> {
    let kind = ChatCluster::kind(&());
    let mut owners: Vec<OwnerReference> = current
        .iter()
        .filter(|o| !(o.kind == kind && o.name == instance(cc)))
        .cloned()
        .collect();
    if generated_secret_goes_with_cluster(cc) {
        owners.push(owner_ref(cc));
    }
    owners
}

/// The generated credentials Secret holding `values` (key → value), owned
/// by the ChatCluster only when it goes with it
/// ([`generated_secret_goes_with_cluster`]).
pub fn generated_secret(cc: &ChatCluster, values: BTreeMap<String, String>) -> Secret {
    let mut metadata = meta(cc, generated_secret_name(cc), "auth");
    metadata.owner_references = Some(generated_secret_owners(cc, &[]));
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        string_data: Some(values),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::cluster;

    #[test]
    fn only_absent_generated_keys_are_missing() {
        let old = Secret {
            data: Some(BTreeMap::from([
                (OTP_SECRET.into(), k8s_openapi::ByteString(b"x".to_vec())),
                (
                    RABBITMQ_PASSWORD.into(),
                    k8s_openapi::ByteString(b"y".to_vec()),
                ),
            ])),
            ..Default::default()
        };
        assert_eq!(
            missing_generated_keys(&old),
            [REDIS_PASSWORD, MONGODB_PASSWORD, MONGODB_APP_PASSWORD]
        );
        assert_eq!(missing_generated_keys(&Secret::default()).len(), 5);
    }

    #[test]
    fn store_passwords_outlive_the_cluster_while_a_volume_may() {
        use crate::api::{ExternalStore, ManagedStore};
        let delete = || ManagedStore {
            volume_reclaim: VolumeReclaim::Delete,
            ..Default::default()
        };
        let mut cc = cluster(Default::default());
        // default: every store managed, volumes retained
        assert!(!generated_secret_goes_with_cluster(&cc));
        let owners = |cc: &ChatCluster| {
            generated_secret(cc, BTreeMap::new())
                .metadata
                .owner_references
        };
        assert_eq!(owners(&cc), Some(vec![]));
        cc.spec.redis.managed = Some(delete());
        cc.spec.rabbitmq.managed = Some(delete());
        assert!(
            !generated_secret_goes_with_cluster(&cc),
            "mongodb still retains"
        );
        cc.spec.mongodb.external = Some(ExternalStore::default());
        assert!(generated_secret_goes_with_cluster(&cc));
        assert_eq!(owners(&cc), Some(vec![owner_ref(&cc)]));
        // an earlier incarnation's reference is replaced, a foreign one kept
        let foreign = OwnerReference {
            kind: "ConfigMap".into(),
            name: "demo".into(),
            uid: "other".into(),
            ..Default::default()
        };
        let stale = OwnerReference {
            uid: "old-uid".into(),
            ..owner_ref(&cc)
        };
        assert_eq!(
            generated_secret_owners(&cc, &[foreign.clone(), stale.clone()]),
            [foreign.clone(), owner_ref(&cc)]
        );
        cc.spec.mongodb.external = None;
        assert_eq!(
            generated_secret_owners(&cc, &[foreign.clone(), stale]),
            [foreign]
        );
    }

    #[test]
    fn named_signing_key_means_no_generated_one() {
        let mut cc = cluster(Default::default());
        assert_eq!(
            jwt_secret(&cc, "priv", "pub")
                .and_then(|s| s.metadata.name)
                .as_deref(),
            Some("demo-jwt")
        );
        cc.spec.auth.signing_key_secret = Some("mine".into());
        assert!(jwt_secret(&cc, "priv", "pub").is_none());
        assert_eq!(jwt_secret_name(&cc), "mine");
    }
}
