//! The operator's configuration, from environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use parley_runtime::config::{ConfigError, Env, UNSET, VarDoc};

use crate::leader::LeaseConfig;
use crate::registry::AllowedRegistries;

/// The variables only the operator reads.
pub const ENV: &[VarDoc] = &[
    VarDoc::new(
        "PARLEY_WATCH_NAMESPACE",
        UNSET,
        "the one namespace whose ChatClusters this operator manages; all namespaces when unset",
    ),
    VarDoc::new(
        "PARLEY_LEADER_ELECTION",
        "true",
        "elect one active replica through a Lease (`true` or `false`)",
    ),
    VarDoc::new(
        "PARLEY_LEASE_NAMESPACE",
        UNSET,
        "namespace of the Lease; `POD_NAMESPACE`, else the watch namespace, else `default` when unset",
    ),
    VarDoc::new("PARLEY_LEASE_NAME", "parley-operator", "name of the Lease"),
    VarDoc::new(
        "PARLEY_IDENTITY",
        UNSET,
        "this replica's name in the Lease; `$HOSTNAME-<pid>` when unset",
    ),
    VarDoc::new(
        "PARLEY_RESYNC_SECS",
        "300",
        "how often a converged ChatCluster is checked again for drift",
    ),
    VarDoc::new(
        "PARLEY_ALLOWED_IMAGE_REGISTRIES",
        UNSET,
        "comma-separated registries or repository prefixes (`registry.example.com/team/`, `localhost:5000`) every image of a ChatCluster must come from; an entry without a registry host (`library/` for the official images the default store images are, `team/`) allows only images without one, pulled from the container runtime's default registry, and an entry with a host only images naming that host; a ChatCluster naming another is refused and nothing is changed for it; any image when unset",
    ),
];

/// Every variable the operator reads, for the configuration reference.
pub fn reference() -> Vec<VarDoc> {
    let http = parley_runtime::config::ServerConfig::ENV
        .iter()
        .filter(|v| v.name == "PARLEY_HTTP_ADDR" || v.name == "PARLEY_SHUTDOWN_GRACE_SECS");
    http.chain(parley_runtime::telemetry::ENV)
        .chain(ENV)
        .copied()
        .collect()
}

/// Everything the operator reads at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `/healthz`, `/readyz` and `/metrics` listen here (`PARLEY_HTTP_ADDR`).
    pub addr: SocketAddr,
    /// The only namespace watched; all when `None`.
    pub namespace: Option<String>,
    /// Whether to campaign for a Lease before acting.
    pub leader_election: bool,
    /// Which Lease, and who we are in it.
    pub lease: LeaseConfig,
    /// Re-check period of converged clusters.
    pub resync: Duration,
    /// After SIGTERM the process ends within this, whatever the API server
    /// does (`PARLEY_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// Where a ChatCluster's images may come from
    /// (`PARLEY_ALLOWED_IMAGE_REGISTRIES`); empty allows any.
    pub allowed_registries: AllowedRegistries,
}

impl Settings {
    /// Reads and validates every variable; the first problem names its variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let namespace = env.raw("PARLEY_WATCH_NAMESPACE");
        let lease_ns = env
            .raw("PARLEY_LEASE_NAMESPACE")
            .or_else(|| env.raw("POD_NAMESPACE"))
            .or_else(|| namespace.clone())
            .unwrap_or_else(|| "default".into());
        let identity = env.raw("PARLEY_IDENTITY").unwrap_or_else(|| {
            format!(
                "{}-{}",
                env.raw("HOSTNAME")
                    .unwrap_or_else(|| "parley-operator".into()),
                std::process::id()
            )
        });
        let resync = env.seconds_or("PARLEY_RESYNC_SECS", Duration::from_secs(300))?;
        if resync.is_zero() {
            return Err(ConfigError::new("PARLEY_RESYNC_SECS", "must be at least 1"));
        }
        let shutdown_grace =
            env.seconds_or("PARLEY_SHUTDOWN_GRACE_SECS", Duration::from_secs(20))?;
        if shutdown_grace < Duration::from_secs(2) {
            return Err(ConfigError::new(
                "PARLEY_SHUTDOWN_GRACE_SECS",
                "must be at least 2",
            ));
        }
        let allowed_registries = AllowedRegistries::parse(
            &env.raw("PARLEY_ALLOWED_IMAGE_REGISTRIES")
                .unwrap_or_default(),
        )
        .map_err(|e| ConfigError::new("PARLEY_ALLOWED_IMAGE_REGISTRIES", e))?;
        Ok(Self {
            addr: env.socket_addr_or("PARLEY_HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            namespace,
            leader_election: env.parsed_or("PARLEY_LEADER_ELECTION", "true or false", true)?,
            lease: LeaseConfig {
                namespace: lease_ns,
                name: env.string_or("PARLEY_LEASE_NAME", "parley-operator"),
                identity,
                duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                renew_every: Duration::from_secs(2),
            },
            resync,
            shutdown_grace,
            allowed_registries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_lease_namespace_fallbacks() {
        let s = Settings::from_env(&Env::from_pairs::<&str, &str>([])).unwrap();
        assert_eq!(s.addr.port(), 8080);
        assert!(s.leader_election);
        assert_eq!(s.lease.namespace, "default");
        assert_eq!(s.resync, Duration::from_secs(300));
        assert_eq!(s.shutdown_grace, Duration::from_secs(20));
        assert!(s.allowed_registries.is_empty());
        let s =
            Settings::from_env(&Env::from_pairs([("PARLEY_WATCH_NAMESPACE", "team-a")])).unwrap();
        assert_eq!(s.lease.namespace, "team-a");
        assert_eq!(s.namespace.as_deref(), Some("team-a"));
        let s = Settings::from_env(&Env::from_pairs([
            ("PARLEY_WATCH_NAMESPACE", "team-a"),
            ("POD_NAMESPACE", "parley-system"),
        ]))
        .unwrap();
        assert_eq!(s.lease.namespace, "parley-system");
    }

    #[test]
    fn the_registry_allow_list_is_read() {
        let s = Settings::from_env(&Env::from_pairs([(
            "PARLEY_ALLOWED_IMAGE_REGISTRIES",
            "registry.example.com/team/, localhost:5000, library/",
        )]))
        .unwrap();
        assert_eq!(
            s.allowed_registries.to_string(),
            "registry.example.com/team/, localhost:5000/, library/"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("PARLEY_LEADER_ELECTION", "yes"),
            ("PARLEY_RESYNC_SECS", "0"),
            ("PARLEY_RESYNC_SECS", "soon"),
            ("PARLEY_SHUTDOWN_GRACE_SECS", "1"),
            ("PARLEY_HTTP_ADDR", "8080"),
            ("PARLEY_ALLOWED_IMAGE_REGISTRIES", "redis"),
        ] {
            let err = Settings::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{value}");
        }
    }
}
