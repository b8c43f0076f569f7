//! Two hubs on one PostgreSQL store, sharing a mosquitto subscription, with the real
//! binaries: each login notified once whichever hub and edge it came through, nothing lost
//! when a hub is killed, one alert per edge that goes offline.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use warren_harness::{Mosquitto, Pki, Postgres, WAIT, bin, wait_for};
use warren_integration_tests::{Edge, Hub, assert_each_arrives_in, logins, start_hub_with, users};

/// What each hub adds to the common config: the shared store, presence alerts to their own
/// file, attempts short enough that a lease of 6 s is longer.
const SHARED: &str = r#"[delivery]
timeout = "2s"
[store]
kind = "postgres"
url_file = "{root}/store.url"
name = "{name}"
lease = "6s"
[presence]
events = true
grace = "1s"
[notifier.alerts]
type = "file"
path = "{dir}/alerts.log"
[[route]]
match = { kind = ["edge_offline", "edge_online"] }
notify = ["alerts"]
format = "{title}"
"#;

struct Cluster {
    root: tempfile::TempDir,
    pki: Pki,
    broker: Mosquitto,
    pg: Postgres,
}

impl Cluster {
    /// PostgreSQL and mosquitto, or `None` (said, or failed under CI) when one is missing.
    fn start() -> Option<Self> {
        if !Postgres::available() || !Mosquitto::available() {
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        let pki = Pki::new(&root.path().join("pki"));
        let accounts = [("gw-a", "a-pw"), ("gw-b", "b-pw"), ("hub", "hub-pw")];
        let broker = Mosquitto::start(root.path(), Some(&pki), &accounts);
        for (user, pw) in accounts {
            std::fs::write(root.path().join(format!("{user}.pw")), pw).unwrap();
        }
        let pg = Postgres::start();
        std::fs::write(root.path().join("store.url"), pg.url()).unwrap();
        Some(Self {
            root,
            pki,
            broker,
            pg,
        })
    }

    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A hub named `name`, in its own folder, on the shared broker subscription and store.
    fn hub(&self, name: &str) -> Hub {
        self.hub_with(name, "")
    }

    /// [`Cluster::hub`] with `more` added to its config.
    fn hub_with(&self, name: &str, more: &str) -> Hub {
        let broker = format!(
            "mode = \"external\"\naddress = \"127.0.0.1:{}\"\nca_file = \"{}\"\nusername = \"hub\"\n\
             password_file = \"{}/hub.pw\"\nclient_id = \"warren-{name}\"\nshare_group = \"warren\"",
            self.broker.port,
            self.pki.ca().display(),
            self.root.path().display()
        );
        let extra = SHARED
            .replace("{root}", &self.root.path().display().to_string())
            .replace("{name}", name)
            + more;
        start_hub_with(&self.dir(name), &broker, &extra).0
    }

    fn edge(&self, id: &str) -> Edge {
        let d = self.root.path().display();
        let config = self.root.path().join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "edge_id = \"{id}\"\nsite = \"s\"\nstate_dir = \"{d}/{id}-state\"\n[ingest]\nlisten = [\"127.0.0.1:0\"]\n\
                 [hub]\naddress = \"127.0.0.1:{port}\"\nca_file = \"{ca}\"\nusername = \"{id}\"\npassword_file = \"{d}/{id}.pw\"\n\
                 keep_alive = \"5s\"\nack_timeout = \"5s\"\nmax_backoff = \"500ms\"\n",
                port = self.broker.port,
                ca = self.pki.ca().display()
            ),
        )
        .unwrap();
        let edge = Edge::start(id, &config);
        wait_for("the edge to connect", WAIT, || {
            edge.status().link.connected.then_some(())
        });
        edge
    }

    /// The lines of `file` in every hub's folder.
    fn lines(&self, file: &str) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.root.path()).unwrap().flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path().join(file)) {
                out.extend(text.lines().map(str::to_owned));
            }
        }
        out
    }

    /// Waits until each of `expected` is notified (by either hub), then checks that at most
    /// `repeats` are notified twice, none more often.
    fn assert_each_arrives(&self, expected: &[String], repeats: usize) {
        let lines = || self.lines("notify.log");
        assert_each_arrives_in(lines, expected, repeats, Duration::from_secs(120));
    }
}

#[test]
fn two_hubs_on_one_store_notify_each_login_once() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let (one, two) = (c.hub("one"), c.hub("two"));
    let (a, b) = (c.edge("gw-a"), c.edge("gw-b"));
    // The same logins through both edges (hare sends each to two edges): the shared
    // subscription hands each copy to either hub, and each is notified once.
    let all = users("same", 400);
    a.send_confirmed(&logins(&all));
    b.send_confirmed(&logins(&all));
    c.assert_each_arrives(&all, 0);
    wait_for("both edges to be acked", WAIT, || {
        let acked = |e: &Edge| e.status().counters.acked;
        (acked(&a) == 400 && acked(&b) == 400).then_some(())
    });
    // Both hubs did some of the work, and say so.
    let (s1, s2) = (one.status(), two.status());
    assert!(s1.received > 0 && s2.received > 0, "{s1:?}\n{s2:?}");
    assert_eq!(s1.duplicates + s2.duplicates, 400);
    assert_eq!(s1.store, "postgres");
    let seen = wait_for("each hub to see the other", WAIT, || {
        let names: Vec<String> = one.status().hubs.into_iter().map(|h| h.name).collect();
        (names.len() == 2).then_some(names)
    });
    assert_eq!(seen, ["one", "two"]);
    // The file of each hub holds what it delivered: both files together are the whole.
    assert_eq!(
        c.lines("notify.log").len(),
        400,
        "{:?}",
        c.pg.psql("SELECT count(*) FROM warren_kv")
    );
}

#[test]
fn ten_thousand_events_and_a_hub_killed_three_times_lose_nothing() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let (mut one, _two) = (c.hub("one"), c.hub("two"));
    let (a, b) = (c.edge("gw-a"), c.edge("gw-b"));
    let mut all = Vec::new();
    for round in 0..4 {
        let (left, right) = (
            users(&format!("a{round}_"), 1250),
            users(&format!("b{round}_"), 1250),
        );
        a.send_confirmed(&logins(&left));
        b.send_confirmed(&logins(&right));
        all.extend(left);
        all.extend(right);
        if round < 3 {
            // Whatever it had claimed is the other hub's once its lease is over.
            one.kill_and_restart();
        }
    }
    // One file notifier per hub: a kill repeats at most the line it had written and not
    // recorded (a batch is checked against the file at the restart).
    c.assert_each_arrives(&all, 3);
}

#[test]
fn an_edge_killed_is_one_offline_alert_with_two_hubs() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let (one, two) = (c.hub("one"), c.hub("two"));
    let mut edge = c.edge("gw-a");
    let online = |h: &Hub| h.status().edges.get("gw-a").is_some_and(|e| e.online);
    wait_for("both hubs to see the edge", WAIT, || {
        (online(&one) && online(&two)).then_some(())
    });
    edge.proc.kill9();
    // mosquitto publishes its will to both hubs; both decide it is offline.
    wait_for("the offline alert", WAIT, || c.lines("alerts.log").pop());
    wait_for("both hubs to see it offline", WAIT, || {
        (!online(&one) && !online(&two)).then_some(())
    });
    // Past the grace and a few ticks of both hubs: still one.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(c.lines("alerts.log"), ["gw-a is offline"]);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn check_config_reaches_the_store() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let hub = c.hub("one");
    let check = |config: &Path| {
        Command::new(bin("hub"))
            .arg("check-config")
            .arg(config)
            .output()
            .unwrap()
    };
    let out = check(&hub.config);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("store: reached; schema version 1"), "{said}");
    // A store that cannot be reached fails the check, naming it.
    std::fs::write(
        c.root.path().join("store.url"),
        "host=127.0.0.1 port=1 user=warren connect_timeout=2",
    )
    .unwrap();
    let out = check(&hub.config);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("[store] url_file"), "{said}");
}

#[test]
fn a_stopping_hub_gives_its_claims_back() {
    let Some(c) = Cluster::start() else {
        return;
    };
    // A notifier that cannot deliver keeps its deliveries claimed, retrying.
    let down = "[notifier.down]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
                [[route]]\nmatch = { kind = \"login\" }\nnotify = [\"down\"]\n";
    let mut one = c.hub_with("one", down);
    let a = c.edge("gw-a");
    let all = users("held", 20);
    a.send_confirmed(&logins(&all));
    c.assert_each_arrives(&all, 0);
    let claimed = || {
        c.pg.psql("SELECT count(*) FROM warren_kv WHERE holder = 'one'")
    };
    let pending = || {
        c.pg.psql("SELECT count(*) FROM warren_kv WHERE get_byte(k, 0) = 111")
    };
    wait_for("the hub to claim a delivery", WAIT, || {
        (claimed() != "0").then_some(())
    });
    assert_eq!(one.stop(), Some(0));
    assert_eq!(claimed(), "0", "given back at the stop");
    assert_eq!(pending(), "20", "and still waiting, for any hub");
}
