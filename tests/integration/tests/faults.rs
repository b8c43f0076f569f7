//! Faults beyond a crash, with the real binaries: a disk that fills under the edge or the
//! hub, a peer frozen with SIGSTOP. Each checks that nothing accepted is lost and nothing is
//! notified twice.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use warren_harness::{Tmpfs, WAIT, is_root, require, wait_for};
use warren_integration_tests::{Edge, Topology, logins, users};

/// Presence alerts, an edge's problems among them, go to their own file.
const ALERTS: &str = r#"[presence]
events = true
grace = "500ms"
[notifier.alerts]
type = "file"
path = "{dir}/alerts.log"
[[route]]
match = { kind = ["edge_offline", "edge_online", "edge_problem", "edge_problem_over"] }
notify = ["alerts"]
format = "{title}"
"#;

fn alerts(t: &Topology) -> Vec<String> {
    std::fs::read_to_string(t.path("alerts.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rejected(edge: &Edge, reason: &str) -> u64 {
    edge.status()
        .counters
        .rejected
        .get(reason)
        .copied()
        .unwrap_or(0)
}

/// Whether the hub says its disk is full; `None` while it does not answer (reopening its
/// database on a full disk holds the status back for a moment).
fn hub_full(t: &Topology) -> Option<bool> {
    Some(t.hub.try_status().ok()?.disk_full_since_ms.is_some())
}

#[test]
fn an_edge_on_a_full_disk_forwards_what_it_holds_refuses_the_rest_and_resumes() {
    if !require("root, to mount a tmpfs", is_root()) {
        return;
    }
    let mut t = Topology::with_hub_config(ALERTS);
    let disk = Tmpfs::mount(&t.path("gw-state"), 16 << 20);
    let config = "[queue]\nreserve_bytes = 2097152\n";
    let mut edge = t.edge_with("gw", None, config);
    wait_for("the edge to connect", WAIT, || {
        edge.status().link.connected.then_some(())
    });

    // The hub away: events pile up on the edge; then something else fills its disk.
    t.hub.proc.signal("TERM");
    assert_eq!(t.hub.proc.wait_exit(WAIT), Some(0));
    let held = users("held", 3_000);
    edge.send_confirmed(&logins(&held));
    let ballast = disk.fill("backups.tar");
    let refused = users("refused", 2_000);
    edge.send(&logins(&refused));
    wait_for("the edge to refuse for a full disk", WAIT, || {
        (rejected(&edge, "disk_full") > 0).then_some(())
    });
    let s = edge.status();
    assert!(s.disk_full_since_ms.is_some(), "{s:?}");
    assert!(
        warren_edge::status::check(Ok(&s), &Default::default())
            .1
            .contains("disk full"),
    );
    assert_eq!(
        warren_edge::status::check(Ok(&s), &Default::default()).0,
        warren_daemon::nagios::State::Critical
    );

    // A restart on the still-full disk: it opens with the rest of its reserve.
    edge.proc.kill9();
    edge = t.edge_with("gw", None, config);
    assert!(edge.status().disk_full_since_ms.is_some());
    let depth = edge.status().queue_depth;
    assert!(
        depth >= 3_000,
        "every confirmed event is still queued: {depth}"
    );

    // The hub back: everything held is delivered once, and the hub says the disk is full.
    t.hub = warren_integration_tests::Hub::start(&t.hub.config.clone());
    t.assert_each_once(&held);
    wait_for("the edge queue to drain", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
    wait_for("the hub's disk-full alert", WAIT, || {
        alerts(&t)
            .contains(&"gw: disk full".to_owned())
            .then_some(())
    });
    assert_eq!(
        t.hub.status().edges["gw"].problem.as_deref(),
        Some("disk_full")
    );

    // Space again: it accepts by itself, and the hub says so.
    std::fs::remove_file(ballast).unwrap();
    wait_for("the edge to accept again", WAIT, || {
        edge.status().disk_full_since_ms.is_none().then_some(())
    });
    let later = users("later", 500);
    edge.send_confirmed(&logins(&later));
    let mut expected = held.clone();
    expected.extend(later);
    t.assert_each_once(&expected);
    let lines = t.lines();
    let refused_delivered = refused
        .iter()
        .filter(|u| lines.iter().any(|l| l.starts_with(&format!("User {u} "))))
        .count();
    eprintln!(
        "refused while full, delivered anyway (written before the failure): {refused_delivered}"
    );
    wait_for("the hub's all-clear", WAIT, || {
        alerts(&t)
            .contains(&"gw: disk full (resolved)".to_owned())
            .then_some(())
    });
    assert_eq!(
        alerts(&t)
            .iter()
            .filter(|a| a.starts_with("gw: disk full"))
            .count(),
        2,
        "one alert and one all-clear: {:?}",
        alerts(&t)
    );
}

#[test]
fn a_hub_on_a_full_disk_acks_nothing_new_keeps_delivering_and_resumes() {
    if !require("root, to mount a tmpfs", is_root()) {
        return;
    }
    let mut t = Topology::new();
    // The hub moves onto a small disk of its own, with a small reserve.
    t.hub.proc.signal("TERM");
    assert_eq!(t.hub.proc.wait_exit(WAIT), Some(0));
    let disk = Tmpfs::mount(&t.path("hub-state"), 24 << 20);
    let config = t.hub.config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("reserve_bytes = 2097152\n{text}")).unwrap();
    t.hub = warren_integration_tests::Hub::start(&config);
    let edge = t.edge("gw", None);
    let before = users("before", 1_000);
    edge.send_confirmed(&logins(&before));
    t.assert_each_once(&before);

    // sled may still write into space it freed itself: the hub finds the disk full when a
    // write needs a new page.
    let ballast = disk.fill("backups.tar");
    let mut all = before;
    for round in 0.. {
        let more = users(&format!("filling{round}_"), 200);
        edge.send_confirmed(&logins(&more));
        all.extend(more);
        if hub_full(&t) == Some(true) {
            break;
        }
        assert!(round < 100, "the hub never found its disk full");
    }
    let during = users("during", 500);
    edge.send_confirmed(&logins(&during));
    let s = wait_for("the hub's status", WAIT, || t.hub.try_status().ok());
    let (state, line) = warren_hub::status::check(Ok(&s), &Default::default());
    assert_eq!(state, warren_daemon::nagios::State::Critical, "{line}");
    assert!(line.contains("disk full"), "{line}");
    // Unacked, the edge keeps what the hub could not record, and sends it again.
    wait_for("an event left unacked", WAIT, || {
        (t.hub.try_status().ok()?.unacked_disk_full > 0).then_some(())
    });
    assert!(edge.status().queue_depth > 0);
    assert!(t.hub.proc.running(), "the hub keeps running");

    std::fs::remove_file(ballast).unwrap();
    wait_for("the hub to accept again", WAIT, || {
        (hub_full(&t) == Some(false)).then_some(())
    });
    all.extend(during);
    t.assert_each_once(&all);
    wait_for("the edge queue to drain", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
    assert_eq!(t.lines().len(), all.len(), "nothing notified twice");
}
