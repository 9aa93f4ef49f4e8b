//! Managed data stores: one single-replica StatefulSet each, with a volume claim template.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    Probe, TCPSocketAction, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::deployment::{from_secret, literal};
use super::secret::{MONGODB_PASSWORD, RABBITMQ_PASSWORD, REDIS_PASSWORD, generated_secret_name};
use super::{Context, child_name, labels, meta, pod_template, selector_labels};
use crate::api::{ChatCluster, ManagedStore, Store, VolumeReclaim};

/// Name of the data volume claim template.
pub const DATA_VOLUME: &str = "data";
/// Label on store PVCs saying whether they go with the ChatCluster.
pub const RECLAIM_LABEL: &str = "parley.dev/volume-reclaim";

fn data_path(s: Store) -> &'static str {
    match s {
        Store::Redis => "/data",
        Store::Rabbitmq => "/var/lib/rabbitmq",
        Store::Mongodb => "/data/db",
    }
}

/// Every managed store requires a password, generated once into `<name>-generated`.
fn store_env(cc: &ChatCluster, s: Store) -> Vec<EnvVar> {
    match s {
        Store::Rabbitmq => vec![
            literal("RABBITMQ_DEFAULT_USER", "parley"),
            from_secret(
                "RABBITMQ_DEFAULT_PASS",
                generated_secret_name(cc),
                RABBITMQ_PASSWORD,
            ),
        ],
        Store::Redis => vec![from_secret(
            "REDIS_PASSWORD",
            generated_secret_name(cc),
            REDIS_PASSWORD,
        )],
        // The image creates this root user when it initialises an empty
        // volume, and then runs with --auth.
        Store::Mongodb => vec![
            literal("MONGO_INITDB_ROOT_USERNAME", "parley"),
            from_secret(
                "MONGO_INITDB_ROOT_PASSWORD",
                generated_secret_name(cc),
                MONGODB_PASSWORD,
            ),
        ],
    }
}

fn store_args(s: Store) -> Option<Vec<String>> {
    match s {
        // Kubernetes expands $(REDIS_PASSWORD) from the container's env.
        Store::Redis => Some(vec![
            "redis-server".into(),
            "--appendonly".into(),
            "yes".into(),
            "--requirepass".into(),
            "$(REDIS_PASSWORD)".into(),
        ]),
        Store::Rabbitmq | Store::Mongodb => None,
    }
}

/// The StatefulSet of one managed store.
pub fn statefulset(cc: &ChatCluster, s: Store, m: &ManagedStore, ctx: &Context) -> StatefulSet {
    let name = child_name(cc, s.name());
    let mut pvc_labels = labels(cc, s.name());
    let reclaim = match m.volume_reclaim {
        VolumeReclaim::Retain => "Retain",
        VolumeReclaim::Delete => "Delete",
    };
    pvc_labels.insert(RECLAIM_LABEL.into(), reclaim.into());
    let container = Container {
        name: s.name().into(),
        image: Some(m.image.clone().unwrap_or_else(|| s.default_image().into())),
        args: store_args(s),
        env: Some(store_env(cc, s)),
        ports: Some(vec![ContainerPort {
            name: Some(s.name().into()),
            container_port: s.port(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: m.resources.clone(),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(s.port()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: data_path(s).into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    StatefulSet {
        metadata: meta(cc, name.clone(), s.name()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cc, s.name())),
                ..Default::default()
            },
            template: pod_template(
                cc,
                s.name(),
                PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    ..Default::default()
                },
                ctx,
            ),
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.into()),
                    labels: Some(pvc_labels),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: m.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".into(),
                            Quantity(m.storage_size.clone().unwrap_or_else(|| "1Gi".into())),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
