//! JSON logs through `tracing`.

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, Env, VarDoc};

/// The variables [`filter`] reads.
pub const ENV: &[VarDoc] = &[VarDoc::new(
    "PARLEY_LOG",
    "info",
    "log filter in `tracing` syntax, e.g. `info` or `parley_chat=debug,info` (`RUST_LOG` when unset)",
)];

/// The log filter from `PARLEY_LOG` (then `RUST_LOG`), default `info`; a
/// filter that does not parse is a configuration error.
pub fn filter(env: &Env) -> Result<EnvFilter, ConfigError> {
    let (var, raw) = match env.raw("PARLEY_LOG") {
        Some(raw) => ("PARLEY_LOG", raw),
        None => match env.raw("RUST_LOG") {
            Some(raw) => ("RUST_LOG", raw),
            None => return Ok(EnvFilter::new("info")),
        },
    };
    EnvFilter::try_new(&raw)
        .map_err(|e| ConfigError::new(var, format!("is not a log filter ({e}), got {raw:?}")))
}

/// Installs a JSON log subscriber for `service` with `filter` (see [`filter`]).
/// Calling it twice is harmless: the second call keeps the first subscriber.
pub fn init(service: &'static str, filter: EnvFilter) {
    let installed = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(true)
        .with_env_filter(filter)
        .try_init()
        .is_ok();
    if installed {
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            "logging started"
        );
    }
}
