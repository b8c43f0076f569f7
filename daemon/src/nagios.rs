//! The monitoring-plugin output convention shared by `edge status` and `hub status`: one line,
//! `SERVICE STATE - summary | 'label'=value[uom];warn;crit;min`, and the exit codes
//! 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

use std::fmt::Write;

/// A check's outcome; its discriminant is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Within thresholds.
    Ok = 0,
    /// A warning threshold is crossed.
    Warning = 1,
    /// A critical threshold is crossed, or the daemon does not answer.
    Critical = 2,
    /// The check itself could not be made sense of.
    Unknown = 3,
}

impl State {
    /// The word the convention prints.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warning => "WARNING",
            Self::Critical => "CRITICAL",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// One performance value with optional thresholds (exceeding a threshold trips it).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The perfdata label.
    pub label: &'static str,
    /// The value.
    pub value: u64,
    /// Unit of measure: `""`, `"s"`, `"B"` or `"c"` (a counter).
    pub uom: &'static str,
    /// Warning threshold.
    pub warn: Option<u64>,
    /// Critical threshold.
    pub crit: Option<u64>,
}

impl Metric {
    /// A value with no thresholds.
    pub fn new(label: &'static str, value: u64, uom: &'static str) -> Self {
        Self {
            label,
            value,
            uom,
            warn: None,
            crit: None,
        }
    }

    /// The same value with thresholds.
    pub fn thresholds(mut self, warn: Option<u64>, crit: Option<u64>) -> Self {
        self.warn = warn;
        self.crit = crit;
        self
    }

    fn state(&self) -> State {
        if self.crit.is_some_and(|c| self.value > c) {
            State::Critical
        } else if self.warn.is_some_and(|w| self.value > w) {
            State::Warning
        } else {
            State::Ok
        }
    }
}

/// The worst of `floor` and every metric's state, and the plugin line.
pub fn render(service: &str, floor: State, summary: &str, metrics: &[Metric]) -> (State, String) {
    let state = metrics.iter().map(Metric::state).fold(floor, State::max);
    let mut line = format!("{service} {} - {summary}", state.label());
    if !metrics.is_empty() {
        line.push_str(" |");
    }
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for m in metrics {
        let _ = write!(
            line,
            " '{}'={}{};{};{};0",
            m.label,
            m.value,
            m.uom,
            opt(m.warn),
            opt(m.crit)
        );
    }
    (state, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_state_wins_and_perfdata_follows_the_pipe() {
        let (s, line) = render(
            "EDGE",
            State::Ok,
            "connected",
            &[
                Metric::new("depth", 5, "").thresholds(Some(3), Some(10)),
                Metric::new("age", 1, "s").thresholds(Some(60), None),
                Metric::new("accepted", 7, "c"),
            ],
        );
        assert_eq!(s, State::Warning);
        assert_eq!(
            line,
            "EDGE WARNING - connected | 'depth'=5;3;10;0 'age'=1s;60;;0 'accepted'=7c;;;0"
        );
        let (s, _) = render("EDGE", State::Critical, "down", &[]);
        assert_eq!(s.code(), 2);
        let (s, _) = render(
            "EDGE",
            State::Ok,
            "x",
            &[Metric::new("d", 11, "").thresholds(Some(3), Some(10))],
        );
        assert_eq!(s, State::Critical);
    }
}
