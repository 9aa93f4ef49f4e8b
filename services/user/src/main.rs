//! parley-user: passwordless login, tokens and profiles.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    parley_common::entry::main(
        "parley-user",
        parley_user::config::Config::from_env,
        parley_user::run,
    )
    .await
}
