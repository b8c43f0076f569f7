//! `[[route]] throttle`: at most `max` notifications per `per` for each value of the `key`
//! template; the rest of the interval is folded into one digest sent when it ends ("and 37
//! more logins by deploy on web1 in the last 5m"). An ansible run as a deploy user is 57
//! logins in a minute: one alert and one digest, not 57 alerts.
//!
//! Each interval is a record in the store, written in the same transaction as the events it
//! counts, so a restart neither forgets what was folded nor sends a digest twice. Intervals
//! start at the first event of a key (not on a clock), and their digest is made when the
//! interval ends: by the next event of that key, or by the hub's periodic check.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_proto::{Envelope, EventId};

use crate::inbox::{InboxError, Space, Tx};
use crate::notify::NotifierName;
use crate::template::Template;

const DEFAULT_KEY: &str = "{user}@{hostname}";
const DEFAULT_FORMAT: &str =
    "and {count} more {kind} events by {user} on {hostname} in the last {interval}";

/// `throttle = { … }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// What is counted separately: a template (default `{user}@{hostname}`).
    pub key: Option<String>,
    /// Notifications per interval and key before folding starts.
    pub max: u32,
    /// The interval.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// The digest's message; fields of the last folded event plus `count` and `interval`.
    pub format: Option<String>,
}

/// A validated throttle.
#[derive(Debug, Clone)]
pub struct Throttle {
    key: Template,
    max: u32,
    per_ms: u64,
    /// The digest's message template.
    pub format: Template,
}

impl ThrottleConfig {
    /// Checks the templates and numbers.
    ///
    /// # Errors
    /// `(key, reason)`.
    pub fn validate(self) -> Result<Throttle, (String, String)> {
        let template = |key: &str, t: Option<&str>, default: &str| {
            Template::parse(t.unwrap_or(default)).map_err(|e| (format!("throttle.{key}"), e))
        };
        if self.max == 0 {
            return Err(("throttle.max".into(), "must be at least 1".into()));
        }
        if self.per < Duration::from_secs(1) {
            return Err(("throttle.per".into(), "must be at least 1s".into()));
        }
        Ok(Throttle {
            key: template("key", self.key.as_deref(), DEFAULT_KEY)?,
            format: template("format", self.format.as_deref(), DEFAULT_FORMAT)?,
            max: self.max,
            per_ms: u64::try_from(self.per.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// One key's current interval, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Interval {
    route: usize,
    key: String,
    start_ms: u64,
    end_ms: u64,
    passed: u32,
    folded: u64,
    /// The notifiers the route named when it folded, so a digest reaches them.
    notifiers: Vec<String>,
    /// The last folded event: the digest speaks of its user and host.
    last: Option<Envelope>,
}

/// A digest to send: what an interval folded.
#[derive(Debug, Clone)]
pub struct Digest {
    /// The route whose throttle folded the events.
    pub route: usize,
    /// Its notifiers at the time.
    pub notifiers: Vec<String>,
    /// The last folded event, with `count`, `interval` and `throttle_key` added, and an id
    /// of its own.
    pub envelope: Envelope,
}

impl Throttle {
    /// Whether route `route`'s notification of `e` goes out now (else it is folded). An
    /// interval of this key that has ended is closed first, and its digest returned.
    ///
    /// # Errors
    /// When the store fails.
    pub fn admit(
        &self,
        tx: &mut Tx<'_>,
        route: usize,
        e: &Envelope,
        notifiers: &[NotifierName],
        now_ms: u64,
        salt: &str,
    ) -> Result<(bool, Option<Digest>), InboxError> {
        let key = self.key.render(e, chrono::Utc::now());
        let id = record_id(route, &key);
        let current = tx
            .get(Space::Throttle, &id)?
            .and_then(|v| serde_json::from_slice::<Interval>(&v).ok());
        let (mut interval, digest) = match current {
            Some(i) if now_ms < i.end_ms => (i, None),
            ended => (
                Interval {
                    route,
                    key,
                    start_ms: now_ms,
                    end_ms: now_ms.saturating_add(self.per_ms),
                    passed: 0,
                    folded: 0,
                    notifiers: Vec::new(),
                    last: None,
                },
                ended.and_then(|i| digest(i, salt)),
            ),
        };
        let pass = interval.passed < self.max;
        if pass {
            interval.passed += 1;
        } else {
            interval.folded += 1;
            interval.notifiers = notifiers.iter().map(ToString::to_string).collect();
            interval.last = Some(e.clone());
        }
        tx.put(
            Space::Throttle,
            &id,
            serde_json::to_vec(&interval).unwrap_or_default(),
        );
        Ok((pass, digest))
    }
}

/// Closes every interval that has ended by `now_ms`; returns the digests of those that
/// folded something.
///
/// # Errors
/// When the store fails.
pub fn close_ended(tx: &mut Tx<'_>, now_ms: u64, salt: &str) -> Result<Vec<Digest>, InboxError> {
    let mut out = Vec::new();
    for (id, value) in tx.scan(Space::Throttle)? {
        match serde_json::from_slice::<Interval>(&value) {
            Ok(i) if i.end_ms > now_ms => continue,
            Ok(i) => out.extend(digest(i, salt)),
            Err(error) => tracing::error!(%error, "Unreadable throttle record removed."),
        }
        tx.remove(Space::Throttle, &id);
    }
    Ok(out)
}

/// Intervals open now, and the events they have folded so far.
///
/// # Errors
/// When the store fails.
pub fn pending(inbox: &crate::inbox::Inbox) -> Result<(u64, u64), InboxError> {
    let mut folded = 0;
    let records = inbox.scan(Space::Throttle)?;
    for (_, v) in &records {
        if let Ok(i) = serde_json::from_slice::<Interval>(v) {
            folded += i.folded;
        }
    }
    Ok((records.len() as u64, folded))
}

fn record_id(route: usize, key: &str) -> Vec<u8> {
    let mut id = u32::try_from(route)
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    id.extend_from_slice(key.as_bytes());
    id
}

fn digest(i: Interval, salt: &str) -> Option<Digest> {
    let mut envelope = i.last?;
    if i.folded == 0 {
        return None;
    }
    let interval = humantime::format_duration(Duration::from_millis(
        i.end_ms.saturating_sub(i.start_ms) / 1000 * 1000,
    ))
    .to_string();
    envelope
        .event
        .set("count", i.folded.into())
        .set_str("interval", Some(&interval))
        .set_str("throttle_key", Some(&i.key));
    let start = i.start_ms.to_string();
    let route = i.route.to_string();
    // One id per interval, unpredictable to edges (as the hub's other events).
    envelope.id = EventId::derive_legacy(
        [
            Some("digest"),
            Some(&route),
            Some(&i.key),
            Some(salt),
            Some(&start),
        ],
        envelope.event.tst(),
    );
    Some(Digest {
        route: i.route,
        notifiers: i.notifiers,
        envelope,
    })
}
