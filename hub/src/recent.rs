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

/// A position in the list: the events before it are older.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    received_ms: u64,
    id: EventId,
}

impl Cursor {
    fn key(self) -> [u8; 24] {
        key(self.received_ms, &self.id)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.received_ms, self.id)
    }
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a cursor from a previous page's `next`");
        let (ms, id) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            received_ms: ms.parse().map_err(|_| bad())?,
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
pub fn put(tx: &mut Tx<'_>, e: &Envelope, routing: &Routing, at_ms: u64) {
    let text = |name| e.event.get_str(name).map(str::to_owned);
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
    tx.put(
        Space::Recent,
        &key(at_ms, &e.id),
        serde_json::to_vec(&record).unwrap_or_default(),
    );
}

/// Up to `limit` events older than `before` (or the newest), newest first.
///
/// # Errors
/// When the store fails.
pub fn page(inbox: &Inbox, before: Option<Cursor>, limit: usize) -> Result<Page, InboxError> {
    let before = before.map(Cursor::key);
    let records = inbox.scan_back(Space::Recent, before.as_ref().map(|k| k.as_slice()), limit)?;
    let full = records.len() == limit;
    let mut events = Vec::with_capacity(records.len());
    let mut last = None;
    for (k, v) in records {
        last = Some(k);
        match serde_json::from_slice(&v) {
            Ok(e) => events.push(e),
            Err(error) => tracing::warn!(%error, "Unreadable recent event skipped."),
        }
    }
    let next = last
        .filter(|_| full)
        .and_then(|k| cursor_of(&k))
        .map(|c| c.to_string());
    Ok(Page { events, next })
}

fn key(ms: u64, id: &EventId) -> [u8; 24] {
    let mut k = [0; 24];
    k[..8].copy_from_slice(&ms.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

fn cursor_of(key: &[u8]) -> Option<Cursor> {
    let ms = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let id: [u8; 16] = key.get(8..24)?.try_into().ok()?;
    Some(Cursor {
        received_ms: ms,
        id: EventId::from_bytes(id),
    })
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
                    put(tx, e, &routing, *at);
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn pages_go_from_the_newest_back_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
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
    }

    #[test]
    fn retention_forgets_by_age_then_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
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
            id: EventId::generate(),
        };
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        for junk in ["", "42", "x-00", "42-zz"] {
            assert!(junk.parse::<Cursor>().is_err(), "{junk}");
        }
    }
}
