//! parley-mail: mails login codes and notifications.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    parley_common::entry::main(
        "parley-mail",
        parley_mail::config::Config::from_env,
        parley_mail::run,
    )
    .await
}
