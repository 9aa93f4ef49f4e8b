//! Freed heap memory goes back to the system when trimmed: a heap riddled
//! with holes (what a burst of short-lived buffers leaves) keeps its pages
//! resident until `release_free_memory` gives them back.

/// Resident set of this process, in KiB (from `/proc/self/statm`).
fn rss_kib() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("statm: {statm}"))?
        .parse()?;
    Ok(pages * 4)
}

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn a_heap_with_free_holes_is_given_back() -> anyhow::Result<()> {
    // 128 MiB in 2 KiB blocks (below the mmap threshold: they come from the
    // heap), written so that their pages are resident.
    let mut blocks: Vec<Vec<u8>> = (0..64 * 1024).map(|i| vec![i as u8; 2048]).collect();
    let full = rss_kib()?;
    // Free all but one block in 64: every page keeps no live data except a
    // few, and the heap's top stays in use, so malloc's automatic trim
    // returns nothing.
    let mut kept = Vec::new();
    for (i, block) in blocks.drain(..).enumerate() {
        if i % 64 == 0 {
            kept.push(block);
        }
    }
    let freed = rss_kib()?;
    assert!(
        parley_runtime::memory::release_free_memory(),
        "malloc_trim released nothing"
    );
    let trimmed = rss_kib()?;
    eprintln!("RSS {full} KiB allocated, {freed} KiB after free, {trimmed} KiB after trim");
    assert!(
        freed.saturating_sub(trimmed) > 64 * 1024,
        "trim gave back less than 64 MiB: {freed} -> {trimmed} KiB"
    );
    assert!(kept.iter().all(|b| b.len() == 2048));
    Ok(())
}
