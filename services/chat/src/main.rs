//! parley-chat: chats, messages and realtime delivery.

/// mimalloc instead of glibc malloc: less memory per socket and freed memory
/// returned to the system after a burst (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    parley_common::entry::main(
        "parley-chat",
        parley_chat::config::Config::from_env,
        parley_chat::run,
    )
    .await
}
