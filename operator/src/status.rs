//! Status from what exists: pure computation of phase and conditions, and a
//! thin writer that patches the status subresource only when it changed.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api::{ChatCluster, ChatClusterStatus, ComponentStatus, Condition, Endpoints, Phase};
use crate::apply::MANAGER;
use crate::build::{ApiSupport, child_name, configmap::user_service_url};

/// Everything the status is computed from.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Spec errors (Degraded, nothing applied).
    pub spec_errors: Vec<String>,
    /// Images outside the allowed registries, each naming its field and
    /// image (Degraded `ImageNotAllowed`, nothing applied).
    pub refused_images: Vec<String>,
    /// Failure before applying: generated Secrets, referenced Secrets, discovery (Degraded).
    pub prepare_error: Option<String>,
    /// Failure while applying (Degraded).
    pub apply_error: Option<String>,
    /// Referenced Secrets missing.
    pub missing: Vec<String>,
    /// Referenced Secret keys present but unusable, each with why.
    pub unusable: Vec<String>,
    /// Volume changes the spec asks for that cannot be made, each naming its field.
    pub volume_problems: Vec<String>,
    /// APIs served, when discovery ran.
    pub apis: Option<ApiSupport>,
    /// Per component and store: replicas and image as the cluster reports them.
    pub components: BTreeMap<String, ComponentStatus>,
    /// The spec is paused.
    pub paused: bool,
    /// Whether the referenced Secrets were read (`missing` is meaningful);
    /// they are not while paused or invalid.
    pub dependencies_checked: bool,
    /// Per component and store whose rollout is not moving: why.
    pub rollouts: BTreeMap<String, Rollout>,
}

/// How long a StatefulSet may lag behind its update revision with a pod
/// not ready before its rollout counts as stuck: a Deployment's default
/// `progressDeadlineSeconds`.
pub const STATEFULSET_PROGRESS_DEADLINE_SECS: i64 = 600;

/// A rollout that is not moving, as the workload reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// The Deployment's `Progressing` condition says `ProgressDeadlineExceeded`.
    DeadlineExceeded(String),
    /// The StatefulSet's pods are not all of its update revision and not
    /// all ready: stuck once that outlasts [`STATEFULSET_PROGRESS_DEADLINE_SECS`].
    RevisionLagging,
}

/// What a Deployment says about its rollout: `ProgressDeadlineExceeded`
/// (with its message) ends the wait for it.
pub fn deployment_rollout(d: &Deployment) -> Option<Rollout> {
    let status = d.status.as_ref()?;
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| Rollout::DeadlineExceeded(c.message.clone().unwrap_or_default()))
}

/// Whether a StatefulSet has pods of an older revision while not all are ready.
pub fn statefulset_rollout(set: &StatefulSet) -> Option<Rollout> {
    let status = set.status.as_ref()?;
    let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let lagging = status.update_revision.is_some()
        && status.current_revision != status.update_revision
        && status.ready_replicas.unwrap_or(0) < desired;
    lagging.then_some(Rollout::RevisionLagging)
}

/// Seconds from `since` to `now` (RFC 3339), when both parse.
fn seconds_between(since: &str, now: &str) -> Option<i64> {
    let since: k8s_openapi::jiff::Timestamp = since.parse().ok()?;
    let now: k8s_openapi::jiff::Timestamp = now.parse().ok()?;
    Some(now.as_second() - since.as_second())
}

/// The components whose rollout is stuck, with why: a Deployment past its
/// progress deadline, or a StatefulSet lagging while the cluster has been
/// rolling out (its `Progressing` condition True) for longer than
/// [`STATEFULSET_PROGRESS_DEADLINE_SECS`].
fn stuck_rollouts(
    previous: &ChatClusterStatus,
    observed: &Observed,
    now: &str,
) -> Vec<(String, String)> {
    let rolling_for = previous
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_deref())
        .and_then(|since| seconds_between(since, now));
    observed
        .rollouts
        .iter()
        .filter_map(|(name, r)| match r {
            Rollout::DeadlineExceeded(message) => Some((
                name.clone(),
                format!("{name}: ProgressDeadlineExceeded ({message})"),
            )),
            Rollout::RevisionLagging
                if rolling_for.is_some_and(|s| s > STATEFULSET_PROGRESS_DEADLINE_SECS) =>
            {
                Some((
                    name.clone(),
                    format!(
                        "{name}: pods of the previous revision after {STATEFULSET_PROGRESS_DEADLINE_SECS} s with a pod not ready"
                    ),
                ))
            }
            Rollout::RevisionLagging => None,
        })
        .collect()
}

fn condition(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        ..Default::default()
    }
}

/// Computes the new status; conditions keep their transition time while unchanged.
pub fn compute(cc: &ChatCluster, observed: &Observed, now: &str) -> ChatClusterStatus {
    let generation = cc.metadata.generation;
    let previous = cc.status.clone().unwrap_or_default();
    let not_ready: Vec<String> = observed
        .components
        .iter()
        .filter(|(_, c)| c.ready_replicas < c.desired_replicas)
        .map(|(name, c)| format!("{name} {}/{}", c.ready_replicas, c.desired_replicas))
        .collect();
    let refused = !observed.spec_errors.is_empty() || !observed.refused_images.is_empty();
    let stuck = stuck_rollouts(&previous, observed, now);
    let degraded_message = if !observed.spec_errors.is_empty() {
        let all: Vec<String> = observed
            .spec_errors
            .iter()
            .chain(&observed.refused_images)
            .cloned()
            .collect();
        Some(("InvalidSpec", all.join("; ")))
    } else if !observed.refused_images.is_empty() {
        Some(("ImageNotAllowed", observed.refused_images.join("; ")))
    } else if let Some(e) = &observed.prepare_error {
        Some(("PrepareFailed", e.clone()))
    } else if let Some(e) = &observed.apply_error {
        Some(("ApplyFailed", e.clone()))
    } else if !stuck.is_empty() {
        let all: Vec<&str> = stuck.iter().map(|(_, why)| why.as_str()).collect();
        Some(("RolloutStuck", all.join("; ")))
    } else {
        None
    };
    let deps_ok = observed.missing.is_empty() && observed.unusable.is_empty();
    let all_ready = degraded_message.is_none()
        && deps_ok
        && not_ready.is_empty()
        && !observed.components.is_empty();
    let mut conditions = vec![
        match &degraded_message {
            Some((reason, msg)) => condition("Degraded", true, reason, msg.clone()),
            None => condition("Degraded", false, "AsExpected", "spec applied"),
        },
        if !observed.dependencies_checked {
            let (reason, why) = if observed.paused {
                ("Paused", "spec.paused is true")
            } else if !observed.spec_errors.is_empty() {
                ("InvalidSpec", "the spec is invalid")
            } else if !observed.refused_images.is_empty() {
                (
                    "ImageNotAllowed",
                    "an image is not from an allowed registry",
                )
            } else {
                ("NotChecked", "they were not read")
            };
            Condition {
                status: "Unknown".into(),
                ..condition(
                    "DependenciesReady",
                    false,
                    reason,
                    format!("referenced Secrets not checked: {why}"),
                )
            }
        } else if deps_ok {
            condition(
                "DependenciesReady",
                true,
                "SecretsFound",
                "every referenced Secret exists with the keys it needs",
            )
        } else if !observed.missing.is_empty() {
            condition(
                "DependenciesReady",
                false,
                "SecretMissing",
                format!("missing: {}", observed.missing.join(", ")),
            )
        } else {
            condition(
                "DependenciesReady",
                false,
                "SecretUnusable",
                observed.unusable.join("; "),
            )
        },
        if observed.paused {
            condition(
                "Progressing",
                false,
                "Paused",
                "spec.paused is true; no changes are made",
            )
        } else if all_ready {
            condition("Progressing", false, "Complete", "every component is ready")
        } else if degraded_message.is_some() {
            condition("Progressing", false, "Blocked", "see Degraded")
        } else {
            condition(
                "Progressing",
                true,
                "RollingOut",
                format!("waiting for {}", not_ready.join(", ")),
            )
        },
        if all_ready {
            condition(
                "Ready",
                true,
                "AllReady",
                "every component has its ready replicas",
            )
        } else {
            condition(
                "Ready",
                false,
                "NotReady",
                format!("not ready: {}", not_ready.join(", ")),
            )
        },
    ];
    if !observed.paused && !refused {
        conditions.push(if observed.volume_problems.is_empty() {
            condition(
                "VolumesMatchSpec",
                true,
                "AsExpected",
                "every store volume has the size, class and reclaim policy of the spec",
            )
        } else {
            condition(
                "VolumesMatchSpec",
                false,
                "VolumeChangeUnsupported",
                observed.volume_problems.join("; "),
            )
        });
    }
    if let Some(apis) = observed.apis {
        let mut missing = Vec::new();
        let mut older = Vec::new();
        match apis.hpa_version() {
            Some("autoscaling/v2") => {}
            Some(v) => older.push(format!(
                "autoscaling/v2 (HorizontalPodAutoscalers written as {v})"
            )),
            None => missing.push(
                "autoscaling/v2 (no HorizontalPodAutoscalers; Deployments keep spec replicas)",
            ),
        }
        match apis.pdb_version() {
            Some("policy/v1") => {}
            Some(v) => older.push(format!("policy/v1 (PodDisruptionBudgets written as {v})")),
            None => missing.push("policy/v1 (no PodDisruptionBudgets)"),
        }
        conditions.push(if !missing.is_empty() {
            condition(
                "APIsAvailable",
                false,
                "APIMissing",
                format!("not served, skipped: {}", missing.join("; ")),
            )
        } else if !older.is_empty() {
            condition(
                "APIsAvailable",
                true,
                "OlderVersionsServed",
                format!("not served, older version used: {}", older.join("; ")),
            )
        } else {
            condition(
                "APIsAvailable",
                true,
                "AllServed",
                "autoscaling/v2 and policy/v1 are served",
            )
        });
    }
    // One condition per component and store: `ChatReady`, `RedisReady`…
    for (name, c) in &observed.components {
        let type_ = format!("{}Ready", capitalized(name));
        conditions.push(
            if let Some((_, why)) = stuck.iter().find(|(n, _)| n == name) {
                condition(&type_, false, "RolloutStuck", why.clone())
            } else if c.ready_replicas >= c.desired_replicas {
                condition(
                    &type_,
                    true,
                    "Ready",
                    format!("{}/{} pods ready", c.ready_replicas, c.desired_replicas),
                )
            } else {
                condition(
                    &type_,
                    false,
                    "RollingOut",
                    format!("{}/{} pods ready", c.ready_replicas, c.desired_replicas),
                )
            },
        );
    }
    for c in &mut conditions {
        c.observed_generation = generation;
        let kept = previous
            .conditions
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .and_then(|p| p.last_transition_time.clone());
        c.last_transition_time = Some(kept.unwrap_or_else(|| now.to_owned()));
    }
    let phase = if degraded_message.is_some() {
        Phase::Degraded
    } else if all_ready {
        Phase::Ready
    } else if observed.components.is_empty() {
        Phase::Pending
    } else {
        Phase::Progressing
    };
    let public = cc
        .spec
        .ingress
        .enabled
        .then(|| crate::build::configmap::app_base_url(cc));
    ChatClusterStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        components: if observed.components.is_empty() {
            previous.components
        } else {
            observed.components.clone()
        },
        endpoints: Endpoints {
            user: Some(user_service_url(cc)),
            chat: Some(format!("http://{}:8080", child_name(cc, "chat"))),
            public,
        },
    }
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// What the workloads of a ChatCluster report.
#[derive(Debug, Clone, Default)]
pub struct Workloads {
    /// Replicas and image per component and store.
    pub components: BTreeMap<String, ComponentStatus>,
    /// Rollouts that are not moving, per component and store.
    pub rollouts: BTreeMap<String, Rollout>,
}

/// Reads the component Deployments and store StatefulSets of `cc`.
pub async fn observe_workloads(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
) -> Result<Workloads, kube::Error> {
    let mut out = BTreeMap::new();
    let mut rollouts = BTreeMap::new();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for c in crate::api::Component::ALL {
        if let Some(d) = deployments.get_opt(&child_name(cc, c.name())).await? {
            if let Some(r) = deployment_rollout(&d) {
                rollouts.insert(c.name().to_owned(), r);
            }
            let spec = d.spec.as_ref();
            out.insert(
                c.name().to_owned(),
                ComponentStatus {
                    ready_replicas: d
                        .status
                        .as_ref()
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0),
                    desired_replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
                    image: spec
                        .and_then(|s| s.template.spec.as_ref())
                        .and_then(|p| p.containers.first())
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default(),
                },
            );
        }
    }
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    for s in crate::api::Store::ALL {
        if crate::build::managed(cc, s).is_none() {
            continue;
        }
        if let Some(set) = sets.get_opt(&child_name(cc, s.name())).await? {
            if let Some(r) = statefulset_rollout(&set) {
                rollouts.insert(s.name().to_owned(), r);
            }
            let spec = set.spec.as_ref();
            out.insert(
                s.name().to_owned(),
                ComponentStatus {
                    ready_replicas: set
                        .status
                        .as_ref()
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0),
                    desired_replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
                    image: spec
                        .and_then(|s| s.template.spec.as_ref())
                        .and_then(|p| p.containers.first())
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default(),
                },
            );
        }
    }
    Ok(Workloads {
        components: out,
        rollouts,
    })
}

/// Writes `status` when it differs from what the object carries. Returns
/// whether it wrote.
pub async fn write(
    client: &Client,
    cc: &ChatCluster,
    namespace: &str,
    status: ChatClusterStatus,
) -> Result<bool, kube::Error> {
    if cc.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let api: Api<ChatCluster> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": "parley.dev/v1alpha1",
        "kind": "ChatCluster",
        "status": status,
    });
    api.patch_status(
        &cc.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::cluster;

    fn comp(ready: i32, desired: i32) -> ComponentStatus {
        ComponentStatus {
            ready_replicas: ready,
            desired_replicas: desired,
            image: "img".into(),
        }
    }

    fn cond<'a>(s: &'a ChatClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn progressing_then_ready() {
        let mut cc = cluster(Default::default());
        let mut obs = Observed {
            components: BTreeMap::from([("chat".into(), comp(0, 2)), ("user".into(), comp(2, 2))]),
            apis: Some(ApiSupport::default()),
            ..Default::default()
        };
        let s = compute(&cc, &obs, "t1");
        assert_eq!(s.phase, Some(Phase::Progressing));
        assert_eq!(cond(&s, "Progressing").status, "True");
        assert!(cond(&s, "Ready").message.contains("chat 0/2"));
        cc.status = Some(s);
        obs.components.insert("chat".into(), comp(2, 2));
        let s = compute(&cc, &obs, "t2");
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(
            cond(&s, "Ready").last_transition_time.as_deref(),
            Some("t2")
        );
        // unchanged condition keeps its time
        assert_eq!(
            cond(&s, "Degraded").last_transition_time.as_deref(),
            Some("t1")
        );
    }

    #[test]
    fn spec_errors_degrade_and_missing_apis_are_named() {
        let cc = cluster(Default::default());
        let obs = Observed {
            spec_errors: vec!["spec.redis: set exactly one".into()],
            apis: Some(ApiSupport {
                autoscaling_v2: false,
                policy_v1: false,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = compute(&cc, &obs, "t");
        assert_eq!(s.phase, Some(Phase::Degraded));
        let d = cond(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(d.message.contains("spec.redis"));
        let a = cond(&s, "APIsAvailable");
        assert_eq!(a.status, "False");
        assert!(a.message.contains("autoscaling/v2") && a.message.contains("policy/v1"));
    }

    #[test]
    fn a_refused_image_degrades_naming_it() {
        let cc = cluster(Default::default());
        let obs = Observed {
            refused_images: vec![
                "spec.redis.managed.image: image \"redis:7.4-alpine\" is not from an allowed registry".into(),
            ],
            ..Default::default()
        };
        let s = compute(&cc, &obs, "t");
        assert_eq!(s.phase, Some(Phase::Degraded));
        let d = cond(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "ImageNotAllowed")
        );
        assert!(d.message.contains("redis:7.4-alpine"), "{}", d.message);
        let deps = cond(&s, "DependenciesReady");
        assert_eq!(
            (deps.status.as_str(), deps.reason.as_str()),
            ("Unknown", "ImageNotAllowed")
        );
        assert!(s.conditions.iter().all(|c| c.type_ != "VolumesMatchSpec"));
        // with other spec errors, one InvalidSpec naming both
        let both = Observed {
            spec_errors: vec!["spec.smtp.tls: must be none, starttls or tls".into()],
            ..obs
        };
        let d = cond(&compute(&cc, &both, "t"), "Degraded").clone();
        assert_eq!(d.reason, "InvalidSpec");
        assert!(d.message.contains("smtp.tls") && d.message.contains("redis:7.4-alpine"));
    }

    #[test]
    fn dependencies_are_unknown_unless_checked() {
        let cc = cluster(Default::default());
        let paused = Observed {
            paused: true,
            ..Default::default()
        };
        let d = cond(&compute(&cc, &paused, "t"), "DependenciesReady").clone();
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("Unknown", "Paused")
        );
        let invalid = Observed {
            spec_errors: vec!["spec.image.tag: must not be empty".into()],
            ..Default::default()
        };
        let d = cond(&compute(&cc, &invalid, "t"), "DependenciesReady").clone();
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("Unknown", "InvalidSpec")
        );
        let checked = Observed {
            dependencies_checked: true,
            missing: vec!["demo-jwt/public.pem".into()],
            ..Default::default()
        };
        let d = cond(&compute(&cc, &checked, "t"), "DependenciesReady").clone();
        assert_eq!(d.status, "False");
        assert!(d.message.contains("demo-jwt/public.pem"));
    }

    #[test]
    fn a_rollout_past_its_deadline_degrades_naming_the_component() {
        let mut cc = cluster(Default::default());
        let obs = Observed {
            components: BTreeMap::from([("chat".into(), comp(1, 2)), ("user".into(), comp(2, 2))]),
            rollouts: BTreeMap::from([(
                "chat".into(),
                Rollout::DeadlineExceeded(
                    "ReplicaSet \"demo-chat-1\" has timed out progressing.".into(),
                ),
            )]),
            ..Default::default()
        };
        let s = compute(&cc, &obs, "2026-11-26T10:00:00Z");
        assert_eq!(s.phase, Some(Phase::Degraded));
        let d = cond(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "RolloutStuck")
        );
        assert!(
            d.message.starts_with("chat: ProgressDeadlineExceeded"),
            "{}",
            d.message
        );
        let chat = cond(&s, "ChatReady");
        assert_eq!(
            (chat.status.as_str(), chat.reason.as_str()),
            ("False", "RolloutStuck")
        );
        let user = cond(&s, "UserReady");
        assert_eq!(
            (user.status.as_str(), user.reason.as_str()),
            ("True", "Ready")
        );
        // once the Deployment moves again, the cluster recovers by itself
        cc.status = Some(s);
        let moving = Observed {
            rollouts: BTreeMap::new(),
            components: BTreeMap::from([("chat".into(), comp(2, 2)), ("user".into(), comp(2, 2))]),
            ..obs
        };
        let s = compute(&cc, &moving, "2026-11-26T10:01:00Z");
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(cond(&s, "ChatReady").status, "True");
    }

    #[test]
    fn a_lagging_statefulset_is_stuck_only_after_the_deadline() {
        let mut cc = cluster(Default::default());
        let obs = Observed {
            components: BTreeMap::from([("redis".into(), comp(0, 1))]),
            rollouts: BTreeMap::from([("redis".into(), Rollout::RevisionLagging)]),
            ..Default::default()
        };
        let s = compute(&cc, &obs, "2026-11-26T10:00:00Z");
        assert_eq!(s.phase, Some(Phase::Progressing));
        assert_eq!(cond(&s, "RedisReady").reason, "RollingOut");
        cc.status = Some(s);
        let s = compute(&cc, &obs, "2026-11-26T10:09:59Z");
        assert_eq!(s.phase, Some(Phase::Progressing), "within 600 s");
        cc.status = Some(s);
        let s = compute(&cc, &obs, "2026-11-26T10:10:01Z");
        assert_eq!(s.phase, Some(Phase::Degraded));
        let d = cond(&s, "Degraded");
        assert_eq!(d.reason, "RolloutStuck");
        assert!(d.message.starts_with("redis: "), "{}", d.message);
    }

    #[test]
    fn workloads_report_their_rollouts() {
        use k8s_openapi::api::apps::v1::{
            DeploymentCondition, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
        };
        let d = |reason: &str| Deployment {
            status: Some(DeploymentStatus {
                conditions: Some(vec![DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "False".into(),
                    reason: Some(reason.into()),
                    message: Some("timed out".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            deployment_rollout(&d("ProgressDeadlineExceeded")),
            Some(Rollout::DeadlineExceeded("timed out".into()))
        );
        assert_eq!(deployment_rollout(&d("NewReplicaSetAvailable")), None);
        let set = |current: &str, update: &str, ready: i32| StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            statefulset_rollout(&set("a", "b", 0)),
            Some(Rollout::RevisionLagging)
        );
        assert_eq!(statefulset_rollout(&set("a", "b", 1)), None);
        assert_eq!(statefulset_rollout(&set("b", "b", 0)), None);
    }

    #[test]
    fn computing_twice_is_a_fixpoint() {
        let mut cc = cluster(Default::default());
        let obs = Observed {
            components: BTreeMap::from([("chat".into(), comp(1, 2))]),
            ..Default::default()
        };
        let first = compute(&cc, &obs, "t1");
        cc.status = Some(first.clone());
        assert_eq!(compute(&cc, &obs, "t2"), first);
    }
}
