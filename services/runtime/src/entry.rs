//! The `main` every parley binary shares.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env};

/// Loads the configuration (a problem exits with code 2 and one line naming
/// the variable), starts JSON logs, and runs until SIGTERM/SIGINT (a failure
/// exits with code 1).
pub async fn main<C, F, Fut, E>(
    service: &'static str,
    load: fn(&Env) -> Result<C, ConfigError>,
    run: F,
) -> ExitCode
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    // before any TLS connection (rediss://, amqps://, MongoDB over TLS)
    crate::tls::install_crypto_provider();
    let env = Env::process();
    let loaded = crate::telemetry::filter(&env).and_then(|filter| Ok((filter, load(&env)?)));
    let (filter, config) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{service}: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(service, filter);
    crate::memory::spawn_trimmer(crate::memory::TRIM_EVERY);
    match run(config, crate::shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{service} stopped");
            eprintln!("{service}: {error:#}");
            ExitCode::FAILURE
        }
    }
}
