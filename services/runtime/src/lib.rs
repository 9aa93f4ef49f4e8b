//! parley-runtime: what every parley binary runs on, the operator
//! included: configuration from the environment, JSON logs, the
//! operational HTTP routes (`/healthz`, `/readyz`, `/metrics`), graceful
//! shutdown, the JSON error edge and the stores' CA bundles. It knows no
//! store: connectors live in `parley-common`.

pub mod config;
pub mod entry;
pub mod health;
pub mod http;
pub mod memory;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use http::{api_error, metrics, server};
