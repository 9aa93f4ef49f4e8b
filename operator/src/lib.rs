//! parley-operator: a `ChatCluster` becomes a running, scaled, observable chat stack.
//!
//! One module per pipeline step: [`api`] (CRD types) → [`validate`] (spec
//! errors naming the field) → [`dereference`] (referenced Secrets, discovered
//! APIs) → [`build`] (pure: desired objects) → [`apply`] (server-side apply,
//! owned) → [`status`] (conditions from what exists). [`reconcile`] strings
//! them together; [`leader`] elects one active process.

pub mod api;
pub mod apply;
pub mod build;
pub mod client;
pub mod crd;
pub mod deletion;
pub mod dereference;
pub mod leader;
pub mod reconcile;
pub mod registry;
pub mod secret_watch;
pub mod settings;
pub mod shutdown;
pub mod status;
pub mod validate;
pub mod validated;

/// Installs the process-wide TLS crypto provider (ring) the Kubernetes client
/// needs; several providers are compiled in, so rustls cannot pick one itself.
/// Calling it again is harmless.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
