//! Resolving destinations and sending the datagram, all before a deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::time::Instant;

use warren_proto::DEFAULT_PORT;

enum Target {
    Addr(SocketAddr),
    Name(String, u16),
}

/// `HOST`, `HOST:PORT`, `IPv6`, `[IPv6]` or `[IPv6]:PORT`; the port defaults to 8035.
fn parse(dest: &str) -> Result<Target, String> {
    if let Ok(addr) = dest.parse::<SocketAddr>() {
        return Ok(Target::Addr(addr));
    }
    let bare = dest.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Target::Addr(SocketAddr::new(ip, DEFAULT_PORT)));
    }
    let (host, port) = match dest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("{dest}: bad port"))?),
        None => (dest, DEFAULT_PORT),
    };
    if host.is_empty() {
        return Err(format!("{dest}: empty host"));
    }
    Ok(Target::Name(host.to_owned(), port))
}

/// Sends `bytes` to every destination; returns one message per destination that failed.
///
/// Names are resolved on their own threads so a slow DNS server costs at most the time left to
/// the deadline; threads still waiting then die with the process.
pub fn to_all(destinations: &[String], bytes: &[u8], deadline: Instant) -> Vec<String> {
    let mut failures = Vec::new();
    let mut pending = Vec::new();
    for dest in destinations {
        match parse(dest) {
            Ok(Target::Addr(addr)) => {
                if let Err(e) = send(addr, bytes) {
                    failures.push(format!("{dest}: {e}"));
                }
            }
            Ok(Target::Name(host, port)) => {
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(
                        (host.as_str(), port)
                            .to_socket_addrs()
                            .map(Iterator::collect::<Vec<_>>),
                    );
                });
                pending.push((dest, rx));
            }
            Err(e) => failures.push(e),
        }
    }
    for (dest, rx) in pending {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(addrs)) => match addrs.first() {
                Some(&addr) => {
                    if let Err(e) = send(addr, bytes) {
                        failures.push(format!("{dest}: {e}"));
                    }
                }
                None => failures.push(format!("{dest}: no address")),
            },
            Ok(Err(e)) => failures.push(format!("{dest}: {e}")),
            Err(_) => failures.push(format!("{dest}: name lookup timed out")),
        }
    }
    failures
}

fn send(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)?;
    let sent = sock.send_to(bytes, addr)?;
    if sent != bytes.len() {
        return Err(std::io::Error::other("datagram truncated"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_forms() {
        let addr = |s| match parse(s).unwrap() {
            Target::Addr(a) => a.to_string(),
            Target::Name(h, p) => format!("name {h} {p}"),
        };
        assert_eq!(addr("192.168.1.130"), "192.168.1.130:8035");
        assert_eq!(addr("10.0.0.1:9"), "10.0.0.1:9");
        assert_eq!(addr("::1"), "[::1]:8035");
        assert_eq!(addr("[::1]"), "[::1]:8035");
        assert_eq!(addr("[::1]:9"), "[::1]:9");
        assert_eq!(addr("hub.example"), "name hub.example 8035");
        assert_eq!(addr("hub.example:9"), "name hub.example 9");
        assert!(parse("hub:port").is_err());
        assert!(parse(":9").is_err());
    }

    #[test]
    fn sends_to_each_and_reports_failures() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("[::1]:0").unwrap();
        let dests = [
            a.local_addr().unwrap().to_string(),
            b.local_addr().unwrap().to_string(),
            "x:y".to_string(),
        ];
        let failures = to_all(
            &dests,
            b"hi",
            Instant::now() + std::time::Duration::from_secs(1),
        );
        assert_eq!(failures.len(), 1, "{failures:?}");
        let mut buf = [0; 8];
        assert_eq!(a.recv(&mut buf).unwrap(), 2);
        assert_eq!(b.recv(&mut buf).unwrap(), 2);
    }
}
