//! The hub's clocks. The wall clock can jump — an RTC with a dead battery and a late NTP sync
//! move it by hours or years — so it is used only where wall time is the point: times shown to
//! people, an event's `received` stamp, a certificate's end. What the hub measures itself uses:
//!
//! - [`steady_ms`]: the wall time at start, advanced by the monotonic clock. It never jumps, so
//!   an edge's silence and a presence change's grace are real durations.
//! - [`window_ms`]: the earlier of the wall clock and [`steady_ms`], for the windows kept in the
//!   store (the dedup window, a failing delivery's budget, how long records are kept). A jump
//!   forward cannot forget ids or give up deliveries early, and a jump back only keeps them
//!   longer. Records are stamped with the wall clock, so after a restart (when both clocks
//!   agree again) a jump forward while the hub was running shortens the windows of what was
//!   recorded before it — by the jump, once.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn wall_ms() -> u64 {
    warren_daemon::wall_ms()
}

/// The wall time at start plus the monotonic time since, in ms.
pub fn steady_ms() -> u64 {
    static START: OnceLock<(u64, Instant)> = OnceLock::new();
    let (wall, at) = START.get_or_init(|| (wall_ms(), Instant::now()));
    wall.saturating_add(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// The clock of the store's windows: the earlier of [`wall_ms`] and [`steady_ms`].
pub fn window_ms() -> u64 {
    wall_ms().min(steady_ms())
}

/// A [`steady_ms`] time as wall time now, for showing it.
pub fn steady_to_wall(steady: u64) -> u64 {
    wall_ms().saturating_sub(steady_ms().saturating_sub(steady))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_starts_at_the_wall_and_window_is_the_earlier() {
        let (wall, steady, window) = (wall_ms(), steady_ms(), window_ms());
        assert!(steady.abs_diff(wall) < 1_000, "{steady} vs {wall}");
        assert!(window <= wall.max(steady));
        let before = steady_ms() - 5_000;
        assert!(steady_to_wall(before).abs_diff(wall_ms() - 5_000) < 1_000);
    }
}
