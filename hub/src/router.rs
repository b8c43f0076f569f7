//! `[[route]]`: which events go to which notifiers, and with which words.
//!
//! A route fires when every key of `match` matches (each key takes a value or a list, any of
//! which may match) and no key of `unless` does. Every route that fires contributes its
//! notifiers, as in mqttwarn, but a notifier receives an event at most once: the first route
//! that names it decides its title and message. A route with a `throttle` may fold an event
//! into a later digest instead ([`crate::throttle`]); `first_seen` is what
//! [`crate::known`] says of the login's source.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Deserialize;
use warren_proto::{Envelope, Kind};

use crate::config::NotifierSpec;
use crate::inbox::{Deliveries, InboxError, Tx};
use crate::known::KnownSourcesConfig;
use crate::notify::{Notification, NotifierName};
use crate::stats::Stats;
use crate::template::Template;
use crate::throttle::{self, Digest, Throttle, ThrottleConfig};
use crate::trace::{RouteOutcome, Routing};

const DEFAULT_TITLE: &str = "{kind} on {hostname}";
/// What a test event's title and message start with.
pub const TEST_MARKER: &str = "[test] ";
const DEFAULT_FORMAT: &str =
    "{user} {kind} on {hostname} ({service}) from {rhost} at {tstamp} [{site}/{edge}]";

/// One value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `key = "value"`.
    One(String),
    /// `key = ["a", "b"]`.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// The conditions of `match` or `unless`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionsConfig {
    /// `login`, `logout`, `alert`, …
    pub kind: Option<OneOrMany>,
    /// Site of the edge.
    pub site: Option<OneOrMany>,
    /// Edge id.
    pub edge: Option<OneOrMany>,
    /// Event host name.
    pub hostname: Option<OneOrMany>,
    /// PAM user.
    pub user: Option<OneOrMany>,
    /// PAM service.
    pub service: Option<OneOrMany>,
    /// PAM tty.
    pub tty: Option<OneOrMany>,
    /// Remote host, exact.
    pub rhost: Option<OneOrMany>,
    /// Remote host, inside one of these networks.
    pub rhost_cidr: Option<Vec<IpNet>>,
    /// A login from a source network never seen for this user (on this host or site).
    pub first_seen: Option<bool>,
}

/// A route as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Conditions that must all hold.
    #[serde(default, rename = "match")]
    pub matches: ConditionsConfig,
    /// Conditions any of which vetoes the route.
    pub unless: Option<ConditionsConfig>,
    /// Notifier names.
    pub notify: Vec<NotifierName>,
    /// Title template.
    pub title: Option<String>,
    /// Message template.
    pub format: Option<String>,
    /// Priority template (rendered, then read as an integer; empty means none).
    pub priority: Option<String>,
    /// At most `max` per `per` for each `key`, the rest folded into a digest.
    pub throttle: Option<ThrottleConfig>,
}

/// Parsed conditions.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    fields: Vec<(&'static str, Vec<String>)>,
    rhost_cidr: Vec<IpNet>,
    first_seen: Option<bool>,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    matches: Conditions,
    unless: Option<Conditions>,
    /// Notifiers it fires.
    pub notify: Vec<NotifierName>,
    title: Template,
    format: Template,
    priority: Option<Template>,
    throttle: Option<Throttle>,
}

impl RouteConfig {
    /// Checks notifier names and templates.
    ///
    /// # Errors
    /// `(key, reason)` for the first problem.
    pub fn validate(
        self,
        notifiers: &BTreeMap<NotifierName, NotifierSpec>,
    ) -> Result<Route, (String, String)> {
        if self.notify.is_empty() {
            return Err(("notify".into(), "names no notifier".into()));
        }
        for n in &self.notify {
            if !notifiers.contains_key(n) {
                let known: Vec<&str> = notifiers.keys().map(NotifierName::as_str).collect();
                return Err((
                    "notify".into(),
                    format!("no notifier named `{n}` (defined: {})", known.join(", ")),
                ));
            }
        }
        let template = |key: &str, t: Option<&str>, default: &str| {
            Template::parse(t.unwrap_or(default)).map_err(|e| (key.to_owned(), e))
        };
        Ok(Route {
            title: template("title", self.title.as_deref(), DEFAULT_TITLE)?,
            format: template("format", self.format.as_deref(), DEFAULT_FORMAT)?,
            priority: self
                .priority
                .as_deref()
                .map(|p| template("priority", Some(p), ""))
                .transpose()?,
            throttle: self.throttle.map(ThrottleConfig::validate).transpose()?,
            matches: self.matches.into(),
            unless: self.unless.map(Into::into),
            notify: self.notify,
        })
    }
}

impl From<ConditionsConfig> for Conditions {
    fn from(c: ConditionsConfig) -> Self {
        let fields = [
            ("kind", c.kind),
            ("site", c.site),
            ("edge", c.edge),
            ("hostname", c.hostname),
            ("user", c.user),
            ("service", c.service),
            ("tty", c.tty),
            ("rhost", c.rhost),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v.into_vec())))
        .collect();
        Self {
            fields,
            rhost_cidr: c.rhost_cidr.unwrap_or_default(),
            first_seen: c.first_seen,
        }
    }
}

impl Conditions {
    /// Each condition's key and outcome for `e`, whose source is `first_seen` (if it is a
    /// login). A test event's kind matches `test` and `login` alike, so it takes a login's
    /// routes unless a route says otherwise.
    fn outcomes<'a>(
        &'a self,
        e: &'a Envelope,
        first_seen: Option<bool>,
    ) -> impl Iterator<Item = (&'static str, bool)> + 'a {
        let fields = self.fields.iter().map(|(key, wanted)| {
            let value = match *key {
                "kind" => Some(e.event.kind().as_str()),
                "site" => Some(e.site.as_str()),
                "edge" => Some(e.edge.as_str()),
                other => e.event.get_str(other),
            };
            let test = *key == "kind" && e.event.kind() == &Kind::Test;
            let holds = value.is_some_and(|v| {
                wanted
                    .iter()
                    .any(|w| w == v || (test && w == Kind::Login.as_str()))
            });
            (*key, holds)
        });
        let cidr = (!self.rhost_cidr.is_empty()).then(|| {
            let holds = e
                .event
                .get_str("rhost")
                .and_then(|r| r.parse::<IpAddr>().ok())
                .is_some_and(|ip| {
                    self.rhost_cidr
                        .iter()
                        .any(|n| n.contains(&ip.to_canonical()))
                });
            ("rhost_cidr", holds)
        });
        let first = self
            .first_seen
            .map(|want| ("first_seen", first_seen == Some(want)));
        fields.chain(cidr).chain(first)
    }

    /// The first condition whose outcome is `outcome`.
    fn first(&self, e: &Envelope, first_seen: Option<bool>, outcome: bool) -> Option<&'static str> {
        self.outcomes(e, first_seen)
            .find(|&(_, holds)| holds == outcome)
            .map(|(key, _)| key)
    }
}

/// The event's value for a condition's `key`, as a trace shows it.
fn value_of(e: &Envelope, key: &str, first_seen: Option<bool>) -> Option<String> {
    match key {
        "kind" => Some(e.event.kind().to_string()),
        "site" => Some(e.site.clone()),
        "edge" => Some(e.edge.clone()),
        "rhost_cidr" => e.event.get_str("rhost").map(str::to_owned),
        "first_seen" => first_seen.map(|f| f.to_string()),
        other => e.event.get_str(other).map(str::to_owned),
    }
}

impl Route {
    /// Why this route does not fire for `e`, if it does not: a failed `match` condition or a
    /// holding `unless` one.
    fn refusal(&self, i: usize, e: &Envelope, first_seen: Option<bool>) -> Option<RouteOutcome> {
        let value = |key: &str| value_of(e, key, first_seen);
        if let Some(key) = self.matches.first(e, first_seen, false) {
            return Some(RouteOutcome::Unmatched {
                route: i,
                condition: key.into(),
                value: value(key),
            });
        }
        let key = self.unless.as_ref()?.first(e, first_seen, true)?;
        Some(RouteOutcome::Vetoed {
            route: i,
            condition: key.into(),
            value: value(key),
        })
    }

    fn render(&self, e: &Envelope, now: DateTime<Utc>, extra: &[(&str, &str)]) -> Notification {
        self.render_as(e, now, extra, &self.format)
    }

    /// Renders a notification; a test event's title and message say that it is one.
    fn render_as(
        &self,
        e: &Envelope,
        now: DateTime<Utc>,
        extra: &[(&str, &str)],
        format: &Template,
    ) -> Notification {
        let marked = |text: String| {
            if e.event.kind() == &Kind::Test {
                format!("{TEST_MARKER}{text}")
            } else {
                text
            }
        };
        Notification {
            title: marked(self.title.render_with(e, now, extra)),
            message: marked(format.render_with(e, now, extra)),
            priority: self
                .priority
                .as_ref()
                .and_then(|p| p.render_with(e, now, extra).trim().parse().ok())
                .or_else(|| e.event.get("priority").and_then(serde_json::Value::as_i64)),
            envelope: e.clone(),
        }
    }
}

/// The routes, and what they need to decide: the known sources and the installation's salt.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    known: KnownSourcesConfig,
    salt: String,
    stats: Arc<Stats>,
}

impl Router {
    /// A router for `routes`; digests get ids derived with `salt`.
    pub fn new(
        routes: Vec<Route>,
        known: KnownSourcesConfig,
        salt: String,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            routes,
            known,
            salt,
            stats,
        }
    }

    /// Every notification `e` causes now: at most one per notifier, in route order, with
    /// the digests of throttle intervals it closes; and what each route made of it.
    ///
    /// # Errors
    /// When the store fails.
    pub fn route(
        &self,
        e: &Envelope,
        now: DateTime<Utc>,
        tx: &mut Tx<'_>,
    ) -> Result<(Deliveries, Routing), InboxError> {
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let first_seen = self.known.observe(tx, e, now_ms)?;
        let fact = first_seen
            .map(|f| if f { "true" } else { "false" })
            .unwrap_or_default();
        let extra = [("first_seen", fact)];
        let test = e.event.kind() == &Kind::Test;
        let mut out: Deliveries = Vec::new();
        // Kept apart: a digest of an ended interval must not take the event's own place.
        let mut digests: Deliveries = Vec::new();
        let mut routing = Routing {
            first_seen,
            routes: Vec::with_capacity(self.routes.len()),
        };
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(refusal) = r.refusal(i, e, first_seen) {
                routing.routes.push(refusal);
                continue;
            }
            // A test neither spends a throttle's budget nor ends up in its digest.
            if let Some(t) = r.throttle.as_ref().filter(|_| !test) {
                let (pass, digest) = t.admit(tx, i, e, &r.notify, now_ms, &self.salt)?;
                if let Some(d) = digest {
                    digests.extend(self.digest(d, now));
                }
                if !pass {
                    Stats::add(&self.stats.folded, 1);
                    routing.routes.push(RouteOutcome::Folded { route: i });
                    continue;
                }
            }
            let mut notifiers = Vec::new();
            for name in &r.notify {
                if !out.iter().any(|(n, _)| n == name) {
                    out.push((name.clone(), r.render(e, now, &extra)));
                    notifiers.push(name.to_string());
                }
            }
            routing.routes.push(RouteOutcome::Fired {
                route: i,
                notifiers,
            });
        }
        out.append(&mut digests);
        Ok((out, routing))
    }

    /// The digests of throttle intervals that have ended by `now`.
    ///
    /// # Errors
    /// When the store fails.
    pub fn close_intervals(
        &self,
        now: DateTime<Utc>,
        tx: &mut Tx<'_>,
    ) -> Result<Deliveries, InboxError> {
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        Ok(throttle::close_ended(tx, now_ms, &self.salt)?
            .into_iter()
            .flat_map(|d| self.digest(d, now))
            .collect())
    }

    /// A digest's deliveries, with its route's title and throttle format — to the
    /// notifiers it names that still exist.
    fn digest(&self, d: Digest, now: DateTime<Utc>) -> Deliveries {
        let Some(route) = self.routes.get(d.route) else {
            tracing::warn!(
                route = d.route,
                "A digest's route is gone from the config; digest dropped."
            );
            return Vec::new();
        };
        let Some(format) = route.throttle.as_ref().map(|t| &t.format) else {
            tracing::warn!(
                route = d.route,
                "A digest's route has no throttle any more; digest dropped."
            );
            return Vec::new();
        };
        Stats::add(&self.stats.digests, 1);
        let n = route.render_as(&d.envelope, now, &[], format);
        route
            .notify
            .iter()
            .filter(|name| d.notifiers.iter().any(|n| n == name.as_str()))
            .map(|name| (name.clone(), n.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HubConfig;

    fn envelope(user: &str, rhost: &str, service: &str) -> Envelope {
        let mut e = crate::testing::envelope(user);
        e.event
            .set_str("rhost", Some(rhost))
            .set_str("service", Some(service));
        e
    }

    fn routes(toml: &str) -> Router {
        let text = format!(
            "[broker]\nlisten_local = \"127.0.0.1:1883\"\n[notifier.phone]\ntype = \"log\"\n[notifier.audit]\ntype = \"log\"\n{toml}"
        );
        let cfg = HubConfig::parse(std::path::Path::new("hub.toml"), &text).unwrap();
        Router::new(cfg.routes, cfg.known_sources, "salt".into(), Arc::default())
    }

    /// Routes `e` at `now` in a transaction of a fresh inbox.
    fn route(r: &Router, e: &Envelope, now: DateTime<Utc>) -> Deliveries {
        let dir = tempfile::tempdir().unwrap();
        let inbox = crate::inbox::Inbox::open(dir.path(), 0).unwrap();
        inbox.transact(|tx| r.route(e, now, tx)).unwrap().0.0
    }

    fn names(out: &[(NotifierName, Notification)]) -> Vec<&str> {
        out.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn match_unless_and_cidr() {
        let r = routes(
            r#"
[[route]]
match = { kind = "login", service = ["sshd", "login"] }
unless = { rhost_cidr = ["192.168.1.0/24"], user = ["backup"] }
notify = ["phone"]
title = "{service} login on {hostname}"
"#,
        );
        let now = Utc::now();
        assert_eq!(
            names(&route(&r, &envelope("dan", "203.0.113.9", "sshd"), now)),
            ["phone"]
        );
        assert!(
            route(&r, &envelope("dan", "192.168.1.20", "sshd"), now).is_empty(),
            "LAN"
        );
        assert!(
            route(&r, &envelope("backup", "203.0.113.9", "sshd"), now).is_empty(),
            "user"
        );
        assert!(
            route(&r, &envelope("dan", "203.0.113.9", "cron"), now).is_empty(),
            "service"
        );
        assert_eq!(
            route(&r, &envelope("dan", "::ffff:203.0.113.9", "login"), now)[0]
                .1
                .title,
            "login login on vm"
        );
    }

    #[test]
    fn every_route_fires_but_each_notifier_once() {
        let r = routes(
            r#"
[[route]]
notify = ["phone", "audit"]
format = "first {user}"
[[route]]
match = { user = "dan" }
notify = ["audit", "phone"]
format = "second"
"#,
        );
        let out = route(&r, &envelope("dan", "x", "sshd"), Utc::now());
        assert_eq!(names(&out), ["phone", "audit"]);
        assert!(out.iter().all(|(_, n)| n.message == "first dan"));
    }

    #[test]
    fn a_throttle_folds_the_rest_of_its_interval_into_one_digest() {
        let r = routes(
            r#"
[[route]]
match = { kind = "login" }
notify = ["phone"]
throttle = { max = 3, per = "5m" }
[[route]]
notify = ["audit"]
"#,
        );
        let dir = tempfile::tempdir().unwrap();
        let inbox = crate::inbox::Inbox::open(dir.path(), 0).unwrap();
        let t0 = Utc::now();
        let mut phone = 0;
        for i in 0..100 {
            let mut e = envelope("deploy", "203.0.113.9", "sshd");
            e.id = warren_proto::EventId::from_bytes([i; 16]);
            let at = t0 + chrono::TimeDelta::milliseconds(500 * i64::from(i));
            let out = inbox.transact(|tx| r.route(&e, at, tx)).unwrap().0.0;
            assert!(
                out.iter().any(|(n, _)| n.as_str() == "audit"),
                "other routes unaffected"
            );
            phone += out.iter().filter(|(n, _)| n.as_str() == "phone").count();
        }
        assert_eq!(phone, 3);
        assert_eq!(
            r.stats.folded.load(std::sync::atomic::Ordering::Relaxed),
            97
        );
        let close = |at| inbox.transact(|tx| r.close_intervals(at, tx)).unwrap().0;
        assert!(
            close(t0 + chrono::TimeDelta::minutes(4)).is_empty(),
            "still open"
        );
        let digests = close(t0 + chrono::TimeDelta::seconds(301));
        assert_eq!(names(&digests), ["phone"]);
        assert_eq!(
            digests[0].1.message,
            "and 97 more login events by deploy on vm in the last 5m"
        );
        assert_eq!(digests[0].1.envelope.event.get("count"), Some(&97.into()));
        assert!(
            close(t0 + chrono::TimeDelta::minutes(10)).is_empty(),
            "sent once"
        );
    }

    #[test]
    fn the_event_that_ends_an_interval_is_notified_beside_its_digest() {
        let r = routes(
            r#"
[[route]]
notify = ["phone"]
format = "{user}"
throttle = { max = 1, per = "5m" }
"#,
        );
        let dir = tempfile::tempdir().unwrap();
        let inbox = crate::inbox::Inbox::open(dir.path(), 0).unwrap();
        let t0 = Utc::now();
        let route = |n: u8, at| {
            let mut e = envelope("deploy", "203.0.113.9", "sshd");
            e.id = warren_proto::EventId::from_bytes([n; 16]);
            inbox.transact(|tx| r.route(&e, at, tx)).unwrap().0.0
        };
        assert_eq!(names(&route(1, t0)), ["phone"]);
        assert!(
            route(2, t0 + chrono::TimeDelta::seconds(1)).is_empty(),
            "folded"
        );
        // Before the tick closed the interval, the next event does, and is notified too.
        let out = route(3, t0 + chrono::TimeDelta::seconds(301));
        let messages: Vec<&str> = out.iter().map(|(_, n)| n.message.as_str()).collect();
        assert_eq!(names(&out), ["phone", "phone"]);
        assert_eq!(messages[0], "deploy");
        assert!(messages[1].starts_with("and 1 more login"), "{messages:?}");
    }

    #[test]
    fn first_seen_routes_and_renders() {
        let r = routes(
            r#"
[[route]]
match = { first_seen = true }
notify = ["phone"]
priority = "2"
format = "new source {rhost} for {user} ({first_seen})"
[[route]]
notify = ["phone", "audit"]
format = "{user} from {rhost} ({first_seen})"
"#,
        );
        let dir = tempfile::tempdir().unwrap();
        let inbox = crate::inbox::Inbox::open(dir.path(), 0).unwrap();
        let now = Utc::now();
        let route = |rhost: &str| {
            let e = envelope("dan", rhost, "sshd");
            inbox.transact(|tx| r.route(&e, now, tx)).unwrap().0.0
        };
        let first = route("203.0.113.9");
        assert_eq!(first[0].1.message, "new source 203.0.113.9 for dan (true)");
        assert_eq!(first[0].1.priority, Some(2));
        let again = route("203.0.113.10");
        assert_eq!(names(&again), ["phone", "audit"]);
        assert_eq!(again[0].1.message, "dan from 203.0.113.10 (false)");
    }

    #[test]
    fn a_test_event_takes_a_logins_routes_marked_and_leaves_no_source_behind() {
        let r = routes(
            r#"
[[route]]
match = { kind = "login", first_seen = true }
notify = ["phone"]
format = "new source {rhost}"
[[route]]
match = { kind = "login" }
unless = { kind = "test" }
notify = ["audit"]
throttle = { max = 1, per = "1h" }
"#,
        );
        let dir = tempfile::tempdir().unwrap();
        let inbox = crate::inbox::Inbox::open(dir.path(), 0).unwrap();
        let now = Utc::now();
        let route = |kind: Kind| {
            let mut e = envelope("dan", "203.0.113.9", "sshd");
            if kind == Kind::Test {
                let mut test = warren_proto::Event::new(Kind::Test, e.event.tst());
                for (k, v) in e.event.fields() {
                    test.set(k, v.clone());
                }
                e.event = test;
            }
            inbox.transact(|tx| r.route(&e, now, tx)).unwrap().0.0
        };
        for _ in 0..2 {
            let out = route(Kind::Test);
            assert_eq!(
                names(&out),
                ["phone"],
                "a login's route; `unless kind = test` vetoes"
            );
            assert_eq!(out[0].1.message, "[test] new source 203.0.113.9");
            assert!(
                out[0].1.title.starts_with(TEST_MARKER),
                "{}",
                out[0].1.title
            );
        }
        let out = route(Kind::Login);
        assert_eq!(
            names(&out),
            ["phone", "audit"],
            "the tests made no source known and spent no throttle budget"
        );
        assert_eq!(out[0].1.message, "new source 203.0.113.9");
        assert!(route(Kind::Login).is_empty(), "the login did both");
    }

    #[test]
    fn routing_says_why_each_route_did_or_did_not_fire() {
        let r = routes(
            r#"
[[route]]
match = { service = "login" }
notify = ["phone"]
[[route]]
unless = { rhost_cidr = ["192.168.1.0/24"] }
notify = ["phone"]
[[route]]
match = { user = "dan" }
notify = ["audit"]
throttle = { max = 1, per = "1h" }
[[route]]
notify = ["phone", "audit"]
"#,
        );
        let dir = tempfile::tempdir().unwrap();
        let inbox = crate::inbox::Inbox::open(dir.path(), 0).unwrap();
        let now = Utc::now();
        let routing = |user: &str, rhost: &str| {
            let e = envelope(user, rhost, "sshd");
            inbox.transact(|tx| r.route(&e, now, tx)).unwrap().0.1
        };
        let _ = routing("dan", "192.168.1.20");
        let second = routing("dan", "192.168.1.20");
        assert_eq!(second.first_seen, Some(false));
        assert_eq!(
            second.routes,
            [
                RouteOutcome::Unmatched {
                    route: 0,
                    condition: "service".into(),
                    value: Some("sshd".into())
                },
                RouteOutcome::Vetoed {
                    route: 1,
                    condition: "rhost_cidr".into(),
                    value: Some("192.168.1.20".into())
                },
                RouteOutcome::Folded { route: 2 },
                RouteOutcome::Fired {
                    route: 3,
                    notifiers: vec!["phone".into(), "audit".into()]
                },
            ]
        );
        let other = routing("eve", "203.0.113.9");
        assert_eq!(
            other.routes[1..],
            [
                RouteOutcome::Fired {
                    route: 1,
                    notifiers: vec!["phone".into()]
                },
                RouteOutcome::Unmatched {
                    route: 2,
                    condition: "user".into(),
                    value: Some("eve".into())
                },
                RouteOutcome::Fired {
                    route: 3,
                    notifiers: vec!["audit".into()]
                },
            ]
        );
    }

    #[test]
    fn validation_names_the_route() {
        let bad = "[broker]\nlisten_local = \"127.0.0.1:1\"\n[notifier.phone]\ntype = \"log\"\n[[route]]\nnotify = [\"phone\"]\n[[route]]\nnotify = [\"pager\"]\n";
        let err = HubConfig::parse(std::path::Path::new("hub.toml"), bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("route[1].notify") && err.contains("pager"),
            "{err}"
        );
        let bad = bad.replace("[\"pager\"]", "[\"phone\"]\ntitle = \"{oops\"");
        let err = HubConfig::parse(std::path::Path::new("hub.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("route[1].title"), "{err}");
    }
}
