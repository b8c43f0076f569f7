//! One login followed through the chain with the real binaries: `hare test` → edge → hub →
//! notifiers, then `hub trace` and `edge trace` as an operator runs them, and `edge status`
//! answering "is the edge listening on that address?".

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::net::UdpSocket;
use std::process::{Command, Output};

use warren_edge::history::EdgeTrace;
use warren_harness::http::{HttpServer, Reply};
use warren_harness::{WAIT, bin, wait_for};
use warren_hub::trace::{AttemptResult, RouteOutcome, Step, Trace};
use warren_integration_tests::{Edge, Topology};

/// A second route to a webhook that always fails, except from the LAN, which vetoes it.
const PAGER: &str = r#"
[delivery]
initial_backoff = "100ms"
max_backoff = "200ms"
give_up_after = "1s"
[notifier.pager]
type = "webhook"
url = "{url}"
[[route]]
match = { kind = "login" }
unless = { rhost_cidr = ["192.168.0.0/16"] }
notify = ["pager"]
"#;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(bin(program)).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `hare test` from `rhost` to the edge; the id it printed, after checking what it printed.
fn hare_test(edge: &Edge, rhost: &str) -> String {
    let out = Command::new(bin("hare"))
        .args([
            "test",
            "--config",
            "/dev/null",
            "--user",
            "dan",
            "--rhost",
            rhost,
        ])
        .arg(edge.udp.to_string())
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    let id = stdout
        .split_whitespace()
        .nth(2)
        .filter(|id| id.len() == 32)
        .unwrap_or_else(|| panic!("no id in {stdout:?}"))
        .to_owned();
    assert!(stdout.contains(&format!("hub trace {id}")), "{stdout}");
    assert!(stdout.contains(&format!("edge trace {id}")), "{stdout}");
    id
}

/// `hub trace --json`, once the hub has a record of `id`.
fn hub_trace(t: &Topology, id: &str) -> Option<Trace> {
    let config = t.hub.config.to_str().unwrap();
    let out = run("hub", &["trace", "--config", config, "--json", id]);
    if out.status.code() == Some(1) {
        return None;
    }
    assert!(out.status.success(), "{out:?}");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The attempts of `notifier` in `trace`.
fn attempts<'a>(trace: &'a Trace, notifier: &str) -> Vec<&'a AttemptResult> {
    trace
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Attempt {
                notifier: n,
                result,
                ..
            } if n == notifier => Some(result),
            _ => None,
        })
        .collect()
}

fn routes(trace: &Trace) -> Vec<RouteOutcome> {
    match trace.steps.first() {
        Some(Step::Received {
            edge,
            site,
            routing,
            ..
        }) => {
            assert_eq!((edge.as_str(), site.as_str()), ("gw", "site-gw"));
            routing.routes.clone()
        }
        other => panic!("the first step is not the receipt: {other:?}"),
    }
}

#[test]
fn a_test_event_is_traced_from_hare_to_every_notifier() {
    let hook = HttpServer::start(vec![Reply::Status(503)]);
    let t = Topology::with_hub_config(&PAGER.replace("{url}", &hook.url("/hook")));
    let edge = t.edge("gw", None);
    wait_for("the edge to connect", WAIT, || {
        edge.status().link.connected.then_some(())
    });

    // From outside: the file gets the test, marked; the pager fails until it gives up.
    let id = hare_test(&edge, "203.0.113.9");
    let line = wait_for("the test notification", WAIT, || t.lines().pop());
    assert!(
        line.starts_with("[test] User dan logged into ") && line.contains("203.0.113.9"),
        "{line}"
    );
    let trace = wait_for("the pager to give up", WAIT, || {
        let trace = hub_trace(&t, &id)?;
        matches!(
            attempts(&trace, "pager").last(),
            Some(AttemptResult::DeadLetter { .. })
        )
        .then_some(trace)
    });
    assert_eq!(
        routes(&trace),
        [
            RouteOutcome::Fired {
                route: 0,
                notifiers: vec!["sshd_log".into()]
            },
            RouteOutcome::Fired {
                route: 1,
                notifiers: vec!["pager".into()]
            },
        ]
    );
    assert_eq!(attempts(&trace, "sshd_log"), [&AttemptResult::Delivered]);
    let pager = attempts(&trace, "pager");
    assert!(pager.len() >= 2, "{pager:?}");
    assert!(
        pager[..pager.len() - 1]
            .iter()
            .all(|a| matches!(a, AttemptResult::Failed { error, .. } if error.contains("503"))),
        "{pager:?}"
    );
    assert_eq!(
        hook.requests().len(),
        pager.len(),
        "one request per attempt"
    );

    // The same for people.
    let config = t.hub.config.to_str().unwrap();
    let human = text(&run("hub", &["trace", "--config", config, &id]).stdout);
    eprintln!("{human}");
    for expected in [
        "test of dan on ",
        "received from edge gw (site site-gw)",
        "route[0] matched → sshd_log",
        "sshd_log: attempt 1 delivered",
        "pager: attempt 1 failed: ",
        "kept as a dead letter",
        "outcome: sshd_log delivered; pager gave up (dead letter)",
    ] {
        assert!(human.contains(expected), "{expected:?} not in\n{human}");
    }

    // From the LAN the pager's route is vetoed, so it is never tried.
    let id = hare_test(&edge, "192.168.1.5");
    let trace = wait_for("the file delivery", WAIT, || {
        let trace = hub_trace(&t, &id)?;
        (!attempts(&trace, "sshd_log").is_empty()).then_some(trace)
    });
    assert_eq!(
        routes(&trace)[1],
        RouteOutcome::Vetoed {
            route: 1,
            condition: "rhost_cidr".into(),
            value: Some("192.168.1.5".into())
        }
    );
    assert!(attempts(&trace, "pager").is_empty(), "{trace:?}");
    let human = text(&run("hub", &["trace", "--config", config, &id]).stdout);
    assert!(
        human.contains("route[1] vetoed: unless.rhost_cidr holds (event has 192.168.1.5)"),
        "{human}"
    );

    // The edge saw it come and go.
    let edge_config = edge.config.to_str().unwrap();
    let out = run("edge", &["trace", "--config", edge_config, "--json", &id]);
    assert!(out.status.success(), "{out:?}");
    let et: EdgeTrace = serde_json::from_slice(&out.stdout).unwrap();
    let record = et.record.unwrap();
    assert!(record.source.unwrap().ip().is_loopback());
    assert!(record.sends >= 1 && record.acked_ms.is_some() && !et.queued);
    let human = text(&run("edge", &["trace", "--config", edge_config, &id]).stdout);
    eprintln!("{human}");
    assert!(human.contains("acked by the hub"), "{human}");
}

#[test]
fn a_test_sent_to_two_edges_is_notified_once_and_traced_as_a_duplicate() {
    let t = Topology::new();
    let (a, b) = (t.edge("gw", None), t.edge("gw2", None));
    for edge in [&a, &b] {
        wait_for("the edges to connect", WAIT, || {
            edge.status().link.connected.then_some(())
        });
    }
    let out = Command::new(bin("hare"))
        .args(["test", "--config", "/dev/null", "--user", "dan"])
        .args([a.udp.to_string(), b.udp.to_string()])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = text(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    let trace = wait_for("both copies at the hub, and the delivery", WAIT, || {
        hub_trace(&t, &id).filter(|t| {
            !attempts(t, "sshd_log").is_empty()
                && t.steps
                    .iter()
                    .any(|s| matches!(s, Step::Duplicates { count: 1, .. }))
        })
    });
    let (first, dup) = match trace.steps.as_slice() {
        [
            Step::Received { edge, .. },
            ..,
            Step::Duplicates { last_edge, .. },
        ] => (edge, last_edge),
        other => panic!("{other:?}"),
    };
    assert_ne!(first, dup, "one copy from each edge");
    let human = text(
        &run(
            "hub",
            &["trace", "--config", t.hub.config.to_str().unwrap(), &id],
        )
        .stdout,
    );
    assert!(
        human.contains(&format!(
            "received 1 more time(s) inside the dedup window, last from edge {dup}"
        )),
        "{human}"
    );
    assert_eq!(attempts(&trace, "sshd_log"), [&AttemptResult::Delivered]);
    assert_eq!(t.lines().len(), 1, "{:?}", t.lines());
}

#[test]
fn an_unknown_id_says_so_and_what_to_check_next() {
    let t = Topology::new();
    let edge = t.edge("gw", None);
    let unknown = "0123456789abcdef0123456789abcdef";
    let config = t.hub.config.to_str().unwrap();
    let out = run("hub", &["trace", "--config", config, unknown]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = text(&out.stderr);
    assert!(
        said.contains(&format!("no record of event {unknown}"))
            && said.contains(&format!("edge trace {unknown}")),
        "{said}"
    );
    let edge_config = edge.config.to_str().unwrap();
    let out = run("edge", &["trace", "--config", edge_config, unknown]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("edge status"), "{out:?}");
    let out = run("hub", &["trace", "--config", config, "not-an-id"]);
    assert_eq!(out.status.code(), Some(2), "a usage error: {out:?}");
}

#[test]
fn edge_status_shows_the_last_datagram_and_the_last_rejection() {
    let t = Topology::new();
    let edge = t.edge("gw", None);
    assert_eq!(edge.status().last_datagram, None);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let from = sender.local_addr().unwrap();
    sender.send_to(b"not json", edge.udp).unwrap();
    let status = wait_for("the datagram", WAIT, || {
        let s = edge.status();
        s.last_rejected.is_some().then_some(s)
    });
    assert_eq!(status.last_datagram.unwrap().source, from);
    let rejected = status.last_rejected.unwrap();
    assert_eq!(
        (rejected.source, rejected.reason.as_str()),
        (from, "not_json")
    );
    let out = run(
        "edge",
        &["status", "--config", edge.config.to_str().unwrap()],
    );
    let human = text(&out.stdout);
    eprintln!("{human}");
    assert!(
        human.contains(&format!(" ago from {from}\n"))
            && human.contains(&format!(" ago from {from}: not_json (")),
        "{human}"
    );
}
