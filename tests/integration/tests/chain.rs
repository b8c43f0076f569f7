//! The whole chain, end to end, with the real binaries: hare → edge → hub → file notifier,
//! through outages, kills, cut links, a real mosquitto, a real PAM stack and a real sshd.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warren_harness::proxy::Proxy;
use warren_harness::{
    Mosquitto, Pki, Proc, WAIT, bin, free_port, is_root, listening, require, wait_for, which,
};
use warren_integration_tests::{
    Edge, Hub, Topology, assert_each_arrives, logins, start_hub, users,
};

fn hare(args: &[&str], user: &str) -> std::process::Output {
    Command::new(bin("hare"))
        .args(["--config", "/dev/null"])
        .args(args)
        .env_clear()
        .envs([
            ("PAM_TYPE", "open_session"),
            ("PAM_USER", user),
            ("PAM_SERVICE", "sshd"),
            ("PAM_RHOST", "192.0.2.10"),
            ("PAM_TTY", "ssh"),
        ])
        .output()
        .unwrap()
}

/// Waits until the edge's link is up, so the next event goes straight through.
fn connected(edge: &Edge) {
    wait_for("the edge to connect", WAIT, || {
        edge.status().link.connected.then_some(())
    });
}

#[test]
fn s1_a_login_reaches_the_file_within_a_second() {
    let t = Topology::new();
    let edge = t.edge("gw", None);
    connected(&edge);
    let started = Instant::now();
    assert!(hare(&[&edge.udp.to_string()], "dan").status.success());
    let line = wait_for("the notification", WAIT, || t.lines().pop());
    let took = started.elapsed();
    eprintln!("hare → edge → hub → file: {took:?}");
    assert!(
        line.starts_with("User dan logged into ") && line.contains(" from 192.0.2.10 at 20"),
        "{line}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn s2_ten_thousand_events_through_a_hub_outage() {
    let mut t = Topology::new();
    let edge = t.edge("gw", None);
    connected(&edge);
    t.hub.proc.signal("TERM");
    assert_eq!(t.hub.proc.wait_exit(WAIT), Some(0));
    let all = users("u", 10_000);
    edge.send_confirmed(&logins(&all));
    assert_eq!(edge.status().queue_depth, 10_000);
    t.hub = Hub::start(&t.hub.config.clone());
    t.assert_each_once(&all);
    wait_for("the edge queue to drain", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
    assert_eq!(t.lines().len(), 10_000);
}

#[test]
fn s3_edge_killed_five_times_while_events_stream() {
    let t = Topology::new();
    let mut edge = t.edge("gw", None);
    let mut accepted = Vec::new();
    for round in 0..5 {
        let confirmed = users(&format!("r{round}c"), 400);
        edge.send_confirmed(&logins(&confirmed));
        accepted.extend(confirmed);
        // These are in flight, maybe accepted, when the edge dies.
        edge.send(&logins(&users(&format!("r{round}x"), 200)));
        edge.kill_and_restart();
    }
    t.assert_each_once(&accepted);
}

#[test]
fn s4_hub_killed_five_times_during_a_stream() {
    let mut t = Topology::new();
    let edge = t.edge("gw", None);
    let mut all = Vec::new();
    for round in 0..5 {
        let batch = users(&format!("h{round}_"), 500);
        edge.send_confirmed(&logins(&batch));
        all.extend(batch);
        t.hub.kill_and_restart();
    }
    // Each event once, except that a kill landing between a notification's write and its
    // durable record repeats that one notification (at most one per kill).
    assert_each_arrives(t.dir.path(), &all, 5);
    wait_for("the edge queue to drain", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
}

#[test]
fn s5_the_link_cut_and_stalled_repeatedly() {
    let t = Topology::new();
    let proxy = Proxy::start(t.hub.port);
    let edge = t.edge("gw", Some(proxy.port));
    let mut all = Vec::new();
    for round in 0..4 {
        let batch = users(&format!("l{round}_"), 300);
        edge.send_confirmed(&logins(&batch));
        all.extend(batch);
        if round % 2 == 0 {
            proxy.drop_all();
        } else {
            // A half-open link: only the edge's keep-alive notices it.
            proxy.stall(true);
            let more = users(&format!("s{round}_"), 100);
            edge.send_confirmed(&logins(&more));
            all.extend(more);
            wait_for("the edge to notice the stall", WAIT, || {
                (!edge.status().link.connected).then_some(())
            });
            proxy.stall(false);
            proxy.drop_all();
        }
    }
    t.assert_each_once(&all);
}

#[test]
fn an_edge_fails_over_to_its_next_hub_address() {
    let t = Topology::new();
    // The first address refuses connections; two more reach the hub by different paths, as
    // two broker nodes would.
    let dead = free_port().unwrap();
    let (first, second) = (Proxy::start(t.hub.port), Proxy::start(t.hub.port));
    let config = t.edge_config("gw", Some(first.port), "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("address = \"127.0.0.1:{}\"", first.port),
        &format!(
            "address = [\"127.0.0.1:{dead}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\"]",
            first.port, second.port
        ),
    );
    std::fs::write(&config, text).unwrap();
    let edge = Edge::start("gw", &config);
    let through = |port: u16| {
        let want = format!("127.0.0.1:{port}");
        wait_for(&format!("the edge to connect through {want}"), WAIT, || {
            let link = edge.status().link;
            (link.connected && link.broker.as_deref() == Some(want.as_str())).then_some(())
        });
    };
    through(first.port);
    let mut all = users("first", 200);
    edge.send_confirmed(&logins(&all));

    // The node it uses goes silent (a machine gone, not a refused connection): the keep-alive
    // notices, the edge moves on, and what was not acked is sent again through the next.
    first.stall(true);
    let more = users("second", 200);
    edge.send_confirmed(&logins(&more));
    all.extend(more);
    through(second.port);
    t.assert_each_once(&all);
}

#[test]
fn s6_one_hare_two_edges_one_notification() {
    let t = Topology::new();
    let a = t.edge("gw-a", None);
    let b = t.edge("gw-b", None);
    connected(&a);
    connected(&b);
    assert!(
        hare(&[&a.udp.to_string(), &b.udp.to_string()], "dan")
            .status
            .success()
    );
    wait_for("both edges to be acked", WAIT, || {
        (a.status().counters.acked == 1 && b.status().counters.acked == 1).then_some(())
    });
    assert_eq!(t.lines().len(), 1, "{:?}", t.lines());
    assert_eq!(t.hub.status().duplicates, 1);
}

#[test]
fn s7_through_mosquitto_with_the_hub_in_external_mode() {
    if !Mosquitto::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let broker = Mosquitto::start(
        dir.path(),
        Some(&pki),
        &[("gw-a", "a-pw"), ("gw-b", "b-pw"), ("hub", "hub-pw")],
    );
    for (user, pw) in [("gw-a", "a-pw"), ("gw-b", "b-pw"), ("hub", "hub-pw")] {
        std::fs::write(dir.path().join(format!("{user}.pw")), pw).unwrap();
    }
    let (mut hub, _) = start_hub(
        dir.path(),
        &format!(
            "mode = \"external\"\naddress = \"127.0.0.1:{}\"\nca_file = \"{}\"\nusername = \"hub\"\npassword_file = \"{}/hub.pw\"",
            broker.port,
            pki.ca().display(),
            dir.path().display()
        ),
    );
    let edge = |id: &str| {
        let config = dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "edge_id = \"{id}\"\nsite = \"s\"\nstate_dir = \"{d}/{id}-state\"\n[ingest]\nlisten = [\"127.0.0.1:0\"]\n\
                 [hub]\naddress = \"127.0.0.1:{port}\"\nca_file = \"{ca}\"\nusername = \"{id}\"\npassword_file = \"{d}/{id}.pw\"\n\
                 keep_alive = \"5s\"\nack_timeout = \"5s\"\nmax_backoff = \"500ms\"\n",
                d = dir.path().display(),
                port = broker.port,
                ca = pki.ca().display()
            ),
        )
        .unwrap();
        Edge::start(id, &config)
    };
    let (a, b) = (edge("gw-a"), edge("gw-b"));
    connected(&a);
    connected(&b);
    // One hare to both edges: one notification.
    assert!(
        hare(&[&a.udp.to_string(), &b.udp.to_string()], "dan")
            .status
            .success()
    );
    assert_each_arrives(dir.path(), &["dan".to_owned()], 0);
    // A stream with the hub killed in the middle: each event once.
    let first = users("x", 300);
    a.send_confirmed(&logins(&first));
    hub.kill_and_restart();
    let second = users("y", 300);
    b.send_confirmed(&logins(&second));
    let mut all = first;
    all.extend(second);
    all.push("dan".to_owned());
    assert_each_arrives(dir.path(), &all, 1);
}

/// Removes a file (a PAM service, a user) even when the test fails.
struct Cleanup(Box<dyn FnMut()>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[test]
fn s8_a_real_pam_login_through_pamtester() {
    let Some(pamtester) = which("pamtester") else {
        require("pamtester (Debian package pamtester)", false);
        return;
    };
    if !require("root (to write /etc/pam.d)", is_root()) {
        return;
    }
    let t = Topology::new();
    let edge = t.edge("gw", None);
    connected(&edge);
    let service = format!("warren-e2e-{}", std::process::id());
    let path = format!("/etc/pam.d/{service}");
    std::fs::write(
        &path,
        format!(
            "session optional pam_exec.so {} {}\nsession required pam_permit.so\n",
            bin("hare").display(),
            edge.udp
        ),
    )
    .unwrap();
    let _cleanup = Cleanup(Box::new(move || {
        let _ = std::fs::remove_file(&path);
    }));
    let out = Command::new(pamtester)
        .args([
            "-I",
            "rhost=10.1.2.3",
            "-I",
            "tty=pts/7",
            &service,
            "alice",
            "open_session",
            "close_session",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = wait_for("the notification", WAIT, || t.lines().pop());
    assert!(
        line.starts_with("User alice logged into ") && line.contains("from 10.1.2.3"),
        "{line}"
    );
    assert_eq!(t.lines().len(), 1);
}

#[test]
fn s9_a_real_ssh_login() {
    let Some(sshd) = which("sshd") else {
        require("sshd (Debian package openssh-server)", false);
        return;
    };
    let (Some(ssh), Some(keygen), Some(useradd)) =
        (which("ssh"), which("ssh-keygen"), which("useradd"))
    else {
        require("ssh, ssh-keygen and useradd", false);
        return;
    };
    if !require("root (sshd, a throw-away user, /etc/pam.d)", is_root()) {
        return;
    }
    let t = Topology::new();
    let edge = t.edge("gw", None);
    connected(&edge);
    let dir = t.path("sshd");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();

    // A throw-away user that can log in with a key only.
    let user = format!("wrn{}", std::process::id() % 100_000);
    let status = Command::new(useradd)
        .args(["-M", "-d", "/tmp", "-s", "/bin/sh", &user])
        .status()
        .unwrap();
    assert!(status.success(), "useradd");
    let u = user.clone();
    let _user = Cleanup(Box::new(move || {
        let _ = Command::new("userdel").arg(&u).status();
    }));
    let _ = Command::new("usermod").args(["-p", "*", &user]).status();
    let keygen_to = |path: &Path| {
        let ok = Command::new(&keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen");
    };
    keygen_to(&dir.join("host_key"));
    keygen_to(&dir.join("client_key"));
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();

    // sshd takes its PAM service name from its program name: a symlink gets its own service
    // and leaves the system's `sshd` file alone.
    let name = format!("sshd-warren{}", std::process::id() % 100_000);
    let link = dir.join(&name);
    std::os::unix::fs::symlink(&sshd, &link).unwrap();
    let pam = format!("/etc/pam.d/{name}");
    std::fs::write(
        &pam,
        format!(
            "account required pam_permit.so\nsession optional pam_exec.so {} {}\nsession required pam_permit.so\n",
            bin("hare").display(),
            edge.udp
        ),
    )
    .unwrap();
    let _pam = Cleanup(Box::new(move || {
        let _ = std::fs::remove_file(&pam);
    }));
    let port = free_port().unwrap();
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nUsePAM yes\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nAllowUsers {user}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let _sshd = Proc::spawn(
        "sshd",
        Command::new(&link)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stderr(Stdio::null()),
    );
    wait_for("sshd to listen", WAIT, || listening(port).then_some(()));
    let out = Command::new(ssh)
        .args(["-i"])
        .arg(dir.join("client_key"))
        .args([
            "-p",
            &port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            &format!("{user}@127.0.0.1"),
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = wait_for("the notification", WAIT, || t.lines().pop());
    assert!(
        line.starts_with(&format!("User {user} logged into ")) && line.contains("from 127.0.0.1"),
        "{line}"
    );
    // One session, one notification (close_session sends nothing).
    wait_for("the edge to be acked", WAIT, || {
        (edge.status().queue_depth == 0).then_some(())
    });
    assert_eq!(t.lines().len(), 1, "{:?}", t.lines());
}

#[test]
fn s10_mosquitto_sub_sees_the_legacy_republish() {
    let Some(sub) = which("mosquitto_sub") else {
        require("mosquitto_sub (Debian package mosquitto-clients)", false);
        return;
    };
    let t = Topology::new();
    let edge = t.edge("gw", None);
    connected(&edge);
    let out_path = t.path("sub.out");
    let mut subscriber = Proc::spawn(
        "mosquitto_sub",
        Command::new(sub)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &t.local_port.to_string(),
                "-t",
                "logging/hare",
                "-C",
                "1",
                "-W",
                "60",
            ])
            .stdout(std::fs::File::create(&out_path).unwrap()),
    );
    // mosquitto_sub reports nothing when it is subscribed: resend until one message lands.
    let mut n = 0;
    wait_for("the republished login", WAIT, || {
        if !subscriber.running() {
            return Some(());
        }
        n += 1;
        edge.send(&logins(&[format!("dan{n}")]));
        std::thread::sleep(Duration::from_millis(200));
        None
    });
    assert_eq!(subscriber.wait_exit(WAIT), Some(0));
    let text = std::fs::read_to_string(&out_path).unwrap();
    let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(json["user"].as_str().unwrap().starts_with("dan"), "{json}");
    assert_eq!(json["remote"], "127.0.0.1");
    assert_eq!(json["service"], "sshd");
    assert!(
        json.get("v").is_none() && json.get("id").is_none(),
        "hared format: {json}"
    );
}
