//! The newest events, for the hub's page and `/api/v1/events`: a small record per new event,
//! written in the transaction that records the event (so the page never shows one the hub has
//! not made durable, nor misses one it has), kept for `[web] keep` and at most
//! `[web] keep_events` — the store, not a log file, is where the page reads them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_proto::{Envelope, EventId, Kind};

use crate::inbox::{Inbox, InboxError, Space, Tx};
use crate::trace::{RouteOutcome, Routing};

/// The most bytes of each text field kept (an alert's message can be as long as a datagram).
const MAX_TEXT: usize = 1024;

/// What the page shows of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentEvent {
    /// Its id (for `hub trace`).
    pub id: EventId,
    /// When the hub recorded it, ms since the epoch.
    pub received_ms: u64,
    /// The event's own time (`tst`), seconds since the epoch.
    pub tst: i64,
    /// `login`, `alert`, `edge_offline`…
    pub kind: String,
    /// The site it came from.
    pub site: String,
    /// The edge that forwarded it.
    pub edge: String,
    /// The host it happened on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Who logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// From where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rhost: Option<String>,
    /// Through which PAM service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// An alert's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// An alert's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a login: whether its source was new for its user ([`crate::known`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<bool>,
    /// The notifiers its routes gave it to (digests aside).
    #[serde(default)]
    pub notified: Vec<String>,
}

/// An event's place in the list, which is also its key in the store: when the hub received
/// it, then a number that grows with each record (the events of one commit share their
/// millisecond), then its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    received_ms: u64,
    seq: u64,
    id: EventId,
}

impl Cursor {
    fn key(self) -> [u8; 32] {
        let mut k = [0; 32];
        k[..8].copy_from_slice(&self.received_ms.to_be_bytes());
        k[8..16].copy_from_slice(&self.seq.to_be_bytes());
        k[16..].copy_from_slice(self.id.as_bytes());
        k
    }

    fn of_key(key: &[u8]) -> Option<Self> {
        let int =
            |r: std::ops::Range<usize>| Some(u64::from_be_bytes(key.get(r)?.try_into().ok()?));
        Some(Self {
            received_ms: int(0..8)?,
            seq: int(8..16)?,
            id: EventId::from_bytes(key.get(16..32)?.try_into().ok()?),
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.received_ms, self.seq, self.id)
    }
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a cursor from a previous page's `next`");
        let mut parts = s.splitn(3, '-');
        let mut next = || parts.next().ok_or_else(bad);
        let (ms, seq, id) = (next()?, next()?, next()?);
        Ok(Self {
            received_ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// One page of events, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The events.
    pub events: Vec<RecentEvent>,
    /// Where the next (older) page starts, if there may be one.
    pub next: Option<String>,
}

/// How long events are kept, and how many at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Age.
    pub keep: Duration,
    /// Count.
    pub keep_events: u64,
}

impl Retention {
    /// Keeps nothing: the page is off, so what it would show is forgotten.
    pub const NONE: Self = Self {
        keep: Duration::ZERO,
        keep_events: 0,
    };

    /// Forgets what is older than `keep` at `now_ms`, then the oldest beyond `keep_events`.
    ///
    /// # Errors
    /// When the store fails.
    pub fn prune(&self, inbox: &Inbox, now_ms: u64) -> Result<u64, InboxError> {
        let keep_ms = u64::try_from(self.keep.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms.saturating_sub(keep_ms).to_be_bytes();
        inbox.trim_space(Space::Recent, &cutoff, self.keep_events)
    }
}

/// Records `e`, which `routing` routed, as received at `at_ms`.
///
/// # Errors
/// When the store fails.
pub fn put(tx: &mut Tx<'_>, e: &Envelope, routing: &Routing, at_ms: u64) -> Result<(), InboxError> {
    let text = |name| e.event.get_str(name).map(|v| clip(v).to_owned());
    let login = matches!(e.event.kind(), Kind::Login | Kind::Logout | Kind::Test);
    let record = RecentEvent {
        id: e.id,
        received_ms: at_ms,
        tst: e.event.tst(),
        kind: e.event.kind().as_str().to_owned(),
        site: e.site.clone(),
        edge: e.edge.clone(),
        host: text("hostname"),
        user: text("user"),
        rhost: text("rhost"),
        service: text("service"),
        // A login's title and message are whatever a script set; the page shows its fields.
        title: text("title").filter(|_| !login),
        message: text("message").filter(|_| !login),
        first_seen: routing.first_seen,
        notified: routing
            .routes
            .iter()
            .flat_map(|r| match r {
                RouteOutcome::Fired { notifiers, .. } => notifiers.as_slice(),
                _ => &[],
            })
            .cloned()
            .collect(),
    };
    let at = Cursor {
        received_ms: at_ms,
        seq: tx.next_id()?,
        id: e.id,
    };
    tx.put(
        Space::Recent,
        &at.key(),
        serde_json::to_vec(&record).unwrap_or_default(),
    );
    Ok(())
}

/// `text` cut to [`MAX_TEXT`] bytes: the list keeps thousands of events.
fn clip(text: &str) -> &str {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Up to `limit` events older than `before` (or the newest), newest first.
///
/// # Errors
/// When the store fails.
pub fn page(inbox: &Inbox, before: Option<Cursor>, limit: usize) -> Result<Page, InboxError> {
    let before = before.map(Cursor::key);
    // One more than asked: whether there is a next page, without an empty one at the end.
    let mut records = inbox.scan_back(
        Space::Recent,
        before.as_ref().map(|k| k.as_slice()),
        limit + 1,
    )?;
    let more = records.len() > limit;
    records.truncate(limit);
    let next = records
        .last()
        .filter(|_| more)
        .and_then(|(k, _)| Cursor::of_key(k))
        .map(|c| c.to_string());
    let mut events = Vec::with_capacity(records.len());
    for (_, v) in records {
        match serde_json::from_slice(&v) {
            Ok(e) => events.push(e),
            Err(error) => tracing::warn!(%error, "Unreadable recent event skipped."),
        }
    }
    Ok(Page { events, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::RouteOutcome;
    use warren_proto::Event;

    fn login(user: &str, tst: i64) -> Envelope {
        let mut event = Event::new(Kind::Login, tst);
        event
            .set_str("hostname", Some("web"))
            .set_str("user", Some(user))
            .set_str("rhost", Some("192.0.2.7"))
            .set_str("service", Some("sshd"))
            .set_str("title", Some("not shown for a login"));
        Envelope {
            v: warren_proto::envelope::VERSION,
            id: EventId::generate(),
            site: "paris".into(),
            edge: "gw".into(),
            received: 0,
            remote: String::new(),
            signed: false,
            event,
        }
    }

    fn store(inbox: &Inbox, events: &[(Envelope, u64)]) {
        inbox
            .transact(|tx| {
                for (e, at) in events {
                    let routing = Routing {
                        first_seen: Some(true),
                        routes: vec![RouteOutcome::Fired {
                            route: 0,
                            notifiers: vec!["pager".into()],
                        }],
                    };
                    put(tx, e, &routing, *at)?;
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn pages_go_from_the_newest_back_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), 0).unwrap();
        let events: Vec<_> = (0..5)
            .map(|i| (login(&format!("u{i}"), 1_795_000_000 + i), 1000 + i as u64))
            .collect();
        store(&inbox, &events);

        let first = page(&inbox, None, 2).unwrap();
        let users = |p: &Page| {
            p.events
                .iter()
                .map(|e| e.user.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(users(&first), ["u4", "u3"]);
        let e = &first.events[0];
        assert_eq!(
            (
                e.kind.as_str(),
                e.site.as_str(),
                e.host.as_deref(),
                e.rhost.as_deref()
            ),
            ("login", "paris", Some("web"), Some("192.0.2.7"))
        );
        assert_eq!(
            (e.first_seen, e.notified.as_slice()),
            (Some(true), &["pager".to_owned()][..])
        );
        assert_eq!(
            (e.tst, e.received_ms, e.title.as_deref()),
            (1_795_000_004, 1004, None)
        );

        let cursor: Cursor = first.next.as_deref().unwrap().parse().unwrap();
        let second = page(&inbox, Some(cursor), 2).unwrap();
        assert_eq!(users(&second), ["u2", "u1"]);
        let third = page(&inbox, second.next.unwrap().parse().ok(), 2).unwrap();
        assert_eq!(users(&third), ["u0"]);
        assert_eq!(third.next, None, "a short page is the last");
        let exact = page(&inbox, None, 5).unwrap();
        assert_eq!(
            (exact.events.len(), exact.next),
            (5, None),
            "so is one that ends it"
        );
    }

    #[test]
    fn one_commits_events_keep_their_order_and_alerts_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), 0).unwrap();
        let events: Vec<_> = (0..20).map(|i| (login(&format!("u{i}"), 0), 7)).collect();
        store(&inbox, &events);
        let listed: Vec<_> = page(&inbox, None, 100)
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.user.unwrap())
            .collect();
        let sent: Vec<_> = (0..20).rev().map(|i| format!("u{i}")).collect();
        assert_eq!(listed, sent, "newest first, in one millisecond too");

        let mut alert = login("x", 0);
        alert.event = warren_proto::Event::new(Kind::Alert, 0);
        alert.event.set_str("message", Some(&"é".repeat(2000)));
        store(&inbox, &[(alert, 8)]);
        let kept = page(&inbox, None, 1).unwrap().events[0]
            .message
            .clone()
            .unwrap();
        assert_eq!(kept.len(), MAX_TEXT, "cut at a character boundary");
    }

    #[test]
    fn retention_forgets_by_age_then_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), 0).unwrap();
        let events: Vec<_> = (0..10)
            .map(|i| (login(&format!("u{i}"), 0), 10_000 + 1000 * i as u64))
            .collect();
        store(&inbox, &events);
        let keep = |secs, keep_events| Retention {
            keep: Duration::from_secs(secs),
            keep_events,
        };
        // At 20 s, 8 s back is 12 s: the events at 10 and 11 s go.
        assert_eq!(keep(8, 100).prune(&inbox, 20_000).unwrap(), 2);
        assert_eq!(keep(8, 5).prune(&inbox, 20_000).unwrap(), 3);
        let left = page(&inbox, None, 100).unwrap();
        assert_eq!(left.events.len(), 5);
        assert_eq!(left.events[4].user.as_deref(), Some("u5"));
        assert_eq!(Retention::NONE.prune(&inbox, 20_000).unwrap(), 5);
        assert!(page(&inbox, None, 100).unwrap().events.is_empty());
    }

    #[test]
    fn a_cursor_round_trips_and_junk_is_refused() {
        let c = Cursor {
            received_ms: 42,
            seq: 7,
            id: EventId::generate(),
        };
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        assert_eq!(Cursor::of_key(&c.key()), Some(c));
        for junk in [
            "",
            "42",
            "42-7",
            "x-7-00",
            "42-7-zz",
            &format!("42-{}", EventId::generate()),
        ] {
            assert!(junk.parse::<Cursor>().is_err(), "{junk}");
        }
    }
}
