//! Which edges are reporting: what their presence says, and what their silence says.
//!
//! An edge is offline when its presence says so (its last will, or a clean stop) or when the
//! hub has heard nothing from it — no presence refresh, no event — for `silent_after` (a
//! link that is silently cut fires no will until keepalives expire, and a hub restarted while
//! an edge was down hears no will at all). A change is announced only once it has held for
//! `grace`, so an edge that reconnects at once, or flaps, makes no alert per blip; and only
//! changes are announced: an edge first heard of is online without a "back online".
//!
//! An edge also says when it cannot accept events (its disk is full): that is announced
//! too, the same way, once it has held for `grace`, and again when it is over.
//!
//! Its times are on the hub's steady clock ([`crate::clock`]), so a wall clock that jumps
//! makes no edge look silent; a pause of the hub's own ([`Tracker::forgive`]) neither.
//!
//! What was announced is kept in the store (written in the same transaction as the alert),
//! so after a restart the hub still knows its edges: one that never comes back is announced
//! offline once it has been silent long enough, and one that was offline is announced back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_proto::envelope::DISK_FULL;
use warren_proto::envelope::VERSION;
use warren_proto::{Envelope, Event, EventId, Kind, Presence, PresenceState};

use crate::config::PresenceConfig;
use crate::inbox::{Inbox, InboxError, Space, Tx};

/// The kinds of events the hub makes itself; an edge that sends one is refused.
pub const HUB_KINDS: [&str; 5] = [
    "edge_offline",
    "edge_online",
    "edge_problem",
    "edge_problem_over",
    "digest",
];

/// What is stored per edge.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    site: String,
    online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

#[derive(Debug)]
struct Edge {
    site: String,
    /// What its last presence message said; `None` until one arrives.
    said_online: Option<bool>,
    last_heard_ms: u64,
    queue_depth: u64,
    /// The state now, and since when.
    online: bool,
    since_ms: u64,
    /// What was last announced (an edge first heard of counts as announced online).
    announced_online: bool,
    /// The problem its last online presence named, and since when.
    problem: Option<String>,
    problem_since_ms: u64,
    /// The problem last announced.
    announced_problem: Option<String>,
    /// The stored record needs writing.
    dirty: bool,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Back online.
    Online,
    /// Gone offline.
    Offline,
    /// It cannot accept events: [`warren_proto::envelope::DISK_FULL`], or what a newer edge says.
    Problem(String),
    /// That problem is over.
    ProblemOver(String),
}

/// One announcement to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The edge.
    pub edge: String,
    /// Its site.
    pub site: String,
    /// What changed.
    pub change: Change,
    /// Since when, on the steady clock ([`crate::clock::steady_ms`]).
    pub since_ms: u64,
    /// Why, in words.
    pub why: String,
    /// Its queue depth as last reported.
    pub queue_depth: u64,
}

/// The edges' presence.
#[derive(Debug)]
pub struct Tracker {
    silent_after_ms: u64,
    grace_ms: u64,
    edges: BTreeMap<String, Edge>,
}

impl Tracker {
    /// The edges the store remembers, each given `silent_after` from `now_ms` to be heard.
    ///
    /// # Errors
    /// When the store fails.
    pub fn load(inbox: &Inbox, cfg: &PresenceConfig, now_ms: u64) -> Result<Self, InboxError> {
        let mut t = Self {
            silent_after_ms: ms(cfg.silent_after),
            grace_ms: ms(cfg.grace),
            edges: BTreeMap::new(),
        };
        for (key, value) in inbox.scan(Space::Presence)? {
            let (Ok(edge), Ok(r)) = (
                String::from_utf8(key),
                serde_json::from_slice::<Record>(&value),
            ) else {
                continue;
            };
            t.edges.insert(
                edge,
                Edge {
                    site: r.site,
                    // Offline until heard from; online until silent for long enough.
                    said_online: (!r.online).then_some(false),
                    last_heard_ms: now_ms,
                    queue_depth: 0,
                    online: r.online,
                    since_ms: now_ms,
                    announced_online: r.online,
                    problem: r.problem.clone(),
                    problem_since_ms: now_ms,
                    announced_problem: r.problem,
                    dirty: false,
                },
            );
        }
        Ok(t)
    }

    /// `edge` sent an event: it is alive.
    pub fn heard_event(&mut self, edge: &str, site: &str, now_ms: u64) {
        self.heard(edge, site, now_ms);
    }

    /// `p` arrived.
    pub fn heard_presence(&mut self, p: &Presence, now_ms: u64) {
        let e = self.heard(&p.edge, &p.site, now_ms);
        e.said_online = Some(p.state == PresenceState::Online);
        e.queue_depth = p.queue_depth;
        // A will or a clean stop names no problem, whatever the edge's state.
        if p.state == PresenceState::Online && p.problem != e.problem {
            e.problem.clone_from(&p.problem);
            e.problem_since_ms = now_ms;
        }
    }

    fn heard(&mut self, edge: &str, site: &str, now_ms: u64) -> &mut Edge {
        let e = self.edges.entry(edge.to_owned()).or_insert_with(|| Edge {
            site: site.to_owned(),
            said_online: None,
            last_heard_ms: now_ms,
            queue_depth: 0,
            online: true,
            since_ms: now_ms,
            announced_online: true,
            problem: None,
            problem_since_ms: now_ms,
            announced_problem: None,
            dirty: true,
        });
        if e.site != site {
            e.site = site.to_owned();
            e.dirty = true;
        }
        e.last_heard_ms = now_ms;
        e
    }

    /// The changes that have held for `grace` by `now_ms`, now taken as announced.
    pub fn due(&mut self, now_ms: u64) -> Vec<Transition> {
        let mut out = Vec::new();
        for (id, e) in &mut self.edges {
            let silent_since = e.last_heard_ms.saturating_add(self.silent_after_ms);
            let (online, since) = match e.said_online {
                Some(false) => (false, e.last_heard_ms),
                _ if now_ms >= silent_since => (false, silent_since),
                _ => (true, e.last_heard_ms),
            };
            if online != e.online {
                e.online = online;
                e.since_ms = since;
            }
            let problem_change = match (&e.problem, &e.announced_problem) {
                _ if now_ms < e.problem_since_ms.saturating_add(self.grace_ms) => None,
                (now, before) if now == before => None,
                (Some(p), _) => Some(Change::Problem(p.clone())),
                (None, Some(p)) => Some(Change::ProblemOver(p.clone())),
                (None, None) => None,
            };
            if let Some(change) = problem_change {
                e.announced_problem.clone_from(&e.problem);
                e.dirty = true;
                out.push(Transition {
                    edge: id.clone(),
                    site: e.site.clone(),
                    why: change.words().to_owned(),
                    change,
                    since_ms: e.problem_since_ms,
                    queue_depth: e.queue_depth,
                });
            }
            if e.online == e.announced_online || now_ms < e.since_ms.saturating_add(self.grace_ms) {
                continue;
            }
            e.announced_online = e.online;
            e.dirty = true;
            let why = if e.online {
                "reporting again".to_owned()
            } else if e.said_online == Some(false) {
                "its connection ended".to_owned()
            } else {
                format!(
                    "nothing heard for {}",
                    humantime::format_duration(Duration::from_secs(
                        now_ms.saturating_sub(e.last_heard_ms) / 1000
                    ))
                )
            };
            out.push(Transition {
                edge: id.clone(),
                site: e.site.clone(),
                change: if e.online {
                    Change::Online
                } else {
                    Change::Offline
                },
                since_ms: e.since_ms,
                why,
                queue_depth: e.queue_depth,
            });
        }
        out
    }

    /// The hub did not run for `ms`: what its edges said in that time went unheard, so their
    /// silence is counted from where it was when the hub stopped.
    pub fn forgive(&mut self, ms: u64) {
        for e in self.edges.values_mut() {
            // Graces running when it stopped go on from where they were, too.
            e.last_heard_ms = e.last_heard_ms.saturating_add(ms);
            e.since_ms = e.since_ms.saturating_add(ms);
            e.problem_since_ms = e.problem_since_ms.saturating_add(ms);
        }
    }

    /// Takes back `transitions` that could not be recorded (the disk is full, the shared
    /// store out of reach): they are announced again once they can be. The records that
    /// were to be written are still to be ([`Tracker::stored`] was not called).
    pub fn unannounce(&mut self, transitions: &[Transition]) {
        for t in transitions {
            let Some(e) = self.edges.get_mut(&t.edge) else {
                continue;
            };
            match &t.change {
                Change::Online => e.announced_online = false,
                Change::Offline => e.announced_online = true,
                Change::Problem(_) => e.announced_problem = None,
                Change::ProblemOver(p) => e.announced_problem = Some(p.clone()),
            }
            e.dirty = true;
        }
    }

    /// Writes what changed since the last [`Tracker::stored`] into `tx`.
    pub fn store(&self, tx: &mut Tx<'_>) {
        for (id, e) in self.edges.iter().filter(|(_, e)| e.dirty) {
            let r = Record {
                site: e.site.clone(),
                online: e.announced_online,
                problem: e.announced_problem.clone(),
            };
            tx.put(
                Space::Presence,
                id.as_bytes(),
                serde_json::to_vec(&r).unwrap_or_default(),
            );
        }
    }

    /// What [`Tracker::store`] wrote is committed.
    pub fn stored(&mut self) {
        for e in self.edges.values_mut() {
            e.dirty = false;
        }
    }

    /// Whether the store already records `t` as announced: by another hub sharing it, which
    /// decided the same change first. Read before [`Tracker::store`] writes this hub's view.
    ///
    /// # Errors
    /// When the store fails.
    pub fn announced_elsewhere(tx: &Tx<'_>, t: &Transition) -> Result<bool, InboxError> {
        let Some(bytes) = tx.get(Space::Presence, t.edge.as_bytes())? else {
            return Ok(false);
        };
        let Ok(r) = serde_json::from_slice::<Record>(&bytes) else {
            return Ok(false);
        };
        Ok(match &t.change {
            Change::Online => r.online,
            Change::Offline => !r.online,
            Change::Problem(p) => r.problem.as_ref() == Some(p),
            Change::ProblemOver(p) => r.problem.as_ref() != Some(p),
        })
    }

    /// Whether anything waits to be stored.
    pub fn is_dirty(&self) -> bool {
        self.edges.values().any(|e| e.dirty)
    }

    /// Each edge's state now: (online, since, on the steady clock).
    pub fn states(&self) -> BTreeMap<String, (bool, u64)> {
        self.edges
            .iter()
            .map(|(id, e)| (id.clone(), (e.online, e.since_ms)))
            .collect()
    }
}

impl Change {
    /// The event kind that announces it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Online => "edge_online",
            Self::Offline => "edge_offline",
            Self::Problem(_) => "edge_problem",
            Self::ProblemOver(_) => "edge_problem_over",
        }
    }

    /// Whether the edge is online after it, for a change of presence.
    pub fn online(&self) -> Option<bool> {
        match self {
            Self::Online => Some(true),
            Self::Offline => Some(false),
            Self::Problem(_) | Self::ProblemOver(_) => None,
        }
    }

    /// The change in a few words.
    fn words(&self) -> &str {
        match self {
            Self::Problem(p) | Self::ProblemOver(p) => problem_words(p),
            Self::Online => "back online",
            Self::Offline => "offline",
        }
    }
}

/// An edge's [`Presence::problem`] in a few words.
pub fn problem_words(problem: &str) -> &str {
    if problem == DISK_FULL {
        "disk full"
    } else {
        problem
    }
}

impl Transition {
    /// The event that announces it: "paris-dc is offline", "paris-dc: disk full".
    pub fn event(&self, now_ms: u64, salt: &str) -> Envelope {
        let kind = self.change.kind();
        let tst = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let mut event = Event::new(Kind::Other(kind.to_owned()), tst);
        let (edge, site, why) = (&self.edge, &self.site, &self.why);
        let words = self.change.words();
        let (title, message) = match &self.change {
            Change::Online | Change::Offline => (
                format!("{edge} is {words}"),
                format!("Edge {edge} at site {site} is {words}: {why}."),
            ),
            Change::Problem(p) if p == DISK_FULL => (
                format!("{edge}: {words}"),
                format!(
                    "Edge {edge} at site {site} refuses new events: its disk is full. It still \
                     forwards the events it holds."
                ),
            ),
            Change::ProblemOver(p) if p == DISK_FULL => (
                format!("{edge}: {words} (resolved)"),
                format!("Edge {edge} at site {site} accepts events again: its disk has room."),
            ),
            Change::Problem(_) => (
                format!("{edge}: {words}"),
                format!("Edge {edge} at site {site} reports a problem: {words}."),
            ),
            Change::ProblemOver(_) => (
                format!("{edge}: {words} (resolved)"),
                format!("Edge {edge} at site {site} no longer reports a problem: {words}."),
            ),
        };
        event
            .set_str("hostname", Some(edge))
            .set_str("title", Some(&title))
            .set_str("message", Some(&message))
            .set_str("reason", Some(why))
            .set("queue_depth", self.queue_depth.into());
        if let Change::Problem(p) | Change::ProblemOver(p) = &self.change {
            event.set_str("problem", Some(p));
        }
        let at = now_ms.to_string();
        Envelope {
            v: VERSION,
            // One id per transition; the salt keeps it unpredictable to edges.
            id: EventId::derive_legacy(
                [
                    Some(kind),
                    Some(&self.edge),
                    Some(&self.site),
                    Some(salt),
                    Some(&at),
                ],
                tst,
            ),
            site: self.site.clone(),
            edge: self.edge.clone(),
            received: now_ms,
            remote: String::new(),
            signed: false,
            event,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::presence;

    fn tracker() -> Tracker {
        Tracker {
            silent_after_ms: 10_000,
            grace_ms: 2_000,
            edges: BTreeMap::new(),
        }
    }

    fn kinds(t: &[Transition]) -> Vec<(&str, bool)> {
        t.iter()
            .filter_map(|t| Some((t.edge.as_str(), t.change.online()?)))
            .collect()
    }

    #[test]
    fn first_heard_is_not_back_online_and_blips_are_not_announced() {
        let mut t = tracker();
        t.heard_event("gw", "paris", 0);
        t.heard_presence(&presence("gw", true), 100);
        assert!(t.due(5_000).is_empty(), "first heard of through an event");
        t.heard_presence(&presence("gw", false), 6_000);
        assert!(t.due(7_000).is_empty(), "inside the grace");
        t.heard_presence(&presence("gw", true), 7_500);
        assert!(
            t.due(9_000).is_empty(),
            "back before the grace ended: no alert at all"
        );
        for at in [9_500, 9_700, 9_900] {
            t.heard_presence(&presence("gw", at == 9_700), at);
        }
        assert!(t.due(10_000).is_empty());
        assert_eq!(
            kinds(&t.due(12_000)),
            [("gw", false)],
            "flapping ended offline: one alert"
        );
        assert!(t.due(13_000).is_empty(), "announced once");
        t.heard_presence(&presence("gw", true), 20_000);
        assert!(t.due(21_000).is_empty());
        let back = t.due(22_000);
        assert_eq!(kinds(&back), [("gw", true)]);
        assert_eq!(back[0].queue_depth, 3);
    }

    #[test]
    fn a_hub_that_did_not_run_forgives_the_silence() {
        let mut t = tracker();
        t.heard_presence(&presence("gw", true), 0);
        // The hub was stopped from 5 s to 65 s.
        t.forgive(60_000);
        assert!(t.due(70_000).is_empty(), "the pause is no silence");
        assert_eq!(
            kinds(&t.due(72_000)),
            [("gw", false)],
            "silent 10 s after it, and the grace"
        );
    }

    #[test]
    fn silence_is_offline() {
        let mut t = tracker();
        t.heard_presence(&presence("gw", true), 0);
        assert!(t.due(11_000).is_empty(), "silent 11 s: inside the grace");
        let off = t.due(12_000);
        assert_eq!(kinds(&off), [("gw", false)]);
        assert!(
            off[0].why.contains("nothing heard for 12s"),
            "{}",
            off[0].why
        );
        t.heard_event("gw", "paris", 13_000);
        assert_eq!(
            kinds(&t.due(15_000)),
            [("gw", true)],
            "an event is a sign of life"
        );
    }

    #[test]
    fn the_store_remembers_edges_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), 0).unwrap();
        let cfg = PresenceConfig {
            silent_after: Duration::from_secs(10),
            grace: Duration::from_secs(2),
            ..PresenceConfig::default()
        };
        let mut t = Tracker::load(&inbox, &cfg, 0).unwrap();
        t.heard_presence(&presence("gw", true), 0);
        t.heard_presence(&presence("quiet", true), 0);
        t.heard_presence(&presence("gw", false), 1_000);
        assert_eq!(kinds(&t.due(3_000)), [("gw", false)]);
        inbox
            .transact(|tx| {
                t.store(tx);
                Ok(())
            })
            .unwrap();
        assert!(t.is_dirty(), "until the caller says it is committed");
        t.stored();
        assert!(!t.is_dirty());
        drop(t);
        // Restarted at 100 s: gw was announced offline, quiet was online.
        let mut t = Tracker::load(&inbox, &cfg, 100_000).unwrap();
        assert!(t.due(105_000).is_empty());
        t.heard_presence(&presence("gw", true), 106_000);
        assert_eq!(kinds(&t.due(108_500)), [("gw", true)]);
        assert_eq!(
            kinds(&t.due(112_000)),
            [("quiet", false)],
            "quiet never came back after the restart"
        );
    }
}
