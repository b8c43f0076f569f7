//! The retry schedule every warren loop uses: reconnects, deliveries.
//!
//! `backoff::ExponentialBackoff` alone is not what its fields say: its first interval is its
//! default 500 ms whatever `initial_interval` is (until the first `reset`), and the jitter is
//! applied after the cap, so `max_interval` can be exceeded by half. This wrapper starts at
//! `initial` and never returns more than `max`.

use std::time::Duration;

use backoff::backoff::Backoff;

/// Jitter, as a fraction of the interval either way: enough to spread many clients retrying
/// together, small enough that a configured delay is what one sees.
const JITTER: f64 = 0.2;

/// Exponential from `initial`, doubling, jittered by ±20 %, at most `max`, never giving up.
#[derive(Debug)]
pub struct RetrySchedule {
    inner: backoff::ExponentialBackoff,
    max: Duration,
}

impl RetrySchedule {
    /// A schedule whose first delay is about `initial` and whose every delay is at most `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Self {
            inner: backoff::ExponentialBackoff {
                current_interval: initial,
                initial_interval: initial,
                max_interval: max,
                multiplier: 2.0,
                randomization_factor: JITTER,
                max_elapsed_time: None,
                ..backoff::ExponentialBackoff::default()
            },
            max,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.inner.next_backoff().unwrap_or(self.max).min(self.max)
    }

    /// Back to `initial`, after a success.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_at_initial_doubles_and_never_passes_max() {
        for _ in 0..200 {
            let mut s = RetrySchedule::new(ms(2000), ms(5000));
            let first = s.next_delay();
            assert!(first >= ms(1600) && first <= ms(2400), "{first:?}");
            let second = s.next_delay();
            assert!(second >= ms(3200) && second <= ms(4800), "{second:?}");
            for _ in 0..20 {
                assert!(s.next_delay() <= ms(5000));
            }
            s.reset();
            let again = s.next_delay();
            assert!(again >= ms(1600) && again <= ms(2400), "{again:?}");
        }
        let mut small = RetrySchedule::new(ms(10), ms(300));
        assert!(small.next_delay() <= ms(12));
        assert!((0..50).all(|_| small.next_delay() <= ms(300)));
        let mut inverted = RetrySchedule::new(ms(900), ms(300));
        assert!(inverted.next_delay() <= ms(300));
    }
}
