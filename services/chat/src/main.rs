//! parley-chat: chats, messages and realtime delivery.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    parley_common::entry::main(
        "parley-chat",
        parley_chat::config::Config::from_env,
        parley_chat::run,
    )
    .await
}
