//! The ServiceAccount of the parley pods (no API access, token not mounted).

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{child_name, meta};
use crate::api::ChatCluster;

/// Name of the pods' ServiceAccount.
pub fn service_account_name(cc: &ChatCluster) -> String {
    child_name(cc, "parley")
}

/// The pods' ServiceAccount.
pub fn service_account(cc: &ChatCluster) -> ServiceAccount {
    let mut metadata = meta(cc, service_account_name(cc), "serviceaccount");
    let annotations = &cc.spec.service_account.annotations;
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations.clone());
    }
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}
