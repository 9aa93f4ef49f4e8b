//! JSON logs through `tracing`.

use tracing_subscriber::EnvFilter;

/// Installs a JSON log subscriber for `service`.
///
/// The filter comes from `PARLEY_LOG` (then `RUST_LOG`), default `info`.
/// Calling it twice is harmless: the second call keeps the first subscriber.
pub fn init(service: &'static str) {
    let filter = std::env::var("PARLEY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
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
