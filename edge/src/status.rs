//! `edge status`: the daemon serves a JSON snapshot on a Unix socket (sled locks the queue
//! directory, so the CLI never opens the database); the CLI renders it for people, as JSON,
//! or as a monitoring-plugin check.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_daemon::nagios::{self, Metric, State};
use warren_daemon::pause::Pause;
use warren_proto::EventId;

use crate::history::EdgeTrace;
use crate::queue::Queue;
use crate::stats::{Counters, Datagram, Link, Rejection, Stats};

/// What `edge status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EdgeStatus {
    /// Edge id.
    pub edge_id: String,
    /// Site.
    pub site: String,
    /// Software version.
    pub version: String,
    /// Daemon pid.
    pub pid: u32,
    /// UDP addresses actually bound (port 0 resolved).
    pub listen: Vec<String>,
    /// The link to the hub.
    pub link: Link,
    /// Events queued.
    pub queue_depth: u64,
    /// Bytes queued.
    pub queue_bytes: u64,
    /// The byte budget.
    pub queue_max_bytes: u64,
    /// Age of the oldest queued event, ms.
    pub oldest_age_ms: Option<u64>,
    /// Events sent and awaiting the hub's ack.
    pub in_flight: u64,
    /// Counters since start.
    pub counters: Counters,
    /// What needs attention before it fails: a client certificate that ends within 30 days.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The last datagram received, accepted or not.
    #[serde(default)]
    pub last_datagram: Option<Datagram>,
    /// The last datagram rejected, and why.
    #[serde(default)]
    pub last_rejected: Option<Rejection>,
    /// Since when new events are refused because the disk is full (ms since the epoch).
    #[serde(default)]
    pub disk_full_since_ms: Option<u64>,
    /// The last time this edge did not run (stopped, suspended), and how many since start.
    #[serde(default)]
    pub last_pause: Option<Pause>,
    /// Pauses since start.
    #[serde(default)]
    pub pauses: u64,
}

/// What the daemon needs to answer status queries.
#[derive(Debug)]
pub struct Source {
    /// Edge id.
    pub edge_id: String,
    /// Site.
    pub site: String,
    /// Bound UDP addresses.
    pub listen: Vec<String>,
    /// The queue.
    pub queue: Arc<Queue>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Byte budget.
    pub max_bytes: u64,
    /// When the client certificate ends.
    pub cert_not_after: Option<i64>,
}

impl Source {
    /// A fresh snapshot (reads the head of the queue: blocking).
    pub fn snapshot(&self) -> EdgeStatus {
        let oldest = self.queue.oldest_received_ms().ok().flatten();
        EdgeStatus {
            edge_id: self.edge_id.clone(),
            site: self.site.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            listen: self.listen.clone(),
            link: self.stats.link(),
            queue_depth: self.queue.len(),
            queue_bytes: self.queue.bytes(),
            queue_max_bytes: self.max_bytes,
            oldest_age_ms: oldest.map(|t| crate::now_ms().saturating_sub(t)),
            in_flight: self
                .stats
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed),
            counters: self.stats.counters(),
            warnings: self
                .cert_not_after
                .and_then(|t| {
                    let now = i64::try_from(crate::now_ms() / 1000).unwrap_or(i64::MAX);
                    warren_daemon::tls::expiry_warning("the edge's", t, now)
                })
                .into_iter()
                .collect(),
            last_datagram: self.stats.last_datagram(),
            last_rejected: self.stats.last_rejected(),
            disk_full_since_ms: self.queue.disk_full_since(),
            last_pause: self.stats.pauses.last().0,
            pauses: self.stats.pauses.last().1,
        }
    }

    /// What the edge knows of event `id` (reads the queue: blocking).
    pub fn trace(&self, id: EventId) -> EdgeTrace {
        EdgeTrace {
            id,
            edge_id: self.edge_id.clone(),
            record: self.stats.history.get(&id),
            queued: self.queue.contains(&id).unwrap_or(false),
            connected: self.stats.link().connected,
        }
    }
}

/// Asks the daemon listening on `path` for a snapshot.
///
/// # Errors
/// When nothing answers, or the answer is not a snapshot.
pub fn query(path: &Path) -> Result<EdgeStatus, String> {
    warren_daemon::query_status(path, "edge")
}

/// Monitoring thresholds; exceeding one trips it.
#[derive(Debug, Default, Clone, Copy, clap::Args)]
pub struct Thresholds {
    /// Oldest queued event older than this → WARNING (e.g. 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warn_age: Option<Duration>,
    /// Oldest queued event older than this → CRITICAL.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub crit_age: Option<Duration>,
    /// More queued events than this → WARNING.
    #[arg(long)]
    pub warn_depth: Option<u64>,
    /// More queued events than this → CRITICAL.
    #[arg(long)]
    pub crit_depth: Option<u64>,
}

impl Thresholds {
    /// Whether any threshold was given (the CLI then speaks the plugin convention).
    pub fn any(&self) -> bool {
        self.warn_age.is_some()
            || self.crit_age.is_some()
            || self.warn_depth.is_some()
            || self.crit_depth.is_some()
    }
}

/// The plugin line and state for a snapshot, or for a daemon that did not answer.
pub fn check(status: Result<&EdgeStatus, &str>, t: &Thresholds) -> (State, String) {
    let s = match status {
        Ok(s) => s,
        Err(e) => return nagios::render("EDGE", State::Critical, e, &[]),
    };
    let age_s = s.oldest_age_ms.unwrap_or(0) / 1000;
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
    let c = &s.counters;
    let metrics = [
        Metric::new("depth", s.queue_depth, "").thresholds(t.warn_depth, t.crit_depth),
        Metric::new("oldest_age", age_s, "s").thresholds(secs(t.warn_age), secs(t.crit_age)),
        Metric::new("queue_bytes", s.queue_bytes, "B"),
        Metric::new("accepted", c.accepted, "c"),
        Metric::new("rejected", c.rejected.values().sum(), "c"),
        Metric::new("acked", c.acked, "c"),
        Metric::new("dropped", c.dropped_oldest, "c"),
    ];
    let link = if s.link.connected {
        "connected"
    } else {
        "disconnected"
    };
    let mut summary = format!(
        "{} {link}, {} queued, oldest {age_s}s",
        s.edge_id, s.queue_depth
    );
    for w in &s.warnings {
        summary += ", ";
        summary += w;
    }
    let floor = if s.disk_full_since_ms.is_some() {
        summary += ", disk full: refusing new events";
        State::Critical
    } else if s.warnings.is_empty() {
        State::Ok
    } else {
        State::Warning
    };
    nagios::render("EDGE", floor, &summary, &metrics)
}

/// The human summary.
pub fn human(s: &EdgeStatus) -> String {
    let now = crate::now_ms();
    let ago =
        |ms: u64| humantime::format_duration(Duration::from_secs(now.saturating_sub(ms) / 1000));
    let mut link = match (&s.link, s.link.since_ms) {
        (l, 0) if !l.connected => "not connected yet".to_owned(),
        (l, since) if l.connected => format!("connected for {}", ago(since)),
        (_, since) => format!("disconnected for {}", ago(since)),
    };
    if let Some(broker) = &s.link.broker {
        link += if s.link.connected {
            " to "
        } else {
            ", last tried "
        };
        link += broker;
    }
    let mut out = format!(
        "edge {} (site {}), warren {}, pid {}\nhub: {link}\n",
        s.edge_id, s.site, s.version, s.pid
    );
    if let Some(since) = s.disk_full_since_ms {
        out += &format!(
            "CRITICAL: disk full for {}: refusing new events, still forwarding queued ones\n",
            ago(since)
        );
    }
    for w in &s.warnings {
        out += &format!("WARNING: {w}\n");
    }
    if let Some(p) = &s.last_pause {
        out += &warren_daemon::pause::describe(p, s.pauses, now);
    }
    if let (false, Some(e)) = (s.link.connected, &s.link.last_error) {
        out += &format!("last error: {e}\n");
    }
    out += &format!("listening: {}\n", s.listen.join(", "));
    out += &match &s.last_datagram {
        Some(d) => format!("last datagram: {} ago from {}\n", ago(d.at_ms), d.source),
        None => "last datagram: none since the edge started\n".to_owned(),
    };
    if let Some(r) = &s.last_rejected {
        out += &format!(
            "last rejected: {} ago from {}: {} ({})\n",
            ago(r.at_ms),
            r.source,
            r.reason,
            r.detail
        );
    }
    let oldest = s.oldest_age_ms.map_or("-".to_owned(), |a| {
        humantime::format_duration(Duration::from_secs(a / 1000)).to_string()
    });
    out += &format!(
        "queue: {} events, {} of {} bytes, oldest {oldest}, {} in flight\n",
        s.queue_depth, s.queue_bytes, s.queue_max_bytes, s.in_flight
    );
    let c = &s.counters;
    out += &format!(
        "accepted {}, duplicates {}, sent {}, resent {}, acked {}, dropped when full {}\n",
        c.accepted, c.duplicates, c.sent, c.resent, c.acked, c.dropped_oldest
    );
    let rejected: Vec<String> = c.rejected.iter().map(|(k, v)| format!("{k} {v}")).collect();
    out += &format!(
        "rejected: {}\n",
        if rejected.is_empty() {
            "none".to_owned()
        } else {
            rejected.join(", ")
        }
    );
    out
}
