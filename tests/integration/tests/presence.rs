//! "The power has gone off at a remote site": edges that stop reporting become one alert,
//! and one more when they are back — with the real hub and edge binaries.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::Duration;

use warren_harness::proxy::Proxy;
use warren_harness::{WAIT, wait_for};
use warren_integration_tests::{Edge, Topology};

/// The hub's presence alerts go to their own file, one line per alert.
const PRESENCE: &str = r#"[presence]
events = true
grace = "2s"
[notifier.power]
type = "file"
path = "{dir}/presence.log"
[[route]]
match = { kind = ["edge_offline", "edge_online"] }
notify = ["power"]
format = "{title}"
"#;

fn topology() -> Topology {
    Topology::with_hub_config(PRESENCE)
}

fn alerts(t: &Topology) -> Vec<String> {
    std::fs::read_to_string(t.path("presence.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn online(t: &Topology, id: &str) -> bool {
    t.hub.status().edges.get(id).is_some_and(|e| e.online)
}

fn connected(edge: &Edge) {
    wait_for("the edge to connect", WAIT, || {
        edge.status().link.connected.then_some(())
    });
}

#[test]
fn an_edge_killed_is_one_offline_alert_and_one_back_online() {
    let t = topology();
    let mut edge = t.edge("gw", None);
    connected(&edge);
    wait_for("the hub to see gw", WAIT, || online(&t, "gw").then_some(()));
    edge.proc.kill9();
    wait_for("the offline alert", WAIT, || alerts(&t).pop());
    assert_eq!(alerts(&t), ["gw is offline"]);
    assert!(!online(&t, "gw"));
    edge = t.edge("gw", None);
    connected(&edge);
    wait_for("the online alert", WAIT, || {
        (alerts(&t).len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(alerts(&t), ["gw is offline", "gw is back online"]);
}

#[test]
fn a_silently_blackholed_link_is_one_offline_alert_and_one_back_online() {
    let t = topology();
    let proxy = Proxy::start(t.hub.port);
    let edge = t.edge("gw", Some(proxy.port));
    connected(&edge);
    wait_for("the hub to see gw", WAIT, || online(&t, "gw").then_some(()));
    // Nothing gets through and nothing is closed: no will is sent until keepalives expire.
    proxy.stall(true);
    wait_for("the offline alert", WAIT, || alerts(&t).pop());
    assert_eq!(alerts(&t), ["gw is offline"]);
    proxy.stall(false);
    proxy.drop_all();
    connected(&edge);
    wait_for("the online alert", WAIT, || {
        (alerts(&t).len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(alerts(&t), ["gw is offline", "gw is back online"]);
    assert!(online(&t, "gw"));
}

#[test]
fn an_edge_that_dies_while_the_hub_is_down_is_still_announced() {
    let mut t = Topology::with_hub_config(
        &PRESENCE.replace("grace = \"2s\"", "grace = \"2s\"\nsilent_after = \"5s\""),
    );
    let mut edge = t.edge("gw", None);
    connected(&edge);
    wait_for("the hub to see gw", WAIT, || online(&t, "gw").then_some(()));
    assert_eq!(t.hub.stop(), Some(0));
    // The power goes off at the site while the hub is down: no will ever reaches the hub.
    edge.proc.kill9();
    t.hub = warren_integration_tests::Hub::start(&t.hub.config.clone());
    wait_for("the offline alert", WAIT, || alerts(&t).pop());
    assert_eq!(alerts(&t), ["gw is offline"]);
    let st = t.hub.status();
    assert!(!st.edges["gw"].online, "{st:?}");
}
