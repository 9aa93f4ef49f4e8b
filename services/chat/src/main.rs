//! parley-chat: chats, messages and realtime delivery.

use std::process::ExitCode;

use parley_common::config::Env;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parley_chat::config::Config::from_env(&Env::process()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("parley-chat: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    parley_common::telemetry::init("parley-chat");
    match parley_chat::run(config, parley_common::shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "parley-chat stopped");
            eprintln!("parley-chat: {error:#}");
            ExitCode::FAILURE
        }
    }
}
