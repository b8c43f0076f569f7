//! hare as PAM runs it: the real binary, a PAM-like environment, a UDP socket on port 0; and a
//! real PAM stack through pamtester.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use warren_harness::{is_root, require, which};
use warren_proto::sign::{KeySet, Verifier};
use warren_proto::{Datagram, Kind, MAX_LEGACY_DATAGRAM};

const HARE: &str = env!("CARGO_BIN_EXE_hare");
const KEY_FILE: &str = "site-a MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";

fn listener() -> (UdpSocket, String) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    (sock, addr)
}

fn hare(args: &[&str], env: &[(&str, &[u8])]) -> std::process::Output {
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = Command::new(HARE);
    cmd.args(args).args(["--config", "/dev/null"]).env_clear();
    for (k, v) in env {
        cmd.env(k, std::ffi::OsStr::from_bytes(v));
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0; 65536];
    let n = sock.recv(&mut buf).expect("a datagram");
    buf.truncate(n);
    buf
}

fn nothing_more(sock: &UdpSocket) {
    // hare has exited, so anything it sent is already queued on the socket.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0; 16];
    assert!(sock.recv(&mut buf).is_err(), "unexpected datagram");
}

const SSH_LOGIN: &[(&str, &[u8])] = &[
    ("PAM_TYPE", b"open_session"),
    ("PAM_USER", b"dan"),
    ("PAM_SERVICE", b"sshd"),
    ("PAM_RHOST", b"192.0.2.10"),
    ("PAM_TTY", b"ssh"),
];

#[test]
fn login_sends_one_v2_datagram_with_every_item() {
    let (sock, addr) = listener();
    let out = hare(&[&addr], SSH_LOGIN);
    assert!(out.status.success(), "{out:?}");
    let raw = recv(&sock);
    let d = Datagram::decode(&raw).unwrap();
    assert_eq!(d.version, 2);
    assert_eq!(d.event.kind(), &Kind::Login);
    for (field, want) in [
        ("user", "dan"),
        ("service", "sshd"),
        ("rhost", "192.0.2.10"),
        ("tty", "ssh"),
    ] {
        assert_eq!(d.event.get_str(field), Some(want), "{field}");
    }
    assert!(d.event.get_str("hostname").is_some_and(|h| !h.is_empty()));
    nothing_more(&sock);
}

#[test]
fn legacy_mode_is_the_original_format() {
    let (sock, addr) = listener();
    let long_user = vec![b'u'; 3000];
    let mut env = SSH_LOGIN.to_vec();
    env[1] = ("PAM_USER", &long_user);
    assert!(hare(&["--legacy", &addr], &env).status.success());
    let raw = recv(&sock);
    assert!(raw.len() <= MAX_LEGACY_DATAGRAM, "{} bytes", raw.len());
    let d = Datagram::decode(&raw).unwrap();
    assert_eq!(d.version, 1);
    let keys: Vec<_> = d.event.fields().keys().map(String::as_str).collect();
    assert_eq!(keys, ["tst", "hostname", "user", "service", "rhost", "tty"]);
    assert!(d.event.get_str("user").unwrap().ends_with('…'));
}

#[test]
fn signed_datagrams_verify_and_go_to_every_destination_with_one_id() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hare.key");
    std::fs::write(&key, KEY_FILE).unwrap();
    let (a, addr_a) = listener();
    let (b, addr_b) = listener();
    let out = hare(
        &["--key-file", key.to_str().unwrap(), &addr_a, &addr_b],
        SSH_LOGIN,
    );
    assert!(out.status.success(), "{out:?}");
    let (ra, rb) = (recv(&a), recv(&b));
    assert_eq!(ra, rb);
    let d = Datagram::decode(&ra).unwrap();
    let mut v = Verifier::new(KeySet::parse(KEY_FILE).unwrap(), false, 60);
    assert_eq!(v.check(&ra, &d, d.event.tst()), Ok(true));
}

#[test]
fn alert_for_scripts() {
    let (sock, addr) = listener();
    let out = hare(
        &[
            "alert",
            "--title",
            "Power",
            "--message",
            "Mains lost",
            "--priority",
            "2",
            "--tag",
            "ups",
            &addr,
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let d = Datagram::decode(&recv(&sock)).unwrap();
    assert_eq!(d.event.kind(), &Kind::Alert);
    assert_eq!(d.event.get_str("title"), Some("Power"));
    assert_eq!(d.event.get("priority"), Some(&serde_json::json!(2)));
    assert_eq!(d.event.get("tags"), Some(&serde_json::json!(["ups"])));
}

#[test]
fn test_sends_a_signed_test_event_and_prints_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hare.key");
    std::fs::write(&key, KEY_FILE).unwrap();
    let (sock, addr) = listener();
    let out = hare(
        &[
            "test",
            "--legacy",
            "--key-file",
            key.to_str().unwrap(),
            &addr,
        ],
        &[
            ("SUDO_USER", b"dan"),
            ("SSH_CLIENT", b"192.0.2.10 50000 22"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let raw = recv(&sock);
    let d = Datagram::decode(&raw).unwrap();
    assert_eq!(
        (d.version, d.event.kind()),
        (2, &Kind::Test),
        "never legacy"
    );
    assert_eq!(d.event.get_str("user"), Some("dan"));
    assert_eq!(d.event.get_str("rhost"), Some("192.0.2.10"));
    let mut v = Verifier::new(KeySet::parse(KEY_FILE).unwrap(), false, 60);
    assert_eq!(v.check(&raw, &d, d.event.tst()), Ok(true));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("test event {} sent to {addr}", d.id))
            && stdout.contains(&format!("hub trace {}", d.id)),
        "{stdout}"
    );
    nothing_more(&sock);
}

#[test]
fn a_failed_test_says_so_where_a_login_carries_on() {
    let bad = "hub:notaport";
    let test = hare(&["test", bad], &[]);
    assert_eq!(test.status.code(), Some(1), "{test:?}");
    assert!(
        String::from_utf8_lossy(&test.stderr).contains(bad),
        "{test:?}"
    );
    assert!(
        hare(&[bad], SSH_LOGIN).status.success(),
        "a login is never held up"
    );
    // One good destination of two: it has the event, so the id is printed all the same.
    let (sock, addr) = listener();
    let partial = hare(&["test", &addr, bad], &[]);
    assert_eq!(partial.status.code(), Some(1), "{partial:?}");
    let id = Datagram::decode(&recv(&sock)).unwrap().id;
    let stdout = String::from_utf8_lossy(&partial.stdout);
    assert!(stdout.contains(&format!("hub trace {id}")), "{partial:?}");
}

#[test]
fn close_session_is_silent_unless_logout_is_asked() {
    let (sock, addr) = listener();
    let close = [("PAM_TYPE", &b"close_session"[..]), ("PAM_USER", b"dan")];
    assert!(hare(&[&addr], &close).status.success());
    assert!(hare(&["--logout", &addr], &close).status.success());
    let d = Datagram::decode(&recv(&sock)).unwrap();
    assert_eq!(d.event.kind(), &Kind::Logout);
    nothing_more(&sock);
}

#[test]
fn invalid_utf8_in_pam_items_is_converted() {
    let (sock, addr) = listener();
    let out = hare(&[&addr], &[("PAM_USER", b"d\xffn"), ("PAM_RHOST", b"\xc3")]);
    assert!(out.status.success());
    let d = Datagram::decode(&recv(&sock)).unwrap();
    assert_eq!(d.event.get_str("user"), Some("d\u{fffd}n"));
}

#[test]
fn runtime_failures_exit_zero_and_usage_errors_exit_two() {
    let out = hare(&["localhost:notaport", "127.0.0.1:1"], SSH_LOGIN);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad port"),
        "{out:?}"
    );
    assert_eq!(hare(&["--bogus"], SSH_LOGIN).status.code(), Some(2));
    assert_eq!(
        hare(&[], SSH_LOGIN).status.code(),
        Some(2),
        "no destination"
    );
    let bad_key = hare(&["--key-file", "/nonexistent", "127.0.0.1:1"], SSH_LOGIN);
    assert_eq!(
        bad_key.status.code(),
        Some(0),
        "a missing key must not block logins"
    );
}

/// Removes the PAM service file even when the test fails.
struct PamService(std::path::PathBuf);

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn real_pam_stack_through_pamtester() {
    let Some(pamtester) = which("pamtester") else {
        require("pamtester (Debian package pamtester)", false);
        return;
    };
    if !require("root (to write /etc/pam.d)", is_root()) {
        return;
    }
    let (sock, addr) = listener();
    let name = format!("warren-hare-test-{}", std::process::id());
    let service = PamService(format!("/etc/pam.d/{name}").into());
    // Without the pam_permit line the session stack has no required module and fails.
    std::fs::write(
        &service.0,
        format!("session optional pam_exec.so {HARE} {addr}\nsession required pam_permit.so\n"),
    )
    .unwrap();
    let out = Command::new(pamtester)
        .args([
            "-v",
            "-I",
            "rhost=10.1.2.3",
            "-I",
            "tty=pts/1",
            &name,
            "alice",
            "open_session",
            "close_session",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "pamtester: {out:?}");
    let d = Datagram::decode(&recv(&sock)).unwrap();
    assert_eq!(d.event.kind(), &Kind::Login);
    for (field, want) in [
        ("user", "alice"),
        ("rhost", "10.1.2.3"),
        ("tty", "pts/1"),
        ("service", name.as_str()),
    ] {
        assert_eq!(d.event.get_str(field), Some(want), "{field}");
    }
    // close_session sends nothing without --logout: exactly one datagram.
    nothing_more(&sock);
}
