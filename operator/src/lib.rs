//! parley-operator: a `ChatCluster` becomes a running, scaled, observable chat stack.
//!
//! One module per pipeline step: [`api`] (CRD types) → [`validate`] (spec
//! errors naming the field) → [`dereference`] (referenced Secrets, discovered
//! APIs) → [`build`] (pure: desired objects) → [`apply`] (server-side apply,
//! owned) → [`status`] (conditions from what exists). [`reconcile`] strings
//! them together; [`leader`] and [`ops`] run around it.

pub mod api;
pub mod build;
pub mod crd;
pub mod validate;
