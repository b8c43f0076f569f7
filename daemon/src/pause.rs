//! Noticing that the daemon itself did not run: stopped with SIGSTOP, its machine or VM
//! suspended, or starved. Its peers see such a pause as a dead link; the daemon sees only a
//! gap in the monotonic clock, which it logs and shows in `status`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How often the clock is looked at.
const TICK: Duration = Duration::from_secs(1);
/// A gap this much longer than a tick is a pause.
const SLACK: Duration = Duration::from_secs(3);

/// One pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// When it ended, ms since the epoch.
    pub ended_ms: u64,
    /// How long the daemon did not run, in ms.
    pub lasted_ms: u64,
}

/// The pauses seen since start.
#[derive(Debug, Default)]
pub struct Pauses {
    last: Mutex<Option<Pause>>,
    count: std::sync::atomic::AtomicU64,
}

impl Pauses {
    /// The last pause, and how many there were.
    pub fn last(&self) -> (Option<Pause>, u64) {
        (
            *self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            self.count.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Records a gap of `gap` between two ticks, if it is a pause.
    fn saw(&self, gap: Duration, now_ms: u64) {
        let Some(lost) = gap.checked_sub(TICK).filter(|l| *l >= SLACK) else {
            return;
        };
        let lasted_ms = u64::try_from(lost.as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(
            lasted = %humantime::format_duration(Duration::from_secs(lasted_ms / 1000)),
            "This daemon did not run for a while (stopped, suspended or starved); its links are being checked."
        );
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Pause {
            ended_ms: now_ms,
            lasted_ms,
        });
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Looks at the monotonic clock every second until `stop`.
    pub async fn watch(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            self.saw(now.duration_since(last), crate::wall_ms());
            last = now;
        }
    }
}

/// The line `status` shows for the last of `count` pauses, at `now_ms`.
pub fn describe(p: &Pause, count: u64, now_ms: u64) -> String {
    let span = |ms: u64| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string();
    format!(
        "paused: did not run for {} until {} ago (stopped or suspended); {count} pause{} since start\n",
        span(p.lasted_ms),
        span(now_ms.saturating_sub(p.ended_ms)),
        if count == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_beyond_the_slack_is_a_pause() {
        let p = Pauses::default();
        p.saw(Duration::from_millis(1_500), 1);
        p.saw(Duration::from_secs(3), 2);
        assert_eq!(p.last(), (None, 0), "late ticks are not pauses");
        p.saw(Duration::from_secs(121), 3);
        assert_eq!(
            p.last(),
            (
                Some(Pause {
                    ended_ms: 3,
                    lasted_ms: 120_000
                }),
                1
            )
        );
    }
}
