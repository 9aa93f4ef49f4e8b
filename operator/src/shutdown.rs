//! A shutdown that ends whatever the API server does: a second SIGTERM (or
//! SIGINT) ends the process at once, and a watchdog ends it when the grace
//! period after the first signal is over. The steps in between (draining
//! reconciles, releasing the Lease) carry deadlines of their own inside it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exit code of a process ended by force (second signal, or grace period over).
pub const FORCED_EXIT: i32 = 1;

/// Starts both guards. Call it inside the runtime, before the first signal
/// can arrive; `shutdown` is the token the first signal cancels.
pub fn enforce(shutdown: CancellationToken, grace: Duration) {
    exit_on_second_signal();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        // a thread of its own: it fires even if every runtime worker is stuck
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            tracing::error!(grace = ?grace, "shutdown grace period over; exiting with steps unfinished");
            eprintln!("parley-operator: shutdown grace period ({grace:?}) over; exiting");
            std::process::exit(FORCED_EXIT);
        });
    });
}

#[cfg(unix)]
fn exit_on_second_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "cannot listen for a second signal; only the grace period bounds shutdown");
            return;
        }
    };
    tokio::spawn(async move {
        let mut seen = 0u32;
        loop {
            tokio::select! {
                Some(()) = term.recv() => {}
                Some(()) = int.recv() => {}
                else => return,
            }
            seen += 1;
            if seen >= 2 {
                tracing::warn!("second signal: exiting at once");
                eprintln!("parley-operator: second signal; exiting at once");
                std::process::exit(FORCED_EXIT);
            }
        }
    });
}

#[cfg(not(unix))]
fn exit_on_second_signal() {}
