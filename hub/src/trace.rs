//! `hub trace ID`: what the hub did with one event — when it arrived and from which edge,
//! whether it was a duplicate, what each route made of it, and every delivery attempt to the
//! end. The steps are kept in the inbox next to the event's dedup record and forgotten with it
//! (`[dedup] window`), so a trace costs no second retention policy.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use warren_daemon::cli::{local_time as time, printable};

use serde::{Deserialize, Serialize};
use warren_proto::{Event, EventId, Kind};

use crate::notify::NotifierName;

/// What one route (by its index in the config) made of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RouteOutcome {
    /// A `match` condition did not hold.
    Unmatched {
        /// `route[N]`.
        route: usize,
        /// The condition's key (borrowed when made: routing is on the inbox's hot path).
        condition: Cow<'static, str>,
        /// The event's value for it.
        value: Option<String>,
    },
    /// An `unless` condition held.
    Vetoed {
        /// `route[N]`.
        route: usize,
        /// The condition's key (borrowed when made: routing is on the inbox's hot path).
        condition: Cow<'static, str>,
        /// The event's value for it.
        value: Option<String>,
    },
    /// It fired but its throttle folded the event into the interval's digest.
    Folded {
        /// `route[N]`.
        route: usize,
    },
    /// It fired: these notifiers got a delivery from it (the ones it names that an earlier
    /// route had not already taken).
    Fired {
        /// `route[N]`.
        route: usize,
        /// The deliveries it made.
        notifiers: Vec<String>,
    },
}

/// What the routes made of an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Whether its source was new for its user ([`crate::known`]), for logins.
    pub first_seen: Option<bool>,
    /// One outcome per route, in config order.
    pub routes: Vec<RouteOutcome>,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AttemptResult {
    /// The service took it.
    Delivered,
    /// It failed and will be tried again.
    Failed {
        /// Why.
        error: String,
        /// After this long.
        retry_in_ms: u64,
    },
    /// It failed for good: a dead letter, handed to the fallback if there is one.
    DeadLetter {
        /// Why.
        error: String,
        /// The notifier it was handed to.
        fallback: Option<String>,
    },
}

/// One step of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The hub recorded the event for the first time (or again after its dedup window).
    Received {
        /// When, ms since the epoch (the hub's clock).
        at_ms: u64,
        /// The edge that forwarded it.
        edge: String,
        /// Its site.
        site: String,
        /// When the edge accepted it (the edge's clock).
        edge_received_ms: u64,
        /// The datagram's source address, as the edge saw it.
        remote: String,
        /// Whether it was signed.
        signed: bool,
        /// What happened, in a few words ([`summary`]): the event itself is not kept, which
        /// keeps this record small on the inbox's hot path.
        what: String,
        /// What the routes made of it.
        routing: Routing,
    },
    /// The same id arrived again inside the window and was only acked.
    Duplicates {
        /// How many times.
        count: u64,
        /// The last time, ms since the epoch.
        last_ms: u64,
        /// The edge it last came from.
        last_edge: String,
    },
    /// One delivery attempt.
    Attempt {
        /// When it ended, ms since the epoch.
        at_ms: u64,
        /// The notifier.
        notifier: String,
        /// Its number, from 1.
        attempt: u32,
        /// How it ended.
        #[serde(flatten)]
        result: AttemptResult,
    },
}

impl Step {
    /// The step of a delivery attempt to `notifier`, the `attempt`th, ended at `at_ms`.
    pub fn attempt(
        notifier: &NotifierName,
        at_ms: u64,
        attempt: u32,
        result: AttemptResult,
    ) -> Self {
        Self::Attempt {
            at_ms,
            notifier: notifier.to_string(),
            attempt,
            result,
        }
    }
}

/// Everything the hub knows of one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The event id.
    pub id: EventId,
    /// Its steps in the order they were written; the duplicates' count comes last.
    pub steps: Vec<Step>,
}

/// Lines under a time stamp start under its end.
const INDENT: &str = "                         ";

/// What `hub trace` prints for an id the hub has no record of.
pub fn unknown(id: &EventId, window: Duration) -> String {
    format!(
        "The hub has no record of event {id}: it did not reach the hub, or reached it more than \
         {} ago (the dedup window, for which traces are kept).\n\
         Next, on the edge hare sent it to:\n  \
         edge trace {id}    whether the edge accepted it and is still sending it\n  \
         edge status        the hub link, and the last datagram received or rejected",
        humantime::format_duration(window)
    )
}

/// The trace for people.
pub fn human(t: &Trace) -> String {
    let mut out = String::new();
    for step in &t.steps {
        match step {
            Step::Received {
                at_ms,
                edge,
                site,
                edge_received_ms,
                remote,
                signed,
                what,
                routing,
            } => {
                let _ = writeln!(out, "event {}: {what}", t.id);
                let _ = writeln!(
                    out,
                    "{}  received from edge {edge} (site {site}); the edge took it from {remote} \
                     at {} ({})",
                    time(*at_ms),
                    time(*edge_received_ms),
                    if *signed { "signed" } else { "unsigned" },
                );
                if let Some(first) = routing.first_seen {
                    let _ = writeln!(
                        out,
                        "{INDENT}source {} for this user",
                        if first {
                            "never seen before"
                        } else {
                            "already known"
                        }
                    );
                }
                if routing.routes.is_empty() {
                    let _ = writeln!(out, "{INDENT}no route is configured: nothing to deliver");
                }
                for r in &routing.routes {
                    let _ = writeln!(out, "{INDENT}{}", route(r));
                }
            }
            Step::Duplicates {
                count,
                last_ms,
                last_edge,
            } => {
                let _ = writeln!(
                    out,
                    "{}  received {count} more time(s) inside the dedup window, last from edge \
                     {last_edge}: acked, not notified again",
                    time(*last_ms)
                );
            }
            Step::Attempt {
                at_ms,
                notifier,
                attempt,
                result,
            } => {
                let what = match result {
                    AttemptResult::Delivered => "delivered".to_owned(),
                    AttemptResult::Failed { error, retry_in_ms } => format!(
                        "failed: {error}; retry in {}",
                        humantime::format_duration(Duration::from_millis(*retry_in_ms))
                    ),
                    AttemptResult::DeadLetter { error, fallback } => {
                        let handed = fallback
                            .as_ref()
                            .map(|f| format!(", handed to {f}"))
                            .unwrap_or_default();
                        format!("gave up: {error}; kept as a dead letter{handed}")
                    }
                };
                let _ = writeln!(
                    out,
                    "{}  {notifier}: attempt {attempt} {what}",
                    time(*at_ms)
                );
            }
        }
    }
    let _ = writeln!(out, "outcome: {}", outcome(t));
    printable(&out)
}

/// What happened, in a few words: a session's who, where and from where; anything else's
/// title or message.
pub fn summary(event: &Event) -> String {
    let f = |n| event.get_str(n).filter(|v| !v.is_empty());
    match event.kind() {
        Kind::Login | Kind::Logout | Kind::Test => format!(
            "{} of {} on {} ({}) from {}",
            event.kind(),
            f("user").unwrap_or("-"),
            f("hostname").unwrap_or("-"),
            f("service").unwrap_or("-"),
            f("rhost").unwrap_or("-"),
        ),
        kind => {
            let what = [f("title"), f("message")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            match f("hostname") {
                Some(host) => format!("{kind} on {host}: {what}"),
                None => format!("{kind}: {what}"),
            }
        }
    }
}

/// Where each delivery stands: its last attempt's result, in the order they were made.
fn outcome(t: &Trace) -> String {
    fn note<'a>(
        last: &mut Vec<(&'a str, Option<&'a AttemptResult>)>,
        name: &'a str,
        result: Option<&'a AttemptResult>,
    ) {
        let i = last
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| {
                last.push((name, None));
                last.len() - 1
            });
        if result.is_some() {
            last[i].1 = result;
        }
    }
    let mut last = Vec::new();
    for step in &t.steps {
        match step {
            Step::Received { routing, .. } => {
                for r in &routing.routes {
                    if let RouteOutcome::Fired { notifiers, .. } = r {
                        for n in notifiers {
                            note(&mut last, n, None);
                        }
                    }
                }
            }
            Step::Attempt {
                notifier, result, ..
            } => note(&mut last, notifier, Some(result)),
            Step::Duplicates { .. } => {}
        }
    }
    if last.is_empty() {
        return "nothing to deliver".to_owned();
    }
    last.iter()
        .map(|(name, result)| {
            let state = match result {
                None => "pending, not tried yet",
                Some(AttemptResult::Delivered) => "delivered",
                Some(AttemptResult::Failed { .. }) => "pending, retrying",
                Some(AttemptResult::DeadLetter { .. }) => "gave up (dead letter)",
            };
            format!("{name} {state}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn route(r: &RouteOutcome) -> String {
    let shown = |v: &Option<String>| v.as_deref().unwrap_or("none").to_owned();
    match r {
        RouteOutcome::Unmatched {
            route,
            condition,
            value,
        } => format!(
            "route[{route}] not matched: match.{condition} (event has {})",
            shown(value)
        ),
        RouteOutcome::Vetoed {
            route,
            condition,
            value,
        } => format!(
            "route[{route}] vetoed: unless.{condition} holds (event has {})",
            shown(value)
        ),
        RouteOutcome::Folded { route } => {
            format!("route[{route}] throttled: folded into its interval's digest")
        }
        RouteOutcome::Fired { route, notifiers } if notifiers.is_empty() => {
            format!("route[{route}] matched; its notifiers already had the event")
        }
        RouteOutcome::Fired { route, notifiers } => {
            format!("route[{route}] matched → {}", notifiers.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_fits_the_kind() {
        let mut login = Event::new(Kind::Login, 1);
        login
            .set_str("user", Some("dan"))
            .set_str("hostname", Some("web"))
            .set_str("service", Some("sshd"));
        assert_eq!(summary(&login), "login of dan on web (sshd) from -");
        let mut alert = Event::new(Kind::Alert, 1);
        alert
            .set_str("hostname", Some("ups"))
            .set_str("title", Some("Power"))
            .set_str("message", Some("Mains lost"));
        assert_eq!(summary(&alert), "alert on ups: Power: Mains lost");
    }

    #[test]
    fn the_outcome_is_each_deliverys_last_attempt() {
        let attempt = |notifier: &str, attempt, result| Step::Attempt {
            at_ms: 1,
            notifier: notifier.into(),
            attempt,
            result,
        };
        let fired = |route, notifiers: &[&str]| RouteOutcome::Fired {
            route,
            notifiers: notifiers.iter().map(|n| (*n).to_owned()).collect(),
        };
        let t = Trace {
            id: EventId::from_bytes([7; 16]),
            steps: vec![
                Step::Received {
                    at_ms: 1,
                    edge: "gw".into(),
                    site: "home".into(),
                    edge_received_ms: 1,
                    remote: "127.0.0.1".into(),
                    signed: true,
                    what: "test".into(),
                    routing: Routing {
                        first_seen: None,
                        routes: vec![fired(0, &["mail", "push"]), fired(1, &["log"])],
                    },
                },
                attempt(
                    "push",
                    1,
                    AttemptResult::DeadLetter {
                        error: "HTTP 401".into(),
                        fallback: Some("mail".into()),
                    },
                ),
                attempt(
                    "mail",
                    1,
                    AttemptResult::Failed {
                        error: "timeout".into(),
                        retry_in_ms: 1000,
                    },
                ),
                attempt("mail", 2, AttemptResult::Delivered),
            ],
        };
        assert_eq!(
            outcome(&t),
            "mail delivered; push gave up (dead letter); log pending, not tried yet"
        );
        let human = human(&t);
        assert!(
            human.contains("route[0] matched → mail, push")
                && human.contains(
                    "push: attempt 1 gave up: HTTP 401; kept as a dead letter, handed to mail"
                ),
            "{human}"
        );
    }
}
