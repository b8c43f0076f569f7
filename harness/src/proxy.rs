//! A TCP proxy between edge and hub that a test can cut: drop every connection, or stall them
//! (keep them open but forward nothing, like a dead NAT entry or a half-open link); and a
//! listener that accepts connections and never says a word, like a hung server.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The proxy; its threads end when their connections do.
#[derive(Debug)]
pub struct Proxy {
    /// The port edges connect to.
    pub port: u16,
    stalled: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `127.0.0.1:upstream`.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stalled = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (stalled.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone())
                    && let Ok(mut list) = c.lock()
                {
                    list.push(a);
                    list.push(b);
                }
                pump(&client, &server, &s);
                pump(&server, &client, &s);
            }
        });
        Self {
            port,
            stalled,
            conns,
        }
    }

    /// Closes every open connection.
    pub fn drop_all(&self) {
        if let Ok(mut list) = self.conns.lock() {
            for c in list.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    /// Stops (or resumes) forwarding, without closing anything.
    pub fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }
}

fn pump(from: &TcpStream, to: &TcpStream, stalled: &Arc<AtomicBool>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let stalled = stalled.clone();
    std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 16 * 1024];
        loop {
            if stalled.load(Ordering::SeqCst) {
                // Read nothing: bytes pile up in the kernel and no answer comes back.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// A listener on loopback that accepts every connection and never sends anything: a server
/// that hangs before its greeting. Its connections are closed when it is dropped.
#[derive(Debug)]
pub struct Silent {
    /// The port it listens on.
    pub port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Silent {
    /// Listens on `127.0.0.1:port` (0 for any free port): on a port a server just left, to
    /// stand in for it.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn bind(port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                if let (Ok(conn), Ok(mut list)) = (conn, c.lock()) {
                    list.push(conn);
                }
            }
        });
        Ok(Self { port, conns, stop })
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and closes the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Ok(mut list) = self.conns.lock() {
            for c in list.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}
