//! Giving freed heap memory back to the system.
//!
//! glibc's malloc keeps what a burst freed in its arenas: a chat pod that
//! absorbed an overload keeps the peak as its RSS for as long as it runs,
//! although the memory is free. `malloc_trim(0)` releases the free pages of
//! every arena (not only the top of the main heap, as the automatic trim
//! does). A thread of its own calls it every [`TRIM_EVERY`].

use std::time::Duration;

/// How often free heap pages are given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Releases the free pages of every malloc arena; true when some were.
/// Does nothing (false) where the C library is not glibc.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks and madvises malloc's own free
        // lists, under each arena's lock; it takes no pointer from us.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Starts the thread that calls [`release_free_memory`] every `every`; a
/// thread that cannot be started is logged and the process runs without.
pub fn spawn_trimmer(every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("memory-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                if release_free_memory() {
                    metrics::counter!("process_heap_trims_total").increment(1);
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no memory trimmer: freed heap stays with the process");
    }
}
