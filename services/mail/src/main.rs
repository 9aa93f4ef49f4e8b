//! parley-mail: mails login codes and notifications.

use std::process::ExitCode;

use parley_common::config::Env;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parley_mail::config::Config::from_env(&Env::process()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("parley-mail: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    parley_common::telemetry::init("parley-mail");
    match parley_mail::run(config, parley_common::shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "parley-mail stopped");
            eprintln!("parley-mail: {error:#}");
            ExitCode::FAILURE
        }
    }
}
