//! Managed data stores: one single-replica StatefulSet each, with a volume claim template.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, TCPSocketAction, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::deployment::{container_security, from_secret, literal, pod_security, scratch};
use super::secret::store_password;
use super::{Context, child_name, labels, meta, pod_template, selector_labels};
use crate::api::{ChatCluster, ManagedStore, Store, VolumeReclaim};
use crate::validated::ValidatedCluster;

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

/// The user and group the default image of the store runs its server as
/// (the images start as root only to step down to it): redis:7.4-alpine
/// `redis` 999:1000, rabbitmq:3.13-alpine `rabbitmq` 100:101, mongo:7.0
/// `mongodb` 999:999. Running as the same user keeps volumes written by
/// earlier versions (which ran the image as root) readable and writable.
pub fn run_as(s: Store) -> (i64, i64) {
    match s {
        Store::Redis => (999, 1000),
        Store::Rabbitmq => (100, 101),
        Store::Mongodb => (999, 999),
    }
}

/// Directories a store writes besides its data volume and `/tmp`, each an
/// emptyDir under the read-only root filesystem: RabbitMQ opens a log file
/// in `/var/log/rabbitmq` even when logging to the console, and fails to
/// boot when it cannot.
fn scratch_dirs(s: Store) -> &'static [(&'static str, &'static str)] {
    match s {
        Store::Rabbitmq => &[("tmp", "/tmp"), ("logs", "/var/log/rabbitmq")],
        Store::Redis | Store::Mongodb => &[("tmp", "/tmp")],
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

/// Resources of a store container whose spec names none: requests so the
/// scheduler reserves room, a memory limit (no CPU limit: throttling a
/// store slows every service). RabbitMQ blocks publishers at 40% of its
/// limit; MongoDB's cache takes at least 256 MiB.
pub fn default_resources(s: Store) -> ResourceRequirements {
    let (request, limit) = match s {
        Store::Redis => ("128Mi", "512Mi"),
        Store::Rabbitmq => ("256Mi", "1Gi"),
        Store::Mongodb => ("256Mi", "1Gi"),
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "100m"), ("memory", request)])),
        limits: Some(quantities(&[("memory", limit)])),
        ..Default::default()
    }
}

fn tcp_probe(s: Store) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(s.port()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        ..Default::default()
    }
}

/// Every managed store requires a password: its own `passwordSecret`, or
/// one generated once into `<name>-generated` ([`store_password`]).
fn store_env(cc: &ChatCluster, s: Store) -> Vec<EnvVar> {
    let (secret, key) = store_password(cc, s);
    match s {
        Store::Rabbitmq => vec![
            // The Erlang cookie lives in $HOME, by default the data volume,
            // where the kubelet's fsGroup pass makes it group-readable and
            // Erlang then refuses to start; a fresh one per pod in the
            // emptyDir /tmp serves a single node and its CLI tools alike.
            literal("HOME", "/tmp"),
            literal("RABBITMQ_DEFAULT_USER", "parley"),
            from_secret("RABBITMQ_DEFAULT_PASS", secret, &key),
        ],
        Store::Redis => vec![from_secret("REDIS_PASSWORD", secret, &key)],
        // The image creates this root user when it initialises an empty
        // volume, and then runs with --auth.
        Store::Mongodb => vec![
            literal("MONGO_INITDB_ROOT_USERNAME", "parley"),
            from_secret("MONGO_INITDB_ROOT_PASSWORD", secret, &key),
        ],
    }
}

/// Redis's start command. The password reaches redis-server as a config
/// file on its standard input (a here-document of the shell it replaces),
/// never on a command line, which any process of the node could read.
/// The shell `exec`s, so redis-server is the container's PID 1 and gets
/// SIGTERM itself. `"$@"` carries the container's args.
pub const REDIS_START: &str =
    "exec redis-server - \"$@\" <<EOF\nrequirepass \"$REDIS_PASSWORD\"\nEOF\n";

/// The container's command and args: `None` keeps the image's own.
fn store_command(s: Store) -> (Option<Vec<String>>, Option<Vec<String>>) {
    match s {
        Store::Redis => (
            Some(vec![
                "sh".into(),
                "-c".into(),
                REDIS_START.into(),
                // $0 of the script
                "redis-server".into(),
            ]),
            Some(vec!["--appendonly".into(), "yes".into()]),
        ),
        Store::Rabbitmq | Store::Mongodb => (None, None),
    }
}

/// The StatefulSet of one managed store.
pub fn statefulset(
    cc: &ValidatedCluster,
    s: Store,
    m: &ManagedStore,
    ctx: &Context,
) -> StatefulSet {
    let name = child_name(cc, s.name());
    let mut pvc_labels = labels(cc, s.name());
    let reclaim = match m.volume_reclaim {
        VolumeReclaim::Retain => "Retain",
        VolumeReclaim::Delete => "Delete",
    };
    pvc_labels.insert(RECLAIM_LABEL.into(), reclaim.into());
    let (uid, gid) = run_as(s);
    let (volumes, mut mounts): (Vec<_>, Vec<_>) = scratch_dirs(s)
        .iter()
        .map(|(name, path)| scratch(name, path))
        .unzip();
    mounts.push(VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: data_path(s).into(),
        ..Default::default()
    });
    let (command, args) = store_command(s);
    let container = Container {
        name: s.name().into(),
        image: Some(m.image.clone().unwrap_or_else(|| s.default_image().into())),
        command,
        args,
        env: Some(store_env(cc, s)),
        ports: Some(vec![ContainerPort {
            name: Some(s.name().into()),
            container_port: s.port(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(m.resources.clone().unwrap_or_else(|| default_resources(s))),
        readiness_probe: Some(tcp_probe(s)),
        // RabbitMQ takes the longest to boot: 30 s, then a minute of failures.
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..tcp_probe(s)
        }),
        security_context: Some(container_security(uid)),
        volume_mounts: Some(mounts),
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
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        // Only when the volume's root does not match: a
                        // large data volume is not walked on every start.
                        fs_group_change_policy: Some("OnRootMismatch".into()),
                        ..pod_security(uid, gid)
                    }),
                    ..Default::default()
                },
                m.pod_overrides.as_ref(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{ctx, valid};

    fn pod(s: Store, m: &ManagedStore) -> PodSpec {
        statefulset(&valid(Default::default()), s, m, &ctx())
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    #[test]
    fn store_pods_are_locked_down_sized_and_probed() {
        for s in Store::ALL {
            let pod = pod(s, &ManagedStore::default());
            let at = s.name();
            let psc = pod.security_context.clone().unwrap_or_default();
            assert_eq!(psc.run_as_non_root, Some(true), "{at}");
            assert!(psc.run_as_user.is_some_and(|u| u > 0), "{at}");
            assert!(
                psc.fs_group.is_some(),
                "{at}: the data volume must be writable"
            );
            let ctr = &pod.containers[0];
            let sc = ctr.security_context.clone().unwrap_or_default();
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{at}");
            let mounts: Vec<_> = ctr
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| m.mount_path.as_str())
                .collect();
            assert!(mounts.contains(&"/tmp"), "{at}: {mounts:?}");
            assert!(mounts.contains(&data_path(s)), "{at}: {mounts:?}");
            // every mount but the data volume is an emptyDir of the pod
            for m in ctr.volume_mounts.iter().flatten() {
                if m.name != DATA_VOLUME {
                    let vol = pod
                        .volumes
                        .iter()
                        .flatten()
                        .find(|v| v.name == m.name)
                        .unwrap_or_else(|| panic!("{at}: no volume {}", m.name));
                    assert!(vol.empty_dir.is_some(), "{at}: {}", m.name);
                }
            }
            let res = ctr.resources.clone().unwrap_or_default();
            let requests = res.requests.unwrap_or_default();
            let limits = res.limits.unwrap_or_default();
            assert!(
                requests.contains_key("cpu") && requests.contains_key("memory"),
                "{at}"
            );
            assert!(limits.contains_key("memory"), "{at}");
            assert!(
                !limits.contains_key("cpu"),
                "{at}: no CPU limit (throttling)"
            );
            let live = ctr.liveness_probe.clone().unwrap_or_default();
            assert_eq!(
                live.tcp_socket.map(|t| t.port),
                Some(IntOrString::Int(s.port())),
                "{at}"
            );
            assert!(live.initial_delay_seconds.unwrap_or(0) >= 30, "{at}");
            assert!(ctr.readiness_probe.is_some(), "{at}");
        }
    }

    #[test]
    fn rabbitmq_keeps_its_cookie_and_logs_off_the_root_and_the_data_volume() {
        let pod = pod(Store::Rabbitmq, &ManagedStore::default());
        let ctr = &pod.containers[0];
        let home = ctr
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "HOME")
            .and_then(|e| e.value.clone());
        assert_eq!(home.as_deref(), Some("/tmp"));
        let scratch: Vec<_> = ctr
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name != DATA_VOLUME)
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(scratch, ["/tmp", "/var/log/rabbitmq"]);
        // the image's own user, so volumes of earlier versions stay its own
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(100));
    }

    #[test]
    fn no_store_takes_a_secret_on_its_command_line() {
        for s in Store::ALL {
            let pod = pod(s, &ManagedStore::default());
            let ctr = &pod.containers[0];
            let from_secrets: Vec<_> = ctr
                .env
                .iter()
                .flatten()
                .filter(|e| {
                    e.value_from
                        .as_ref()
                        .is_some_and(|v| v.secret_key_ref.is_some())
                })
                .map(|e| format!("$({})", e.name))
                .collect();
            let argv = ctr.command.iter().chain(ctr.args.iter()).flatten();
            for arg in argv {
                for secret in &from_secrets {
                    assert!(
                        !arg.contains(secret.as_str()),
                        "{}: {secret} expands into argv: {arg}",
                        s.name()
                    );
                }
            }
        }
    }

    #[test]
    fn resources_given_in_the_spec_replace_the_defaults() {
        let m: ManagedStore = serde_json::from_value(serde_json::json!({
            "resources": {"requests": {"memory": "2Gi"}}
        }))
        .unwrap();
        let res = pod(Store::Mongodb, &m).containers[0]
            .resources
            .clone()
            .unwrap();
        assert_eq!(res.requests.unwrap()["memory"], Quantity("2Gi".into()));
        assert!(res.limits.is_none());
    }
}
