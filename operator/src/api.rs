//! The `ChatCluster` custom resource (group `parley.dev`, version `v1alpha1`).
//!
//! Every field carries a doc comment (it becomes `kubectl explain` text) and a
//! default, so `spec: {}` describes a complete, runnable chat stack.

// kube's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy flags.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PodTemplateSpec, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every parley resource.
pub const GROUP: &str = "parley.dev";

/// Highest replica count any field accepts (the CRD schema's maximum).
pub const MAX_REPLICAS: i32 = 1000;
/// An image tag, as the container image reference grammar allows it.
pub const TAG_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$";
/// A DNS host name, optionally a `*.` wildcard, as Ingress rules take it.
pub const HOST_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A storage quantity: digits with an optional fraction and binary or decimal suffix.
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";
/// A Secret data key.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// Printable ASCII, spaces included.
pub const PRINTABLE_PATTERN: &str = r"^[ -~]+$";

/// Desired state of a parley chat stack: the user, chat and mail services,
/// their data stores, ingress, SMTP and token signing.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "parley.dev",
    version = "v1alpha1",
    kind = "ChatCluster",
    namespaced,
    shortname = "cc",
    status = "ChatClusterStatus",
    derive = "PartialEq",
    doc = "A parley chat stack: user, chat and mail services with their data stores.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Chat",
        type_ = "integer",
        description = "ready chat replicas",
        json_path = ".status.components.chat.readyReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", default)]
pub struct ChatClusterSpec {
    /// The container image holding every parley binary (parley-user, parley-chat, parley-mail).
    pub image: ImageSpec,
    /// The user service: login by one-time code, profiles, token issuing.
    pub user: ComponentSpec,
    /// The chat service: REST and Socket.IO messaging.
    pub chat: ChatSpec,
    /// The mail service: one-time codes and message notifications by e-mail.
    pub mail: ComponentSpec,
    /// Optional Ingress routing the public API to user and chat.
    pub ingress: IngressSpec,
    /// Redis (caches, rate limits, presence, Socket.IO fan-out).
    pub redis: StoreSpec,
    /// RabbitMQ (the `parley.events` exchange).
    pub rabbitmq: StoreSpec,
    /// MongoDB (users, chats, messages, media).
    pub mongodb: StoreSpec,
    /// Outgoing mail server used by the mail service.
    pub smtp: SmtpSpec,
    /// Token signing.
    pub auth: AuthSpec,
    /// The ServiceAccount the user, chat and mail pods run as (`<name>-parley`).
    pub service_account: ServiceAccountSpec,
    /// Public base URL of the application, used in e-mail links. Defaults to
    /// `https://<ingress.host>` when an ingress host is set, else `http://localhost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_base_url: Option<String>,
    /// Log filter for every service (PARLEY_LOG), e.g. `info` or
    /// `parley_chat=debug,info`; `info` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// When true the operator changes nothing (status is still reported).
    pub paused: bool,
}

/// Which image to run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageSpec {
    /// Image repository, without tag. parley publishes no image: build it
    /// from the project's `Dockerfile`, push it to your own registry and
    /// name it here (`registry.example.com/platform/parley`). The default,
    /// `localhost/parley`, runs only on nodes that already hold an image of
    /// that name.
    #[schemars(length(min = 1))]
    pub repository: String,
    /// Image tag: letters, digits, `_`, `.` and `-`, at most 128 characters.
    #[schemars(regex(pattern = TAG_PATTERN))]
    pub tag: String,
    /// Kubernetes image pull policy: Always, IfNotPresent or Never.
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub pull_policy: String,
    /// Names of Secrets (type kubernetes.io/dockerconfigjson) used to pull the image.
    pub pull_secrets: Vec<String>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: "localhost/parley".into(),
            tag: "latest".into(),
            pull_policy: "IfNotPresent".into(),
            pull_secrets: Vec::new(),
        }
    }
}

/// Per-component image override; unset fields fall back to `spec.image`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageOverride {
    /// Image repository for this component only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Image tag for this component only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TAG_PATTERN))]
    pub tag: Option<String>,
}

/// Settings of one service (user, chat or mail).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ComponentSpec {
    /// Number of pods when autoscaling is off, 0 to 1000. Defaults to 2
    /// (user, chat) or 1 (mail).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub replicas: Option<i32>,
    /// Image override for this component.
    pub image: ImageOverride,
    /// CPU and memory requests and limits of the service container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Horizontal pod autoscaling on CPU (autoscaling/v2, or v2beta2 on older clusters).
    pub autoscaling: AutoscalingSpec,
    /// Pod disruption budget (policy/v1, or v1beta1 on older clusters).
    pub pod_disruption_budget: PdbSpec,
    /// Where the pods may run.
    pub scheduling: SchedulingSpec,
    /// Extra environment variables, appended after the operator's own.
    pub env: Vec<EnvVar>,
    /// A patch merged onto the pod template the operator builds, as
    /// server-side apply merges: maps key by key, `containers`,
    /// `initContainers`, `volumes`, `env` and `volumeMounts` by `name`
    /// (a new name adds one: sidecars, extra volumes, CA bundles), other
    /// lists such as `tolerations` replaced whole. For what the fields
    /// above do not offer: `priorityClassName`, sidecars, extra volumes
    /// and mounts, `securityContext`, annotations. The operator's own
    /// labels and `PARLEY_*` variables win: setting a `PARLEY_*` variable
    /// or a store password variable here is refused (use `env`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_overrides_schema")]
    pub pod_overrides: Option<PodTemplateSpec>,
}

/// The schema of `podOverrides`: an object the API server keeps as given
/// (the full pod template schema would make the CRD several times larger);
/// the operator checks it when it reads the ChatCluster.
fn pod_overrides_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "Pod template patch (metadata and spec), merged onto the operator's pod template."
    })
}

/// Settings of the chat service: those of every service, plus how clients
/// are kept on one chat pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ChatSpec {
    /// Replicas, image, resources, autoscaling and the rest, as for user and mail.
    #[serde(flatten)]
    pub component: ComponentSpec,
    /// How the chat Service spreads connections over the chat pods.
    /// `ClientIP` (the default) sends every connection from one client
    /// address to the same pod, which Socket.IO's HTTP long-polling transport
    /// (where the official client starts) needs once chat runs two or more
    /// pods; otherwise polls land on other pods and fail with "Session ID
    /// unknown". `None` spreads connections freely: only for clients that
    /// use the WebSocket transport alone. Behind an Ingress the controller
    /// picks the pods itself: with `ingress.className: nginx` the operator
    /// adds ingress-nginx cookie affinity; other controllers need their own
    /// stickiness setting in `ingress.annotations`.
    pub session_affinity: SessionAffinity,
}

/// How the chat Service picks a pod for a client connection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SessionAffinity {
    /// Connections from one client IP address go to the same pod.
    #[default]
    #[serde(rename = "ClientIP")]
    ClientIp,
    /// No affinity: connections are spread over the pods.
    None,
}

/// Horizontal pod autoscaling settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AutoscalingSpec {
    /// Create a HorizontalPodAutoscaler (autoscaling/v2, or v2beta2 where v2
    /// is not served); the Deployment's replicas are then handed over to it
    /// at their current count. Needs `resources.requests.cpu`.
    pub enabled: bool,
    /// Lowest number of pods, 1 to 1000.
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub min_replicas: i32,
    /// Highest number of pods, 1 to 1000, at least `minReplicas`.
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests, 1 to 100) the autoscaler aims at.
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: i32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            min_replicas: 2,
            max_replicas: 10,
            target_cpu_utilization: 75,
        }
    }
}

/// Pod disruption budget settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PdbSpec {
    /// Create a PodDisruptionBudget for the component.
    pub enabled: bool,
    /// Pods that may be unavailable at once during voluntary disruptions (1 to 1000).
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub max_unavailable: i32,
}

impl Default for PdbSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: 1,
        }
    }
}

/// Pod placement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SchedulingSpec {
    /// Node labels the pods must match.
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    pub tolerations: Vec<Toleration>,
    /// Node and pod (anti-)affinity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the pods spread across topology domains.
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// Public entry point.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressSpec {
    /// Create an Ingress routing `/api/v1/(login|verify|me|users…)` to user and
    /// `/socket.io` plus the chat routes to chat (websocket transport needs no
    /// sticky sessions; long-polling does: see `chat.sessionAffinity`).
    pub enabled: bool,
    /// IngressClass name; the cluster default when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Host name the Ingress answers for (a DNS name, optionally starting
    /// with `*.`); all hosts when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HOST_PATTERN))]
    pub host: Option<String>,
    /// Secret holding the TLS certificate for `host`; plain HTTP when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Extra annotations for the Ingress (controller-specific settings).
    pub annotations: BTreeMap<String, String>,
    /// Who may reach the user pods besides this ChatCluster's chat pods:
    /// the ingress controller's pods (for example a `namespaceSelector`
    /// matching its namespace) and anything else that must, such as a
    /// metrics scraper. When set, a NetworkPolicy refuses every other
    /// source, so nothing in the cluster can reach a user pod directly and
    /// write its own `X-Forwarded-For`. Empty (the default): no policy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controller_peers: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

/// A data store: exactly one of `managed` or `external`; managed with defaults when neither is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct StoreSpec {
    /// Run the store inside the cluster as a StatefulSet the operator owns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedStore>,
    /// Use a store running elsewhere; its connection URL comes from a Secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalStore>,
}

/// A store the operator runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedStore {
    /// Image; defaults to `redis:7.4-alpine` (Redis), `rabbitmq:3.13-alpine`
    /// (RabbitMQ) or `mongo:7.0` (MongoDB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Size of the data volume: a quantity such as `1Gi` or `500Mi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub storage_size: Option<String>,
    /// StorageClass of the data volume; the cluster default when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// CPU and memory of the store container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// What happens to the data volume when the ChatCluster is deleted:
    /// Retain (default) or Delete. While any store retains its volume, the
    /// store passwords in `<name>-generated` are kept as well, so a
    /// ChatCluster re-created under the same name opens the kept data; delete
    /// the volumes and that Secret together to start afresh. While any store
    /// says Delete, the ChatCluster carries the finalizer
    /// `parley.dev/delete-volumes`: on deletion the operator deletes the store
    /// StatefulSets, then those volumes, and only then lets it go.
    pub volume_reclaim: VolumeReclaim,
    /// A patch merged onto the store's pod template, as for the services'
    /// `podOverrides` (the store's own password variables cannot be set here).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_overrides_schema")]
    pub pod_overrides: Option<PodTemplateSpec>,
    /// Your own password for the store, in place of the one the operator
    /// generates into `<name>-generated`. For MongoDB it is the password of
    /// the root user `parley`; the services' own `readWrite` user keeps a
    /// generated password. It goes into connection URLs and the store's
    /// configuration, so it may hold only letters, digits, `-`, `.`, `_` and
    /// `~` (at least 16 of them); the operator reports any other in the
    /// `DependenciesReady` condition. RabbitMQ and MongoDB, like with a
    /// generated password, take it up only on an empty data volume: to
    /// change it over kept data, change it in the store first. A change
    /// rolls the store and the services that connect to it, nothing else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<PasswordSecretRef>,
}

/// The key of a Secret (in the ChatCluster's namespace) holding a password.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PasswordSecretRef {
    /// Secret name.
    // Empty strings are never sent: some API servers read them as null.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret; `password` by default.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

impl Default for PasswordSecretRef {
    fn default() -> Self {
        Self {
            name: String::new(),
            key: "password".into(),
        }
    }
}

/// The key of a Secret (in the ChatCluster's namespace) holding PEM CA
/// certificates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CaSecretRef {
    /// Secret name.
    // Empty strings are never sent: some API servers read them as null.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret; `ca.crt` by default (as cert-manager and
    /// service-account token Secrets name it).
    #[schemars(regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

impl Default for CaSecretRef {
    fn default() -> Self {
        Self {
            name: String::new(),
            key: "ca.crt".into(),
        }
    }
}

/// Fate of a managed store's volume when its ChatCluster is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeReclaim {
    /// Keep the PersistentVolumeClaim (and data).
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaim with the ChatCluster.
    Delete,
}

/// A store run elsewhere.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ExternalStore {
    /// Secret (in the ChatCluster's namespace) holding the connection URL,
    /// e.g. `rediss://…`, `amqps://…`, `mongodb+srv://…` (TLS is chosen by the URL scheme or its options).
    pub url_secret: SecretKeyRef,
    /// Secret key holding the PEM certificates of the certificate
    /// authorities that signed the store's TLS certificate, e.g. Amazon
    /// RDS's global bundle for DocumentDB. The services then trust these
    /// for this store: Redis and MongoDB only these, RabbitMQ these besides
    /// the system's. The URL must ask for TLS (`rediss://`,
    /// `amqps://`); for MongoDB it turns TLS on. Unset: the system's trusted
    /// authorities. A change rolls only the services, never a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<CaSecretRef>,
}

/// A key of a Secret in the ChatCluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretKeyRef {
    /// Secret name.
    // Empty strings are never sent: some API servers read them as null.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Key inside the Secret (letters, digits, `-`, `_` and `.`).
    #[schemars(regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

impl Default for SecretKeyRef {
    fn default() -> Self {
        Self {
            name: String::new(),
            key: "url".into(),
        }
    }
}

/// Outgoing mail.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmtpSpec {
    /// SMTP server host.
    pub host: String,
    /// SMTP server port, 1 to 65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Transport security: `none`, `starttls` or `tls`.
    #[schemars(extend("enum" = ["none", "starttls", "tls"]))]
    pub tls: String,
    /// Secret with the user name and password (keys `usernameKey` and
    /// `passwordKey`); no authentication when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Key of the user name in `credentialsSecret`; `username` by default.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN))]
    pub username_key: String,
    /// Key of the password in `credentialsSecret`; `password` by default.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN))]
    pub password_key: String,
    /// Sender address of every e-mail.
    #[schemars(regex(pattern = "@"))]
    pub from: String,
}

impl Default for SmtpSpec {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            tls: "starttls".into(),
            credentials_secret: None,
            username_key: "username".into(),
            password_key: "password".into(),
            from: "parley@localhost.localdomain".into(),
        }
    }
}

/// Token signing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthSpec {
    /// Secret with the Ed25519 private key (PKCS#8 PEM, key `privateKeyKey`)
    /// and the PEM public keys tokens are checked with (key `publicKeyKey`:
    /// the current one, and during a rotation the previous one as well).
    /// When unset the operator creates `<name>-jwt` once and never replaces
    /// it. Only the user pods read the private key and only the chat pods
    /// the public keys, so a change of one rolls only those.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_secret: Option<String>,
    /// Key of the private key in `signingKeySecret`; `private.pem` by
    /// default, and always `private.pem` in the generated `<name>-jwt`.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN))]
    pub private_key_key: String,
    /// Key of the public keys in `signingKeySecret`; `public.pem` by
    /// default, and always `public.pem` in the generated `<name>-jwt`.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN))]
    pub public_key_key: String,
    /// Lifetime of issued tokens in seconds, at least 60.
    #[schemars(range(min = 60))]
    pub token_ttl_seconds: i64,
    /// `iss` of the tokens (`PARLEY_TOKEN_ISSUER` of the user and chat
    /// pods), at most 200 printable ASCII characters; `parley-user` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = PRINTABLE_PATTERN))]
    pub issuer: Option<String>,
    /// `aud` of the tokens (`PARLEY_TOKEN_AUDIENCE` of the user and chat
    /// pods), at most 200 printable ASCII characters; `<namespace>/<name>` of
    /// this ChatCluster when unset, so that no other deployment accepts its
    /// tokens even where two share a signing key. Changing it makes every
    /// user log in again once (tokens issued before are refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = PRINTABLE_PATTERN))]
    pub audience: Option<String>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            signing_key_secret: None,
            private_key_key: "private.pem".into(),
            public_key_key: "public.pem".into(),
            token_ttl_seconds: 86_400,
            issuer: None,
            audience: None,
        }
    }
}

/// The pods' ServiceAccount.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceAccountSpec {
    /// Annotations of the ServiceAccount, e.g. `eks.amazonaws.com/role-arn`
    /// for IAM roles for service accounts.
    pub annotations: BTreeMap<String, String>,
}

/// Observed state of a ChatCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ChatClusterStatus {
    /// The spec generation this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Progressing, Ready or Degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, Progressing, DependenciesReady, Degraded, APIsAvailable and
    /// VolumesMatchSpec (False naming the field when a volume change cannot be made).
    pub conditions: Vec<Condition>,
    /// Per component (user, chat, mail, redis, rabbitmq, mongodb): replicas and image.
    pub components: BTreeMap<String, ComponentStatus>,
    /// Where the services answer.
    pub endpoints: Endpoints,
}

/// Coarse state of a ChatCluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Nothing reconciled yet.
    Pending,
    /// Children exist but not all are ready.
    Progressing,
    /// Every component has its desired ready replicas.
    Ready,
    /// The spec is invalid or applying it failed.
    Degraded,
}

/// One condition, as in metav1.Condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// One-word CamelCase reason.
    pub reason: String,
    /// Human-readable details.
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation this condition was computed for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Replica counts and image of one component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ComponentStatus {
    /// Pods that are ready.
    pub ready_replicas: i32,
    /// Pods wanted.
    pub desired_replicas: i32,
    /// Image running.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image: String,
}

/// Service addresses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoints {
    /// In-cluster URL of the user service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// In-cluster URL of the chat service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<String>,
    /// Public URL through the Ingress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<String>,
}

/// The three parley services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// parley-user
    User,
    /// parley-chat
    Chat,
    /// parley-mail
    Mail,
}

impl Component {
    /// Every component, in a stable order.
    pub const ALL: [Component; 3] = [Component::User, Component::Chat, Component::Mail];

    /// Short name: `user`, `chat`, `mail`.
    pub fn name(self) -> &'static str {
        match self {
            Component::User => "user",
            Component::Chat => "chat",
            Component::Mail => "mail",
        }
    }

    /// Default replicas when the spec names none.
    pub fn default_replicas(self) -> i32 {
        match self {
            Component::User | Component::Chat => 2,
            Component::Mail => 1,
        }
    }

    /// This component's part of the spec.
    pub fn spec(self, spec: &ChatClusterSpec) -> &ComponentSpec {
        match self {
            Component::User => &spec.user,
            Component::Chat => &spec.chat.component,
            Component::Mail => &spec.mail,
        }
    }
}

/// The three data stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Store {
    /// Redis.
    Redis,
    /// RabbitMQ.
    Rabbitmq,
    /// MongoDB.
    Mongodb,
}

impl Store {
    /// Every store, in a stable order.
    pub const ALL: [Store; 3] = [Store::Redis, Store::Rabbitmq, Store::Mongodb];

    /// Short name: `redis`, `rabbitmq`, `mongodb`.
    pub fn name(self) -> &'static str {
        match self {
            Store::Redis => "redis",
            Store::Rabbitmq => "rabbitmq",
            Store::Mongodb => "mongodb",
        }
    }

    /// This store's part of the spec.
    pub fn spec(self, spec: &ChatClusterSpec) -> &StoreSpec {
        match self {
            Store::Redis => &spec.redis,
            Store::Rabbitmq => &spec.rabbitmq,
            Store::Mongodb => &spec.mongodb,
        }
    }

    /// Default image of the managed store.
    pub fn default_image(self) -> &'static str {
        match self {
            Store::Redis => "redis:7.4-alpine",
            Store::Rabbitmq => "rabbitmq:3.13-alpine",
            Store::Mongodb => "mongo:7.0",
        }
    }

    /// The port the store listens on.
    pub fn port(self) -> i32 {
        match self {
            Store::Redis => 6379,
            Store::Rabbitmq => 5672,
            Store::Mongodb => 27017,
        }
    }

    /// The environment variable carrying its URL to the services.
    pub fn env_var(self) -> &'static str {
        match self {
            Store::Redis => "PARLEY_REDIS_URL",
            Store::Rabbitmq => "PARLEY_AMQP_URL",
            Store::Mongodb => "PARLEY_MONGODB_URI",
        }
    }

    /// The environment variable naming the file of CA certificates the
    /// services trust for it (an external store's `caSecret`).
    pub fn ca_env_var(self) -> &'static str {
        match self {
            Store::Redis => "PARLEY_REDIS_CA_FILE",
            Store::Rabbitmq => "PARLEY_AMQP_CA_FILE",
            Store::Mongodb => "PARLEY_MONGODB_CA_FILE",
        }
    }
}

/// A ChatCluster as the controller receives it: one that does not
/// deserialize (a value its schema let through but the operator cannot read)
/// arrives as an error of its own instead of failing the whole list.
pub type Guarded = kube::core::DeserializeGuard<ChatCluster>;

/// The ChatClusters of a reflector's snapshot that deserialized.
pub fn readable(state: &[std::sync::Arc<Guarded>]) -> impl Iterator<Item = &ChatCluster> {
    state.iter().filter_map(|g| g.0.as_ref().ok())
}
