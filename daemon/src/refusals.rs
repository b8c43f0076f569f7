//! Counting what a daemon refuses — junk datagrams, bad payloads, clients the hub's front turns
//! away — and logging it at a bounded rate: a flood of junk must not flood the log, but the
//! first of each kind is always seen, and the count of the rest never lost.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one log line per reason per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// What is logged of a refusal's details (client ids and topics are the sender's choice).
const MAX_DETAIL: usize = 200;

/// Refusals by reason, and when each reason was last logged.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Per reason: when it was last logged, and how many since.
    gate: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Refusals {
    /// Counts one refusal and logs it at warn level, at most once per reason per
    /// [`LOG_INTERVAL`], with the number suppressed since the last line.
    pub fn refuse(
        &self,
        what: &str,
        reason: &'static str,
        from: &dyn Display,
        detail: &dyn Display,
    ) {
        self.count(reason, 1);
        let now = Instant::now();
        let mut gate = lock(&self.gate);
        match gate.get_mut(reason) {
            Some((last, suppressed)) if now.duration_since(*last) < LOG_INTERVAL => {
                *suppressed += 1;
            }
            entry => {
                let suppressed = entry.map_or(0, |(_, s)| *s);
                // Debug-quoted, so control characters in what a sender chose are escaped.
                let from: String = from.to_string().chars().take(MAX_DETAIL).collect();
                let detail: String = detail.to_string().chars().take(MAX_DETAIL).collect();
                tracing::warn!(reason, ?from, ?detail, suppressed, "Refused {what}.");
                gate.insert(reason, (now, 0));
            }
        }
    }

    /// Counts `n` refusals that the caller has logged itself.
    pub fn count(&self, reason: &'static str, n: u64) {
        *lock(&self.counts).entry(reason).or_default() += n;
    }

    /// The counts, by reason.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.counts)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay usable even if a holder panicked.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_refusal_by_reason() {
        let r = Refusals::default();
        for _ in 0..3 {
            r.refuse("a datagram", "too_large", &"127.0.0.1:9", &"big");
        }
        r.refuse("a datagram", "bad_json", &"127.0.0.1:9", &"{");
        r.count("bad_json", 2);
        let counts = r.counts();
        assert_eq!(counts["too_large"], 3);
        assert_eq!(counts["bad_json"], 3);
    }
}
