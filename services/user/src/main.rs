//! parley-user: passwordless login, tokens and profiles.

use std::process::ExitCode;

use parley_common::config::Env;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parley_user::config::Config::from_env(&Env::process()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("parley-user: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    parley_common::telemetry::init("parley-user");
    match parley_user::run(config, parley_common::shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "parley-user stopped");
            eprintln!("parley-user: {error:#}");
            ExitCode::FAILURE
        }
    }
}
