//! The hub binary with real peers: edges as rumqttc clients over TLS, a loopback HTTP server
//! for the webhook, a real file, a real mosquitto for external mode.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use warren_harness::http::{HttpServer, Reply};
use warren_harness::{Mosquitto, Pki, wait_for};
use warren_hub::passwd;
use warren_hub::status::HubStatus;
use warren_proto::envelope::VERSION;
use warren_proto::{Ack, Envelope, Event as WEvent, EventId, Kind, topic};

const HUB: &str = env!("CARGO_BIN_EXE_hub");
const WAIT: Duration = Duration::from_secs(30);

/// A hub whose status is read as the hub's own type.
type Hub = warren_harness::Hub<HubStatus>;

/// What a test hub writes: a file notifier, and optionally a webhook.
struct Setup {
    dir: tempfile::TempDir,
    pki: Pki,
}

impl Setup {
    fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&dir.path().join("pki"));
        let users: String = ["gw", "gw2"]
            .iter()
            .map(|u| format!("{u}:{}\n", passwd::hash(&format!("{u}-pw"), b"salt-of-12b")))
            .collect();
        std::fs::write(dir.path().join("users"), users).unwrap();
        Self { dir, pki }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes hub.toml with `broker` as the `[broker]` body and `webhook` as the webhook URL.
    fn config(&self, broker: &str, webhook: Option<&str>) -> PathBuf {
        let (cert, key) = self.pki.server();
        let broker = broker
            .replace("{cert}", &cert.display().to_string())
            .replace("{key}", &key.display().to_string())
            .replace("{ca}", &self.pki.ca().display().to_string())
            .replace("{crl}", &self.pki.crl().display().to_string())
            .replace("{users}", &self.path("users").display().to_string());
        let hook = webhook.map_or(String::new(), |url| {
            format!("[notifier.hook]\ntype = \"webhook\"\nurl = \"{url}\"\n[[route]]\nnotify = [\"hook\"]\n")
        });
        let text = format!(
            r#"
state_dir = "{dir}/state"
shutdown_grace = "3s"
[broker]
{broker}
[delivery]
give_up_after = "600ms"
initial_backoff = "50ms"
max_backoff = "100ms"
timeout = "1s"
[notifier.sshd_log]
type = "file"
path = "{dir}/sshd.log"
[[route]]
match = {{ kind = "login" }}
notify = ["sshd_log"]
format = "User {{user}} logged into {{hostname}} from {{rhost}} at {{tstamp}}"
{hook}"#,
            dir = self.dir.path().display()
        );
        let path = self.path("hub.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn embedded(&self, webhook: Option<&str>) -> PathBuf {
        self.config(
            "listen_tls = \"127.0.0.1:0\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{ca}\"\ncrl_file = \"{crl}\"\nusers_file = \"{users}\"\nhandshake_timeout = \"30s\"",
            webhook,
        )
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("sshd.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn envelope(edge: &str, user: &str) -> Envelope {
    let mut event = WEvent::new(Kind::Login, 1_795_708_571);
    event
        .set_str("hostname", Some("vm"))
        .set_str("user", Some(user))
        .set_str("service", Some("sshd"))
        .set_str("rhost", Some("192.0.2.10"));
    Envelope {
        v: VERSION,
        id: event.legacy_id(),
        site: "home".into(),
        edge: edge.into(),
        received: 0,
        remote: "127.0.0.1".into(),
        signed: false,
        event,
    }
}

/// An edge as the hub sees it: an MQTT client that publishes envelopes and collects acks.
struct TestEdge {
    client: AsyncClient,
    /// What arrives on its ack topic.
    acks: mpsc::UnboundedReceiver<rumqttc::Publish>,
}

fn options(
    name: &str,
    port: u16,
    ca: &Path,
    cert: Option<(PathBuf, PathBuf)>,
    password: Option<&str>,
) -> MqttOptions {
    let mut o = MqttOptions::new(name, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true);
    if let Some(p) = password {
        o.set_credentials(name, p);
    }
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: std::fs::read(ca).unwrap(),
        alpn: None,
        client_auth: cert.map(|(c, k)| (std::fs::read(c).unwrap(), std::fs::read(k).unwrap())),
    }));
    o
}

/// Polls until the broker answers: Ok on ConnAck, Err with the reason otherwise.
async fn first_answer(eventloop: &mut EventLoop) -> Result<(), String> {
    match tokio::time::timeout(WAIT, eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Ok(()),
        Ok(Ok(other)) => Err(format!("unexpected {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

impl TestEdge {
    async fn connect(o: MqttOptions) -> Self {
        let edge = o.client_id();
        let (client, received) = listener(o, &[&topic::ack(&edge)]).await;
        Self {
            client,
            acks: received,
        }
    }

    async fn publish(&self, e: &Envelope) {
        self.client
            .publish(
                topic::event(&e.site, &e.edge),
                QoS::AtLeastOnce,
                false,
                e.encode(),
            )
            .await
            .unwrap();
    }

    async fn acked(&mut self, id: EventId) {
        loop {
            let got = tokio::time::timeout(WAIT, self.acks.recv())
                .await
                .expect("an ack in time")
                .unwrap();
            if Ack::decode(&got.payload).is_ok_and(|a| a.ids.contains(&id)) {
                return;
            }
        }
    }

    /// Publishes `e` (again, until acked: the subscription may not be active yet).
    async fn send(&mut self, e: &Envelope) {
        self.publish(e).await;
        self.acked(e.id).await;
    }
}

async fn edge(hub: &Hub, s: &Setup, name: &str) -> TestEdge {
    TestEdge::connect(options(
        name,
        hub.port,
        &s.pki.ca(),
        Some(s.pki.client(name)),
        Some(&format!("{name}-pw")),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_clients_and_is_not_stalled_by_an_idle_one() {
    let s = Setup::new();
    let hub = Hub::start(&s.embedded(None));
    let ca = s.pki.ca();
    let try_opts = |o: MqttOptions| async move {
        let (_c, mut el) = AsyncClient::new(o, 10);
        first_answer(&mut el).await
    };
    let no_cert = try_opts(options("gw", hub.port, &ca, None, Some("gw-pw"))).await;
    assert!(no_cert.is_err(), "no client certificate: {no_cert:?}");
    let other = Pki::new(&s.path("other-pki"));
    let foreign = try_opts(options(
        "gw",
        hub.port,
        &ca,
        Some(other.client("gw")),
        Some("gw-pw"),
    ))
    .await;
    assert!(foreign.is_err(), "certificate from another CA: {foreign:?}");
    let wrong = try_opts(options(
        "gw",
        hub.port,
        &ca,
        Some(s.pki.client("gw")),
        Some("nope"),
    ))
    .await;
    assert!(wrong.is_err(), "wrong password: {wrong:?}");

    // Someone connects and says nothing; a real edge still gets in at once.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", hub.port)).unwrap();
    let started = Instant::now();
    let mut e = edge(&hub, &s, "gw").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "edge waited {:?}",
        started.elapsed()
    );
    e.send(&envelope("gw", "dan")).await;
    wait_for("the notification", WAIT, || {
        (s.lines().len() == 1).then_some(())
    });
    let line = &s.lines()[0];
    assert!(
        line.starts_with("User dan logged into vm from 192.0.2.10 at 20"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_notify_once_across_edges_and_restarts() {
    let s = Setup::new();
    let mut hub = Hub::start(&s.embedded(None));
    let mut gw = edge(&hub, &s, "gw").await;
    let mut gw2 = edge(&hub, &s, "gw2").await;
    let e = envelope("gw", "dan");
    gw.send(&e).await;
    gw.send(&e).await; // a resend
    // The same hare datagram through a second edge: same id, other edge.
    gw2.send(&Envelope {
        edge: "gw2".into(),
        ..e.clone()
    })
    .await;
    wait_for("one line", WAIT, || (s.lines().len() == 1).then_some(()));
    assert_eq!(hub.status().duplicates, 2);

    hub.proc.signal("TERM");
    assert_eq!(hub.proc.wait_exit(Duration::from_secs(10)), Some(0));
    hub = Hub::start(&hub.config.clone());
    let mut gw = edge(&hub, &s, "gw").await;
    gw.send(&e).await;
    let other = envelope("gw", "eve");
    gw.send(&other).await;
    wait_for("eve's line", WAIT, || (s.lines().len() == 2).then_some(()));
    assert_eq!(
        hub.status().duplicates,
        1,
        "dan's event is still known after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_ack_and_delivery_still_delivers() {
    let s = Setup::new();
    let http = HttpServer::start(vec![Reply::Status(503)]);
    let config = s.embedded(Some(&http.url("/hook")));
    // Plenty of attempts, so the delivery is still pending when the hub dies.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("give_up_after = \"600ms\"", "give_up_after = \"1h\"");
    std::fs::write(&config, text).unwrap();
    let mut hub = Hub::start(&config);
    let mut gw = edge(&hub, &s, "gw").await;
    gw.send(&envelope("gw", "dan")).await; // acked: durable
    wait_for("a failed attempt", WAIT, || {
        (!http.requests().is_empty()).then_some(())
    });
    // The file's line recorded first: a kill between its write and its record would write it
    // again (at most once, as documented), which is not what this test is about.
    wait_for("the line recorded", WAIT, || {
        (hub.status().notifiers["sshd_log"].outbox == 0).then_some(())
    });
    hub.kill_and_restart();
    http.script(vec![Reply::Status(200)]);
    wait_for("delivery after restart", WAIT, || {
        (hub.status().notifiers["hook"].delivered == 1).then_some(())
    });
    assert_eq!(hub.status().notifiers["hook"].outbox, 0);
    assert_eq!(s.lines().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_delivers_once_or_ends_in_dead_letters() {
    let s = Setup::new();
    let http = HttpServer::start(vec![
        Reply::Status(503),
        Reply::Status(500),
        Reply::Status(200),
    ]);
    let hub = Hub::start(&s.embedded(Some(&http.url("/hook"))));
    let mut gw = edge(&hub, &s, "gw").await;
    gw.send(&envelope("gw", "dan")).await;
    wait_for("delivered on the third attempt", WAIT, || {
        (hub.status().notifiers["hook"].delivered == 1).then_some(())
    });
    let st = hub.status();
    assert_eq!(
        (st.notifiers["hook"].failures, http.requests().len()),
        (2, 3)
    );

    http.script(vec![Reply::Status(503)]);
    gw.send(&envelope("gw", "eve")).await;
    wait_for("a dead letter", WAIT, || {
        (hub.status().dead_letters == 1).then_some(())
    });
    let st = hub.status();
    assert!(st.recent_dead_letters[0].attempts >= 2, "{st:?}");
    assert_eq!(st.notifiers["hook"].outbox, 0);
    let out = Command::new(HUB)
        .args(["status", "--socket"])
        .arg(&hub.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dead letters: 1") && text.contains("HTTP 503"),
        "{text}"
    );
    let out = Command::new(HUB)
        .args(["status", "--crit-dead", "0", "--socket"])
        .arg(&hub.socket)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The operator fixes the endpoint and sends the dead letter again.
    let dead_letters = |args: &[&str]| {
        let out = Command::new(HUB)
            .arg("dead-letters")
            .args(args)
            .arg("--socket")
            .arg(&hub.socket)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let listed = dead_letters(&["list"]);
    let seq = st.recent_dead_letters[0].seq;
    assert!(
        listed.contains(&format!("#{seq}")) && listed.contains("HTTP 503"),
        "{listed}"
    );
    http.script(vec![Reply::Status(200)]);
    assert_eq!(
        dead_letters(&["retry", &seq.to_string()]).trim(),
        "1 put back for delivery"
    );
    wait_for("the retried dead letter delivered", WAIT, || {
        (hub.status().notifiers["hook"].delivered == 2).then_some(())
    });
    assert_eq!(hub.status().dead_letters, 0);
    assert_eq!(dead_letters(&["list"]), "");

    http.script(vec![Reply::Status(404)]);
    gw.send(&envelope("gw", "mallory")).await;
    wait_for("another dead letter", WAIT, || {
        (hub.status().dead_letters == 1).then_some(())
    });
    assert_eq!(
        dead_letters(&["drop", "--notifier", "hook"]).trim(),
        "1 dropped"
    );
    assert_eq!(hub.status().dead_letters, 0);
    let requests = http.requests().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        http.requests().len(),
        requests,
        "a dropped letter is not sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_not_retried_before_then() {
    let s = Setup::new();
    let busy = Reply::Full(429, vec![("Retry-After".into(), "2".into())], String::new());
    let http = HttpServer::start(vec![busy, Reply::Status(200)]);
    let hub = Hub::start(&s.embedded(Some(&http.url("/hook"))));
    let mut gw = edge(&hub, &s, "gw").await;
    gw.send(&envelope("gw", "dan")).await;
    wait_for("the 429", WAIT, || {
        (!http.requests().is_empty()).then_some(())
    });
    let refused = Instant::now();
    wait_for("the delivery", WAIT, || {
        (hub.status().notifiers["hook"].delivered == 1).then_some(())
    });
    // The schedule alone (50 ms, then 100 ms at most) would have retried at once.
    assert!(
        refused.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        refused.elapsed()
    );
    assert_eq!(http.requests().len(), 2);
    assert_eq!(
        hub.status().dead_letters,
        0,
        "a wait past the budget is still honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_that_gives_up_hands_over_to_its_fallback_once() {
    let s = Setup::new();
    let http = HttpServer::start(vec![Reply::Status(401)]);
    let config = s.embedded(Some(&http.url("/hook")));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[notifier.hook]\n",
        &format!(
            "[notifier.mail]\ntype = \"file\"\npath = \"{}\"\nfallback = \"hook\"\n[notifier.hook]\nfallback = \"mail\"\n",
            s.path("fallback.log").display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let hub = Hub::start(&config);
    let mut gw = edge(&hub, &s, "gw").await;
    gw.send(&envelope("gw", "dan")).await;
    wait_for("the fallback's delivery", WAIT, || {
        (hub.status().notifiers["mail"].delivered == 1).then_some(())
    });
    let fallback = std::fs::read_to_string(s.path("fallback.log")).unwrap();
    assert_eq!(fallback.lines().count(), 1, "{fallback}");
    assert!(fallback.contains("dan"));
    let st = hub.status();
    assert_eq!((st.dead_letters, st.notifiers["hook"].delivered), (1, 0));
    assert_eq!(http.requests().len(), 1, "a 401 is not retried");
    assert_eq!(
        s.lines().len(),
        1,
        "the route's own file notifier, unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_delay_the_file() {
    let s = Setup::new();
    let http = HttpServer::start(vec![Reply::Hang]);
    let config = s.embedded(Some(&http.url("/hook")));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("timeout = \"1s\"", "timeout = \"60s\"");
    std::fs::write(&config, text).unwrap();
    let hub = Hub::start(&config);
    let mut gw = edge(&hub, &s, "gw").await;
    for user in ["a", "b", "c"] {
        gw.send(&envelope("gw", user)).await;
    }
    wait_for(
        "three lines while the webhook hangs",
        Duration::from_secs(10),
        || (s.lines().len() == 3).then_some(()),
    );
    assert_eq!(hub.status().notifiers["hook"].delivered, 0);
    assert_eq!(
        http.requests().len(),
        1,
        "the webhook is stuck on its first request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_against_mosquitto() {
    if !Mosquitto::available() {
        return;
    }
    let s = Setup::new();
    let broker = Mosquitto::start(
        s.dir.path(),
        Some(&s.pki),
        &[("gw", "gw-pw"), ("hub", "hub-pw")],
    );
    std::fs::write(s.path("hub.pw"), "hub-pw\n").unwrap();
    let config = s.config(
        &format!(
            "mode = \"external\"\naddress = \"127.0.0.1:{}\"\nca_file = \"{{ca}}\"\nusername = \"hub\"\npassword_file = \"{}\"",
            broker.port,
            s.path("hub.pw").display()
        ),
        None,
    );
    let hub = Hub::start(&config);
    assert_eq!(hub.status().mode, "external");
    let mut gw =
        TestEdge::connect(options("gw", broker.port, &s.pki.ca(), None, Some("gw-pw"))).await;
    let e = envelope("gw", "dan");
    gw.send(&e).await;
    gw.send(&e).await;
    wait_for("one line", WAIT, || (s.lines().len() == 1).then_some(()));
    assert_eq!(hub.status().duplicates, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_made_by_mosquitto_passwd_log_in_and_wrong_passwords_do_not() {
    if !Mosquitto::available() {
        return;
    }
    let s = Setup::new();
    let users = s.path("mosquitto.users");
    for (flags, user, password) in [
        (&["-c", "-b"][..], "gw", "gw-pw"),
        (&["-b"][..], "gw2", "gw2-pw"),
    ] {
        let status = Command::new("mosquitto_passwd")
            .args(flags)
            .arg(&users)
            .args([user, password])
            .status()
            .unwrap();
        assert!(status.success());
    }
    // Passwords only: no client certificate is asked for.
    let hub = Hub::start(&s.config(
        &format!(
            "listen_tls = \"127.0.0.1:0\"\ncert_file = \"{{cert}}\"\nkey_file = \"{{key}}\"\nusers_file = \"{}\"",
            users.display()
        ),
        None,
    ));
    let ca = s.pki.ca();
    let attempt = |id: &str, password: &str| {
        let o = options(id, hub.port, &ca, None, Some(password));
        async move {
            let (_c, mut el) = AsyncClient::new(o, 10);
            first_answer(&mut el).await
        }
    };
    attempt("gw", "gw-pw").await.expect("gw's own password");
    let wrong = attempt("gw", "gw2-pw").await;
    assert!(wrong.is_err(), "another user's password: {wrong:?}");
    let nobody = attempt("nobody", "x").await;
    assert!(nobody.is_err(), "an unknown user: {nobody:?}");
    let mut gw2 = TestEdge::connect(options("gw2", hub.port, &ca, None, Some("gw2-pw"))).await;
    gw2.send(&envelope("gw2", "dan")).await;
    wait_for("the notification", WAIT, || {
        (s.lines().len() == 1).then_some(())
    });
    let refused = hub.status().refused;
    assert_eq!(refused.get("bad_password"), Some(&2), "{refused:?}");
}

/// An MQTT client subscribed to `filters`, and what it receives, read in the background.
async fn listener(
    o: MqttOptions,
    filters: &[&str],
) -> (AsyncClient, mpsc::UnboundedReceiver<rumqttc::Publish>) {
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    first_answer(&mut eventloop).await.expect("connects");
    for f in filters {
        client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let _ = tx.send(p);
            }
        }
    });
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_mosquitto_the_generated_acl_keeps_each_edge_to_itself() {
    if !Mosquitto::available() {
        return;
    }
    let s = Setup::new();
    std::fs::write(s.path("hub.pw"), "hub-pw\n").unwrap();
    let config = |port: u16| {
        s.config(
            &format!(
                "mode = \"external\"\naddress = \"127.0.0.1:{port}\"\nca_file = \"{{ca}}\"\nusername = \"hub\"\npassword_file = \"{}\"",
                s.path("hub.pw").display()
            ),
            None,
        )
    };
    let out = Command::new(HUB)
        .args(["acl", "--format", "mosquitto", "-c"])
        .arg(config(1))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acl = s.path("mosquitto.acl");
    std::fs::write(&acl, &out.stdout).unwrap();
    let broker = Mosquitto::start_with(
        s.dir.path(),
        Some(&s.pki),
        &[("gw", "gw-pw"), ("gw2", "gw2-pw"), ("hub", "hub-pw")],
        &format!("acl_file {}", acl.display()),
    );
    let hub = Hub::start(&config(broker.port));
    let ca = s.pki.ca();
    let opts = |id: &str, user: &str| {
        let mut o = options(id, broker.port, &ca, None, None);
        o.set_credentials(user, format!("{user}-pw"));
        o
    };
    // gw's credentials, as an intruder on gw's host has them, under any client id.
    let (spy, mut seen) = listener(
        opts("spy", "gw"),
        &[
            "warren/v1/event/#",
            "warren/v1/ack/gw2",
            "warren/v1/ack/+",
            "#",
        ],
    )
    .await;
    let mut gw2 = TestEdge::connect(opts("gw2", "gw2")).await;
    let forged_ack = Ack {
        v: VERSION,
        ids: vec![envelope("gw2", "dan").id],
    };
    spy.publish(
        topic::ack("gw2"),
        QoS::AtLeastOnce,
        false,
        forged_ack.encode(),
    )
    .await
    .unwrap();
    let forged = envelope("gw2", "mallory");
    spy.publish(
        topic::event("home", "gw2"),
        QoS::AtLeastOnce,
        false,
        forged.encode(),
    )
    .await
    .unwrap();
    for user in ["dan", "eve"] {
        gw2.send(&envelope("gw2", user)).await;
    }
    wait_for("gw2's two lines", WAIT, || {
        (s.lines().len() == 2).then_some(())
    });
    // The edge's own events pass; then nothing the intruder sent had any effect.
    let mut own = TestEdge::connect(opts("gw", "gw")).await;
    own.send(&envelope("gw", "frank")).await;
    wait_for("gw's line", WAIT, || (s.lines().len() == 3).then_some(()));
    let lines = s.lines();
    assert!(
        lines.iter().all(|l| !l.contains("mallory")),
        "a forged event was notified: {lines:?}"
    );
    assert_eq!(hub.status().received, 3);
    let mut leaked = Vec::new();
    while let Ok(p) = seen.try_recv() {
        leaked.push(p.topic);
    }
    assert!(
        leaked.iter().all(|t| t == &topic::ack("gw")),
        "gw's credentials read other edges' traffic: {leaked:?}"
    );
}

/// Runs `hub check-config FILE`: its exit code and standard error.
fn check_config(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(HUB)
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_file_line_and_key() {
    // Every rule is covered by the fixtures (config.rs); here, that the binary says it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, "[broker]\nlisten_tsl = \"0.0.0.0:8883\"\n").unwrap();
    let (code, err) = check_config(&path);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("hub.toml") && err.contains("line 2") && err.contains("listen_tsl"),
        "{err}"
    );
}

#[test]
fn check_config_reads_every_file_the_config_names() {
    let s = Setup::new();
    let other = Pki::new(&s.path("other-pki"));
    let (cert, key) = s.pki.server();
    let users = s.path("users");
    std::fs::write(s.path("hook.auth"), "Bearer t0ken\n").unwrap();
    std::fs::write(s.path("bad-users"), "just-a-name\n").unwrap();
    std::fs::write(s.path("hub.pw"), "hub-pw\n").unwrap();
    let (client_cert, client_key) = s.pki.client("hub-client");
    let show = |p: &Path| p.display().to_string();

    let embedded = s
        .embedded(Some("http://127.0.0.1:9/hook"))
        .with_file_name("embedded.toml");
    std::fs::rename(s.path("hub.toml"), &embedded).unwrap();
    let hook = format!(
        "secret_headers = {{ Authorization = \"{}\" }}\n",
        show(&s.path("hook.auth"))
    );
    let text = std::fs::read_to_string(&embedded).unwrap().replace(
        "url = \"http://127.0.0.1:9/hook\"\n",
        &format!("url = \"http://127.0.0.1:9/hook\"\n{hook}"),
    );
    std::fs::write(&embedded, &text).unwrap();
    let (code, err) = check_config(&embedded);
    assert_eq!(code, Some(0), "the good config: {err}");
    for exposed in [&users, &s.path("hook.auth")] {
        assert!(
            err.contains(&format!("file={} mode=644", show(exposed))),
            "no warning for {}: {err}",
            exposed.display()
        );
        std::fs::set_permissions(exposed, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert_eq!(
        check_config(&embedded),
        (Some(0), String::new()),
        "the good config, secrets private"
    );

    let external = s.config(
        &format!(
            "mode = \"external\"\naddress = \"127.0.0.1:8883\"\nca_file = \"{{ca}}\"\nclient_cert_file = \"{}\"\nkey_file = \"{}\"\nusername = \"hub\"\npassword_file = \"{}\"",
            show(&client_cert),
            show(&client_key),
            show(&s.path("hub.pw"))
        ),
        None,
    );
    let external_text = std::fs::read_to_string(&external).unwrap();
    assert_eq!(
        check_config(&external).0,
        Some(0),
        "the good external config"
    );

    let missing = s.path("missing.pem");
    let directory = s.path("pki");
    // (which config, the file to replace, its replacement, the key to name, the reason)
    let cases: Vec<(&str, PathBuf, PathBuf, &str, &str)> = vec![
        (
            &text,
            cert.clone(),
            missing.clone(),
            "broker.cert_file",
            "No such file",
        ),
        (
            &text,
            cert.clone(),
            users.clone(),
            "broker.cert_file",
            "no PEM",
        ),
        (
            &text,
            cert.clone(),
            directory.clone(),
            "broker.cert_file",
            "directory",
        ),
        (
            &text,
            key.clone(),
            other.server().1,
            "broker.key_file",
            "does not belong",
        ),
        (
            &text,
            key.clone(),
            cert.clone(),
            "broker.key_file",
            "no PEM",
        ),
        (
            &text,
            s.pki.ca(),
            missing.clone(),
            "broker.client_ca_file",
            "No such file",
        ),
        (
            &text,
            s.pki.ca(),
            users.clone(),
            "broker.client_ca_file",
            "no PEM",
        ),
        (
            &text,
            s.pki.crl(),
            s.pki.ca(),
            "broker.crl_file",
            "no PEM revocation list",
        ),
        (
            &text,
            users.clone(),
            missing.clone(),
            "broker.users_file",
            "No such file",
        ),
        (
            &text,
            users.clone(),
            s.path("bad-users"),
            "broker.users_file",
            "line 1",
        ),
        (
            &text,
            s.path("hook.auth"),
            missing.clone(),
            "notifier.hook.secret_headers.Authorization",
            "No such file",
        ),
        (
            &external_text,
            s.pki.ca(),
            users.clone(),
            "broker.ca_file",
            "no PEM",
        ),
        (
            &external_text,
            client_cert.clone(),
            missing.clone(),
            "broker.client_cert_file",
            "No such file",
        ),
        (
            &external_text,
            client_key.clone(),
            other.server().1,
            "broker.key_file",
            "does not belong",
        ),
        (
            &external_text,
            s.path("hub.pw"),
            missing.clone(),
            "broker.password_file",
            "No such file",
        ),
    ];
    let path = s.path("case.toml");
    for (base, file, replacement, key, why) in cases {
        assert!(
            base.contains(&show(&file)),
            "{} is not in the config",
            file.display()
        );
        std::fs::write(&path, base.replace(&show(&file), &show(&replacement))).unwrap();
        let (code, err) = check_config(&path);
        assert_eq!(code, Some(2), "{key} → {}: {err}", replacement.display());
        assert!(
            err.contains("case.toml")
                && err.contains(&format!("`{key}`"))
                && err.contains(&show(&replacement))
                && err.contains(why),
            "{key} → {}: expected {why:?} in: {err}",
            replacement.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_vanishes_becomes_an_edge_offline_event() {
    use warren_proto::{Presence, PresenceState};
    let s = Setup::new();
    let config = s.embedded(None);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[presence]\nevents = true\ngrace = \"500ms\"\n[[route]]\nmatch = { kind = \"edge_offline\" }\nnotify = [\"sshd_log\"]\nformat = \"{title}\"\n");
    std::fs::write(&config, text).unwrap();
    let hub = Hub::start(&config);
    let presence = |state| Presence {
        v: VERSION,
        state,
        edge: "gw".into(),
        site: "paris-dc".into(),
        version: "test".into(),
        queue_depth: 0,
        queue_bytes: 0,
        oldest_age_ms: None,
        ts: 0,
        problem: None,
    };
    let mut o = options(
        "gw",
        hub.port,
        &s.pki.ca(),
        Some(s.pki.client("gw")),
        Some("gw-pw"),
    );
    o.set_last_will(rumqttc::LastWill::new(
        topic::status("gw"),
        presence(PresenceState::Offline).encode(),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(o, 10);
    first_answer(&mut eventloop).await.unwrap();
    client
        .publish(
            topic::status("gw"),
            QoS::AtLeastOnce,
            true,
            presence(PresenceState::Online).encode(),
        )
        .await
        .unwrap();
    let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    wait_for("the hub to see gw online", WAIT, || {
        hub.status()
            .edges
            .get("gw")
            .filter(|e| e.online)
            .map(|_| ())
    });
    // The power goes off: the connection dies without a DISCONNECT, the broker sends the will.
    driver.abort();
    drop(client);
    wait_for("the offline notification", WAIT, || s.lines().pop());
    assert_eq!(s.lines(), ["gw is offline"]);
    assert!(!hub.status().edges["gw"].online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics() {
    use std::io::{Read, Write};
    let s = Setup::new();
    let config = s.embedded(None);
    let port = warren_harness::free_port().unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&config, text).unwrap();
    let hub = Hub::start(&config);
    let mut gw = edge(&hub, &s, "gw").await;
    gw.send(&envelope("gw", "dan")).await;
    wait_for("the delivery", WAIT, || {
        (hub.status().notifiers["sshd_log"].delivered == 1).then_some(())
    });
    let get = |path: &str| {
        let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        http.write_all(request.as_bytes()).unwrap();
        let mut body = String::new();
        http.read_to_string(&mut body).unwrap();
        body
    };
    let body = get("/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for line in [
        "warren_hub_events_received_total 1",
        "warren_hub_deliveries_total{notifier=\"sshd_log\"} 1",
        "warren_hub_outbox{notifier=\"sshd_log\"} 0",
        "# TYPE warren_hub_dead_letters gauge",
    ] {
        assert!(body.contains(line), "{line} missing from:\n{body}");
    }
    // A [metrics] listener serves the counters alone, as before the page: no login.
    let body = get("/api/v1/events");
    assert!(body.starts_with("HTTP/1.1 404"), "{body}");
}

/// A login of `user` from `rhost` at `tst`, through `edge`.
fn login_from(edge: &str, user: &str, rhost: &str, tst: i64) -> Envelope {
    let mut e = envelope(edge, user);
    e.event = WEvent::new(Kind::Login, tst);
    e.event
        .set_str("hostname", Some("vm"))
        .set_str("user", Some(user))
        .set_str("service", Some("sshd"))
        .set_str("rhost", Some(rhost));
    e.id = e.event.legacy_id();
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_from_a_new_network_is_first_seen_and_the_memory_survives_a_restart() {
    let s = Setup::new();
    let config = s.embedded(None);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "format = \"User {user} logged into {hostname} from {rhost} at {tstamp}\"",
        "format = \"{user} from {rhost} first_seen={first_seen}\"",
    );
    std::fs::write(&config, text).unwrap();
    let mut hub = Hub::start(&config);
    let mut gw = edge(&hub, &s, "gw").await;
    gw.send(&login_from("gw", "dan", "203.0.113.9", 1_795_708_571))
        .await;
    wait_for("the first login", WAIT, || s.lines().pop());
    // Killed once the delivery is recorded: a kill between the write and its record would
    // write the line again (at most once, as documented), which is not what this test is about.
    wait_for("the delivery recorded", WAIT, || {
        (hub.status().notifiers["sshd_log"].outbox == 0).then_some(())
    });
    hub.kill_and_restart();
    assert_eq!(hub.status().known_sources, 1, "remembered across a kill -9");
    let mut gw = edge(&hub, &s, "gw").await;
    // An hour later, from the same /24; then from another network.
    gw.send(&login_from("gw", "dan", "203.0.113.77", 1_795_712_171))
        .await;
    gw.send(&login_from("gw", "dan", "198.51.100.4", 1_795_712_200))
        .await;
    gw.send(&login_from("gw", "eve", "203.0.113.9", 1_795_712_300))
        .await;
    wait_for("four lines", WAIT, || (s.lines().len() == 4).then_some(()));
    assert_eq!(
        s.lines(),
        [
            "dan from 203.0.113.9 first_seen=true",
            "dan from 203.0.113.77 first_seen=false",
            "dan from 198.51.100.4 first_seen=true",
            "eve from 203.0.113.9 first_seen=true",
        ]
    );
    assert_eq!(hub.status().known_sources, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_is_throttled_into_one_digest_with_the_count() {
    let s = Setup::new();
    let config = s.embedded(None);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "notify = [\"sshd_log\"]\n",
        "notify = [\"sshd_log\"]\nthrottle = { key = \"{user}@{hostname}\", max = 5, per = \"10s\" }\n",
    );
    std::fs::write(&config, text).unwrap();
    let hub = Hub::start(&config);
    let mut gw = edge(&hub, &s, "gw").await;
    // An ansible run as deploy: 100 logins, each its own event.
    let burst: Vec<Envelope> = (0..100)
        .map(|i| login_from("gw", "deploy", "192.0.2.10", 1_795_708_571 + i))
        .chain([login_from("gw", "dan", "192.0.2.10", 1_795_708_571)])
        .collect();
    for e in &burst {
        gw.publish(e).await;
    }
    let mut unacked: std::collections::HashSet<EventId> = burst.iter().map(|e| e.id).collect();
    while !unacked.is_empty() {
        let got = tokio::time::timeout(WAIT, gw.acks.recv())
            .await
            .unwrap()
            .unwrap();
        for id in Ack::decode(&got.payload).unwrap().ids {
            unacked.remove(&id);
        }
    }
    let digest = warren_harness::wait_until("the digest", WAIT, || {
        s.lines()
            .iter()
            .any(|l| l.starts_with("and "))
            .then_some(())
    });
    assert!(digest.is_ok(), "{:#?}\n{:#?}", s.lines(), hub.status());
    let lines = s.lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("User deploy"))
            .count(),
        5,
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("User dan")),
        "another key is not held back"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("and 95 more login events by deploy on vm in the last 10s"),
        "{lines:#?}"
    );
    let st = hub.status();
    assert_eq!((st.folded, st.digests, st.folded_pending), (95, 1, 0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.lines().len(), 7, "one digest per interval");
}

/// The outage that used to turn a login alert into a dead letter: the notifier's endpoint
/// refuses connections for three minutes, then comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_for_three_minutes_still_gets_the_notification_once() {
    let s = Setup::new();
    let port = warren_harness::free_port().unwrap();
    let config = s.embedded(Some(&format!("http://127.0.0.1:{port}/hook")));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("give_up_after = \"600ms\"\n", "")
        .replace("initial_backoff = \"50ms\"", "initial_backoff = \"1s\"")
        .replace("max_backoff = \"100ms\"", "max_backoff = \"10s\"");
    std::fs::write(&config, text).unwrap();
    let hub = Hub::start(&config);
    let mut gw = edge(&hub, &s, "gw").await;
    gw.send(&envelope("gw", "dan")).await;
    let down_for = Duration::from_secs(180);
    let started = Instant::now();
    wait_for("the first failed attempt", WAIT, || {
        (hub.status().notifiers["hook"].failures > 0).then_some(())
    });
    std::thread::sleep(down_for.saturating_sub(started.elapsed()));
    let st = hub.status();
    assert_eq!(
        (st.notifiers["hook"].outbox, st.dead_letters),
        (1, 0),
        "{st:?}"
    );
    assert!(
        st.notifiers["hook"]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("127.0.0.1")),
        "{st:?}"
    );
    let http = HttpServer::start_on(port, vec![Reply::Status(200)]);
    wait_for("the delivery once the endpoint is back", WAIT, || {
        (hub.status().notifiers["hook"].delivered == 1).then_some(())
    });
    let back = started.elapsed();
    assert!(
        back < down_for + Duration::from_secs(15),
        "max_backoff caps the wait: {back:?}"
    );
    assert_eq!(http.requests().len(), 1);
    assert_eq!(hub.status().dead_letters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_and_the_hubs_own_broker_as_notifiers() {
    use warren_harness::smtp::{SmtpServer, SmtpTls};
    if !SmtpServer::available() {
        return;
    }
    let s = Setup::new();
    let smtp = SmtpServer::start(&s.path("smtp"), &SmtpTls::None, &[]);
    let local = warren_harness::free_port().unwrap();
    let config = s.config(
        &format!(
            "listen_tls = \"127.0.0.1:0\"\ncert_file = \"{{cert}}\"\nkey_file = \"{{key}}\"\nclient_ca_file = \"{{ca}}\"\nusers_file = \"{{users}}\"\nlisten_local = \"127.0.0.1:{local}\"\nlocal_access = \"bus\""
        ),
        None,
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"[notifier.mail]
type = "smtp"
server = "127.0.0.1"
port = {}
security = "none"
from = "warren@example.org"
to = ["ops@example.org"]
[notifier.bus]
type = "mqtt"
broker = "hub"
topic = "alerts/{{hostname}}/{{user}}"
[[route]]
match = {{ kind = "login" }}
notify = ["mail", "bus"]
title = "{{service}} login on {{hostname}}"
format = "User {{user}} logged into {{hostname}}"
"#,
        smtp.port
    ));
    std::fs::write(&config, text).unwrap();
    let hub = Hub::start(&config);
    // A local tool on `listen_local` (a user of the users file), reading outside warren/.
    let mut o = MqttOptions::new("local-tool", "127.0.0.1", local);
    o.set_keep_alive(Duration::from_secs(5))
        .set_credentials("gw2", "gw2-pw");
    let (_tool, mut alerts) = listener(o, &["alerts/#"]).await;

    let mut gw = edge(&hub, &s, "gw").await;
    let e = envelope("gw", "dan");
    gw.send(&e).await;
    let got = tokio::time::timeout(WAIT, alerts.recv())
        .await
        .expect("the notification on the hub's broker")
        .unwrap();
    assert_eq!(got.topic, "alerts/vm/dan");
    let body: serde_json::Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(body["title"], "sshd login on vm");
    assert_eq!(body["event"]["id"], e.id.to_string());

    let mail = wait_for("the mail", WAIT, || smtp.messages().pop());
    assert_eq!(mail.header("Subject").unwrap(), "sshd login on vm");
    assert_eq!(mail.body().trim_end(), "User dan logged into vm");
    let id = mail.header("Message-ID").unwrap();
    assert!(id.starts_with(&format!("<{}.", e.id)), "{id}");
    wait_for("both deliveries counted", WAIT, || {
        let n = hub.status().notifiers;
        (n["mail"].delivered == 1 && n["bus"].delivered == 1).then_some(())
    });
}
