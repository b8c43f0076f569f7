//! The hub's page in a real browser (headless chromium), and its JSON API, with the real hub
//! and edge binaries: which sites report, an edge going offline, who logged in from where —
//! and what it refuses to whom.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::path::{Path, PathBuf};
use std::process::Command;

use warren_harness::{Browser, WAIT, require, wait_for, which};
use warren_hub::recent::Page;
use warren_hub::status::HubStatus;
use warren_integration_tests::{Edge, Topology};

/// The login time of the first datagram; the others follow it.
const TST: i64 = 1_795_708_571;

fn datagram(user: &str, rhost: &str, tst: i64) -> Vec<u8> {
    format!(
        r#"{{"tst":{tst},"hostname":"web","user":"{user}","service":"sshd","rhost":"{rhost}","tty":"ssh"}}"#
    )
    .into_bytes()
}

/// Sends one login through `edge` and waits until the hub has notified `total` in all.
fn login(t: &Topology, edge: &Edge, datagram: Vec<u8>, total: usize) {
    edge.send_confirmed(&[datagram]);
    wait_for("the notification", WAIT, || {
        (t.lines().len() >= total).then_some(())
    });
}

/// `curl` with `args`: the status code and the body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30"])
        .args(["--write-out", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The `<tr>` elements of `dom` whose class starts with `class`.
fn rows<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    dom.split(&format!("<tr class=\"{class}"))
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap())
        .collect()
}

/// Where the test leaves its screenshots.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn online(t: &Topology, id: &str) -> Option<bool> {
    t.hub.status().edges.get(id).map(|e| e.online)
}

#[test]
fn the_page_lists_sites_logins_and_an_edge_going_offline() {
    let browser = Browser::find();
    if !require("chromium", browser.is_some()) || !require("curl", which("curl").is_some()) {
        return;
    }
    let browser = browser.unwrap();
    let t = Topology::with_hub_config("[web]\nlisten = \"127.0.0.1:0\"\nrefresh = \"2s\"\n");
    let gw = t.edge("gw", None);
    let mut ups = t.edge("ups", None);
    for id in ["gw", "ups"] {
        wait_for("the hub to see the edge online", WAIT, || {
            (online(&t, id) == Some(true)).then_some(())
        });
    }
    // One at a time, so the page's order (newest first) is the order they were sent in.
    login(&t, &gw, datagram("dan", "192.0.2.10", TST), 1);
    login(&t, &gw, datagram("dan", "192.0.2.10", TST + 60), 2);
    login(&t, &ups, datagram("eve", "198.51.100.7", TST + 120), 3);
    login(
        &t,
        &gw,
        datagram("<b>mallory</b>", "203.0.113.66", TST + 180),
        4,
    );
    wait_for("the hub to count the deliveries", WAIT, || {
        (t.hub.status().notifiers["sshd_log"].delivered == 4).then_some(())
    });
    let url = t.hub.status().web.expect("the hub's page address");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let dom = browser.dump_dom(&url);
    for site in ["site-gw", "site-ups"] {
        assert!(
            dom.contains(&format!("<h3>{site} ")),
            "{site} missing:\n{dom}"
        );
    }
    let edges = rows(&dom, "edge ");
    assert_eq!(edges.len(), 2, "{dom}");
    // Both connected after the hub started, so the hub saw no change yet: it says when it first
    // heard of them; and it knows when their certificates end.
    assert!(
        edges
            .iter()
            .all(|r| r.starts_with("online") && r.contains("first heard") && r.contains("ends ")),
        "{edges:?}"
    );

    let events = rows(&dom, "event ");
    let users: Vec<_> = events
        .iter()
        .map(|r| {
            r.split("data-label=\"User\">")
                .nth(1)
                .and_then(|c| c.split("</td>").next())
                .unwrap()
        })
        .collect();
    assert_eq!(users, ["&lt;b&gt;mallory&lt;/b&gt;", "eve", "dan", "dan"]);
    let marked: Vec<_> = events.iter().map(|r| r.contains("never seen")).collect();
    // dan's second login comes from a network already seen for him.
    assert_eq!(marked, [true, true, false, true], "{events:?}");
    assert!(events[1].contains("site-ups") && events[1].contains("198.51.100.7"));
    assert!(!dom.contains("<b>mallory"), "a user name became markup");
    let sshd_log = rows(&dom, "notifier");
    assert!(
        sshd_log[0].contains("sshd_log") && sshd_log[0].contains("data-label=\"Delivered\">4<"),
        "{sshd_log:?}"
    );

    let dir = output_dir();
    browser.screenshot(&url, &dir.join("page-desktop.png"), (1280, 1000));
    browser.screenshot(&url, &dir.join("page-phone.png"), (412, 915));
    eprintln!("screenshots in {}", dir.display());

    ups.stop();
    wait_for("the hub to see ups offline", WAIT, || {
        (online(&t, "ups") == Some(false)).then_some(())
    });
    let dom = browser.dump_dom(&url);
    let edges = rows(&dom, "edge ");
    let ups_row = edges.iter().find(|r| r.contains(">ups<")).unwrap();
    assert!(
        ups_row.starts_with("offline") && ups_row.contains("offline</span> since"),
        "{ups_row}"
    );
    assert!(
        edges
            .iter()
            .any(|r| r.contains(">gw<") && r.starts_with("online"))
    );
    browser.screenshot(&url, &dir.join("page-edge-offline.png"), (1280, 1000));

    // The same, as JSON.
    let (code, body) = curl(&[&format!("{url}api/v1/status")]);
    assert_eq!(code, 200, "{body}");
    let status: HubStatus = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status
            .edges
            .iter()
            .map(|(id, e)| (id.as_str(), e.site.as_str(), e.online))
            .collect::<Vec<_>>(),
        [("gw", "site-gw", true), ("ups", "site-ups", false)]
    );
    let page = |query: &str| {
        let (code, body) = curl(&[&format!("{url}api/v1/events{query}")]);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Page>(&body).unwrap()
    };
    let first = page("?limit=3");
    let rest = page(&format!(
        "?limit=3&before={}",
        first.next.as_deref().unwrap()
    ));
    assert_eq!(rest.next, None);
    let all: Vec<_> = first.events.iter().chain(&rest.events).collect();
    assert_eq!(
        all.iter()
            .map(|e| (e.user.as_deref().unwrap(), e.tst, e.first_seen))
            .collect::<Vec<_>>(),
        [
            ("<b>mallory</b>", TST + 180, Some(true)),
            ("eve", TST + 120, Some(true)),
            ("dan", TST + 60, Some(false)),
            ("dan", TST, Some(true)),
        ]
    );
    assert!(all.iter().all(|e| e.notified == ["sshd_log"]), "{all:?}");

    // Read-only, and not for a page that a rebound domain name points here.
    let (code, _) = curl(&["-X", "POST", &url]);
    assert_eq!(code, 405);
    let (code, _) = curl(&["-H", "Host: evil.example", &url]);
    assert_eq!(code, 421);
    let (code, body) = curl(&["--head", &url]);
    assert!(code == 200 && body.contains("text/html"), "{code} {body}");
    let (code, body) = curl(&[&format!("{url}api/v1/events?limit=0")]);
    assert!(code == 400 && body.contains("limit"), "{code} {body}");
    assert_eq!(t.hub.status().refused.get("web_host"), Some(&1));
    drop(gw);
}

#[test]
fn with_a_token_every_request_needs_it_over_https() {
    if !require("curl", which("curl").is_some()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("web.token");
    std::fs::write(&token, "correct-horse-battery\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let t = Topology::with_hub_config(&format!(
        "[web]\nlisten = \"127.0.0.1:0\"\ntls = true\ntoken_file = \"{}\"\n",
        token.display()
    ));
    let url = t.hub.status().web.unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = t.pki.ca().display().to_string();
    let get = |extra: &[&str], path: &str| {
        let target = format!("{url}{path}");
        let mut args = vec!["--cacert", &ca];
        args.extend_from_slice(extra);
        args.push(&target);
        curl(&args)
    };
    for path in ["", "api/v1/status", "api/v1/events", "metrics"] {
        let (code, _) = get(&[], path);
        assert_eq!(code, 401, "/{path} without the token");
        let (code, _) = get(&["-H", "Authorization: Bearer wrong"], path);
        assert_eq!(code, 401, "/{path} with a wrong token");
        let (code, _) = get(&["-H", "Authorization: Bearer correct-horse-battery"], path);
        assert_eq!(code, 200, "/{path} with the token");
    }
    // A browser asks for a user and password: the token is the password.
    let (code, body) = get(&["--user", "anyone:correct-horse-battery"], "");
    assert!(
        code == 200 && body.contains("<h1>warren hub</h1>"),
        "{code}"
    );
    // The token is the guard then, whatever host name the request uses.
    let (code, _) = get(
        &[
            "-H",
            "Authorization: Bearer correct-horse-battery",
            "-H",
            "Host: hub.example",
        ],
        "api/v1/status",
    );
    assert_eq!(code, 200);
    let (code, _) = curl(&[&url.replace("https://", "http://")]);
    assert_ne!(code, 200, "plain HTTP on the HTTPS port");
    let refused = t.hub.status().refused;
    assert_eq!(
        (refused.get("web_no_token"), refused.get("web_bad_token")),
        (Some(&4), Some(&4))
    );
}
