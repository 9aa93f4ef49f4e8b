//! A ChatCluster whose spec passed [`crate::validate::validate`]: the only
//! input of [`crate::build::desired`]. Its free-form fields are read once,
//! into enums, so the builders never meet a value the validation refused.

use std::ops::Deref;

use crate::api::{ChatCluster, ExternalStore, ManagedStore, Store};

/// When the kubelet pulls an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// On every pod start.
    Always,
    /// Only when the node lacks it.
    IfNotPresent,
    /// Never; the node must have it.
    Never,
}

impl PullPolicy {
    /// The policy named `s` as Kubernetes spells it.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Always" => Some(Self::Always),
            "IfNotPresent" => Some(Self::IfNotPresent),
            "Never" => Some(Self::Never),
            _ => None,
        }
    }

    /// As Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Transport security of the SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text.
    None,
    /// Plain text upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte.
    Tls,
}

impl SmtpTls {
    /// The mode named `s` (`none`, `starttls`, `tls`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "starttls" => Some(Self::StartTls),
            "tls" => Some(Self::Tls),
            _ => None,
        }
    }

    /// As the mail service's `PARLEY_SMTP_TLS` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::StartTls => "starttls",
            Self::Tls => "tls",
        }
    }
}

/// How a store is provided.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreMode {
    /// Run by the operator (with defaults when the spec names neither).
    Managed(Box<ManagedStore>),
    /// Run elsewhere.
    External(ExternalStore),
}

/// A ChatCluster with a valid spec. Made only by validation; reads as the
/// ChatCluster it wraps.
#[derive(Debug, Clone)]
pub struct ValidatedCluster {
    cluster: ChatCluster,
    pull_policy: PullPolicy,
    smtp_tls: SmtpTls,
    /// In the order of [`Store::ALL`].
    stores: [StoreMode; 3],
}

impl ValidatedCluster {
    /// Wraps `cluster`, whose spec validation found these values in.
    pub(crate) fn new(
        cluster: ChatCluster,
        pull_policy: PullPolicy,
        smtp_tls: SmtpTls,
        stores: [StoreMode; 3],
    ) -> Self {
        Self {
            cluster,
            pull_policy,
            smtp_tls,
            stores,
        }
    }

    /// The image pull policy of every container.
    pub fn pull_policy(&self) -> PullPolicy {
        self.pull_policy
    }

    /// SMTP transport security.
    pub fn smtp_tls(&self) -> SmtpTls {
        self.smtp_tls
    }

    /// How `store` is provided.
    pub fn store(&self, store: Store) -> &StoreMode {
        let i = match store {
            Store::Redis => 0,
            Store::Rabbitmq => 1,
            Store::Mongodb => 2,
        };
        &self.stores[i]
    }

    /// The managed settings of `store`, `None` when it is external.
    pub fn managed(&self, store: Store) -> Option<&ManagedStore> {
        match self.store(store) {
            StoreMode::Managed(m) => Some(m),
            StoreMode::External(_) => None,
        }
    }

    /// The external settings of `store`, `None` when it is managed.
    pub fn external(&self, store: Store) -> Option<&ExternalStore> {
        match self.store(store) {
            StoreMode::External(e) => Some(e),
            StoreMode::Managed(_) => None,
        }
    }
}

impl Deref for ValidatedCluster {
    type Target = ChatCluster;

    fn deref(&self) -> &ChatCluster {
        &self.cluster
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_read_exactly_the_spellings_the_schema_allows() {
        for p in [
            PullPolicy::Always,
            PullPolicy::IfNotPresent,
            PullPolicy::Never,
        ] {
            assert_eq!(PullPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(PullPolicy::parse("always"), None);
        for t in [SmtpTls::None, SmtpTls::StartTls, SmtpTls::Tls] {
            assert_eq!(SmtpTls::parse(t.as_str()), Some(t));
        }
        assert_eq!(SmtpTls::parse("STARTTLS"), None);
    }
}
