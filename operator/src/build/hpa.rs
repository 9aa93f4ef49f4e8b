//! HorizontalPodAutoscalers (autoscaling/v2) on CPU.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::{child_name, meta};
use crate::api::{ChatCluster, Component};

/// The autoscaler of one component's Deployment.
pub fn hpa(cc: &ChatCluster, c: Component) -> HorizontalPodAutoscaler {
    let a = &c.spec(&cc.spec).autoscaling;
    let name = child_name(cc, c.name());
    HorizontalPodAutoscaler {
        metadata: meta(cc, name.clone(), c.name()),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
