//! Spec validation: every error names the field it is about.

use crate::api::{ChatCluster, ChatClusterSpec, Component, Store};
use crate::registry::AllowedRegistries;
use crate::validated::{PullPolicy, SmtpTls, StoreMode, ValidatedCluster};

/// One problem with a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {problem}")]
pub struct SpecError {
    /// Dotted path below `spec`, e.g. `redis` or `chat.autoscaling.minReplicas`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Checks what the CRD schema cannot express and returns the cluster as
/// the builders take it, or every problem found.
pub fn validate(cc: &ChatCluster) -> Result<ValidatedCluster, Vec<SpecError>> {
    let spec = &cc.spec;
    let mut errors = spec_errors(spec);
    let pull_policy = PullPolicy::parse(&spec.image.pull_policy);
    if pull_policy.is_none() {
        errors.insert(
            0,
            err("image.pullPolicy", "must be Always, IfNotPresent or Never"),
        );
    }
    let smtp_tls = SmtpTls::parse(&spec.smtp.tls);
    if smtp_tls.is_none() {
        errors.push(err("smtp.tls", "must be none, starttls or tls"));
    }
    // neither set means managed with defaults (build::managed); both set
    // is an error already in `errors`
    let mode = |store: Store| match crate::build::managed(cc, store) {
        Some(m) => Some(StoreMode::Managed(Box::new(m))),
        None => store.spec(spec).external.clone().map(StoreMode::External),
    };
    match (
        pull_policy,
        smtp_tls,
        mode(Store::Redis),
        mode(Store::Rabbitmq),
        mode(Store::Mongodb),
    ) {
        (Some(pull), Some(tls), Some(redis), Some(rabbitmq), Some(mongodb))
            if errors.is_empty() =>
        {
            Ok(ValidatedCluster::new(
                cc.clone(),
                pull,
                tls,
                [redis, rabbitmq, mongodb],
            ))
        }
        _ => Err(errors),
    }
}

/// The problems of `spec` beyond its enums (which [`validate`] reads).
fn spec_errors(spec: &ChatClusterSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if spec.image.repository.trim().is_empty() {
        errors.push(err("image.repository", "must not be empty"));
    }
    if spec.image.tag.trim().is_empty() {
        errors.push(err("image.tag", "must not be empty"));
    }
    for component in Component::ALL {
        let c = component.spec(spec);
        let at = component.name();
        if let Some(r) = c.replicas
            && r < 0
        {
            errors.push(err(format!("{at}.replicas"), "must not be negative"));
        }
        let a = &c.autoscaling;
        if a.enabled {
            if a.min_replicas < 1 {
                errors.push(err(
                    format!("{at}.autoscaling.minReplicas"),
                    "must be at least 1",
                ));
            }
            if a.min_replicas > a.max_replicas {
                errors.push(err(
                    format!("{at}.autoscaling.minReplicas"),
                    format!(
                        "must not exceed maxReplicas ({} > {})",
                        a.min_replicas, a.max_replicas
                    ),
                ));
            }
            let cpu_request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|r| r.contains_key("cpu"));
            if !cpu_request {
                errors.push(err(
                    format!("{at}.resources.requests.cpu"),
                    "is required when autoscaling is enabled (the autoscaler aims at a percentage of it)",
                ));
            }
            if !(1..=100).contains(&a.target_cpu_utilization) {
                errors.push(err(
                    format!("{at}.autoscaling.targetCpuUtilization"),
                    "must be between 1 and 100",
                ));
            }
        }
        if c.pod_disruption_budget.enabled && c.pod_disruption_budget.max_unavailable < 1 {
            errors.push(err(
                format!("{at}.podDisruptionBudget.maxUnavailable"),
                "must be at least 1",
            ));
        }
        for (i, e) in c.env.iter().enumerate() {
            if e.name.starts_with("PARLEY_") && OWNED_ENV.contains(&e.name.as_str()) {
                errors.push(err(
                    format!("{at}.env[{i}].name"),
                    format!("{} is set by the operator", e.name),
                ));
            }
        }
        if let Some(o) = &c.pod_overrides {
            errors.extend(pod_override_errors(&format!("{at}.podOverrides"), o));
        }
    }
    for store in Store::ALL {
        if let Some(o) = store
            .spec(spec)
            .managed
            .as_ref()
            .and_then(|m| m.pod_overrides.as_ref())
        {
            errors.extend(pod_override_errors(
                &format!("{}.managed.podOverrides", store.name()),
                o,
            ));
        }
    }
    for store in Store::ALL {
        let s = store.spec(spec);
        let at = store.name();
        match (&s.managed, &s.external) {
            (Some(_), Some(_)) => {
                errors.push(err(at, "set exactly one of managed or external, not both"))
            }
            (None, Some(ext)) => {
                if ext.url_secret.name.trim().is_empty() {
                    errors.push(err(
                        format!("{at}.external.urlSecret.name"),
                        "must name a Secret",
                    ));
                }
                if ext
                    .ca_secret
                    .as_ref()
                    .is_some_and(|c| c.name.trim().is_empty())
                {
                    errors.push(err(
                        format!("{at}.external.caSecret.name"),
                        "must name a Secret",
                    ));
                }
            }
            (Some(m), None) => {
                if m.password_secret
                    .as_ref()
                    .is_some_and(|p| p.name.trim().is_empty())
                {
                    errors.push(err(
                        format!("{at}.managed.passwordSecret.name"),
                        "must name a Secret",
                    ));
                }
                if let Some(size) = &m.storage_size
                    && !looks_like_quantity(size)
                {
                    errors.push(err(
                        format!("{at}.managed.storageSize"),
                        format!("{size:?} is not a quantity such as 1Gi"),
                    ));
                }
            }
            _ => {}
        }
    }
    if !(1..=65535).contains(&spec.smtp.port) {
        errors.push(err("smtp.port", "must be between 1 and 65535"));
    }
    if spec.smtp.host.trim().is_empty() {
        errors.push(err("smtp.host", "must not be empty"));
    }
    if !spec.smtp.from.contains('@') {
        errors.push(err("smtp.from", "must be an e-mail address"));
    }
    // key names apply only to a Secret the spec names
    let auth = crate::api::AuthSpec::default();
    errors.extend(keys_without_their_secret(
        spec.auth.signing_key_secret.is_some(),
        &[
            (
                "auth.privateKeyKey",
                &spec.auth.private_key_key,
                &auth.private_key_key,
            ),
            (
                "auth.publicKeyKey",
                &spec.auth.public_key_key,
                &auth.public_key_key,
            ),
        ],
        |default| {
            format!("applies to signingKeySecret only; the generated key Secret uses {default:?}")
        },
    ));
    let smtp = crate::api::SmtpSpec::default();
    errors.extend(keys_without_their_secret(
        spec.smtp.credentials_secret.is_some(),
        &[
            (
                "smtp.usernameKey",
                &spec.smtp.username_key,
                &smtp.username_key,
            ),
            (
                "smtp.passwordKey",
                &spec.smtp.password_key,
                &smtp.password_key,
            ),
        ],
        |_| "applies only with credentialsSecret".to_owned(),
    ));
    if spec.auth.token_ttl_seconds < 60 {
        errors.push(err("auth.tokenTtlSeconds", "must be at least 60"));
    }
    // the user pods sign with these and user and chat pods check them: an
    // override in one env and not the other would refuse every token
    for var in crate::build::deployment::TOKEN_SCOPE_ENV {
        let set = |c: &crate::api::ComponentSpec| c.env.iter().find(|e| e.name == var).cloned();
        let (user, chat) = (set(&spec.user), set(&spec.chat.component));
        if user != chat {
            let at = if chat.is_none() {
                "chat.env"
            } else {
                "user.env"
            };
            let problem = if user.is_some() && chat.is_some() {
                format!(
                    "{var} differs from user.env's; user signs tokens with it and chat checks them: set it alike in both, or use spec.auth"
                )
            } else {
                format!(
                    "{var} is set in one of user.env and chat.env only; user signs tokens with it and chat checks them: set it alike in both, or use spec.auth"
                )
            };
            errors.push(err(at, problem));
        }
    }
    if spec.ingress.tls_secret_name.is_some() && spec.ingress.host.is_none() {
        errors.push(err("ingress.host", "is required when tlsSecretName is set"));
    }
    errors
}

/// The images of `cc` that `allowed` refuses, one error per spec field and
/// image, naming both; none when the list is empty. Checked before anything
/// is created or changed for the ChatCluster, so a refused image never runs
/// and the objects of an earlier, allowed spec keep running.
pub fn refused_images(cc: &ValidatedCluster, allowed: &AllowedRegistries) -> Vec<SpecError> {
    if allowed.is_empty() {
        return Vec::new();
    }
    crate::build::images(cc)
        .into_iter()
        .filter_map(|use_| {
            let mut why = allowed.refuses(&use_.image)?;
            if let Some(store) = use_.field.strip_suffix(".managed.image")
                && Store::ALL.iter().any(|s| {
                    s.name() == store
                        && s.spec(&cc.spec)
                            .managed
                            .as_ref()
                            .and_then(|m| m.image.as_ref())
                            .is_none()
                })
            {
                why.push_str(&format!(
                    " (the default; set spec.{store}.managed.image to an allowed mirror)"
                ));
            }
            Some(err(use_.field, why))
        })
        .collect()
}

/// Env vars the operator sets itself; `env` overrides of these are refused.
pub const OWNED_ENV: &[&str] = &[
    "PARLEY_HTTP_ADDR",
    "PARLEY_MONGODB_URI",
    "PARLEY_REDIS_URL",
    "PARLEY_AMQP_URL",
    "PARLEY_JWT_PRIVATE_KEY_FILE",
    "PARLEY_JWT_PUBLIC_KEYS_FILE",
    "PARLEY_OTP_SECRET",
    "PARLEY_REDIS_CA_FILE",
    "PARLEY_AMQP_CA_FILE",
    "PARLEY_MONGODB_CA_FILE",
];

/// Variables carrying the operator's wiring: the store passwords its URLs
/// are built from and the stores' own credential variables.
pub const WIRING_ENV: &[&str] = &[
    "REDIS_PASSWORD",
    "RABBITMQ_PASSWORD",
    "MONGODB_PASSWORD",
    "MONGODB_APP_PASSWORD",
    "RABBITMQ_DEFAULT_USER",
    "RABBITMQ_DEFAULT_PASS",
    "MONGO_INITDB_ROOT_USERNAME",
    "MONGO_INITDB_ROOT_PASSWORD",
];

/// What a `podOverrides` may not do: set a `PARLEY_*` or wiring variable in
/// any container (the operator's values win; `PARLEY_*` settings go in
/// `env`, where they are checked), or change the pod's identity.
fn pod_override_errors(
    at: &str,
    o: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Vec<SpecError> {
    let mut errors = Vec::new();
    let Some(pod) = &o.spec else {
        return errors;
    };
    let lists = [
        ("initContainers", pod.init_containers.as_deref()),
        ("containers", Some(pod.containers.as_slice())),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.unwrap_or_default().iter().enumerate() {
            for (j, e) in c.env.as_deref().unwrap_or_default().iter().enumerate() {
                if e.name.starts_with("PARLEY_") || WIRING_ENV.contains(&e.name.as_str()) {
                    errors.push(err(
                        format!("{at}.spec.{list}[{i}].env[{j}].name"),
                        format!(
                            "{} cannot be overridden here: PARLEY_* settings go in env, and the operator's own values win",
                            e.name
                        ),
                    ));
                }
            }
        }
    }
    if pod.service_account_name.is_some() || pod.automount_service_account_token == Some(true) {
        errors.push(err(
            format!("{at}.spec.serviceAccountName"),
            "the pods keep the operator's ServiceAccount without an API token (spec.serviceAccount)",
        ));
    }
    errors
}

/// Key-name fields `(field, value, default)` set away from their default
/// although the Secret they name keys of is not given (`secret_named`).
fn keys_without_their_secret(
    secret_named: bool,
    keys: &[(&str, &String, &String)],
    problem: impl Fn(&str) -> String,
) -> Vec<SpecError> {
    if secret_named {
        return Vec::new();
    }
    keys.iter()
        .filter(|(_, value, default)| value != default)
        .map(|(field, _, default)| err(*field, problem(default)))
        .collect()
}

fn looks_like_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && ["", "Ki", "Mi", "Gi", "Ti", "Pi", "k", "M", "G", "T", "P"].contains(&suffix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ExternalStore, ManagedStore};

    /// What [`validate`] says of `spec`, the validated cluster left out.
    fn check(spec: &ChatClusterSpec) -> Result<(), Vec<SpecError>> {
        validate(&crate::build::fixtures::cluster(spec.clone())).map(|_| ())
    }

    #[test]
    fn pod_overrides_may_add_but_not_rewire() {
        use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
        let with_env = |name: &str| PodTemplateSpec {
            spec: Some(PodSpec {
                priority_class_name: Some("high".into()),
                containers: vec![Container {
                    name: "chat".into(),
                    env: Some(vec![EnvVar {
                        name: name.into(),
                        value: Some("x".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut spec = ChatClusterSpec::default();
        spec.chat.component.pod_overrides = Some(with_env("HTTPS_PROXY"));
        assert_eq!(check(&spec), Ok(()));
        for owned in ["PARLEY_LOG", "PARLEY_MONGODB_URI", "MONGODB_APP_PASSWORD"] {
            spec.chat.component.pod_overrides = Some(with_env(owned));
            let errors = check(&spec).unwrap_err();
            assert_eq!(
                errors[0].field, "chat.podOverrides.spec.containers[0].env[0].name",
                "{owned}"
            );
        }
        spec.chat.component.pod_overrides = None;
        spec.redis.managed = Some(ManagedStore {
            pod_overrides: Some(with_env("REDIS_PASSWORD")),
            ..Default::default()
        });
        assert_eq!(
            check(&spec).unwrap_err()[0].field,
            "redis.managed.podOverrides.spec.containers[0].env[0].name"
        );
    }

    #[test]
    fn secret_keys_and_references_need_their_secret() {
        let mut spec = ChatClusterSpec::default();
        spec.auth.private_key_key = "tls.key".into();
        spec.smtp.password_key = "pass".into();
        spec.redis.managed = Some(ManagedStore {
            password_secret: Some(Default::default()),
            ..Default::default()
        });
        spec.mongodb.external = Some(ExternalStore {
            url_secret: crate::api::SecretKeyRef {
                name: "docdb".into(),
                key: "uri".into(),
            },
            ca_secret: Some(Default::default()),
        });
        let fields: Vec<_> = check(&spec)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "redis.managed.passwordSecret.name",
                "mongodb.external.caSecret.name",
                "auth.privateKeyKey",
                "smtp.passwordKey"
            ]
        );
        spec.auth.signing_key_secret = Some("keys".into());
        spec.smtp.credentials_secret = Some("smtp".into());
        spec.redis.managed = Some(ManagedStore {
            password_secret: Some(crate::api::PasswordSecretRef {
                name: "redis-pass".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        spec.mongodb.external = Some(ExternalStore {
            ca_secret: Some(crate::api::CaSecretRef {
                name: "rds-ca".into(),
                ..Default::default()
            }),
            ..spec.mongodb.external.clone().unwrap_or_default()
        });
        assert_eq!(check(&spec), Ok(()));
    }

    #[test]
    fn empty_spec_is_valid() {
        assert_eq!(check(&ChatClusterSpec::default()), Ok(()));
    }

    #[test]
    fn both_managed_and_external_names_the_store() {
        let mut spec = ChatClusterSpec::default();
        spec.redis.managed = Some(ManagedStore::default());
        spec.redis.external = Some(ExternalStore::default());
        let errors = check(&spec).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "redis");
    }

    #[test]
    fn min_above_max_names_the_field() {
        let mut spec = ChatClusterSpec::default();
        spec.chat.component.autoscaling.enabled = true;
        spec.chat.component.autoscaling.min_replicas = 5;
        spec.chat.component.autoscaling.max_replicas = 3;
        let errors = check(&spec).unwrap_err();
        assert_eq!(errors[0].field, "chat.autoscaling.minReplicas");
        assert!(
            errors[0]
                .to_string()
                .starts_with("spec.chat.autoscaling.minReplicas")
        );
    }

    #[test]
    fn autoscaling_needs_a_cpu_request() {
        let mut spec = ChatClusterSpec::default();
        spec.user.autoscaling.enabled = true;
        let errors = check(&spec).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "user.resources.requests.cpu");
        spec.user.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(
                [(
                    "cpu".to_owned(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("100m".into()),
                )]
                .into(),
            ),
            ..Default::default()
        });
        assert_eq!(check(&spec), Ok(()));
    }

    #[test]
    fn images_outside_the_allowed_registries_are_refused_naming_field_and_image() {
        use crate::build::fixtures::valid;
        let allowed = AllowedRegistries::parse("registry.example.com/team/").unwrap();
        let spec: ChatClusterSpec = serde_json::from_value(serde_json::json!({
            "image": {"repository": "registry.example.com/team/parley", "tag": "2.0"},
            "chat": {"image": {"repository": "registry.example.org/other/parley"}},
            "redis": {"managed": {"image": "registry.example.com/team/redis:7"}},
            "rabbitmq": {"managed": {"image": "registry.example.com/team/rabbitmq@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}},
        }))
        .unwrap();
        let errors = refused_images(&valid(spec.clone()), &allowed);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:#?}");
        assert!(
            text[0].starts_with(
                "spec.chat.image.repository: image \"registry.example.org/other/parley:2.0\""
            ) && text[0].contains("registry.example.com/team/"),
            "{}",
            text[0]
        );
        assert!(
            text[1].starts_with(
                "spec.mongodb.managed.image: image \"mongo:7.0\" (library/mongo on the container runtime's default registry)"
            ) && text[1].contains("write `library/` to allow the runtime's default registry's official images")
                && text[1].contains("the default; set spec.mongodb.managed.image"),
            "{}",
            text[1]
        );
        // `library/` allows the default store images, and only them
        let with_official =
            AllowedRegistries::parse("registry.example.com/team/, library/").unwrap();
        let errors = refused_images(&valid(spec), &with_official);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1, "{text:#?}");
        assert!(
            text[0].starts_with("spec.chat.image.repository:"),
            "{}",
            text[0]
        );
        // no list, no refusal
        let everything = refused_images(&valid(ChatClusterSpec::default()), &Default::default());
        assert!(everything.is_empty());
    }

    #[test]
    fn a_sidecar_added_through_pod_overrides_is_held_to_the_allow_list() {
        use crate::build::fixtures::valid;
        let allowed = AllowedRegistries::parse("registry.example.com/team/").unwrap();
        let spec: ChatClusterSpec = serde_json::from_value(serde_json::json!({
            "image": {"repository": "registry.example.com/team/parley", "tag": "2.0"},
            "chat": {"podOverrides": {"spec": {"containers": [
                {"name": "sidecar", "image": "registry.example.org/other/sidecar:1"}
            ]}}},
            "redis": {"managed": {"image": "registry.example.com/team/redis:7"}},
            "rabbitmq": {"managed": {"image": "registry.example.com/team/rabbitmq:3"}},
            "mongodb": {"managed": {"image": "registry.example.com/team/mongo:7"}},
        }))
        .unwrap();
        let errors = refused_images(&valid(spec), &allowed);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0]
                .to_string()
                .contains("registry.example.org/other/sidecar:1"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_token_scope_override_must_be_the_same_for_user_and_chat() {
        let var = |value: &str| k8s_openapi::api::core::v1::EnvVar {
            name: "PARLEY_TOKEN_AUDIENCE".into(),
            value: Some(value.into()),
            ..Default::default()
        };
        let mut spec = ChatClusterSpec::default();
        spec.user.env.push(var("a"));
        let errors = check(&spec).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "chat.env");
        assert!(errors[0].problem.contains("PARLEY_TOKEN_AUDIENCE"));
        spec.chat.component.env.push(var("b"));
        assert_eq!(check(&spec).unwrap_err()[0].field, "user.env");
        spec.chat.component.env[0] = var("a");
        assert_eq!(check(&spec), Ok(()));
    }

    #[test]
    fn bad_values_are_each_reported() {
        let mut spec = ChatClusterSpec::default();
        spec.smtp.tls = "sometimes".into();
        spec.mongodb.external = Some(ExternalStore::default());
        spec.rabbitmq.managed = Some(ManagedStore {
            storage_size: Some("lots".into()),
            ..Default::default()
        });
        spec.user.env.push(k8s_openapi::api::core::v1::EnvVar {
            name: "PARLEY_REDIS_URL".into(),
            ..Default::default()
        });
        let fields: Vec<_> = check(&spec)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "user.env[0].name",
                "rabbitmq.managed.storageSize",
                "mongodb.external.urlSecret.name",
                "smtp.tls"
            ]
        );
    }
}
