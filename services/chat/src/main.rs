//! parley-chat: chats, messages and realtime delivery.

/// mimalloc instead of glibc malloc with the `mimalloc` feature (off by
/// default: BENCHMARKS.md compares the two).
#[cfg(feature = "mimalloc")]
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
