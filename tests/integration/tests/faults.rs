//! Faults beyond a crash, with the real binaries: a disk that fills under the edge or the
//! hub, a peer frozen with SIGSTOP, wall clocks that jump. Each checks that nothing accepted
//! is lost and nothing is notified twice.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::{Duration, Instant};

use warren_harness::proxy::Proxy;
use warren_harness::{FakeClock, Program, Tmpfs, WAIT, is_root, require, wait_for};
use warren_integration_tests::{Edge, Hub, Topology, logins, users};

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
    let config = "[queue]\nreserve_bytes = 4194304\n";
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

    // A restart on the still-full disk (what the reserve gave so far is taken too): it
    // opens, with more of its reserve if sled needs room for that, and keeps some to delete
    // what it forwards.
    let more_ballast = disk.fill("more-backups.tar");
    assert!(disk.free() < 4096, "{} bytes free", disk.free());
    edge.proc.kill9();
    edge = t.edge_with("gw", None, config);
    assert!(edge.status().disk_full_since_ms.is_some());
    let depth = edge.status().queue_depth;
    assert!(
        depth >= 3_000,
        "every confirmed event is still queued: {depth}"
    );

    // The hub back: everything held is delivered once, and the hub says the disk is full.
    t.hub = Hub::start(&t.hub.config.clone());
    t.assert_each_once(&held);
    if warren_harness::wait_until("the edge queue to drain", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    })
    .is_err()
    {
        panic!("the edge queue did not drain: {:?}", edge.status());
    }
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
    std::fs::remove_file(more_ballast).unwrap();
    wait_for("the edge to accept again", WAIT, || {
        edge.status().disk_full_since_ms.is_none().then_some(())
    });
    let later = users("later", 500);
    edge.send_confirmed(&logins(&later));
    let mut expected = held.clone();
    expected.extend(later);
    t.assert_each_once(&expected);
    // A refused event written in the batch that found the disk full may arrive: once.
    let lines = t.lines();
    let mut refused_delivered = 0;
    for u in &refused {
        let n = lines
            .iter()
            .filter(|l| l.starts_with(&format!("User {u} ")))
            .count();
        assert!(n <= 1, "{u} notified {n} times");
        refused_delivered += n;
    }
    assert_eq!(
        lines.len(),
        expected.len() + refused_delivered,
        "nothing twice"
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

/// The slow notifier's delivered count and outbox, when the hub answers.
fn slow(t: &Topology) -> Option<(u64, u64)> {
    let s = t.hub.try_status().ok()?;
    let n = s.notifiers.get("slow")?;
    Some((n.delivered, n.outbox))
}

#[test]
fn a_hub_on_a_full_disk_acks_nothing_new_keeps_delivering_and_resumes() {
    if !require("root, to mount a tmpfs", is_root()) {
        return;
    }
    // A slow second notifier, so deliveries are waiting in its outbox when the disk fills.
    let mut t = Topology::with_hub_config(
        "[notifier.slow]\ntype = \"exec\"\n\
         command = [\"/bin/sh\", \"-c\", \"sleep 0.01; echo x >> {dir}/slow.log\"]\n\
         [[route]]\nmatch = { kind = \"login\" }\nnotify = [\"slow\"]\n",
    );
    // The hub moves onto a small disk of its own, with a small reserve.
    t.hub.proc.signal("TERM");
    assert_eq!(t.hub.proc.wait_exit(WAIT), Some(0));
    let disk = Tmpfs::mount(&t.path("hub-state"), 24 << 20);
    let config = t.hub.config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("reserve_bytes = 2097152\n{text}")).unwrap();
    t.hub = Hub::start(&config);
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
    // Its outbox keeps being delivered while the disk is full.
    let (delivered, outbox) = wait_for("the slow notifier's counts", WAIT, || slow(&t));
    assert!(outbox > 0, "nothing waiting: the test proves nothing");
    wait_for("a delivery while the disk is full", WAIT, || {
        slow(&t).filter(|&(d, _)| d > delivered).map(|_| ())
    });
    assert_eq!(hub_full(&t), Some(true));
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
    wait_for("the slow notifier to catch up", WAIT * 3, || {
        slow(&t).filter(|&(_, outbox)| outbox == 0).map(|_| ())
    });
    let slow_lines = || {
        std::fs::read_to_string(t.path("slow.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    // An outbox count reloaded after a reopen can reach 0 a moment before the last delivery.
    let _ = warren_harness::wait_until("every event through the slow notifier", WAIT, || {
        (slow_lines() >= all.len()).then_some(())
    });
    assert_eq!(slow_lines(), all.len(), "the slow notifier, once each too");
}

/// How long a peer stays frozen: longer than every keepalive and grace, shorter than the
/// hub's `silent_after` (3 min).
const FROZEN: Duration = Duration::from_secs(120);

/// Presence alerts with a grace that lets a reconnect pass unannounced, for the freezes.
/// Silence is announced after 40 s, well inside the freeze, so a hub that counted its own
/// freeze as its edges' silence would say so; the edges refresh their presence every 10 s.
fn freeze_topology() -> Topology {
    Topology::with_hub_config(&ALERTS.replace(
        "grace = \"500ms\"",
        "grace = \"10s\"\nsilent_after = \"40s\"",
    ))
}

/// An edge of [`freeze_topology`].
const FREEZE_EDGE: &str = "status_interval = \"10s\"\n";

fn connected(edge: &Edge) {
    wait_for("the edge to connect", WAIT, || {
        edge.status().link.connected.then_some(())
    });
}

#[test]
fn a_hub_frozen_for_two_minutes_loses_and_repeats_nothing() {
    let t = freeze_topology();
    let edge = t.edge_with("gw", None, FREEZE_EDGE);
    connected(&edge);
    let mut all = users("before", 300);
    edge.send_confirmed(&logins(&all));
    t.assert_each_once(&all);

    t.hub.proc.signal("STOP");
    let frozen = Instant::now();
    wait_for("the edge to notice", WAIT, || {
        (!edge.status().link.connected).then_some(())
    });
    let noticed = frozen.elapsed();
    // keep_alive is 5 s: rumqttc gives up 1.5 keepalives after the last answer.
    assert!(
        noticed < Duration::from_secs(15),
        "noticed after {noticed:?}"
    );
    let during = users("during", 500);
    edge.send_confirmed(&logins(&during));
    all.extend(during);
    std::thread::sleep(FROZEN.saturating_sub(frozen.elapsed()));
    t.hub.proc.signal("CONT");

    t.assert_each_once(&all);
    wait_for("the edge queue to drain", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
    assert_eq!(t.lines().len(), all.len());
    let s = t.hub.status();
    let pause = s.last_pause.expect("the hub saw its pause");
    assert!(pause.lasted_ms >= 100_000, "{pause:?}");
    // The hub was deaf, not its edges: no edge is announced offline.
    std::thread::sleep(Duration::from_secs(12));
    assert!(alerts(&t).is_empty(), "{:?}", alerts(&t));
}

#[test]
fn an_edge_frozen_for_two_minutes_is_announced_and_loses_nothing() {
    let t = freeze_topology();
    let edge = t.edge_with("gw", None, FREEZE_EDGE);
    connected(&edge);
    let before = users("before", 300);
    edge.send_confirmed(&logins(&before));
    // Some in flight or unacked when it freezes.
    // (Few enough for the socket's receive buffer, which holds what it has not read.)
    let unacked = users("unacked", 100);
    edge.send(&logins(&unacked));

    edge.proc.signal("STOP");
    let frozen = Instant::now();
    wait_for("the hub's offline alert", WAIT, || {
        alerts(&t)
            .contains(&"gw is offline".to_owned())
            .then_some(())
    });
    let noticed = frozen.elapsed();
    // The broker waits 1.5 keepalives (5 s), then the grace (10 s).
    assert!(
        noticed < Duration::from_secs(30),
        "announced after {noticed:?}"
    );
    assert!(!t.hub.status().edges["gw"].online);
    std::thread::sleep(FROZEN.saturating_sub(frozen.elapsed()));
    edge.proc.signal("CONT");

    connected(&edge);
    let after = users("after", 300);
    edge.send_confirmed(&logins(&after));
    // What the edge had not read when it froze waited in its socket's buffer.
    let mut all = before;
    all.extend(unacked);
    all.extend(after);
    t.assert_each_once(&all);
    wait_for("the back-online alert", WAIT, || {
        alerts(&t)
            .contains(&"gw is back online".to_owned())
            .then_some(())
    });
    assert_eq!(alerts(&t), ["gw is offline", "gw is back online"]);
    let pause = edge.status().last_pause.expect("the edge saw its pause");
    assert!(pause.lasted_ms >= 100_000, "{pause:?}");
}

#[test]
fn wall_clocks_that_jump_lose_nothing_and_notify_nothing_twice() {
    if !require("libfaketime (Debian's faketime)", FakeClock::available()) {
        return;
    }
    // A dedup window shorter than the jump, so a wall-clock window would forget the ids.
    let mut t = Topology::with_hub_config(&("[dedup]\nwindow = \"1h\"\n".to_owned() + ALERTS));
    let hub_clock = FakeClock::new(&t.path("hub.clock"));
    t.hub.proc.signal("TERM");
    assert_eq!(t.hub.proc.wait_exit(WAIT), Some(0));
    let config = t.hub.config.clone();
    t.hub = Hub::launch(&hub_clock.apply(Program::built("hub").quiet()), &config).unwrap();
    let edge_clock = FakeClock::new(&t.path("edge.clock"));
    let edge_config = t.edge_config("gw", None, "");
    let edge = Edge::launch(
        &edge_clock.apply(Program::built("edge").quiet()),
        "gw",
        &edge_config,
    )
    .unwrap();
    connected(&edge);
    let first = users("first", 200);
    edge.send_confirmed(&logins(&first));
    let mut all = first.clone();
    t.assert_each_once(&all);

    for (clock, who, offset) in [
        (&hub_clock, "hub", "+1d"),
        (&hub_clock, "hub", "-1h"),
        (&edge_clock, "edge", "+1d"),
        (&edge_clock, "edge", "-1h"),
    ] {
        clock.set(offset);
        // Past the hub's tick and the grace before anything is heard, so a presence tracker
        // on the wall clock would find the edge silent.
        std::thread::sleep(Duration::from_secs(2));
        let batch = users(&format!("{who}{offset}_"), 200);
        edge.send_confirmed(&logins(&batch));
        all.extend(batch);
        t.assert_each_once(&all);
        // The first logins again (their edge forgot them once acked): still duplicates.
        let duplicates = t.hub.status().duplicates;
        edge.send_confirmed(&logins(&first));
        wait_for("the resent logins to be dropped", WAIT, || {
            (t.hub.status().duplicates >= duplicates + 200).then_some(())
        });
        assert_eq!(t.lines().len(), all.len(), "{who} {offset}: nothing twice");
    }
    // Neither clock made the edge look silent.
    assert!(alerts(&t).is_empty(), "{:?}", alerts(&t));
    // `tstamp` is the event's own time, whatever either clock said.
    let stamps: std::collections::BTreeSet<String> = t
        .lines()
        .iter()
        .filter_map(|l| l.rsplit_once(" at ").map(|(_, at)| at.to_owned()))
        .collect();
    assert_eq!(stamps.len(), 1, "{stamps:?}");
}

#[test]
fn a_bad_link_late_dribbling_and_reset_mid_packet_loses_and_repeats_nothing() {
    let t = Topology::new();
    let proxy = Proxy::start(t.hub.port);
    let edge = t.edge("gw", Some(proxy.port));
    connected(&edge);
    let mut all = Vec::new();
    for (round, fault) in ["late", "dribbled", "reset", "all three"]
        .iter()
        .enumerate()
    {
        proxy.delay(Duration::from_millis(if round == 1 { 0 } else { 30 }));
        proxy.chop(round == 1 || round == 3);
        // TLS records and MQTT packets cut wherever the count falls. (Each connection must
        // live long enough for some acks to come back, or nothing could ever be done.)
        proxy.reset_every(if round >= 2 { 150_000 } else { 0 });
        let batch = users(&format!("{}_", fault.replace(' ', "-")), 400);
        edge.send_confirmed(&logins(&batch));
        all.extend(batch);
        t.assert_each_once(&all);
    }
    proxy.delay(Duration::ZERO);
    proxy.chop(false);
    proxy.reset_every(0);
    wait_for("the edge queue to drain", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
    assert_eq!(t.lines().len(), all.len(), "nothing twice");
    // Connections were reset, and what was in flight then was sent again.
    assert!(proxy.resets() > 0, "no connection was reset");
    let sent = edge.status().counters.sent;
    assert!(sent > all.len() as u64, "sent {sent} for {}", all.len());
}
