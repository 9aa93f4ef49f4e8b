//! Pure builders: a validated ChatCluster (plus what `dereference` read)
//! becomes the desired objects. One file per kind; no I/O here.

use std::collections::BTreeMap;

use k8s_openapi::DeepMerge;
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::{ChatCluster, Component, Store};
use crate::validated::ValidatedCluster;

pub mod configmap;
pub mod deployment;
pub mod hpa;
pub mod ingress;
pub mod networkpolicy;
pub mod pdb;
pub mod rollout;
pub mod secret;
pub mod service;
pub mod serviceaccount;
pub mod statefulset;
pub mod volumes;

pub use configmap::config_map;
pub use deployment::deployment;
pub use hpa::hpa;
pub use ingress::ingress;
pub use networkpolicy::{store_network_policy, user_network_policy};
pub use pdb::pdb;
pub use secret::{generated_secret, jwt_secret};
pub use service::{component_service, store_service};
pub use serviceaccount::service_account;
pub use statefulset::statefulset;

/// Annotation on pod templates carrying the hash of the config and Secret
/// keys their pods read (see [`rollout`]).
pub const CONFIG_HASH_ANNOTATION: &str = "parley.dev/config-hash";
/// Label naming the owning ChatCluster.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label naming the component (user, chat, mail, redis, rabbitmq, mongodb).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Label every parley object carries.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// The HTTP port every service listens on.
pub const HTTP_PORT: i32 = 8080;

/// Which optional APIs the cluster serves (from discovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSupport {
    /// `autoscaling/v2` HorizontalPodAutoscaler.
    pub autoscaling_v2: bool,
    /// `policy/v1` PodDisruptionBudget.
    pub policy_v1: bool,
    /// `autoscaling/v2beta2` (Kubernetes up to 1.25): used where v2 is not served.
    pub autoscaling_v2beta2: bool,
    /// `policy/v1beta1` (Kubernetes up to 1.24): used where v1 is not served.
    pub policy_v1beta1: bool,
}

impl Default for ApiSupport {
    fn default() -> Self {
        Self {
            autoscaling_v2: true,
            policy_v1: true,
            autoscaling_v2beta2: false,
            policy_v1beta1: false,
        }
    }
}

impl ApiSupport {
    /// The API version HorizontalPodAutoscalers are written in, if any is served.
    pub fn hpa_version(&self) -> Option<&'static str> {
        if self.autoscaling_v2 {
            Some("autoscaling/v2")
        } else if self.autoscaling_v2beta2 {
            Some("autoscaling/v2beta2")
        } else {
            None
        }
    }

    /// The API version PodDisruptionBudgets are written in, if any is served.
    pub fn pdb_version(&self) -> Option<&'static str> {
        if self.policy_v1 {
            Some("policy/v1")
        } else if self.policy_v1beta1 {
            Some("policy/v1beta1")
        } else {
            None
        }
    }
}

/// `obj` as a `DynamicObject` of `api_version`: HorizontalPodAutoscalers of
/// autoscaling/v2 and PodDisruptionBudgets of policy/v1 carry exactly the
/// fields of their beta versions the operator sets, so older clusters get the
/// same object under the older version.
pub fn in_version<K: serde::Serialize>(
    obj: &K,
    api_version: &str,
) -> Result<kube::api::DynamicObject, serde_json::Error> {
    let mut value = serde_json::to_value(obj)?;
    value["apiVersion"] = serde_json::Value::String(api_version.to_owned());
    serde_json::from_value(value)
}

/// Everything the builders need beyond the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Digests of the referenced Secrets, for each workload's rollout hash.
    pub secrets: rollout::SecretDigests,
    /// Optional APIs served.
    pub apis: ApiSupport,
}

/// The desired children of one ChatCluster.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// ServiceAccount of the parley pods.
    pub service_accounts: Vec<k8s_openapi::api::core::v1::ServiceAccount>,
    /// The shared ConfigMap.
    pub config_maps: Vec<k8s_openapi::api::core::v1::ConfigMap>,
    /// Services (components and headless store Services).
    pub services: Vec<k8s_openapi::api::core::v1::Service>,
    /// Component Deployments.
    pub deployments: Vec<k8s_openapi::api::apps::v1::Deployment>,
    /// Managed store StatefulSets.
    pub statefulsets: Vec<k8s_openapi::api::apps::v1::StatefulSet>,
    /// HorizontalPodAutoscalers (when autoscaling/v2 or v2beta2 is served;
    /// written in the served version).
    pub hpas: Vec<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    /// PodDisruptionBudgets (when policy/v1 or v1beta1 is served; written in
    /// the served version).
    pub pdbs: Vec<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    /// NetworkPolicies guarding the managed stores (and the user pods, when asked).
    pub network_policies: Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
    /// The Ingress, when enabled.
    pub ingresses: Vec<k8s_openapi::api::networking::v1::Ingress>,
}

/// Builds every desired child of `cc` (generated Secrets excepted: see [`secret`]).
pub fn desired(cc: &ValidatedCluster, ctx: &Context) -> Desired {
    let mut d = Desired {
        service_accounts: vec![service_account(cc)],
        config_maps: vec![config_map(cc)],
        ..Default::default()
    };
    for c in Component::ALL {
        d.deployments.push(deployment(cc, c, ctx));
        d.services.push(component_service(cc, c));
        let spec = c.spec(&cc.spec);
        if ctx.apis.hpa_version().is_some() && spec.autoscaling.enabled {
            d.hpas.push(hpa(cc, c));
        }
        if ctx.apis.pdb_version().is_some() && spec.pod_disruption_budget.enabled {
            d.pdbs.push(pdb(cc, c));
        }
    }
    for s in Store::ALL {
        if let Some(managed) = cc.managed(s) {
            d.statefulsets.push(statefulset(cc, s, managed, ctx));
            d.services.push(store_service(cc, s));
            d.network_policies.push(store_network_policy(cc, s));
        }
    }
    d.network_policies.extend(user_network_policy(cc));
    if cc.spec.ingress.enabled {
        d.ingresses.push(ingress(cc));
    }
    d
}

/// One image a ChatCluster runs, and the field below `spec` that chooses it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageUse {
    /// Dotted path below `spec`, e.g. `image.repository` or `redis.managed.image`.
    pub field: String,
    /// The image reference as the pods get it.
    pub image: String,
}

/// Every image the workloads of `cc` run (containers and init containers
/// alike), read from the built pod templates themselves so that none is
/// missed, each with the spec field that chooses it; no duplicates.
pub fn images(cc: &ValidatedCluster) -> Vec<ImageUse> {
    let d = desired(cc, &Context::default());
    let templates = d
        .deployments
        .iter()
        .filter_map(|x| Some((&x.metadata, &x.spec.as_ref()?.template)))
        .chain(
            d.statefulsets
                .iter()
                .filter_map(|x| Some((&x.metadata, &x.spec.as_ref()?.template))),
        );
    let mut out = std::collections::BTreeSet::new();
    for (meta, template) in templates {
        let component = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(COMPONENT_LABEL))
            .cloned()
            .unwrap_or_default();
        let field = image_field(cc, &component);
        let Some(pod) = &template.spec else { continue };
        let containers = pod.init_containers.iter().flatten().chain(&pod.containers);
        for image in containers.filter_map(|c| c.image.clone()) {
            out.insert(ImageUse {
                field: field.clone(),
                image,
            });
        }
    }
    out.into_iter().collect()
}

/// The spec field choosing the image of the workload of `component`.
fn image_field(cc: &ChatCluster, component: &str) -> String {
    if let Some(c) = Component::ALL.into_iter().find(|c| c.name() == component) {
        return match c.spec(&cc.spec).image.repository {
            Some(_) => format!("{component}.image.repository"),
            None => "image.repository".into(),
        };
    }
    if Store::ALL.iter().any(|s| s.name() == component) {
        return format!("{component}.managed.image");
    }
    component.to_owned()
}

/// The managed settings of `store`, or `None` when it is external, read
/// from a spec that may not be valid (a [`ValidatedCluster`] says it
/// directly). Neither set means managed with defaults.
pub fn managed(cc: &ChatCluster, store: Store) -> Option<crate::api::ManagedStore> {
    let s = store.spec(&cc.spec);
    match (&s.managed, &s.external) {
        (Some(m), _) => Some(m.clone()),
        (None, None) => Some(Default::default()),
        (None, Some(_)) => None,
    }
}

/// The ChatCluster's name.
pub fn instance(cc: &ChatCluster) -> String {
    cc.name_any()
}

/// `<instance>-<suffix>`.
pub fn child_name(cc: &ChatCluster, suffix: &str) -> String {
    format!("{}-{suffix}", instance(cc))
}

/// Labels selecting the pods of one component.
pub fn selector_labels(cc: &ChatCluster, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE_LABEL.to_owned(), instance(cc)),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
    ])
}

/// Full label set of a child object.
pub fn labels(cc: &ChatCluster, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cc, component);
    l.insert("app.kubernetes.io/name".into(), "parley".into());
    l.insert(PART_OF_LABEL.into(), "parley".into());
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "parley-operator".into(),
    );
    l
}

/// Owner reference making the ChatCluster the controller of a child.
pub fn owner_ref(cc: &ChatCluster) -> OwnerReference {
    OwnerReference {
        api_version: ChatCluster::api_version(&()).into_owned(),
        kind: ChatCluster::kind(&()).into_owned(),
        name: instance(cc),
        uid: cc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod template of a workload: `pod` with the author's `overrides`
/// merged onto it (`podOverrides`, as server-side apply merges), the
/// operator's labels, and the rollout hash of what the merged pod reads
/// ([`rollout::rollout_hash`]).
pub fn pod_template(
    cc: &ValidatedCluster,
    component: &str,
    pod: PodSpec,
    overrides: Option<&PodTemplateSpec>,
    ctx: &Context,
) -> PodTemplateSpec {
    let mut template = PodTemplateSpec {
        metadata: None,
        spec: Some(pod),
    };
    if let Some(overrides) = overrides {
        template.merge_from(overrides.clone());
    }
    // The operator's labels win (the selector and the NetworkPolicies rely
    // on them), and the hash covers what the merged pod reads.
    let mut metadata = template.metadata.take().unwrap_or_default();
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels(cc, component));
    let pod = template.spec.take().unwrap_or_default();
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            CONFIG_HASH_ANNOTATION.to_owned(),
            rollout::rollout_hash(cc, &pod, &ctx.secrets),
        );
    PodTemplateSpec {
        metadata: Some(metadata),
        spec: Some(pod),
    }
}

/// Metadata of a child object: name, namespace, labels, owner.
pub fn meta(cc: &ChatCluster, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cc.namespace(),
        labels: Some(labels(cc, component)),
        owner_references: Some(vec![owner_ref(cc)]),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::api::{ChatCluster, ChatClusterSpec};

    /// A ChatCluster as the API server would hand it over.
    pub fn cluster(spec: ChatClusterSpec) -> ChatCluster {
        let mut cc = ChatCluster::new("demo", spec);
        cc.metadata.namespace = Some("team".into());
        cc.metadata.uid = Some("0000-uid".into());
        cc.metadata.generation = Some(1);
        cc
    }

    /// [`cluster`], validated: what the builders take. Panics on an
    /// invalid spec (a broken test fixture).
    pub fn valid(spec: ChatClusterSpec) -> crate::validated::ValidatedCluster {
        match crate::validate::validate(&cluster(spec)) {
            Ok(v) => v,
            Err(e) => panic!("fixture spec is invalid: {e:?}"),
        }
    }

    pub fn ctx() -> super::Context {
        super::Context {
            secrets: Default::default(),
            apis: Default::default(),
        }
    }
}

#[cfg(test)]
mod image_tests {
    use super::fixtures::valid;
    use super::*;
    use crate::api::{ChatClusterSpec, ExternalStore};

    fn listed(spec: ChatClusterSpec) -> Vec<(String, String)> {
        images(&valid(spec))
            .into_iter()
            .map(|i| (i.field, i.image))
            .collect()
    }

    fn pair(field: &str, image: &str) -> (String, String) {
        (field.to_owned(), image.to_owned())
    }

    #[test]
    fn every_image_is_listed_with_the_field_that_chooses_it() {
        let defaults = listed(ChatClusterSpec::default());
        assert_eq!(
            defaults,
            [
                pair("image.repository", "localhost/parley:latest"),
                pair("mongodb.managed.image", "mongo:7.0"),
                pair("rabbitmq.managed.image", "rabbitmq:3.13-alpine"),
                pair("redis.managed.image", "redis:7.4-alpine"),
            ]
        );
        let spec: ChatClusterSpec = serde_json::from_value(serde_json::json!({
            "image": {"repository": "registry.example.com/team/parley", "tag": "2.0"},
            "chat": {"image": {"repository": "registry.example.org/other/parley"}},
            "mail": {"image": {"tag": "2.1"}},
            "redis": {"managed": {"image": "localhost:5000/redis:7"}},
            "mongodb": {"external": {"urlSecret": {"name": "m"}}},
        }))
        .unwrap();
        assert_eq!(
            listed(spec),
            [
                pair(
                    "chat.image.repository",
                    "registry.example.org/other/parley:2.0"
                ),
                pair("image.repository", "registry.example.com/team/parley:2.0"),
                pair("image.repository", "registry.example.com/team/parley:2.1"),
                pair("rabbitmq.managed.image", "rabbitmq:3.13-alpine"),
                pair("redis.managed.image", "localhost:5000/redis:7"),
            ]
        );
        let mut spec = ChatClusterSpec::default();
        for store in Store::ALL {
            let s = match store {
                Store::Redis => &mut spec.redis,
                Store::Rabbitmq => &mut spec.rabbitmq,
                Store::Mongodb => &mut spec.mongodb,
            };
            s.external = Some(ExternalStore {
                url_secret: crate::api::SecretKeyRef {
                    name: "elsewhere".into(),
                    key: "url".into(),
                },
                ca_secret: None,
            });
        }
        assert_eq!(
            listed(spec).len(),
            1,
            "no store image when all are external"
        );
    }
}

#[cfg(test)]
mod snapshot {
    use super::fixtures::{ctx, valid};
    use super::*;
    use crate::api::{ChatClusterSpec, ExternalStore, SecretKeyRef};

    /// Every desired object as one multi-document YAML text.
    fn render(d: &Desired) -> String {
        fn docs<T: serde::Serialize>(out: &mut String, items: &[T]) {
            for item in items {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(item).unwrap());
            }
        }
        let mut out = String::new();
        docs(&mut out, &d.service_accounts);
        docs(&mut out, &d.config_maps);
        docs(&mut out, &d.services);
        docs(&mut out, &d.deployments);
        docs(&mut out, &d.statefulsets);
        docs(&mut out, &d.hpas);
        docs(&mut out, &d.pdbs);
        docs(&mut out, &d.network_policies);
        docs(&mut out, &d.ingresses);
        out
    }

    fn check(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/build/snapshots")
            .join(format!("{name}.yaml"));
        if std::env::var_os("PARLEY_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "{} differs from the builders' output; review and rerun with PARLEY_UPDATE_SNAPSHOTS=1",
            path.display()
        );
    }

    #[test]
    fn default_cluster_matches_snapshot() {
        check(
            "default",
            &render(&desired(&valid(ChatClusterSpec::default()), &ctx())),
        );
    }

    #[test]
    fn full_featured_cluster_matches_snapshot() {
        let spec: ChatClusterSpec = serde_json::from_value(serde_json::json!({
            "image": {"repository": "registry.example/parley", "tag": "2.0.0", "pullSecrets": ["regcred"]},
            "chat": {"autoscaling": {"enabled": true, "minReplicas": 3, "maxReplicas": 12},
                     "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
                     "scheduling": {"nodeSelector": {"pool": "chat"}}},
            "ingress": {"enabled": true, "className": "nginx", "host": "chat.example", "tlsSecretName": "chat-tls",
                        "controllerPeers": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]},
            "mongodb": {"external": {"urlSecret": {"name": "atlas", "key": "uri"}}},
            "smtp": {"host": "smtp.example", "credentialsSecret": "smtp"},
            "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/parley"}},
        }))
        .unwrap();
        let d = desired(&valid(spec), &ctx());
        assert_eq!(d.hpas.len(), 1);
        assert_eq!(d.pdbs.len(), 3);
        assert_eq!(
            d.statefulsets.len(),
            2,
            "external mongodb has no StatefulSet"
        );
        check("full", &render(&d));
        // without autoscaling/v2 and policy/v1: no HPA, no PDB, fixed replicas
        let mut old = ctx();
        old.apis = ApiSupport {
            autoscaling_v2: false,
            policy_v1: false,
            ..Default::default()
        };
        let mut spec: ChatClusterSpec = serde_json::from_value(serde_json::json!({
            "chat": {"autoscaling": {"enabled": true}, "resources": {"requests": {"cpu": "100m"}}},
        }))
        .unwrap();
        spec.mongodb.external = Some(ExternalStore {
            url_secret: SecretKeyRef {
                name: "m".into(),
                key: "url".into(),
            },
            ca_secret: None,
        });
        let d = desired(&valid(spec), &old);
        assert!(d.hpas.is_empty() && d.pdbs.is_empty());
        assert_eq!(d.deployments[1].spec.as_ref().unwrap().replicas, Some(2));
    }
}

#[cfg(test)]
mod rollout_tests {
    //! Which pod templates a change rolls: each workload only for what it reads.

    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};

    use super::fixtures::valid;
    use super::*;
    use crate::api::ChatClusterSpec;

    type Secrets = Vec<(String, Option<Secret>)>;

    fn secret(pairs: &[(&str, &str)]) -> Option<Secret> {
        Some(Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        })
    }

    fn secrets() -> Secrets {
        vec![
            (
                "demo-jwt".into(),
                secret(&[("private.pem", "priv-1"), ("public.pem", "pub-1")]),
            ),
            (
                "demo-generated".into(),
                secret(&[
                    ("otp-secret", "otp"),
                    ("redis-password", "r-1"),
                    ("rabbitmq-password", "q-1"),
                    ("mongodb-password", "m-1"),
                    ("mongodb-app-password", "a-1"),
                ]),
            ),
            (
                "smtp".into(),
                secret(&[("username", "u"), ("password", "p-1")]),
            ),
        ]
    }

    fn replace(secrets: &mut Secrets, name: &str, key: &str, value: &str) {
        let data = secrets
            .iter_mut()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| s.as_mut())
            .and_then(|s| s.data.as_mut())
            .unwrap();
        data.insert(key.into(), ByteString(value.as_bytes().to_vec()));
    }

    /// The build context `reconcile` would make from these Secrets.
    fn context(secrets: &Secrets) -> Context {
        Context {
            secrets: rollout::SecretDigests::new(secrets, "demo-generated"),
            apis: ApiSupport::default(),
        }
    }

    /// Pod template of every workload, by `kind/name`.
    fn templates(spec: &ChatClusterSpec, secrets: &Secrets) -> BTreeMap<String, PodTemplateSpec> {
        let cc = valid(spec.clone());
        let d = desired(&cc, &context(secrets));
        let mut out = BTreeMap::new();
        for x in d.deployments {
            let name = format!("deployment/{}", x.metadata.name.unwrap());
            out.insert(name, x.spec.unwrap().template);
        }
        for x in d.statefulsets {
            let name = format!("statefulset/{}", x.metadata.name.unwrap());
            out.insert(name, x.spec.unwrap().template);
        }
        out
    }

    fn rolled(
        before: &BTreeMap<String, PodTemplateSpec>,
        after: &BTreeMap<String, PodTemplateSpec>,
    ) -> Vec<String> {
        before
            .keys()
            .filter(|k| before.get(*k) != after.get(*k))
            .cloned()
            .collect()
    }

    fn base() -> ChatClusterSpec {
        let mut spec = ChatClusterSpec::default();
        spec.smtp.credentials_secret = Some("smtp".into());
        spec
    }

    #[test]
    fn a_change_rolls_only_the_workloads_that_read_it() {
        let before = templates(&base(), &secrets());
        let spec_change = |edit: fn(&mut ChatClusterSpec)| {
            let mut spec = base();
            edit(&mut spec);
            rolled(&before, &templates(&spec, &secrets()))
        };
        let secret_change = |name: &str, key: &str| {
            let mut s = secrets();
            replace(&mut s, name, key, "rotated");
            rolled(&before, &templates(&base(), &s))
        };
        let services = [
            "deployment/demo-chat",
            "deployment/demo-mail",
            "deployment/demo-user",
        ];
        assert_eq!(
            spec_change(|s| s.log = Some("debug".into())),
            services,
            "spec.log"
        );
        assert_eq!(
            spec_change(|s| {
                s.smtp.host = "smtp.example".into();
                s.smtp.port = 2525;
                s.smtp.from = "chat@example.org".into();
            }),
            ["deployment/demo-mail"],
            "smtp settings"
        );
        assert_eq!(
            spec_change(|s| s.ingress.host = Some("chat.example".into())),
            ["deployment/demo-mail"],
            "ingress host (the mail links' base URL)"
        );
        assert_eq!(
            spec_change(|s| s.auth.token_ttl_seconds = 3600),
            ["deployment/demo-user"],
            "token lifetime"
        );
        assert_eq!(
            secret_change("smtp", "password"),
            ["deployment/demo-mail"],
            "SMTP password"
        );
        assert_eq!(
            secret_change("demo-jwt", "private.pem"),
            ["deployment/demo-user"],
            "private signing key"
        );
        assert_eq!(
            secret_change("demo-jwt", "public.pem"),
            ["deployment/demo-chat"],
            "public signing key"
        );
        // the OTP secret also keys the digests of the other Secrets (see
        // rollout::SecretDigests): every service reading one rolls, no store
        assert_eq!(
            secret_change("demo-generated", "otp-secret"),
            services,
            "OTP secret"
        );
        for (key, store) in [
            ("redis-password", "redis"),
            ("rabbitmq-password", "rabbitmq"),
            ("mongodb-password", "mongodb"),
        ] {
            let mut expected = services.map(String::from).to_vec();
            expected.push(format!("statefulset/demo-{store}"));
            assert_eq!(secret_change("demo-generated", key), expected, "{key}");
        }
        assert_eq!(
            secret_change("demo-generated", "mongodb-app-password"),
            services.map(String::from).to_vec(),
            "services' MongoDB user"
        );
        // a Secret nobody reads rolls nothing; the same inputs give the same hashes
        let mut s = secrets();
        s.push(("unrelated".into(), secret(&[("k", "v")])));
        assert!(rolled(&before, &templates(&base(), &s)).is_empty());
        assert!(rolled(&before, &templates(&base(), &secrets())).is_empty());
    }

    /// Own Secrets with own key names: SMTP credentials, signing keys, a
    /// store password, an external store's URL and CA.
    fn own_secrets_spec() -> ChatClusterSpec {
        serde_json::from_value(serde_json::json!({
            "smtp": {"credentialsSecret": "mailer", "usernameKey": "user", "passwordKey": "pass"},
            "auth": {"signingKeySecret": "keys", "privateKeyKey": "tls.key", "publicKeyKey": "tls.pub"},
            "redis": {"managed": {"passwordSecret": {"name": "redis-own"}}},
            "mongodb": {"external": {"urlSecret": {"name": "docdb", "key": "uri"},
                                     "caSecret": {"name": "rds-ca"}}},
        }))
        .unwrap()
    }

    fn own_secrets() -> Secrets {
        vec![
            (
                "keys".into(),
                secret(&[("tls.key", "priv-1"), ("tls.pub", "pub-1"), ("other", "x")]),
            ),
            (
                "demo-generated".into(),
                secret(&[
                    ("otp-secret", "otp"),
                    ("redis-password", "r-1"),
                    ("rabbitmq-password", "q-1"),
                    ("mongodb-password", "m-1"),
                    ("mongodb-app-password", "a-1"),
                ]),
            ),
            (
                "mailer".into(),
                secret(&[("user", "u"), ("pass", "p-1"), ("password", "unused")]),
            ),
            (
                "redis-own".into(),
                secret(&[("password", "own-redis-password-1")]),
            ),
            ("docdb".into(), secret(&[("uri", "mongodb://docdb:27017/")])),
            (
                "rds-ca".into(),
                secret(&[("ca.crt", "-----BEGIN CERTIFICATE-----")]),
            ),
        ]
    }

    #[test]
    fn own_secrets_and_key_names_roll_only_their_readers() {
        let spec = own_secrets_spec();
        let before = templates(&spec, &own_secrets());
        let change = |name: &str, key: &str| {
            let mut s = own_secrets();
            replace(&mut s, name, key, "rotated");
            rolled(&before, &templates(&spec, &s))
        };
        assert_eq!(change("mailer", "pass"), ["deployment/demo-mail"], "SMTP");
        assert!(change("mailer", "password").is_empty(), "a key not named");
        assert_eq!(change("keys", "tls.key"), ["deployment/demo-user"]);
        assert_eq!(change("keys", "tls.pub"), ["deployment/demo-chat"]);
        assert!(change("keys", "other").is_empty());
        let services = [
            "deployment/demo-chat",
            "deployment/demo-mail",
            "deployment/demo-user",
        ];
        let mut redis = services.map(String::from).to_vec();
        redis.push("statefulset/demo-redis".into());
        assert_eq!(change("redis-own", "password"), redis, "own Redis password");
        assert!(
            change("demo-generated", "redis-password").is_empty(),
            "the generated Redis password is no longer read"
        );
        assert_eq!(change("rds-ca", "ca.crt"), services, "CA bundle: no store");
        assert_eq!(change("docdb", "uri"), services);
    }

    #[test]
    fn own_secrets_are_wired_under_their_key_names() {
        let cc = valid(own_secrets_spec());
        let d = desired(&cc, &context(&own_secrets()));
        let pod = |name: &str| {
            d.deployments
                .iter()
                .find(|x| x.metadata.name.as_deref() == Some(name))
                .and_then(|x| x.spec.clone())
                .and_then(|s| s.template.spec)
                .unwrap()
        };
        let env = |p: &k8s_openapi::api::core::v1::PodSpec, var: &str| {
            p.containers[0]
                .env
                .iter()
                .flatten()
                .find(|e| e.name == var)
                .cloned()
                .unwrap_or_else(|| panic!("{var}"))
        };
        let key_of = |e: k8s_openapi::api::core::v1::EnvVar| {
            let r = e.value_from.unwrap().secret_key_ref.unwrap();
            (r.name, r.key)
        };
        let mail = pod("demo-mail");
        assert_eq!(
            key_of(env(&mail, "PARLEY_SMTP_USERNAME")),
            ("mailer".into(), "user".into())
        );
        assert_eq!(
            key_of(env(&mail, "PARLEY_SMTP_PASSWORD")),
            ("mailer".into(), "pass".into())
        );
        for name in ["demo-user", "demo-chat", "demo-mail"] {
            let p = pod(name);
            assert_eq!(
                key_of(env(&p, "REDIS_PASSWORD")),
                ("redis-own".into(), "password".into()),
                "{name}"
            );
            assert_eq!(
                env(&p, "PARLEY_MONGODB_CA_FILE").value.as_deref(),
                Some("/etc/parley/ca/mongodb/ca.crt"),
                "{name}"
            );
            let ca = p
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == "mongodb-ca")
                .and_then(|v| v.secret.clone())
                .unwrap();
            assert_eq!(ca.secret_name.as_deref(), Some("rds-ca"));
            let item = &ca.items.unwrap()[0];
            assert_eq!(
                (item.key.as_str(), item.path.as_str()),
                ("ca.crt", "ca.crt")
            );
            let mount = p.containers[0]
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == "mongodb-ca")
                .unwrap();
            assert_eq!(mount.mount_path, "/etc/parley/ca/mongodb");
            assert!(
                p.containers[0]
                    .env
                    .iter()
                    .flatten()
                    .all(|e| e.name != "PARLEY_REDIS_CA_FILE"),
                "no CA for the managed Redis"
            );
        }
        // the signing keys under their own key names, at the files the env names
        let jwt_item = |name: &str| {
            let v = pod(name).volumes.unwrap();
            let s = v
                .iter()
                .find(|v| v.name == "jwt")
                .unwrap()
                .secret
                .clone()
                .unwrap();
            assert_eq!(s.secret_name.as_deref(), Some("keys"));
            let i = s.items.unwrap()[0].clone();
            (i.key, i.path)
        };
        assert_eq!(
            jwt_item("demo-user"),
            ("tls.key".into(), "private.pem".into())
        );
        assert_eq!(
            jwt_item("demo-chat"),
            ("tls.pub".into(), "public.pem".into())
        );
        // the Redis StatefulSet takes the same own password
        let redis = d
            .statefulsets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("demo-redis"))
            .and_then(|s| s.spec.clone())
            .and_then(|s| s.template.spec)
            .unwrap();
        assert_eq!(
            key_of(env(&redis, "REDIS_PASSWORD")),
            ("redis-own".into(), "password".into())
        );
    }
}

#[cfg(test)]
mod pod_security_tests {
    //! Every pod the operator builds passes Pod Security Standards "restricted".

    use k8s_openapi::api::core::v1::{PodSpec, SecurityContext};

    use super::fixtures::{ctx, valid};
    use super::*;
    use crate::api::ChatClusterSpec;

    /// What keeps `pod` from the "restricted" profile (Kubernetes Pod Security
    /// Standards, baseline checks included); empty when it passes.
    pub(crate) fn restricted_violations(pod: &PodSpec) -> Vec<String> {
        let mut v = Vec::new();
        let psc = pod.security_context.clone().unwrap_or_default();
        for (set, what) in [
            (pod.host_network, "hostNetwork"),
            (pod.host_pid, "hostPID"),
            (pod.host_ipc, "hostIPC"),
        ] {
            if set == Some(true) {
                v.push(format!("pod: {what}"));
            }
        }
        if psc.run_as_user == Some(0) {
            v.push("pod: runAsUser 0".into());
        }
        if psc.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
            v.push("pod: sysctls".into());
        }
        let pod_seccomp = psc.seccomp_profile.as_ref().map(|p| p.type_.as_str());
        if pod_seccomp == Some("Unconfined") {
            v.push("pod: seccompProfile Unconfined".into());
        }
        const ALLOWED_VOLUMES: &str =
            "configMap csi downwardAPI emptyDir ephemeral persistentVolumeClaim projected secret";
        for vol in pod.volumes.iter().flatten() {
            let json = serde_json::to_value(vol).unwrap();
            for key in json.as_object().unwrap().keys() {
                if key != "name" && !ALLOWED_VOLUMES.split(' ').any(|a| a == key) {
                    v.push(format!("volume {}: type {key}", vol.name));
                }
            }
        }
        let containers = pod
            .init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter());
        for c in containers {
            let at = &c.name;
            let sc: SecurityContext = c.security_context.clone().unwrap_or_default();
            if sc.privileged == Some(true) {
                v.push(format!("{at}: privileged"));
            }
            if sc.allow_privilege_escalation != Some(false) {
                v.push(format!("{at}: allowPrivilegeEscalation is not false"));
            }
            let non_root = sc.run_as_non_root.or(psc.run_as_non_root);
            if non_root != Some(true) {
                v.push(format!("{at}: runAsNonRoot is not true"));
            }
            if sc.run_as_user == Some(0) {
                v.push(format!("{at}: runAsUser 0"));
            }
            let seccomp = sc
                .seccomp_profile
                .as_ref()
                .map(|p| p.type_.as_str())
                .or(pod_seccomp);
            if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
                v.push(format!("{at}: seccompProfile is {seccomp:?}"));
            }
            let caps = sc.capabilities.clone().unwrap_or_default();
            if !caps.drop.iter().flatten().any(|d| d == "ALL") {
                v.push(format!("{at}: capabilities do not drop ALL"));
            }
            for add in caps.add.iter().flatten() {
                if add != "NET_BIND_SERVICE" {
                    v.push(format!("{at}: adds capability {add}"));
                }
            }
            if sc.proc_mount.as_deref().is_some_and(|p| p != "Default") {
                v.push(format!("{at}: procMount"));
            }
            for port in c.ports.iter().flatten() {
                if port.host_port.is_some_and(|p| p != 0) {
                    v.push(format!("{at}: hostPort"));
                }
            }
        }
        v
    }

    #[test]
    fn every_pod_passes_the_restricted_profile() {
        let d = desired(&valid(ChatClusterSpec::default()), &ctx());
        assert_eq!(d.statefulsets.len(), 3);
        let pods = d
            .statefulsets
            .iter()
            .map(|s| (&s.metadata.name, &s.spec.as_ref().unwrap().template))
            .chain(
                d.deployments
                    .iter()
                    .map(|s| (&s.metadata.name, &s.spec.as_ref().unwrap().template)),
            );
        let mut problems = Vec::new();
        for (name, template) in pods {
            for p in restricted_violations(template.spec.as_ref().unwrap()) {
                problems.push(format!("{}: {p}", name.as_deref().unwrap_or_default()));
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
