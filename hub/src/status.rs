//! `hub status`: the daemon's snapshot (served on its Unix socket) and its renderings for
//! people, for `--json`, and for monitoring (plugin convention, perfdata after `|`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use warren_daemon::nagios::{self, Metric, State};
use warren_daemon::tls::{CertFacts, expiry_warning};

use crate::inbox::{DeadLetter, Inbox, Space};
use crate::stats::{EdgeInfo, Stats};
use crate::store::postgres::{Peer, Store};

/// Dead letters listed in a snapshot.
const RECENT_DEAD_LETTERS: usize = 10;

/// One notifier's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotifierStatus {
    /// Deliveries waiting.
    pub outbox: u64,
    /// Deliveries made since start.
    pub delivered: u64,
    /// Failed attempts since start.
    pub failures: u64,
    /// Deliveries given up since start.
    pub dead: u64,
    /// The last attempt's error, while it keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What `hub status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HubStatus {
    /// Software version.
    pub version: String,
    /// Daemon pid.
    pub pid: u32,
    /// `embedded` or `external`.
    pub mode: String,
    /// `redb` (`sled` before 2026-11-28), or `postgres` for a store shared by hubs.
    #[serde(default = "sled")]
    pub store: String,
    /// The hubs sharing the store, by their heartbeats (this one among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hubs: Vec<Peer>,
    /// This hub's name among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_name: Option<String>,
    /// The TLS listener's bound address (port 0 resolved), if any.
    pub listen: Vec<String>,
    /// Where the page is served ([`crate::web`]), port 0 resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<String>,
    /// Whether the hub's MQTT client is connected.
    pub broker_connected: bool,
    /// Edges seen since start.
    pub edges: BTreeMap<String, EdgeInfo>,
    /// Envelopes received.
    pub received: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Invalid payloads dropped.
    pub invalid: u64,
    /// Event ids acked.
    pub acked: u64,
    /// Logins republished on the legacy topic.
    pub republished: u64,
    /// Ids remembered for dedup.
    pub seen_ids: u64,
    /// (user, source network) pairs remembered ([`crate::known`]).
    #[serde(default)]
    pub known_sources: u64,
    /// Notifications throttles folded into digests since start.
    #[serde(default)]
    pub folded: u64,
    /// Digests made since start.
    #[serde(default)]
    pub digests: u64,
    /// Notifications folded into digests not sent yet (their intervals are still open).
    #[serde(default)]
    pub folded_pending: u64,
    /// Per notifier.
    pub notifiers: BTreeMap<String, NotifierStatus>,
    /// Dead letters held.
    pub dead_letters: u64,
    /// The newest dead letters.
    pub recent_dead_letters: Vec<DeadLetter>,
    /// Clients, handshakes and packets the front turned away since start, by reason.
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
    /// What needs attention before it fails: certificates that end within 30 days.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Since when the hub's disk is full (ms since the epoch): it acks no new events, and
    /// still delivers what it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_full_since_ms: Option<u64>,
    /// Envelopes left unacked since start because the disk was full.
    #[serde(default)]
    pub unacked_disk_full: u64,
    /// Envelopes left unacked since start because the shared store could not be reached.
    #[serde(default)]
    pub unacked_store: u64,
    /// The last time the hub did not run (stopped, suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pause: Option<warren_daemon::pause::Pause>,
    /// Pauses since start.
    #[serde(default)]
    pub pauses: u64,
    /// Files (and sockets) open: three per connected edge, plus the hub's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// The limit on open files (raised to the hard limit at start; none: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files_limit: Option<u64>,
}

/// Builds snapshots.
#[derive(Debug)]
pub struct Source {
    /// Mode name.
    pub mode: &'static str,
    /// Bound TLS listener.
    pub listen: Vec<String>,
    /// The page's address.
    pub web: Option<String>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The store.
    pub inbox: Arc<Inbox>,
    /// Configured notifier names (so idle ones show too).
    pub notifiers: Vec<String>,
    /// The hub's own TLS certificate.
    pub certificate: Option<CertFacts>,
    /// With a shared store, what a status reads from it, as [`Source::keep_figures`] last
    /// read it: a status must not wait for connections the hub's work holds.
    pub figures: Mutex<Option<Figures>>,
}

/// What a status reads from the store besides the counts the inbox keeps.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    known_sources: u64,
    folded_pending: u64,
    recent_dead_letters: Vec<DeadLetter>,
}

impl Source {
    /// Reads [`Figures`] from the store (blocking).
    fn read_figures(&self) -> Figures {
        Figures {
            known_sources: self.inbox.count(Space::Known),
            folded_pending: crate::throttle::pending(&self.inbox).map_or(0, |(_, f)| f),
            recent_dead_letters: self
                .inbox
                .dead_letters(RECENT_DEAD_LETTERS)
                .unwrap_or_default(),
        }
    }

    /// The figures for a snapshot: read now from one hub's own store, or the last read of
    /// a shared one.
    fn figures(&self) -> Figures {
        if self.inbox.shared_store().is_none() {
            return self.read_figures();
        }
        self.figures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }

    /// With a shared store, reads the [`Figures`] every few seconds until `stop`.
    pub async fn keep_figures(self: Arc<Self>, stop: CancellationToken) {
        if self.inbox.shared_store().is_none() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let source = self.clone();
            if let Ok(f) = tokio::task::spawn_blocking(move || source.read_figures()).await {
                *self.figures.lock().unwrap_or_else(PoisonError::into_inner) = Some(f);
            }
        }
    }

    /// A fresh snapshot (reads the dead letters: blocking).
    pub fn snapshot(&self) -> HubStatus {
        let s = &self.stats;
        let figures = self.figures();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let depths = self.inbox.outbox_depths();
        let counters = s.notifiers();
        let notifiers = self
            .notifiers
            .iter()
            .map(|n| {
                let mut status =
                    counters
                        .get(n)
                        .map_or_else(NotifierStatus::default, |c| NotifierStatus {
                            delivered: get(&c.delivered),
                            failures: get(&c.failures),
                            dead: get(&c.dead),
                            last_error: c.last_error(),
                            ..NotifierStatus::default()
                        });
                status.outbox = depths.get(n).copied().unwrap_or_default();
                (n.clone(), status)
            })
            .collect();
        let edges = s.edges();
        let now = i64::try_from(crate::now_ms() / 1000).unwrap_or(i64::MAX);
        let own = self
            .certificate
            .as_ref()
            .and_then(|c| expiry_warning("the hub's", c.not_after, now));
        let of_edges = edges
            .iter()
            .filter_map(|(id, e)| expiry_warning(&format!("edge {id}'s"), e.cert_not_after?, now));
        let problems = edges.iter().filter_map(|(id, e)| {
            let p = e.problem.as_deref()?;
            Some(format!("edge {id}: {}", crate::presence::problem_words(p)))
        });
        let (open_files, open_files_limit) =
            (warren_daemon::fds::open(), warren_daemon::fds::limit());
        // Past 80 %, new edges are close to being refused (accept fails with EMFILE).
        let files = open_files
            .zip(open_files_limit)
            .filter(|&(open, limit)| open.saturating_mul(5) > limit.saturating_mul(4))
            .map(|(open, limit)| format!("{open} files open of the limit of {limit}"));
        let shared = self.inbox.shared_store();
        HubStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            mode: self.mode.to_owned(),
            store: if shared.is_some() { "postgres" } else { "redb" }.to_owned(),
            hubs: shared.map(Store::peers).unwrap_or_default(),
            hub_name: shared.map(|s| s.name().to_owned()),
            listen: self.listen.clone(),
            web: self.web.clone(),
            broker_connected: *s.bus_connected.borrow(),
            warnings: own
                .into_iter()
                .chain(of_edges)
                .chain(problems)
                .chain(files)
                .collect(),
            edges,
            received: get(&s.received),
            duplicates: get(&s.duplicates),
            invalid: s.invalid.counts().values().sum(),
            acked: get(&s.acked),
            republished: get(&s.republished),
            seen_ids: self.inbox.seen_count(),
            known_sources: figures.known_sources,
            folded: get(&s.folded),
            digests: get(&s.digests),
            folded_pending: figures.folded_pending,
            notifiers,
            dead_letters: self.inbox.dead_count(),
            recent_dead_letters: figures.recent_dead_letters,
            refused: s.refused.counts(),
            disk_full_since_ms: self.inbox.disk_full_since(),
            unacked_disk_full: get(&s.unacked_disk_full),
            unacked_store: get(&s.unacked_store),
            last_pause: s.pauses.last().0,
            pauses: s.pauses.last().1,
            open_files,
            open_files_limit,
        }
    }
}

fn sled() -> String {
    "sled".to_owned()
}

/// Asks the daemon listening on `path`.
///
/// # Errors
/// When nothing answers, or the answer is not a snapshot.
pub fn query(path: &Path) -> Result<HubStatus, String> {
    warren_daemon::query_status(path, "hub")
}

/// Monitoring thresholds; exceeding one trips it.
#[derive(Debug, Default, Clone, Copy, clap::Args)]
pub struct Thresholds {
    /// More dead letters than this → WARNING.
    #[arg(long)]
    pub warn_dead: Option<u64>,
    /// More dead letters than this → CRITICAL.
    #[arg(long)]
    pub crit_dead: Option<u64>,
    /// A notifier's outbox longer than this → WARNING.
    #[arg(long)]
    pub warn_outbox: Option<u64>,
    /// A notifier's outbox longer than this → CRITICAL.
    #[arg(long)]
    pub crit_outbox: Option<u64>,
    /// More offline edges than this → WARNING.
    #[arg(long)]
    pub warn_offline: Option<u64>,
    /// More offline edges than this → CRITICAL.
    #[arg(long)]
    pub crit_offline: Option<u64>,
}

impl Thresholds {
    /// Whether any threshold was given.
    pub fn any(&self) -> bool {
        [
            self.warn_dead,
            self.crit_dead,
            self.warn_outbox,
            self.crit_outbox,
            self.warn_offline,
            self.crit_offline,
        ]
        .iter()
        .any(Option::is_some)
    }
}

/// The plugin line and state.
pub fn check(status: Result<&HubStatus, &str>, t: &Thresholds) -> (State, String) {
    let s = match status {
        Ok(s) => s,
        Err(e) => return nagios::render("HUB", State::Critical, e, &[]),
    };
    let outbox = s.notifiers.values().map(|n| n.outbox).max().unwrap_or(0);
    let offline = s.edges.values().filter(|e| !e.online).count() as u64;
    let floor = if !s.broker_connected || s.disk_full_since_ms.is_some() {
        State::Critical
    } else if !s.warnings.is_empty() {
        State::Warning
    } else {
        State::Ok
    };
    let metrics = [
        Metric::new("dead_letters", s.dead_letters, "").thresholds(t.warn_dead, t.crit_dead),
        Metric::new("outbox", outbox, "").thresholds(t.warn_outbox, t.crit_outbox),
        Metric::new("edges_offline", offline, "").thresholds(t.warn_offline, t.crit_offline),
        Metric::new("edges", s.edges.len() as u64, ""),
        Metric::new("received", s.received, "c"),
        Metric::new("duplicates", s.duplicates, "c"),
    ];
    let mut summary = format!(
        "{} edges ({offline} offline), outbox {outbox}, {} dead letters{}",
        s.edges.len(),
        s.dead_letters,
        if s.broker_connected {
            ""
        } else {
            ", not connected to the broker"
        }
    );
    if s.disk_full_since_ms.is_some() {
        summary += ", disk full: not acking new events";
    }
    for w in &s.warnings {
        summary += ", ";
        summary += w;
    }
    nagios::render("HUB", floor, &summary, &metrics)
}

/// The human summary.
pub fn human(s: &HubStatus) -> String {
    let now = crate::now_ms();
    let ago = |ms: u64| {
        humantime::format_duration(Duration::from_secs(now.saturating_sub(ms) / 1000)).to_string()
    };
    let mut out = format!(
        "hub warren {}, pid {}, {} broker, {}\n",
        s.version,
        s.pid,
        s.mode,
        if s.broker_connected {
            "connected"
        } else {
            "NOT connected"
        }
    );
    if let Some(page) = &s.web {
        out += &format!("page: {page}\n");
    }
    out += &format!(
        "events: {} received, {} duplicates dropped, {} invalid, {} acked, {} ids remembered\n",
        s.received, s.duplicates, s.invalid, s.acked, s.seen_ids
    );
    out += &format!(
        "known sources: {}; throttled: {} folded into {} digests, {} waiting for their digest\n",
        s.known_sources, s.folded, s.digests, s.folded_pending
    );
    if let Some(open) = s.open_files {
        let limit = s
            .open_files_limit
            .map_or("no".to_owned(), |l| l.to_string());
        out += &format!("open files: {open} (limit {limit})\n");
    }
    if let Some(p) = &s.last_pause {
        out += &warren_daemon::pause::describe(p, s.pauses, now);
    }
    if s.store == "postgres" {
        out += &format!(
            "store: {}, shared as hub {}; {} left unacked while it could not be reached\n",
            s.store,
            s.hub_name.as_deref().unwrap_or("?"),
            s.unacked_store
        );
        for h in &s.hubs {
            out += &format!(
                "  hub {:<16} on {} (pid {}, warren {}), last heartbeat {}s ago\n",
                h.name,
                h.host,
                h.pid,
                h.version,
                h.seen_ago_ms / 1000
            );
        }
    }
    if let Some(since) = s.disk_full_since_ms {
        out += &format!(
            "CRITICAL: disk full for {}: new events are not acked (their edges keep them), \
             deliveries go on; {} left unacked so far\n",
            ago(since),
            s.unacked_disk_full
        );
    }
    for w in &s.warnings {
        out += &format!("WARNING: {w}\n");
    }
    if !s.refused.is_empty() {
        let by_reason: Vec<String> = s.refused.iter().map(|(r, n)| format!("{r} {n}")).collect();
        out += &format!("refused: {}\n", by_reason.join(", "));
    }
    out += &format!("edges ({}):\n", s.edges.len());
    for (id, e) in &s.edges {
        out += &format!(
            "  {id:<20} site {:<12} {:<8} last seen {} ago, {} events, {} queued\n",
            e.site,
            if e.online { "online" } else { "offline" },
            ago(e.last_seen_ms),
            e.events,
            e.queue_depth
        );
    }
    out += "notifiers:\n";
    for (name, n) in &s.notifiers {
        out += &format!(
            "  {name:<20} outbox {:<6} delivered {:<6} failed attempts {:<6} dead {}\n",
            n.outbox, n.delivered, n.failures, n.dead
        );
        if let Some(e) = &n.last_error {
            out += &format!("  {:<20} failing: {e}\n", "");
        }
    }
    out += &format!("dead letters: {}\n", s.dead_letters);
    for d in &s.recent_dead_letters {
        out += &format!(
            "  #{} {} ago  {}  {}  after {} attempts: {}\n",
            d.seq,
            ago(d.at_ms),
            d.notifier,
            d.id,
            d.attempts,
            d.error
        );
    }
    out
}
