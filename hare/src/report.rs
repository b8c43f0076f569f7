//! Failure reports: stderr (pam_exec's `log=`, or a terminal) and syslog, which is where an
//! operator looks when logins stop paging them.

use std::os::unix::net::UnixDatagram;

/// syslog priority: facility authpriv (10), severity err (3).
const PRIORITY: u8 = 10 * 8 + 3;

pub fn error(msg: &str) {
    eprintln!("hare: {msg}");
    syslog(msg);
}

fn syslog(msg: &str) {
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    // Never wait on a busy log daemon: this runs inside a login.
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    let line = format!(
        "<{PRIORITY}>hare[{}]: {}",
        std::process::id(),
        msg.lines().next().unwrap_or("")
    );
    for path in ["/dev/log", "/var/run/log"] {
        if sock.send_to(line.as_bytes(), path).is_ok() {
            return;
        }
    }
}
