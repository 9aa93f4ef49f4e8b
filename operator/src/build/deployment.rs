//! Component Deployments: env wiring, probes, security context, volumes.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, LocalObjectReference, PodSecurityContext, PodSpec,
    Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::configmap::config_map_name;
use super::secret::{
    MONGODB_APP_PASSWORD, OTP_SECRET, PRIVATE_KEY, PUBLIC_KEY, generated_secret_name,
    jwt_secret_name, private_key_key, public_key_key, store_password,
};
use super::serviceaccount::service_account_name;
use super::{Context, HTTP_PORT, child_name, meta, pod_template};
use crate::api::{ChatCluster, Component, Store};
use crate::validated::ValidatedCluster;

/// Where the signing keys are mounted.
pub const JWT_DIR: &str = "/etc/parley/jwt";
/// Where the CA certificates of the external stores are mounted, a
/// directory per store.
pub const CA_DIR: &str = "/etc/parley/ca";

/// The file a service reads an external store's CA certificates from.
pub fn ca_file(s: Store) -> String {
    format!("{CA_DIR}/{}/ca.crt", s.name())
}

/// The UID the services run as.
pub const RUN_AS_USER: i64 = 10001;

/// The image reference of a component.
pub fn image(cc: &ChatCluster, c: Component) -> String {
    let o = &c.spec(&cc.spec).image;
    let repo = o.repository.as_deref().unwrap_or(&cc.spec.image.repository);
    let tag = o.tag.as_deref().unwrap_or(&cc.spec.image.tag);
    format!("{repo}:{tag}")
}

/// Desired replicas: `None` when an autoscaler owns the count (the apply
/// step hands the field over to it without resetting it).
pub fn replicas(cc: &ChatCluster, c: Component, ctx: &Context) -> Option<i32> {
    let spec = c.spec(&cc.spec);
    if spec.autoscaling.enabled && ctx.apis.hpa_version().is_some() {
        None
    } else {
        Some(spec.replicas.unwrap_or_else(|| c.default_replicas()))
    }
}

/// An env var with a fixed value.
pub(super) fn literal(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// An env var read from a key of a Secret that must exist.
pub(super) fn from_secret(name: &str, secret: String, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn from_config(cc: &ChatCluster, name: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: config_map_name(cc),
                key: name.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The services' own MongoDB user on a managed MongoDB: `readWrite` on
/// parley's database only, made by the `mongodb-user` init container.
pub const MONGODB_APP_USER: &str = "parley-app";

/// The database a component uses: a literal `PARLEY_MONGODB_DATABASE` in
/// its `env`, or the services' default.
pub fn mongodb_database(cc: &ChatCluster, c: Component) -> String {
    c.spec(&cc.spec)
        .env
        .iter()
        .rev()
        .find(|e| e.name == "PARLEY_MONGODB_DATABASE")
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| "parley".to_owned())
}

/// Env vars carrying one store's URL (a managed store's in-cluster address, or
/// the external Secret's key).
fn store_env(cc: &ValidatedCluster, c: Component, s: Store) -> Vec<EnvVar> {
    let host = child_name(cc, s.name());
    let port = s.port();
    if let Some(ext) = cc.external(s) {
        let mut env = vec![from_secret(
            s.env_var(),
            ext.url_secret.name.clone(),
            &ext.url_secret.key,
        )];
        if ext.ca_secret.is_some() {
            env.push(literal(s.ca_env_var(), ca_file(s)));
        }
        return env;
    }
    // Kubernetes expands $(VAR) from variables defined earlier in the list;
    // the generated passwords are hex and own ones are checked to hold only
    // URL-safe characters (dereference), so they need no escaping.
    let (password_secret, password_key) = store_password(cc, s);
    match s {
        Store::Redis => vec![
            from_secret("REDIS_PASSWORD", password_secret, &password_key),
            literal(
                s.env_var(),
                format!("redis://:$(REDIS_PASSWORD)@{host}:{port}"),
            ),
        ],
        // The services never see the root password: they are the
        // least-privileged user the init container made.
        Store::Mongodb => vec![
            from_secret(
                "MONGODB_APP_PASSWORD",
                generated_secret_name(cc),
                MONGODB_APP_PASSWORD,
            ),
            literal(s.env_var(), mongodb_app_uri(cc, c)),
        ],
        Store::Rabbitmq => vec![
            from_secret("RABBITMQ_PASSWORD", password_secret, &password_key),
            literal(
                s.env_var(),
                format!("amqp://parley:$(RABBITMQ_PASSWORD)@{host}:{port}/%2f"),
            ),
        ],
    }
}

/// The managed MongoDB's URL as the services' own user (its password in
/// `$(MONGODB_APP_PASSWORD)`), authenticating against its database.
fn mongodb_app_uri(cc: &ChatCluster, c: Component) -> String {
    let host = child_name(cc, Store::Mongodb.name());
    let port = Store::Mongodb.port();
    let database = mongodb_database(cc, c);
    format!(
        "mongodb://{MONGODB_APP_USER}:$(MONGODB_APP_PASSWORD)@{host}:{port}/?directConnection=true&authSource={database}"
    )
}

/// The init container that makes the services' MongoDB user
/// (`parley-user mongodb-user`) before a component starts, when the
/// operator manages MongoDB: only this container gets the root password.
/// It is idempotent, so every pod start (and a changed password) converges.
pub fn mongodb_user_init(cc: &ValidatedCluster, c: Component) -> Option<Container> {
    cc.managed(Store::Mongodb)?;
    let (root_secret, root_key) = store_password(cc, Store::Mongodb);
    let host = child_name(cc, Store::Mongodb.name());
    let port = Store::Mongodb.port();
    let env = vec![
        from_config(cc, "PARLEY_LOG"),
        from_secret("MONGODB_PASSWORD", root_secret, &root_key),
        from_secret(
            "MONGODB_APP_PASSWORD",
            generated_secret_name(cc),
            MONGODB_APP_PASSWORD,
        ),
        literal(
            "PARLEY_MONGODB_ADMIN_URI",
            format!(
                "mongodb://parley:$(MONGODB_PASSWORD)@{host}:{port}/?directConnection=true&authSource=admin"
            ),
        ),
        literal(Store::Mongodb.env_var(), mongodb_app_uri(cc, c)),
        literal("PARLEY_MONGODB_DATABASE", mongodb_database(cc, c)),
    ];
    Some(Container {
        name: "mongodb-user".into(),
        image: Some(image(cc, Component::User)),
        image_pull_policy: Some(cc.pull_policy().as_str().into()),
        command: Some(vec!["parley-user".into(), "mongodb-user".into()]),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("10m".into())),
                ("memory".into(), Quantity("32Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
            ..Default::default()
        }),
        security_context: Some(container_security(RUN_AS_USER)),
        ..Default::default()
    })
}

/// The user service's setting for the client address behind proxies.
pub const TRUSTED_PROXY_HOPS: &str = "PARLEY_TRUSTED_PROXY_HOPS";

/// `PARLEY_TRUSTED_PROXY_HOPS` for the user pods: `1` behind the operator's
/// Ingress (the controller appends the client's address to
/// `X-Forwarded-For`), unless `spec.user.env` sets it (more proxies in
/// front); without an Ingress the peer is the client and nothing is set.
/// Without it, every client behind an Ingress would share the controller's
/// address and its login budgets.
pub fn trusted_proxy_hops(cc: &ChatCluster) -> Option<&'static str> {
    let overridden = cc
        .spec
        .user
        .env
        .iter()
        .any(|e| e.name == TRUSTED_PROXY_HOPS);
    (cc.spec.ingress.enabled && !overridden).then_some("1")
}

/// Who signs tokens and who they are for: the user pods sign with these,
/// user and chat pods refuse tokens carrying other values. From the
/// ConfigMap ([`super::configmap::token_audience`]) unless `spec.<component>.env`
/// sets them (validation requires user and chat to agree).
pub const TOKEN_SCOPE_ENV: [&str; 2] = ["PARLEY_TOKEN_ISSUER", "PARLEY_TOKEN_AUDIENCE"];

/// The token scope variables the operator sets for component `c`: those
/// its `env` does not set itself.
fn token_scope_env(cc: &ChatCluster, c: Component) -> Vec<EnvVar> {
    let own = &c.spec(&cc.spec).env;
    TOKEN_SCOPE_ENV
        .iter()
        .filter(|var| !own.iter().any(|e| e.name == **var))
        .map(|var| from_config(cc, var))
        .collect()
}

/// The complete env of a component's container, in a stable order.
pub fn env(cc: &ValidatedCluster, c: Component) -> Vec<EnvVar> {
    let mut env = vec![
        literal("PARLEY_HTTP_ADDR", format!("0.0.0.0:{HTTP_PORT}")),
        from_config(cc, "PARLEY_LOG"),
    ];
    let stores: &[Store] = match c {
        Component::User | Component::Chat | Component::Mail => &Store::ALL,
    };
    for s in stores {
        env.extend(store_env(cc, c, *s));
    }
    match c {
        Component::User => {
            env.push(literal(
                "PARLEY_JWT_PRIVATE_KEY_FILE",
                format!("{JWT_DIR}/{PRIVATE_KEY}"),
            ));
            env.push(from_secret(
                "PARLEY_OTP_SECRET",
                generated_secret_name(cc),
                OTP_SECRET,
            ));
            env.push(from_config(cc, "PARLEY_TOKEN_TTL_SECS"));
            env.extend(token_scope_env(cc, c));
            if let Some(hops) = trusted_proxy_hops(cc) {
                env.push(literal(TRUSTED_PROXY_HOPS, hops));
            }
        }
        Component::Chat => {
            env.push(literal(
                "PARLEY_JWT_PUBLIC_KEYS_FILE",
                format!("{JWT_DIR}/{PUBLIC_KEY}"),
            ));
            env.push(from_config(cc, "PARLEY_USER_SERVICE_URL"));
            env.extend(token_scope_env(cc, c));
        }
        Component::Mail => {
            for var in ["PARLEY_SMTP_HOST", "PARLEY_SMTP_PORT", "PARLEY_SMTP_TLS"] {
                env.push(from_config(cc, var));
            }
            let smtp = &cc.spec.smtp;
            if let Some(secret) = &smtp.credentials_secret {
                env.push(from_secret(
                    "PARLEY_SMTP_USERNAME",
                    secret.clone(),
                    &smtp.username_key,
                ));
                env.push(from_secret(
                    "PARLEY_SMTP_PASSWORD",
                    secret.clone(),
                    &smtp.password_key,
                ));
            }
            env.push(from_config(cc, "PARLEY_MAIL_FROM"));
            env.push(from_config(cc, "PARLEY_APP_BASE_URL"));
        }
    }
    env.extend(c.spec(&cc.spec).env.iter().cloned());
    env
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// A restricted container security context (Pod Security "restricted"):
/// runs as `uid`, read-only root filesystem, no capabilities, no privilege
/// escalation. Services and managed stores share it.
pub fn container_security(uid: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A restricted pod security context: non-root as `uid`:`gid`, volumes
/// group-owned by `gid` (so a fresh data volume is writable), the runtime's
/// default seccomp profile.
pub fn pod_security(uid: i64, gid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(gid),
        fs_group: Some(gid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An emptyDir volume `name` mounted at `path`: a writable directory under
/// the read-only root filesystem.
pub fn scratch(name: &str, path: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        },
    )
}

fn volumes(cc: &ValidatedCluster, c: Component) -> (Vec<Volume>, Vec<VolumeMount>) {
    let (tmp, tmp_mount) = scratch("tmp", "/tmp");
    let mut volumes = vec![tmp];
    let mut mounts = vec![tmp_mount];
    // user gets the private key, chat only the public one; whatever their
    // keys in the Secret, the files have the names the env gives.
    let key = match c {
        Component::User => Some((private_key_key(cc), PRIVATE_KEY)),
        Component::Chat => Some((public_key_key(cc), PUBLIC_KEY)),
        Component::Mail => None,
    };
    if let Some((key, file)) = key {
        volumes.push(Volume {
            name: "jwt".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(jwt_secret_name(cc)),
                items: Some(vec![KeyToPath {
                    key: key.into(),
                    path: file.into(),
                    mode: Some(0o440),
                }]),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "jwt".into(),
            mount_path: JWT_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    for s in Store::ALL {
        let Some(ca) = cc.external(s).and_then(|e| e.ca_secret.as_ref()) else {
            continue;
        };
        let name = format!("{}-ca", s.name());
        volumes.push(Volume {
            name: name.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.name.clone()),
                items: Some(vec![KeyToPath {
                    key: ca.key.clone(),
                    path: "ca.crt".into(),
                    mode: Some(0o444),
                }]),
                default_mode: Some(0o444),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name,
            mount_path: format!("{CA_DIR}/{}", s.name()),
            read_only: Some(true),
            ..Default::default()
        });
    }
    (volumes, mounts)
}

/// The Deployment of one component.
pub fn deployment(cc: &ValidatedCluster, c: Component, ctx: &Context) -> Deployment {
    let spec = c.spec(&cc.spec);
    let name = child_name(cc, c.name());
    let (volumes, mounts) = volumes(cc, c);
    let sched = &spec.scheduling;
    let container = Container {
        name: c.name().into(),
        image: Some(image(cc, c)),
        image_pull_policy: Some(cc.pull_policy().as_str().into()),
        command: Some(vec![format!("parley-{}", c.name())]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(env(cc, c)),
        resources: spec.resources.clone(),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        security_context: Some(container_security(RUN_AS_USER)),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let pull_secrets: Vec<_> = cc
        .spec
        .image
        .pull_secrets
        .iter()
        .map(|n| LocalObjectReference { name: n.clone() })
        .collect();
    let pod = PodSpec {
        service_account_name: Some(service_account_name(cc)),
        automount_service_account_token: Some(false),
        init_containers: mongodb_user_init(cc, c).map(|init| vec![init]),
        containers: vec![container],
        volumes: Some(volumes),
        image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
        security_context: Some(pod_security(RUN_AS_USER, RUN_AS_USER)),
        node_selector: (!sched.node_selector.is_empty()).then(|| sched.node_selector.clone()),
        tolerations: (!sched.tolerations.is_empty()).then(|| sched.tolerations.clone()),
        affinity: sched.affinity.clone(),
        topology_spread_constraints: (!sched.topology_spread_constraints.is_empty())
            .then(|| sched.topology_spread_constraints.clone()),
        termination_grace_period_seconds: Some(30),
        ..Default::default()
    };
    Deployment {
        metadata: meta(cc, name, c.name()),
        spec: Some(DeploymentSpec {
            replicas: replicas(cc, c, ctx),
            // Never below the desired count during a rollout: a new pod must
            // be ready (its stores answer) before an old one drains.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            selector: LabelSelector {
                match_labels: Some(super::selector_labels(cc, c.name())),
                ..Default::default()
            },
            template: pod_template(cc, c.name(), pod, spec.pod_overrides.as_ref(), ctx),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{ExternalStore, SecretKeyRef};
    use crate::build::fixtures::{ctx, valid};

    fn env_list(d: &Deployment) -> Vec<EnvVar> {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap()
    }

    fn env_of(d: &Deployment) -> BTreeMap<String, EnvVar> {
        env_list(d)
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    fn secret_ref(e: &EnvVar) -> (String, String) {
        let r = e
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        (r.name.clone(), r.key.clone())
    }

    #[test]
    fn every_component_gets_the_common_contract() {
        let cc = valid(Default::default());
        for c in Component::ALL {
            let d = deployment(&cc, c, &ctx());
            let env = env_of(&d);
            assert_eq!(
                env["PARLEY_HTTP_ADDR"].value.as_deref(),
                Some("0.0.0.0:8080")
            );
            assert_eq!(
                env["PARLEY_REDIS_URL"].value.as_deref(),
                Some("redis://:$(REDIS_PASSWORD)@demo-redis:6379")
            );
            assert_eq!(
                secret_ref(&env["REDIS_PASSWORD"]),
                ("demo-generated".into(), "redis-password".into())
            );
            // The services connect as their own readWrite user and never
            // see the root password; only the init container does.
            let mongo = env["PARLEY_MONGODB_URI"].value.as_deref().unwrap();
            assert!(
                mongo.starts_with(
                    "mongodb://parley-app:$(MONGODB_APP_PASSWORD)@demo-mongodb:27017/"
                ) && mongo.contains("authSource=parley"),
                "{mongo}"
            );
            assert_eq!(
                secret_ref(&env["MONGODB_APP_PASSWORD"]),
                ("demo-generated".into(), "mongodb-app-password".into())
            );
            assert!(!env.contains_key("MONGODB_PASSWORD"));
            let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let inits = pod.init_containers.as_ref().unwrap();
            assert_eq!(inits.len(), 1);
            let init = &inits[0];
            assert_eq!(
                init.command.as_ref().unwrap(),
                &["parley-user".to_owned(), "mongodb-user".to_owned()]
            );
            let init_env: BTreeMap<_, _> = init
                .env
                .clone()
                .unwrap()
                .into_iter()
                .map(|e| (e.name.clone(), e))
                .collect();
            assert_eq!(
                secret_ref(&init_env["MONGODB_PASSWORD"]),
                ("demo-generated".into(), "mongodb-password".into())
            );
            assert_eq!(init_env["PARLEY_MONGODB_URI"], env["PARLEY_MONGODB_URI"]);
            assert!(
                init_env["PARLEY_MONGODB_ADMIN_URI"]
                    .value
                    .as_deref()
                    .unwrap()
                    .starts_with("mongodb://parley:$(MONGODB_PASSWORD)@demo-mongodb:27017/")
            );
            // Kubernetes expands $(VAR) only from variables defined before it.
            for ordered in [env_list(&d), init.env.clone().unwrap()] {
                for (i, var) in ordered.iter().enumerate() {
                    let value = var.value.as_deref().unwrap_or_default();
                    for used in value
                        .split("$(")
                        .skip(1)
                        .filter_map(|r| r.split(')').next())
                    {
                        assert!(
                            ordered[..i].iter().any(|e| e.name == used),
                            "{} uses $({used}) before it is defined",
                            var.name
                        );
                    }
                }
            }
            assert_eq!(
                env["PARLEY_AMQP_URL"].value.as_deref(),
                Some("amqp://parley:$(RABBITMQ_PASSWORD)@demo-rabbitmq:5672/%2f")
            );
            assert!(env.contains_key("PARLEY_LOG"));
            let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let ctr = &pod.containers[0];
            assert_eq!(
                ctr.command.as_ref().unwrap(),
                &[format!("parley-{}", c.name())]
            );
            assert_eq!(ctr.image.as_deref(), Some("localhost/parley:latest"));
            let sc = ctr.security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.run_as_non_root, Some(true));
            let live = ctr
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(live.path.as_deref(), Some("/healthz"));
            let ready = ctr
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(ready.path.as_deref(), Some("/readyz"));
            let ann = d
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap();
            let hash = &ann[crate::build::CONFIG_HASH_ANNOTATION];
            assert!(
                hash.len() == 32 && hash.chars().all(|c| c.is_ascii_hexdigit()),
                "{hash}"
            );
        }
    }

    #[test]
    fn behind_the_ingress_the_user_service_trusts_one_proxy_hop() {
        let hops = |spec: crate::api::ChatClusterSpec| {
            let cc = valid(spec);
            let env = env_list(&deployment(&cc, Component::User, &ctx()));
            env.iter()
                .filter(|e| e.name == TRUSTED_PROXY_HOPS)
                .map(|e| e.value.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert!(hops(crate::api::ChatClusterSpec::default()).is_empty());
        let mut spec = crate::api::ChatClusterSpec::default();
        spec.ingress.enabled = true;
        assert_eq!(hops(spec.clone()), ["1"]);
        // Chat and mail do not read it.
        let cc = valid(spec.clone());
        for c in [Component::Chat, Component::Mail] {
            assert!(!env_of(&deployment(&cc, c, &ctx())).contains_key(TRUSTED_PROXY_HOPS));
        }
        // More proxies in front: the author's value, once.
        spec.user.env.push(EnvVar {
            name: TRUSTED_PROXY_HOPS.into(),
            value: Some("2".into()),
            ..Default::default()
        });
        assert_eq!(hops(spec), ["2"]);
    }

    #[test]
    fn the_mongodb_user_is_made_only_for_a_managed_mongodb_in_the_components_database() {
        let mut spec = crate::api::ChatClusterSpec::default();
        spec.chat.component.env.push(EnvVar {
            name: "PARLEY_MONGODB_DATABASE".into(),
            value: Some("chats".into()),
            ..Default::default()
        });
        let cc = valid(spec.clone());
        let chat = deployment(&cc, Component::Chat, &ctx());
        let uri = env_of(&chat)["PARLEY_MONGODB_URI"].value.clone().unwrap();
        assert!(uri.ends_with("authSource=chats"), "{uri}");
        let init = mongodb_user_init(&cc, Component::Chat).unwrap();
        let database = init
            .env
            .unwrap()
            .into_iter()
            .find(|e| e.name == "PARLEY_MONGODB_DATABASE")
            .unwrap();
        assert_eq!(database.value.as_deref(), Some("chats"));
        // The init container runs the user binary, whatever image chat has.
        assert_eq!(init.image, Some(image(&cc, Component::User)));

        spec.mongodb.external = Some(ExternalStore {
            url_secret: SecretKeyRef {
                name: "atlas".into(),
                key: "uri".into(),
            },
            ca_secret: None,
        });
        let cc = valid(spec);
        for c in Component::ALL {
            let d = deployment(&cc, c, &ctx());
            let pod = d.spec.unwrap().template.spec.unwrap();
            assert_eq!(pod.init_containers, None, "{c:?}");
            let env: Vec<_> = pod.containers[0].env.clone().unwrap();
            assert!(!env.iter().any(|e| e.name.starts_with("MONGODB_")));
        }
    }

    #[test]
    fn user_and_chat_get_the_token_scope_of_their_cluster_unless_their_env_sets_it() {
        let scope = |spec: crate::api::ChatClusterSpec, c: Component| {
            let cc = valid(spec);
            env_list(&deployment(&cc, c, &ctx()))
                .into_iter()
                .filter(|e| TOKEN_SCOPE_ENV.contains(&e.name.as_str()))
                .map(|e| {
                    let from = match &e.value_from {
                        Some(v) => v
                            .config_map_key_ref
                            .as_ref()
                            .map(|r| format!("{}/{}", r.name, r.key))
                            .unwrap_or_default(),
                        None => e.value.clone().unwrap_or_default(),
                    };
                    (e.name, from)
                })
                .collect::<Vec<_>>()
        };
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        for c in [Component::User, Component::Chat] {
            assert_eq!(
                scope(Default::default(), c),
                [
                    pair("PARLEY_TOKEN_ISSUER", "demo-config/PARLEY_TOKEN_ISSUER"),
                    pair("PARLEY_TOKEN_AUDIENCE", "demo-config/PARLEY_TOKEN_AUDIENCE"),
                ],
                "{c:?}"
            );
        }
        assert!(scope(Default::default(), Component::Mail).is_empty());
        // a value in the component's env wins, once
        let mut spec = crate::api::ChatClusterSpec::default();
        for env in [&mut spec.user.env, &mut spec.chat.component.env] {
            env.push(EnvVar {
                name: "PARLEY_TOKEN_AUDIENCE".into(),
                value: Some("legacy".into()),
                ..Default::default()
            });
        }
        for c in [Component::User, Component::Chat] {
            assert_eq!(
                scope(spec.clone(), c),
                [
                    pair("PARLEY_TOKEN_ISSUER", "demo-config/PARLEY_TOKEN_ISSUER"),
                    pair("PARLEY_TOKEN_AUDIENCE", "legacy"),
                ],
                "{c:?}"
            );
        }
    }

    #[test]
    fn user_chat_and_mail_get_their_own_wiring() {
        let mut spec = crate::api::ChatClusterSpec::default();
        spec.smtp.credentials_secret = Some("smtp".into());
        spec.redis.external = Some(ExternalStore {
            url_secret: SecretKeyRef {
                name: "cache".into(),
                key: "uri".into(),
            },
            ca_secret: None,
        });
        let cc = valid(spec);
        let user = env_of(&deployment(&cc, Component::User, &ctx()));
        assert_eq!(
            user["PARLEY_JWT_PRIVATE_KEY_FILE"].value.as_deref(),
            Some("/etc/parley/jwt/private.pem")
        );
        assert_eq!(
            secret_ref(&user["PARLEY_OTP_SECRET"]),
            ("demo-generated".into(), "otp-secret".into())
        );
        assert_eq!(
            secret_ref(&user["PARLEY_REDIS_URL"]),
            ("cache".into(), "uri".into())
        );
        assert!(user.contains_key("PARLEY_TOKEN_TTL_SECS"));
        let chat = env_of(&deployment(&cc, Component::Chat, &ctx()));
        assert_eq!(
            chat["PARLEY_JWT_PUBLIC_KEYS_FILE"].value.as_deref(),
            Some("/etc/parley/jwt/public.pem")
        );
        assert!(!chat.contains_key("PARLEY_JWT_PRIVATE_KEY_FILE"));
        let mail = env_of(&deployment(&cc, Component::Mail, &ctx()));
        assert_eq!(
            secret_ref(&mail["PARLEY_SMTP_PASSWORD"]),
            ("smtp".into(), "password".into())
        );
        for var in [
            "PARLEY_SMTP_HOST",
            "PARLEY_SMTP_PORT",
            "PARLEY_SMTP_TLS",
            "PARLEY_MAIL_FROM",
            "PARLEY_APP_BASE_URL",
        ] {
            assert!(mail.contains_key(var), "{var}");
        }
    }

    #[test]
    fn user_mounts_only_the_private_key_and_chat_only_the_public_one() {
        let cc = valid(Default::default());
        for (c, key) in [
            (Component::User, PRIVATE_KEY),
            (Component::Chat, PUBLIC_KEY),
        ] {
            let d = deployment(&cc, c, &ctx());
            let pod = d.spec.unwrap().template.spec.unwrap();
            let jwt = pod
                .volumes
                .unwrap()
                .into_iter()
                .find(|v| v.name == "jwt")
                .unwrap();
            let items = jwt.secret.unwrap().items.unwrap();
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].key, key);
        }
    }

    #[test]
    fn autoscaling_leaves_replicas_to_the_hpa_only_when_served() {
        let mut spec: crate::api::ChatClusterSpec = serde_json::from_value(serde_json::json!({
            "chat": {"autoscaling": {"enabled": true}, "resources": {"requests": {"cpu": "100m"}}},
        }))
        .unwrap();
        spec.chat.component.replicas = Some(3);
        let cc = valid(spec);
        let mut c = ctx();
        assert_eq!(replicas(&cc, Component::Chat, &c), None);
        c.apis.autoscaling_v2 = false;
        assert_eq!(replicas(&cc, Component::Chat, &c), Some(3));
        assert_eq!(replicas(&cc, Component::Mail, &c), Some(1));
    }
}
