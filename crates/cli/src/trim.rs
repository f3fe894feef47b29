//! Handing freed allocator memory back to the OS.
//!
//! glibc keeps memory freed in the middle of its heaps: only the top of a heap is returned on
//! `free`. Under the host's steady churn (JSON built and dropped per request, persona
//! databases opened and closed per snapshot) that free memory is scattered, so the RSS crept up
//! while the live heap stayed flat — heaptrack showed the heap flat while `scripts/soak.py`
//! saw the RSS rise, and one `malloc_trim(0)` on the running host took 3 MB back. A thread of
//! its own calls it every `[host] trim_interval_ms` (10 s), and right after each round of persona
//! snapshots (20 databases opened and closed one after the other left ~2.5 MB free until the
//! next trim: the only saw-tooth left in the soak): it walks the arenas and gives whole free
//! pages back (`MADV_DONTNEED`), off every request's path.

use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

/// Asks the trim thread for a trim now (after a burst of allocations that are gone again, such
/// as a round of persona snapshots, each of which opens and closes a database).
#[derive(Debug, Clone)]
pub struct Trimmer {
    /// Capacity 1: requests coalesce and `poke` never blocks.
    tx: SyncSender<()>,
}

impl Trimmer {
    /// Request a trim soon; never blocks.
    pub fn poke(&self) {
        let _ = self.tx.try_send(());
    }
}

/// Start the trimming thread (once, for the life of the process): a trim every `interval`,
/// and one whenever the returned [`Trimmer`] is poked.
pub fn spawn(interval: Duration) -> Option<Trimmer> {
    let (tx, rx) = sync_channel::<()>(1);
    let started = std::thread::Builder::new()
        .name("dh-trim".into())
        .spawn(move || {
            loop {
                match rx.recv_timeout(interval) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {
                        trim();
                    }
                    // Every Trimmer is gone: keep the periodic trim.
                    Err(RecvTimeoutError::Disconnected) => loop {
                        std::thread::sleep(interval);
                        trim();
                    },
                }
            }
        });
    match started {
        Ok(_) => Some(Trimmer { tx }),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot start the allocator trim thread; freed memory stays with the allocator");
            None
        }
    }
}

/// Return free allocator pages to the OS; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() -> bool {
    // SAFETY: `malloc_trim` takes a byte count (0: keep no padding) and works on glibc's own
    // structures under glibc's own locks; it may be called from any thread at any time, and it
    // frees nothing a caller still owns (only pages holding no allocated chunk).
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Other allocators return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    #[test]
    fn trim_gives_back_memory_freed_between_live_allocations() {
        // 64 MB of small blocks; keep one in 64 alive so `free` alone cannot shrink the heap
        // (its top stays in use), then free the rest.
        let mut blocks: Vec<Box<[u8; 1024]>> =
            (0..64 * 1024).map(|_| Box::new([1u8; 1024])).collect();
        let keep: Vec<Box<[u8; 1024]>> = blocks
            .drain(..)
            .enumerate()
            .filter_map(|(i, b)| (i % 64 == 0).then_some(b))
            .collect();
        let before = rss_kib();
        trim();
        let after = rss_kib();
        assert_eq!(keep.len(), 1024);
        // Nearly all of the 63 MB freed is returned (pages with a live block stay).
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "RSS {before} KiB before the trim, {after} KiB after"
        );
    }
}
