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
//!   recorded before it — by the jump, once. Without a restart the window clock catches up
//!   with the wall by itself ([`settle`]) once the jump is older than the longest window, so
//!   a jump of years (a dead RTC) does not keep everything for years.
//!
//! The monotonic clock stops while the machine is suspended: the hub then sees no time pass,
//! which it treats like a pause of its own (no edge counted silent for it).

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

/// The clock of the store's windows: the earlier of [`wall_ms`] and [`steady_ms`] (moved on
/// by [`settle`]).
pub fn window_ms() -> u64 {
    let caught_up = steady_ms().saturating_add(lock_settled().offset);
    wall_ms().min(caught_up)
}

/// Lets the window clock catch up with a wall clock that has stood ahead of it by the same
/// amount for longer than `longest` (the longest window kept): everything recorded before the
/// jump has expired by then in real time anyway. Called now and then (by the pruner).
pub fn settle(longest: std::time::Duration) {
    let longest = u64::try_from(longest.as_millis()).unwrap_or(u64::MAX);
    let (wall, steady) = (wall_ms(), steady_ms());
    lock_settled().observe(wall, steady, longest);
}

fn lock_settled() -> std::sync::MutexGuard<'static, Settled> {
    static SETTLED: std::sync::Mutex<Settled> = std::sync::Mutex::new(Settled {
        offset: 0,
        ahead: None,
    });
    SETTLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How far the window clock has caught up, and the jump it is waiting out.
#[derive(Debug)]
struct Settled {
    /// Added to [`steady_ms`] for the window clock.
    offset: u64,
    /// How far the wall is ahead of the window clock, and since when (steady ms).
    ahead: Option<(u64, u64)>,
}

impl Settled {
    /// Two readings this close count as the same jump.
    const SAME: u64 = 2_000;

    fn observe(&mut self, wall: u64, steady: u64, longest: u64) {
        let gap = wall.saturating_sub(steady.saturating_add(self.offset));
        match self.ahead {
            _ if gap < Self::SAME => self.ahead = None,
            Some((was, since)) if was.abs_diff(gap) < Self::SAME => {
                if steady.saturating_sub(since) > longest {
                    self.offset += gap;
                    self.ahead = None;
                }
            }
            _ => self.ahead = Some((gap, steady)),
        }
    }
}

/// A [`steady_ms`] time as wall time now, for showing it.
pub fn steady_to_wall(steady: u64) -> u64 {
    wall_ms().saturating_sub(steady_ms().saturating_sub(steady))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_clock_catches_up_with_a_jump_older_than_the_longest_window() {
        let day = 86_400_000;
        let mut s = Settled {
            offset: 0,
            ahead: None,
        };
        // The wall jumps a year ahead at steady 1000; the longest window is a week.
        s.observe(1_000 + 365 * day, 1_000, 7 * day);
        s.observe(1_000 + 365 * day + 3 * day, 1_000 + 3 * day, 7 * day);
        assert_eq!(s.offset, 0, "the jump is younger than the window");
        // Another jump restarts the wait.
        s.observe(1_000 + 400 * day + 6 * day, 1_000 + 6 * day, 7 * day);
        s.observe(1_000 + 400 * day + 12 * day, 1_000 + 12 * day, 7 * day);
        assert_eq!(s.offset, 0);
        s.observe(1_000 + 400 * day + 14 * day, 1_000 + 14 * day, 7 * day);
        assert_eq!(s.offset, 400 * day, "caught up");
        s.observe(1_000 + 400 * day + 15 * day, 1_000 + 15 * day, 7 * day);
        assert_eq!(s.ahead, None);
    }

    #[test]
    fn steady_starts_at_the_wall_and_window_is_the_earlier() {
        let (wall, steady, window) = (wall_ms(), steady_ms(), window_ms());
        assert!(steady.abs_diff(wall) < 1_000, "{steady} vs {wall}");
        assert!(window <= wall.max(steady));
        let before = steady_ms() - 5_000;
        assert!(steady_to_wall(before).abs_diff(wall_ms() - 5_000) < 1_000);
    }
}
