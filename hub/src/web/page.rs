//! The page: plain HTML from a status snapshot and a page of recent events. No script; it
//! reloads itself with a meta refresh, and a narrow screen gets each table row as a card
//! (`style.css`). Everything an event or an edge carries is escaped: a user name is whatever
//! a datagram said.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use chrono::{DateTime, Local};
use warren_daemon::tls::EXPIRY_WARNING_DAYS;

use crate::recent::{Page, RecentEvent};
use crate::stats::EdgeInfo;
use crate::status::HubStatus;

/// An event received this much later than (or before) its own time shows both.
const LATE_MS: u64 = 60_000;

/// The page for `status` and `events`; `older` when it shows a later page of events (which
/// is not reloaded: it would not change).
pub fn render(status: &HubStatus, events: &Page, older: bool, refresh: Duration) -> String {
    let now_ms = crate::now_ms();
    let mut out = String::with_capacity(16 * 1024);
    let offline = status.edges.values().filter(|e| !e.online).count();
    let sites = sites(&status.edges);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    );
    if !older {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{}\">",
            refresh.as_secs().max(1)
        );
    }
    let _ = write!(
        out,
        "<title>warren hub: {} sites, {offline} edges offline</title>\
         <link rel=\"stylesheet\" href=\"style.css\"></head><body>",
        sites.len()
    );
    header(
        &mut out,
        status,
        now_ms,
        if older { None } else { Some(refresh) },
    );
    sites_section(&mut out, &sites, now_ms);
    events_section(&mut out, events, older, now_ms);
    notifiers_section(&mut out, status, now_ms);
    out.push_str(
        "<footer>The same as JSON: <a href=\"api/v1/status\">/api/v1/status</a>, \
         <a href=\"api/v1/events\">/api/v1/events</a>; Prometheus: \
         <a href=\"metrics\">/metrics</a>.</footer></body></html>\n",
    );
    out
}

fn header(out: &mut String, s: &HubStatus, now_ms: u64, refresh: Option<Duration>) {
    let _ = write!(
        out,
        "<header><h1>warren hub</h1><p class=\"meta\">{} {} · {} broker {} · received {} · duplicates {} · updated {}",
        Esc(&warren_daemon::short_hostname()),
        Esc(&s.version),
        Esc(&s.mode),
        if s.broker_connected {
            "<span class=\"ok\">connected</span>"
        } else {
            "<span class=\"bad\">not connected</span>"
        },
        s.received,
        s.duplicates,
        Time(now_ms, now_ms),
    );
    if let Some(r) = refresh {
        let _ = write!(out, " · reloads every {} s", r.as_secs().max(1));
    }
    out.push_str("</p>");
    if !s.warnings.is_empty() || s.disk_full_since_ms.is_some() {
        out.push_str("<ul class=\"warnings\">");
        if let Some(since) = s.disk_full_since_ms {
            let _ = write!(
                out,
                "<li>The hub's disk is full since {}: new events are not acked (their edges \
                 keep them); deliveries go on.</li>",
                Time(since, now_ms)
            );
        }
        for w in &s.warnings {
            let _ = write!(out, "<li>{}</li>", Esc(w));
        }
        out.push_str("</ul>");
    }
    out.push_str("</header>");
}

/// Edges by site.
fn sites(edges: &BTreeMap<String, EdgeInfo>) -> BTreeMap<&str, Vec<(&str, &EdgeInfo)>> {
    let mut sites: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for (id, e) in edges {
        sites.entry(&e.site).or_default().push((id.as_str(), e));
    }
    sites
}

fn sites_section(out: &mut String, sites: &BTreeMap<&str, Vec<(&str, &EdgeInfo)>>, now_ms: u64) {
    out.push_str("<section id=\"sites\"><h2>Sites</h2>");
    if sites.is_empty() {
        out.push_str("<p class=\"empty\">No edge has reported since the hub started.</p>");
    }
    for (site, edges) in sites {
        let offline = edges.iter().filter(|(_, e)| !e.online).count();
        let _ = write!(
            out,
            "<div class=\"site\"><h3>{} <span class=\"{}\">{} {}{}</span></h3>",
            Esc(site),
            if offline > 0 { "bad" } else { "ok" },
            edges.len(),
            if edges.len() == 1 { "edge" } else { "edges" },
            if offline > 0 {
                format!(", {offline} offline")
            } else {
                String::new()
            },
        );
        out.push_str(
            "<table><thead><tr><th>Edge</th><th>State</th><th>Last seen</th><th>Queue</th>\
             <th>Certificate</th><th>Version</th></tr></thead><tbody>",
        );
        for (id, e) in edges {
            edge_row(out, id, e, now_ms);
        }
        out.push_str("</tbody></table></div>");
    }
    out.push_str("</section>");
}

fn edge_row(out: &mut String, id: &str, e: &EdgeInfo, now_ms: u64) {
    let (class, state) = if e.online {
        ("online", "online")
    } else {
        ("offline", "offline")
    };
    let _ = write!(
        out,
        "<tr class=\"edge {class}\"><td data-label=\"Edge\">{}</td>\
         <td data-label=\"State\"><span class=\"state {class}\">{state}</span>",
        Esc(id)
    );
    match e.since_ms {
        Some(since) => {
            let _ = write!(out, " since {}", Time(since, now_ms));
        }
        // The hub has not seen it change: say what it knows.
        None => {
            if let Some(first) = e.first_heard_ms {
                let _ = write!(out, ", first heard {}", Time(first, now_ms));
            }
        }
    }
    if let Some(p) = &e.problem {
        let _ = write!(
            out,
            " <span class=\"state offline\">{}</span>",
            Esc(crate::presence::problem_words(p))
        );
    }
    let _ = write!(
        out,
        "</td><td data-label=\"Last seen\">{}</td><td data-label=\"Queue\">{}",
        if e.last_seen_ms == 0 {
            "—".to_owned()
        } else {
            Time(e.last_seen_ms, now_ms).to_string()
        },
        e.queue_depth
    );
    if let Some(age) = e.oldest_age_ms.filter(|_| e.queue_depth > 0) {
        let _ = write!(out, ", oldest {}", Span(age));
    }
    out.push_str("</td><td data-label=\"Certificate\">");
    match e.cert_not_after {
        Some(end) => {
            let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
            let days = (end - now).div_euclid(86_400);
            let date = DateTime::from_timestamp(end, 0)
                .map(|t| t.with_timezone(&Local).format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            let _ = if end <= now {
                write!(out, "<span class=\"bad\">ended {date}</span>")
            } else if days < EXPIRY_WARNING_DAYS {
                write!(out, "<span class=\"bad\">ends {date} ({days} days)</span>")
            } else {
                write!(out, "ends {date}")
            };
        }
        None => out.push('—'),
    }
    let _ = write!(
        out,
        "</td><td data-label=\"Version\">{}</td></tr>",
        Esc(&e.version)
    );
}

fn events_section(out: &mut String, page: &Page, older: bool, now_ms: u64) {
    out.push_str("<section id=\"events\"><h2>Recent logins and alerts</h2>");
    if older {
        out.push_str("<p><a href=\"./\">Back to the newest</a></p>");
    }
    if page.events.is_empty() {
        out.push_str("<p class=\"empty\">No event yet.</p>");
    } else {
        out.push_str(
            "<table><thead><tr><th>Time</th><th>Site</th><th>Host</th><th>User</th>\
             <th>Source</th><th>Service</th><th>What</th></tr></thead><tbody>",
        );
        for e in &page.events {
            event_row(out, e, now_ms);
        }
        out.push_str("</tbody></table>");
    }
    if let Some(next) = &page.next {
        let _ = write!(
            out,
            "<p><a href=\"?before={}\">Older events</a></p>",
            Esc(next)
        );
    }
    out.push_str("</section>");
}

fn event_row(out: &mut String, e: &RecentEvent, now_ms: u64) {
    let new_source = e.first_seen == Some(true);
    let opt = |v: &Option<String>| {
        v.as_deref()
            .map_or_else(|| "—".to_owned(), |v| Esc(v).to_string())
    };
    let _ = write!(
        out,
        "<tr class=\"event {}{}\"><td data-label=\"Time\">{}</td><td data-label=\"Site\">{}</td>\
         <td data-label=\"Host\">{}</td><td data-label=\"User\">{}</td><td data-label=\"Source\">{}",
        kind_class(&e.kind),
        if new_source { " first-seen" } else { "" },
        when(e, now_ms),
        Esc(&e.site),
        opt(&e.host),
        opt(&e.user),
        opt(&e.rhost),
    );
    if new_source {
        out.push_str(
            " <span class=\"new\" title=\"the first login of this user from this network\">never seen</span>",
        );
    }
    let _ = write!(
        out,
        "</td><td data-label=\"Service\">{}</td><td data-label=\"What\">",
        opt(&e.service)
    );
    if e.kind != "login" {
        let _ = write!(out, "<span class=\"kind\">{}</span> ", Esc(&e.kind));
    }
    let what = [e.title.as_deref(), e.message.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    let _ = write!(out, "{}", Esc(&what));
    if !e.notified.is_empty() {
        let _ = write!(
            out,
            " <span class=\"to\">→ {}</span>",
            Esc(&e.notified.join(", "))
        );
    }
    out.push_str("</td></tr>");
}

/// When the event happened (its own `tst`), and when the hub got it if that was more than
/// [`LATE_MS`] later: a login an edge held through an outage shows both.
fn when(e: &RecentEvent, now_ms: u64) -> String {
    let at_ms = u64::try_from(e.tst)
        .unwrap_or_default()
        .saturating_mul(1000);
    if e.received_ms.abs_diff(at_ms) <= LATE_MS {
        return Time(at_ms, now_ms).to_string();
    }
    format!(
        "{} <span class=\"late\">received {}</span>",
        Time(at_ms, now_ms),
        Time(e.received_ms, now_ms)
    )
}

fn notifiers_section(out: &mut String, s: &HubStatus, now_ms: u64) {
    out.push_str(
        "<section id=\"notifiers\"><h2>Notifiers</h2><table><thead><tr><th>Notifier</th>\
         <th>Outbox</th><th>Delivered</th><th>Failed attempts</th><th>Given up</th>\
         <th>Last error</th></tr></thead><tbody>",
    );
    for (name, n) in &s.notifiers {
        let _ = write!(
            out,
            "<tr class=\"notifier{}\"><td data-label=\"Notifier\">{}</td><td data-label=\"Outbox\">{}</td>\
             <td data-label=\"Delivered\">{}</td><td data-label=\"Failed attempts\">{}</td>\
             <td data-label=\"Given up\">{}</td><td data-label=\"Last error\">{}</td></tr>",
            if n.last_error.is_some() {
                " failing"
            } else {
                ""
            },
            Esc(name),
            n.outbox,
            n.delivered,
            n.failures,
            n.dead,
            n.last_error
                .as_deref()
                .map_or_else(String::new, |e| Esc(e).to_string()),
        );
    }
    out.push_str("</tbody></table>");
    let _ = write!(out, "<h3>Dead letters: {}</h3>", s.dead_letters);
    if !s.recent_dead_letters.is_empty() {
        out.push_str(
            "<table><thead><tr><th>Time</th><th>Notifier</th><th>Title</th><th>Attempts</th>\
             <th>Error</th></tr></thead><tbody>",
        );
        for d in &s.recent_dead_letters {
            let _ = write!(
                out,
                "<tr class=\"dead\"><td data-label=\"Time\">{}</td><td data-label=\"Notifier\">{}</td>\
                 <td data-label=\"Title\">{}</td><td data-label=\"Attempts\">{}</td>\
                 <td data-label=\"Error\">{}</td></tr>",
                Time(d.at_ms, now_ms),
                Esc(&d.notifier),
                Esc(&d.title),
                d.attempts,
                Esc(&d.error),
            );
        }
        out.push_str("</tbody></table><p>Retry with <code>hub dead-letters retry</code>.</p>");
    }
    out.push_str("</section>");
}

/// The row class of an event's kind: a fixed set, so an edge's `kind` cannot pose as another
/// class (`x first-seen`).
fn kind_class(kind: &str) -> &'static str {
    match kind {
        "login" => "login",
        "logout" => "logout",
        "test" => "test",
        "alert" => "alert",
        "edge_offline" | "edge_online" => "presence",
        _ => "other",
    }
}

/// Text escaped for HTML content and quoted attribute values. Control characters become
/// spaces and bidirectional controls a replacement character: a user name must not reorder
/// what the page shows around it.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                c if c.is_control() => f.write_char(' ')?,
                '\u{61c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' => f.write_char('\u{fffd}')?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A moment (ms since the epoch) in the hub's local time, short when it is today, with how
/// long ago it was.
struct Time(u64, u64);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (at, now) = (self.0, self.1);
        let Some(t) = DateTime::from_timestamp_millis(i64::try_from(at).unwrap_or(i64::MAX)) else {
            return write!(f, "{at} ms");
        };
        let t = t.with_timezone(&Local);
        let today = DateTime::from_timestamp_millis(i64::try_from(now).unwrap_or(i64::MAX))
            .is_some_and(|n| n.with_timezone(&Local).date_naive() == t.date_naive());
        let short = if today {
            t.format("%H:%M:%S")
        } else {
            t.format("%b %d %H:%M")
        };
        write!(
            f,
            "<time datetime=\"{}\" title=\"{}\">{short}</time>",
            t.to_rfc3339(),
            t.format("%Y-%m-%d %H:%M:%S %:z"),
        )?;
        if now >= at {
            write!(f, " <span class=\"ago\">({} ago)</span>", Span(now - at))?;
        }
        Ok(())
    }
}

/// A duration in ms, to the unit that matters.
struct Span(u64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1000;
        match s {
            0..60 => write!(f, "{s} s"),
            60..3600 => write!(f, "{} min", s / 60),
            3600..86_400 => write!(f, "{} h {} min", s / 3600, s % 3600 / 60),
            _ => write!(f, "{} d {} h", s / 86_400, s % 86_400 / 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::NotifierStatus;
    use warren_proto::EventId;

    fn status() -> HubStatus {
        let mut s: HubStatus = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "pid": 1, "mode": "embedded", "listen": [],
            "broker_connected": true, "edges": {}, "received": 3, "duplicates": 0,
            "invalid": 0, "acked": 3, "republished": 0, "seen_ids": 3, "notifiers": {},
            "dead_letters": 0, "recent_dead_letters": [],
        }))
        .unwrap();
        let now = crate::now_ms();
        s.edges.insert(
            "gw".into(),
            EdgeInfo {
                site: "paris".into(),
                online: false,
                since_ms: Some(now - 90_000),
                last_seen_ms: now - 95_000,
                queue_depth: 12,
                oldest_age_ms: Some(240_000),
                cert_not_after: Some(i64::try_from(now / 1000).unwrap() + 10 * 86_400 - 3600),
                ..EdgeInfo::default()
            },
        );
        s.notifiers.insert(
            "pager".into(),
            NotifierStatus {
                outbox: 2,
                failures: 5,
                last_error: Some("HTTP 503 <html>".into()),
                ..NotifierStatus::default()
            },
        );
        s
    }

    fn event(user: &str, first_seen: Option<bool>) -> RecentEvent {
        RecentEvent {
            id: EventId::generate(),
            received_ms: crate::now_ms(),
            tst: i64::try_from(crate::now_ms() / 1000).unwrap(),
            kind: "login".into(),
            site: "paris".into(),
            edge: "gw".into(),
            host: Some("web".into()),
            user: Some(user.into()),
            rhost: Some("203.0.113.9".into()),
            service: Some("sshd".into()),
            title: None,
            message: None,
            first_seen,
            notified: vec!["pager".into()],
        }
    }

    #[test]
    fn what_a_datagram_says_is_shown_never_run() {
        let page = Page {
            events: vec![event("<script>alert(1)</script>\"'&", Some(false))],
            next: None,
        };
        let html = render(&status(), &page, false, Duration::from_secs(5));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(html.contains("HTTP 503 &lt;html&gt;"));
        let mut posing = event("eve\u{202e}nimda", None);
        posing.kind = "x first-seen".into();
        let html = render(
            &status(),
            &Page {
                events: vec![posing],
                next: None,
            },
            false,
            Duration::from_secs(5),
        );
        assert!(html.contains("<tr class=\"event other\">"), "{html}");
        assert!(html.contains("eve\u{fffd}nimda"));
    }

    #[test]
    fn the_page_shows_edges_events_and_notifiers() {
        let mut held = event("eve", Some(false));
        held.tst -= 3600;
        let page = Page {
            events: vec![event("dan", Some(true)), held],
            next: Some("1-00".into()),
        };
        let html = render(&status(), &page, false, Duration::from_secs(5));
        for expected in [
            "<meta http-equiv=\"refresh\" content=\"5\">",
            "paris <span class=\"bad\">1 edge, 1 offline</span>",
            "<span class=\"state offline\">offline</span> since",
            "12, oldest 4 min",
            "(9 days)",
            "<tr class=\"event login first-seen\">",
            "never seen",
            "→ pager",
            "<tr class=\"notifier failing\">",
            "href=\"?before=1-00\"",
        ] {
            assert!(html.contains(expected), "{expected} not in {html}");
        }
        assert_eq!(
            html.matches("never seen").count(),
            1,
            "only dan's source is new"
        );
        assert_eq!(
            html.matches("class=\"late\"").count(),
            1,
            "only eve's login arrived late"
        );
        let older = render(&status(), &page, true, Duration::from_secs(5));
        assert!(
            !older.contains("http-equiv=\"refresh\""),
            "an older page stays put"
        );
        assert!(older.contains("Back to the newest"));
    }

    #[test]
    fn spans_read_in_the_unit_that_matters() {
        let s = |ms| Span(ms).to_string();
        assert_eq!(
            [s(999), s(59_000), s(61_000), s(3_720_000), s(90_000_000)],
            ["0 s", "59 s", "1 min", "1 h 2 min", "1 d 1 h"]
        );
    }
}
