//! The trust boundary, attacked with real processes: an intruder holding one edge's valid
//! certificate, a local user on the hub, a revoked edge, and mqttwarn as the classic chain's
//! users run it.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration,
    Transport,
};
use warren_daemon::procfs;
use warren_harness::{Proc, WAIT, require, venv_tool, wait_for, wait_until};
use warren_integration_tests::{Topology, login, logins, users};
use warren_proto::envelope::VERSION;
use warren_proto::{Ack, Datagram, Envelope, topic};

/// An MQTT client through the hub's TLS front with `cert_of`'s certificate.
fn tls_client(t: &Topology, client_id: &str, cert_of: &str) -> (AsyncClient, EventLoop) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = t.pki.client(cert_of);
    let mut o = MqttOptions::new(client_id, "127.0.0.1", t.hub.port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: std::fs::read(t.pki.ca()).unwrap(),
        alpn: None,
        client_auth: Some((std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())),
    }));
    AsyncClient::new(o, 10)
}

/// Polls until the broker answers the CONNECT: Ok on success, the error otherwise.
async fn connack(el: &mut EventLoop) -> Result<(), ConnectionError> {
    loop {
        match tokio::time::timeout(WAIT, el.poll())
            .await
            .expect("an answer")
        {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Polls until the hub closes the connection; fails if it accepts what was sent.
async fn closed(el: &mut EventLoop, attack: &str) {
    loop {
        match tokio::time::timeout(WAIT, el.poll()).await {
            Err(_) => panic!("{attack}: still connected"),
            Ok(Err(_)) => return,
            Ok(Ok(Event::Incoming(
                p @ (Packet::SubAck(_) | Packet::PubAck(_) | Packet::Publish(_)),
            ))) => {
                panic!("{attack}: the hub took it: {p:?}")
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// The envelope the victim's edge makes of `user`'s login: same id, other content.
fn forged_envelope(victim: &str, user: &str) -> Envelope {
    let datagram = Datagram::decode(&login(user)).unwrap();
    let mut event = datagram.event;
    event.set_str("user", Some("nobody-logged-in"));
    Envelope {
        v: VERSION,
        id: datagram.id,
        site: format!("site-{victim}"),
        edge: victim.into(),
        received: 0,
        remote: "127.0.0.1".into(),
        signed: false,
        event,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_with_a_valid_certificate_cannot_silence_read_or_forge_another() {
    let t = Topology::new();
    let victim = t.edge("victim", None);
    // The intruder holds edge `intruder`'s certificate; that edge's own daemon is not running
    // (it would take its session back from the test's connections).
    let expected = users("v", 16);
    let ids: Vec<_> = expected
        .iter()
        .map(|u| Datagram::decode(&login(u)).unwrap().id)
        .collect();
    let forged_ack = Ack {
        v: VERSION,
        ids: ids.clone(),
    }
    .encode();

    // Half the victim's logins before the attacks, half during them.
    victim.send_confirmed(&logins(&expected[..8]));

    for (client_id, why) in [
        ("warren-hub", "taking over the hub's own client"),
        ("victim", "taking over the victim's session"),
    ] {
        let (_c, mut el) = tls_client(&t, client_id, "intruder");
        let refused = connack(&mut el).await;
        assert!(
            matches!(refused, Err(ConnectionError::ConnectionRefused(_))),
            "{why}: {refused:?}"
        );
    }

    let subscriptions = [
        "#",
        "warren/v1/event/+/+",
        "warren/v1/ack/victim",
        "warren/v1/status/+",
    ];
    for filter in subscriptions {
        let (c, mut el) = tls_client(&t, "intruder", "intruder");
        connack(&mut el)
            .await
            .expect("the intruder's own identity connects");
        c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        closed(&mut el, &format!("subscribing to {filter}")).await;
    }

    victim.send(&logins(&expected[8..]));
    let forged_event = forged_envelope("victim", &expected[0]);
    let publishes = [
        (topic::ack("victim"), forged_ack.clone(), "a forged ack"),
        (
            topic::event("site-victim", "victim"),
            forged_event.encode(),
            "a forged event for another edge",
        ),
        (
            topic::status("victim"),
            b"{}".to_vec(),
            "another edge's presence",
        ),
        (topic::LEGACY.to_owned(), login("ghost"), "the legacy topic"),
        ("elsewhere".to_owned(), b"x".to_vec(), "a foreign topic"),
    ];
    for (topic, payload, attack) in publishes {
        let (c, mut el) = tls_client(&t, "intruder", "intruder");
        connack(&mut el).await.unwrap();
        c.publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        closed(&mut el, attack).await;
    }

    let qos2 = forged_envelope("intruder", "x");
    for (qos, retain, attack) in [
        (
            QoS::ExactlyOnce,
            false,
            "QoS 2, which rumqttd would hold without bound",
        ),
        (QoS::AtLeastOnce, true, "a retained event"),
    ] {
        let (c, mut el) = tls_client(&t, "intruder", "intruder");
        connack(&mut el).await.unwrap();
        let topic = topic::event("site-intruder", "intruder");
        c.publish(topic, qos, retain, qos2.encode()).await.unwrap();
        closed(&mut el, attack).await;
    }

    // The victim's events all arrive, once, with their own content.
    t.assert_each_once(&expected);
    assert!(t.lines().iter().all(|l| !l.contains("nobody-logged-in")));
    wait_for("the victim's acks", WAIT, || {
        let s = victim.status();
        (s.counters.acked == 16 && s.queue_depth == 0).then_some(())
    });
    let refused = t.hub.status().refused;
    for (reason, at_least) in [
        ("client_id", 2),
        ("subscribe_denied", 4),
        ("publish_denied", 5),
        ("qos2", 1),
        ("retained_event", 1),
    ] {
        assert!(
            refused.get(reason).copied().unwrap_or(0) >= at_least,
            "{reason}: {refused:?}"
        );
    }

    // A positive control: the intruder's certificate still speaks for its own edge.
    let (c, mut el) = tls_client(&t, "intruder", "intruder");
    connack(&mut el).await.unwrap();
    c.subscribe(topic::ack("intruder"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let own = forged_envelope("intruder", "itself");
    c.publish(
        topic::event(&own.site, "intruder"),
        QoS::AtLeastOnce,
        false,
        own.encode(),
    )
    .await
    .unwrap();
    let acked = async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = el.poll().await.unwrap()
                && Ack::decode(&p.payload).is_ok_and(|a| a.ids.contains(&own.id))
            {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, acked)
        .await
        .expect("its own event acked");

    // Its own topic cannot carry the alerts only the hub makes: "victim is offline".
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let mut fake = forged_envelope("intruder", "offline");
    fake.event = warren_proto::Event::new(warren_proto::Kind::Other("edge_offline".into()), 1);
    c.publish(
        topic::event(&fake.site, "intruder"),
        QoS::AtLeastOnce,
        false,
        fake.encode(),
    )
    .await
    .unwrap();
    wait_for("the fake presence alert refused", WAIT, || {
        (t.hub.status().invalid >= 1).then_some(())
    });
}

/// The TCP ports `pid` listens on.
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let ours = procfs::socket_inodes(&pid.to_string());
    procfs::tcp_listeners()
        .into_iter()
        .filter(|(_, inode)| ours.contains(inode))
        .map(|(addr, _)| addr.port())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_gets_nothing_from_the_brokers_loopback_ports() {
    let t = Topology::new();
    let ports = listening_ports(t.hub.proc.pid());
    let internal: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| ![t.hub.port, t.local_port].contains(p))
        .collect();
    assert_eq!(internal.len(), 1, "rumqttd's port among {ports:?}");
    for (id, login) in [
        ("warren-hub", None),
        ("warren-hub", Some(("warren-hub", "guess"))),
        ("victim", Some(("warren-front", ""))),
    ] {
        let mut o = MqttOptions::new(id, "127.0.0.1", internal[0]);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (_c, mut el) = AsyncClient::new(o, 10);
        let r = connack(&mut el).await;
        assert!(r.is_err(), "{id} with {login:?}: {r:?}");
    }

    // Nor from their files: state directories are the daemons' alone, their files private.
    let edge = t.edge("gw", None);
    for state in [t.path("hub-state"), t.path("gw-state")] {
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700, "{}", state.display());
        let db = std::fs::read_dir(&state)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.path().is_dir())
            .unwrap()
            .path();
        let files: Vec<_> = std::fs::read_dir(&db)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        assert!(!files.is_empty(), "no files in {}", db.display());
        for file in files {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }

    // The plain local listener lets a local tool read the legacy topic, never write anything.
    let (reader, mut el) =
        AsyncClient::new(MqttOptions::new("reader", "127.0.0.1", t.local_port), 10);
    connack(&mut el).await.unwrap();
    reader
        .subscribe(topic::LEGACY, QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = async {
        loop {
            match el.poll().await.unwrap() {
                Event::Incoming(Packet::SubAck(_)) => edge.send(&[login("dan")]),
                Event::Incoming(Packet::Publish(p)) => return p,
                _ => {}
            }
        }
    };
    let p = tokio::time::timeout(WAIT, got)
        .await
        .expect("the republished login");
    assert!(String::from_utf8_lossy(&p.payload).contains("\"user\":\"dan\""));
    for (filter, what) in [
        ("warren/v1/event/+/+", "events"),
        ("warren/v1/ack/gw", "acks"),
    ] {
        let (c, mut el) =
            AsyncClient::new(MqttOptions::new("reader2", "127.0.0.1", t.local_port), 10);
        connack(&mut el).await.unwrap();
        c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        closed(&mut el, &format!("a local tool reading {what}")).await;
    }
    let (c, mut el) = AsyncClient::new(MqttOptions::new("writer", "127.0.0.1", t.local_port), 10);
    connack(&mut el).await.unwrap();
    c.publish(topic::ack("gw"), QoS::AtLeastOnce, false, b"{}".to_vec())
        .await
        .unwrap();
    closed(&mut el, "a local tool forging an ack").await;
}

#[test]
fn a_revoked_edge_is_cut_off_while_the_hub_runs() {
    let t = Topology::new();
    let keep = t.edge("keep", None);
    let gone = t.edge("gone", None);
    for e in [&keep, &gone] {
        wait_for("both edges connected", WAIT, || {
            e.status().link.connected.then_some(())
        });
    }
    gone.send_confirmed(&logins(&users("before", 2)));
    t.assert_each_once(&users("before", 2));

    // SIGHUP re-reads the (unchanged) list; it does not stop the hub.
    t.hub.proc.signal("HUP");
    assert_eq!(t.hub.status().refused.get("revoked"), None);
    t.pki.revoke("gone");
    wait_for("the revoked edge's session closed", WAIT, || {
        (t.hub.status().refused.get("revoked") == Some(&1)).then_some(())
    });
    gone.send_confirmed(&logins(&users("after", 2)));
    keep.send_confirmed(&logins(&users("kept", 2)));
    t.assert_each_once(&users("kept", 2));
    // The revoked edge keeps its events queued; its reconnections fail the handshake.
    wait_for("a refused handshake", WAIT, || {
        let s = t.hub.status();
        (s.refused.get("tls_handshake").copied().unwrap_or(0) >= 1).then_some(())
    });
    let s = gone.status();
    assert!(!s.link.connected);
    assert_eq!(s.queue_depth, 2, "its new events wait in its queue");
    assert!(t.lines().iter().all(|l| !l.contains("User after")));
}

#[test]
fn mqttwarn_with_its_default_protocol_writes_the_republished_logins() {
    let Some(mqttwarn) = venv_tool("mqttwarn") else {
        require(
            "mqttwarn (pip install mqttwarn; .ci/run puts it in .venv)",
            false,
        );
        return;
    };
    let t = Topology::new();
    let out = t.path("mqttwarn.log");
    let ini = t.path("mqttwarn.ini");
    // The seed's own shape: [logging/hare] with a format, a file target; `protocol` unset,
    // so paho speaks MQTT 3.1.
    std::fs::write(
        &ini,
        format!(
            "[defaults]\nhostname = '127.0.0.1'\nport = {port}\nlaunch = file\nloglevel = DEBUG\n\n\
             [config:file]\nappend_newline = True\ntargets = {{\n    'sshd_log' : ['{out}'],\n    }}\n\n\
             [logging/hare]\ntargets = file:sshd_log\nformat = User {{user}} logged into {{hostname}} from {{rhost}}\n",
            port = t.local_port,
            out = out.display()
        ),
    )
    .unwrap();
    let log = t.path("mqttwarn.stderr");
    let _mqttwarn = Proc::spawn(
        "mqttwarn",
        Command::new(mqttwarn)
            .arg(format!("--config-file={}", ini.display()))
            .current_dir(t.dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let subscribed = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Subscribing to logging/hare")
            .then_some(())
    };
    wait_for("mqttwarn to subscribe", WAIT, subscribed);
    let gw = t.edge("gw", None);
    let lines = || std::fs::read_to_string(&out).unwrap_or_default();
    // Its SUBSCRIBE may be on its way still: a new login every half second until one shows.
    let deadline = std::time::Instant::now() + WAIT;
    for i in 0.. {
        gw.send(&[login(&format!("dan{i}"))]);
        if wait_until("a line", Duration::from_millis(500), || {
            lines().contains("User dan").then_some(())
        })
        .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mqttwarn wrote nothing"
        );
    }
    gw.send(&[login("eve")]);
    wait_for("mqttwarn's second line", WAIT, || {
        lines().contains("User eve").then_some(())
    });
    assert!(
        lines()
            .lines()
            .all(|l| l.starts_with("User ") && l.ends_with(" logged into web from 192.0.2.10")),
        "{}",
        lines()
    );
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !stderr.contains("connection lost"),
        "mqttwarn was disconnected:\n{stderr}"
    );
}

#[test]
fn certificates_near_their_end_are_warned_about() {
    let t = Topology::new();
    let issued = Command::new(warren_harness::bin("hub"))
        .args(["pki", "issue", "--days", "10", "--dir"])
        .arg(&t.pki.dir)
        .arg("short")
        .output()
        .unwrap();
    assert!(issued.status.success());
    let edge = t.edge("short", None);
    wait_for("the edge to connect", WAIT, || {
        edge.status().link.connected.then_some(())
    });
    let warned = |warnings: &[String], whose: &str| {
        warnings
            .iter()
            .any(|w| w.starts_with(&format!("{whose} certificate expires in")))
    };
    assert!(warned(&edge.status().warnings, "the edge's"));
    assert!(warned(&t.hub.status().warnings, "edge short's"));
    // As a monitoring check, both say WARNING (exit 1).
    for (program, socket) in [("edge", &edge.socket), ("hub", &t.hub.socket)] {
        let threshold = if program == "edge" {
            "--warn-depth"
        } else {
            "--warn-dead"
        };
        let out = Command::new(warren_harness::bin(program))
            .args(["status", threshold, "1000", "--socket"])
            .arg(socket)
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{program}: {line}");
        assert!(
            line.contains("WARNING") && line.contains("certificate expires in"),
            "{line}"
        );
    }
}
