//! The edge binary against a real mosquitto (TLS + password) standing in for the hub, with a
//! small subscriber in the test playing the hub's part: it reads envelopes and publishes acks.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use warren_edge::status::EdgeStatus;
use warren_harness::{Mosquitto, Pki, wait_for};
use warren_proto::datagram::encode_v2;
use warren_proto::envelope::VERSION;
use warren_proto::sign::KeySet;
use warren_proto::{Ack, Envelope, EventId, Kind, topic};

const EDGE: &str = env!("CARGO_BIN_EXE_edge");
const KEY_FILE: &str = "site-a MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";
const WAIT: Duration = Duration::from_secs(30);

/// An edge whose status is read as the edge's own type.
type Edge = warren_harness::Edge<EdgeStatus>;

/// Writes an edge config in `dir` for a broker on `port` (TLS with `pki`).
fn config(dir: &Path, port: u16, pki: &Pki, ingest_extra: &str) -> PathBuf {
    std::fs::write(dir.join("hare.keys"), KEY_FILE).unwrap();
    std::fs::write(dir.join("edge.password"), "edge-pw\n").unwrap();
    let path = dir.join("edge.toml");
    std::fs::write(
        &path,
        format!(
            r#"
edge_id = "gw"
site = "paris-dc"
state_dir = "{dir}/state"
shutdown_grace = "5s"
[ingest]
listen = ["127.0.0.1:0"]
key_file = "{dir}/hare.keys"
{ingest_extra}
[hub]
address = "127.0.0.1:{port}"
ca_file = "{ca}"
username = "gw"
password_file = "{dir}/edge.password"
keep_alive = "5s"
ack_timeout = "10s"
max_backoff = "500ms"
"#,
            dir = dir.display(),
            ca = pki.ca().display(),
        ),
    )
    .unwrap();
    path
}

fn signed(n: usize) -> (EventId, Vec<u8>) {
    let keys = KeySet::parse(KEY_FILE).unwrap();
    let mut e = warren_proto::Event::new(Kind::Login, now());
    e.set_str("hostname", Some("web"))
        .set_str("user", Some(&format!("user{n}")));
    let id = EventId::generate();
    (id, encode_v2(id, &e, keys.first(), false))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The hub's part: collects envelopes and (when `acking`) acks each one.
struct FakeHub {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Envelope>,
}

impl FakeHub {
    fn connect(port: u16, pki: &Pki, acking: bool) -> Self {
        let mut o = MqttOptions::new("fake-hub", "127.0.0.1", port);
        o.set_credentials("hub", "hub-pw")
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(5));
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: std::fs::read(pki.ca()).unwrap(),
            alpn: None,
            client_auth: None,
        }));
        let (client, mut eventloop) = AsyncClient::new(o, 100_000);
        let (tx, rx) = mpsc::unbounded_channel();
        let c = client.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        c.try_subscribe(topic::EVENT_FILTER, QoS::AtLeastOnce)
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Ok(env) = Envelope::decode(&p.payload) else {
                            continue;
                        };
                        if acking {
                            let ack = Ack {
                                v: VERSION,
                                ids: vec![env.id],
                            };
                            let _ = c.try_publish(
                                topic::ack(&env.edge),
                                QoS::AtLeastOnce,
                                false,
                                ack.encode(),
                            );
                        }
                        if tx.send(env).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // The broker is down (a test stopped it): try again shortly.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self { client, rx }
    }

    async fn next(&mut self) -> Envelope {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("an envelope in time")
            .unwrap()
    }

    async fn ack(&self, edge: &str, ids: Vec<EventId>) {
        let ack = Ack { v: VERSION, ids };
        self.client
            .publish(topic::ack(edge), QoS::AtLeastOnce, false, ack.encode())
            .await
            .unwrap();
    }

    /// Collects envelopes until `ids` have all arrived.
    async fn collect(&mut self, ids: &HashSet<EventId>) -> usize {
        let mut seen = HashSet::new();
        let mut total = 0;
        while !ids.is_subset(&seen) {
            seen.insert(self.next().await.id);
            total += 1;
        }
        total
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    broker: Mosquitto,
    config: PathBuf,
}

fn setup() -> Option<Setup> {
    if !Mosquitto::available() {
        return None;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let broker = Mosquitto::start(
        dir.path(),
        Some(&pki),
        &[("gw", "edge-pw"), ("hub", "hub-pw")],
    );
    let config = config(dir.path(), broker.port, &pki, "");
    Some(Setup {
        _dir: dir,
        pki,
        broker,
        config,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_arrive_with_every_field_and_stay_until_acked() {
    let Some(s) = setup() else { return };
    let mut hub = FakeHub::connect(s.broker.port, &s.pki, false);
    let edge = Edge::start("gw", &s.config);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let legacy = br#"{"tst":1795708571,"hostname":"vm","user":"dan","service":"sshd","rhost":"192.0.2.10","tty":"ssh"}"#;
    sock.send_to(legacy, edge.udp).unwrap();
    let (signed_id, signed) = signed(1);
    sock.send_to(&signed, edge.udp).unwrap();

    let mut got = [hub.next().await, hub.next().await];
    got.sort_by_key(|e| e.signed);
    let (l, v2) = (&got[0], &got[1]);
    assert_eq!(
        (l.site.as_str(), l.edge.as_str(), l.remote.as_str()),
        ("paris-dc", "gw", "127.0.0.1")
    );
    assert!(!l.signed && v2.signed);
    assert_eq!(
        l.event.fields(),
        &serde_json::from_slice::<serde_json::Map<_, _>>(legacy).unwrap()
    );
    assert_eq!(l.id, l.event.legacy_id());
    assert_eq!(v2.id, signed_id);
    assert_eq!(v2.event.get_str("user"), Some("user1"));

    // Delivered, but not acked: both stay queued. (The counters are updated just after the
    // send, so the hub can see the events a moment before the status says so.)
    wait_for("both in flight and queued", WAIT, || {
        let st = edge.status();
        ((st.queue_depth, st.in_flight, st.counters.accepted) == (2, 2, 2)).then_some(())
    });
    hub.ack("gw", vec![signed_id]).await;
    wait_for("one ack applied", WAIT, || {
        (edge.status().queue_depth == 1).then_some(())
    });
    hub.ack("gw", vec![l.id]).await;
    wait_for("queue empty", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
    assert_eq!(edge.status().counters.acked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_survive_a_broker_outage() {
    let Some(mut s) = setup() else { return };
    let mut hub = FakeHub::connect(s.broker.port, &s.pki, true);
    let edge = Edge::start("gw", &s.config);
    s.broker.stop();
    wait_for("edge to notice", WAIT, || {
        (!edge.status().link.connected).then_some(())
    });

    let events: Vec<_> = (0..10_000).map(signed).collect();
    let datagrams: Vec<_> = events.iter().map(|(_, d)| d.clone()).collect();
    edge.send_confirmed(&datagrams);
    assert_eq!(edge.status().queue_depth, 10_000);

    s.broker.restart();
    let ids: HashSet<_> = events.iter().map(|(id, _)| *id).collect();
    hub.collect(&ids).await;
    wait_for("every event acked", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
    assert_eq!(edge.status().counters.acked, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_accepted() {
    let Some(s) = setup() else { return };
    let mut hub = FakeHub::connect(s.broker.port, &s.pki, true);
    let mut edge = Edge::start("gw", &s.config);
    let mut confirmed = HashSet::new();
    for round in 0..3 {
        let batch: Vec<_> = (0..1000).map(|n| signed(round * 1000 + n)).collect();
        let (first, rest) = batch.split_at(600);
        edge.send_confirmed(&first.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>());
        confirmed.extend(first.iter().map(|(id, _)| *id));
        // The rest is in flight when the edge dies: whatever it accepted must still arrive.
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        for (_, d) in rest {
            sock.send_to(d, edge.udp).unwrap();
        }
        edge.kill_and_restart();
    }
    hub.collect(&confirmed).await;
    wait_for("queue drained", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let Some(s) = setup() else { return };
    let mut edge = Edge::start("gw", &s.config);
    edge.send_confirmed(&[signed(1).1]);
    edge.proc.signal("TERM");
    assert_eq!(edge.proc.wait_exit(Duration::from_secs(10)), Some(0));
    // What it held is still there for the next run.
    let edge = Edge::start("gw", &s.config);
    assert_eq!(edge.status().queue_depth, 1);
}

#[test]
fn bad_input_is_rejected_counted_and_survived() {
    let Some(s) = setup() else { return };
    let dir = s.config.parent().unwrap().join("strict");
    std::fs::create_dir_all(&dir).unwrap();
    // Loopback IPv6 is allowed, IPv4 is not; unsigned datagrams are refused.
    let config = config(
        &dir,
        s.broker.port,
        &s.pki,
        "listen = [\"[::1]:0\", \"127.0.0.1:0\"]\nallow = [\"::1/128\"]\naccept_unsigned = false\nmax_skew = \"60s\"",
    );
    let text =
        std::fs::read_to_string(&config)
            .unwrap()
            .replacen("listen = [\"127.0.0.1:0\"]\n", "", 1);
    std::fs::write(&config, text).unwrap();
    let edge = Edge::start("gw", &config);
    let st = edge.status();
    let v6: SocketAddr = st.listen[0].parse().unwrap();
    let v4: SocketAddr = st.listen[1].parse().unwrap();
    let sock = UdpSocket::bind("[::1]:0").unwrap();

    let keys = KeySet::parse(KEY_FILE).unwrap();
    let other_key = KeySet::parse("site-a ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=").unwrap();
    let event = |tst| {
        let mut e = warren_proto::Event::new(Kind::Login, tst);
        e.set_str("user", Some("mallory"));
        e
    };
    let (_, good) = signed(7);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("too_large", vec![b' '; 5000]),
        ("not_utf8", b"{\"tst\":1,\"user\":\"\xff\"}".to_vec()),
        ("not_json", b"hello".to_vec()),
        (
            "not_json",
            format!("{}{}", "[".repeat(2000), "]".repeat(2000)).into_bytes(),
        ),
        ("bad_field", br#"{"tst":"yesterday"}"#.to_vec()),
        ("unsigned", br#"{"tst":1,"user":"dan"}"#.to_vec()),
        (
            "bad_mac",
            encode_v2(EventId::generate(), &event(now()), other_key.first(), false),
        ),
        (
            "stale",
            encode_v2(
                EventId::generate(),
                &event(now() - 3600),
                keys.first(),
                false,
            ),
        ),
        ("replayed", good.clone()),
    ];
    sock.send_to(&good, v6).unwrap();
    wait_for("the good datagram", WAIT, || {
        (edge.status().counters.accepted == 1).then_some(())
    });
    for (reason, bytes) in &cases {
        sock.send_to(bytes, v6).unwrap();
        wait_for(reason, WAIT, || {
            edge.status()
                .counters
                .rejected
                .get(*reason)
                .copied()
                .filter(|&n| n >= 1)
        });
    }
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&signed(8).1, v4)
        .unwrap();
    wait_for("source_not_allowed", WAIT, || {
        edge.status()
            .counters
            .rejected
            .get("source_not_allowed")
            .copied()
    });
    // Still serving.
    sock.send_to(&signed(9).1, v6).unwrap();
    wait_for("a later good datagram", WAIT, || {
        (edge.status().counters.accepted == 2).then_some(())
    });
    let st = edge.status();
    assert_eq!(st.counters.rejected.get("not_json"), Some(&2));
    assert_eq!(
        st.counters.rejected.values().sum::<u64>(),
        cases.len() as u64 + 1
    );
}

#[test]
fn status_human_json_and_monitoring_plugin() {
    let Some(s) = setup() else { return };
    let edge = Edge::start("gw", &s.config);
    let run = |args: &[&str]| {
        let out = Command::new(EDGE)
            .arg("status")
            .arg("--socket")
            .arg(&edge.socket)
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, human) = run(&[]);
    assert_eq!(code, Some(0));
    assert!(
        human.contains("edge gw (site paris-dc)") && human.contains("queue: 0 events"),
        "{human}"
    );
    let (code, json) = run(&["--json"]);
    assert_eq!(code, Some(0));
    let parsed: EdgeStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.edge_id, "gw");

    let (code, line) = run(&["--warn-depth", "5", "--crit-depth", "10"]);
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.starts_with("EDGE OK - gw") && line.contains("| 'depth'=0;5;10;0"),
        "{line}"
    );

    // Queue three events with the broker gone, then ask again.
    let mut broker = s.broker;
    broker.stop();
    edge.send_confirmed(&(0..3).map(|n| signed(n).1).collect::<Vec<_>>());
    let (code, line) = run(&["--warn-depth", "2", "--crit-depth", "10"]);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.starts_with("EDGE WARNING"), "{line}");
    let (code, _) = run(&["--warn-depth", "1", "--crit-depth", "2"]);
    assert_eq!(code, Some(2));

    // No daemon: CRITICAL.
    let out = Command::new(EDGE)
        .args([
            "status",
            "--socket",
            "/nonexistent.sock",
            "--crit-age",
            "5m",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("EDGE CRITICAL"));
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("edge.toml");
    std::fs::write(
        &bad,
        "site = \"home\"\n[hub]\naddress = \"h:1\"\nca_fil = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(EDGE)
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("edge.toml") && err.contains("line 4") && err.contains("ca_fil"),
        "{err}"
    );
}

#[test]
fn a_damaged_queue_does_not_stop_the_edge() {
    let Some(s) = setup() else { return };
    let mut edge = Edge::start("gw", &s.config);
    edge.send_confirmed(&(0..50).map(|n| signed(n).1).collect::<Vec<_>>());
    edge.proc.kill9();
    // Scribble over the end of sled's data file, as a torn write at power loss might.
    let db = s.config.parent().unwrap().join("state/queue/db");
    let len = std::fs::metadata(&db).unwrap().len();
    let mut bytes = std::fs::read(&db).unwrap();
    let start = (len as usize).saturating_sub(512);
    bytes[start..].fill(0x5a);
    std::fs::write(&db, bytes).unwrap();
    edge.kill_and_restart();
    edge.send_confirmed(&[signed(99).1]);
    assert!(edge.status().queue_depth >= 1);
}
