//! `[[route]]`: which events go to which notifiers, and with which words.
//!
//! A route fires when every key of `match` matches (each key takes a value or a list, any of
//! which may match) and no key of `unless` does. Every route that fires contributes its
//! notifiers, as in mqttwarn, but a notifier receives an event at most once: the first route
//! that names it decides its title and message.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Deserialize;
use warren_proto::Envelope;

use crate::config::NotifierSpec;
use crate::notify::{Notification, NotifierName};
use crate::template::Template;

const DEFAULT_TITLE: &str = "{kind} on {hostname}";
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
}

/// Parsed conditions.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    fields: Vec<(&'static str, Vec<String>)>,
    rhost_cidr: Vec<IpNet>,
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
        }
    }
}

impl Conditions {
    /// Each condition's outcome for `e`.
    fn outcomes<'a>(&'a self, e: &'a Envelope) -> impl Iterator<Item = bool> + 'a {
        let fields = self.fields.iter().map(|(key, wanted)| {
            let value = match *key {
                "kind" => Some(e.event.kind().as_str()),
                "site" => Some(e.site.as_str()),
                "edge" => Some(e.edge.as_str()),
                other => e.event.get_str(other),
            };
            value.is_some_and(|v| wanted.iter().any(|w| w == v))
        });
        let cidr = (!self.rhost_cidr.is_empty()).then(|| {
            e.event
                .get_str("rhost")
                .and_then(|r| r.parse::<IpAddr>().ok())
                .is_some_and(|ip| {
                    self.rhost_cidr
                        .iter()
                        .any(|n| n.contains(&ip.to_canonical()))
                })
        });
        fields.chain(cidr)
    }

    fn all(&self, e: &Envelope) -> bool {
        self.outcomes(e).all(|b| b)
    }

    fn any(&self, e: &Envelope) -> bool {
        self.outcomes(e).any(|b| b)
    }
}

impl Route {
    /// Whether this route fires for `e`.
    pub fn fires(&self, e: &Envelope) -> bool {
        self.matches.all(e) && !self.unless.as_ref().is_some_and(|u| u.any(e))
    }

    fn render(&self, e: &Envelope, now: DateTime<Utc>) -> Notification {
        Notification {
            title: self.title.render(e, now),
            message: self.format.render(e, now),
            priority: self
                .priority
                .as_ref()
                .and_then(|p| p.render(e, now).trim().parse().ok())
                .or_else(|| e.event.get("priority").and_then(serde_json::Value::as_i64)),
            envelope: e.clone(),
        }
    }
}

/// Every notification an event causes: at most one per notifier, in route order.
pub fn route(
    routes: &[Route],
    e: &Envelope,
    now: DateTime<Utc>,
) -> Vec<(NotifierName, Notification)> {
    let mut out: Vec<(NotifierName, Notification)> = Vec::new();
    for r in routes.iter().filter(|r| r.fires(e)) {
        for name in &r.notify {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.clone(), r.render(e, now)));
            }
        }
    }
    out
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

    fn routes(toml: &str) -> Vec<Route> {
        let text = format!(
            "[broker]\nlisten_local = \"127.0.0.1:1883\"\n[notifier.phone]\ntype = \"log\"\n[notifier.audit]\ntype = \"log\"\n{toml}"
        );
        HubConfig::parse(std::path::Path::new("hub.toml"), &text)
            .unwrap()
            .routes
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
