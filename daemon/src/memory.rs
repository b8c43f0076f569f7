//! Giving the memory a burst used back to the system once the daemon is idle again.
//!
//! glibc keeps what a burst freed inside its arenas (one per thread that allocated), so a
//! daemon's RSS stays at its peak long after its queue or outbox emptied: an edge after a
//! burst of 200,000 datagrams (about 105,000 queued) held about 230 MiB, half of it free.
//! `malloc_trim` hands every arena's free pages back. It runs when the work stops, not during
//! it: pages given back mid-burst would only be faulted in again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long the work counter must stand still before the daemon counts as idle.
const IDLE_AFTER: Duration = Duration::from_secs(2);
/// How far the resident set must have grown from its low to be worth a trim: a trim
/// stalls allocations for a moment, and a daemon at rest has nothing to give back.
const WORTH_TRIMMING: u64 = 16 << 20;

/// Trims the allocator each time `work` (a counter that grows with every event handled) stops
/// growing after it grew, if the resident set is [`WORTH_TRIMMING`] above the lowest it was
/// since the last trim (or the start), until `stop`.
pub async fn trim_when_idle(work: impl Fn() -> u64, stop: CancellationToken) {
    let mut tick = tokio::time::interval(IDLE_AFTER);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle = Idle::new(work());
    let mut floor = resident_bytes();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let resident = resident_bytes();
        // What the system took back by itself (a freed large block) lowers the bar too.
        floor = floor.min(resident);
        if !idle.turned(work()) || resident < floor + WORTH_TRIMMING {
            continue;
        }
        // It walks every arena under its lock: seconds of work at worst, so off the runtime.
        if let Ok((before, after)) = tokio::task::spawn_blocking(trim).await {
            floor = after;
            tracing::debug!(
                rss_before = before,
                rss_after = after,
                "Idle: gave freed memory back to the system."
            );
        }
    }
}

/// Readings of a work counter, one per [`IDLE_AFTER`].
#[derive(Debug)]
struct Idle {
    last: u64,
    trimmed_at: u64,
}

impl Idle {
    fn new(work: u64) -> Self {
        Self {
            last: work,
            trimmed_at: work,
        }
    }

    /// Whether the daemon turned idle with this reading: the counter stood still since the
    /// last one, and moved since the last trim.
    fn turned(&mut self, work: u64) -> bool {
        let turned = work == self.last && work != self.trimmed_at;
        if turned {
            self.trimmed_at = work;
        }
        self.last = work;
        turned
    }
}

/// Gives the allocator's free pages back to the system; returns the resident set size
/// before and after, in bytes (0 where it cannot be read).
pub fn trim() -> (u64, u64) {
    let before = resident_bytes();
    release_free_pages();
    (before, resident_bytes())
}

/// This process's resident set size in bytes, from `/proc/self/statm`; 0 elsewhere.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_pages() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and locks each arena itself, so it is safe to call
    // from any thread at any time; its result only says whether anything was released.
    unsafe {
        malloc_trim(0);
    }
}

/// Other allocators (musl's, for one) give memory back on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_pages() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_each_time_work_stops() {
        let mut idle = Idle::new(5);
        let readings = [5, 5, 9, 12, 12, 12, 13, 13];
        let turned: Vec<bool> = readings.iter().map(|&w| idle.turned(w)).collect();
        assert_eq!(
            turned,
            [false, false, false, false, true, false, false, true],
            "not at start, not while busy, once per pause"
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        // Many small blocks (inside the heap, unlike one big mmap'd one), written to so they
        // are resident, then freed under a block that stays: glibc alone keeps them all.
        let blocks: Vec<Vec<u8>> = (0..64 * 1024).map(|_| vec![1u8; 1024]).collect();
        let pin = vec![2u8; 1024];
        let full = resident_bytes();
        drop(blocks);
        let (before, after) = trim();
        assert!(full > 64 << 20, "{full} bytes resident with 64 MiB written");
        assert!(
            before.saturating_sub(after) > 32 << 20,
            "trim gave back {} of 64 MiB freed (before {before}, after {after})",
            before.saturating_sub(after)
        );
        assert_eq!(pin[0], 2);
    }
}
