//! A TCP proxy between edge and hub that a test can cut: drop every connection, or stall them
//! (keep them open but forward nothing, like a dead NAT entry or a half-open link), or make
//! the link bad the way a real one is (no `tc netem` here): every chunk late, bytes dribbled
//! out a few at a time, connections reset in the middle of a packet. And a listener that
//! accepts connections and never says a word, like a hung server.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to what it forwards, in both directions.
#[derive(Debug, Default)]
struct Faults {
    stalled: AtomicBool,
    /// Each chunk waits this long, in ms, before it is forwarded.
    delay_ms: AtomicU64,
    /// Chunks go out a few bytes per write.
    chop: AtomicBool,
    /// A connection is reset after about this many bytes; 0: never.
    reset_every: AtomicU64,
    /// Connections reset so far.
    resets: AtomicU64,
}

/// The proxy; its threads end when their connections do.
#[derive(Debug)]
pub struct Proxy {
    /// The port edges connect to.
    pub port: u16,
    faults: Arc<Faults>,
    /// Every open connection's two sockets, by connection number.
    conns: Arc<Mutex<Vec<(usize, TcpStream)>>>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `127.0.0.1:upstream`.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let faults = Arc::new(Faults::default());
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (f, c) = (faults.clone(), conns.clone());
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone())
                    && let Ok(mut list) = c.lock()
                {
                    list.push((n, a));
                    list.push((n, b));
                }
                let cut = Cut {
                    n,
                    conns: c.clone(),
                    dead: false,
                };
                let cut = Arc::new(Mutex::new(cut));
                pump(&client, &server, &f, &cut);
                pump(&server, &client, &f, &cut);
            }
        });
        Self {
            port,
            faults,
            conns,
        }
    }

    /// Closes every open connection.
    pub fn drop_all(&self) {
        if let Ok(mut list) = self.conns.lock() {
            for (_, c) in list.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    /// Stops (or resumes) forwarding, without closing anything.
    pub fn stall(&self, on: bool) {
        self.faults.stalled.store(on, Ordering::SeqCst);
    }

    /// Holds every chunk for `d` before forwarding it (zero: none).
    pub fn delay(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.faults.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Forwards a few bytes per write (or whole chunks again), so every reader sees its
    /// records and packets arrive in pieces.
    pub fn chop(&self, on: bool) {
        self.faults.chop.store(on, Ordering::SeqCst);
    }

    /// Resets each connection (RST, both ways) after it has carried about `bytes`, wherever
    /// that falls in a packet; 0 stops it.
    pub fn reset_every(&self, bytes: u64) {
        self.faults.reset_every.store(bytes, Ordering::SeqCst);
    }

    /// How many connections were reset.
    pub fn resets(&self) -> u64 {
        self.faults.resets.load(Ordering::SeqCst)
    }
}

/// Where one proxied connection is cut, and whether it was.
#[derive(Debug)]
struct Cut {
    /// The connection's number.
    n: usize,
    conns: Arc<Mutex<Vec<(usize, TcpStream)>>>,
    /// Reset: both pumps let go of their sockets.
    dead: bool,
}

impl Cut {
    /// The byte count at which this connection is reset, for a mean of `every`: somewhere in
    /// 1/2..3/2 of it, its own for each connection (variety, not randomness, is the point).
    fn at(&self, every: u64) -> u64 {
        let spread = (self.n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % every.max(1);
        every / 2 + spread
    }

    /// Resets the connection both ways: SO_LINGER 0 on both sockets, so whichever copy of
    /// each is closed last sends RST; the proxy's own copies are closed now, and both pumps
    /// close theirs when they see `dead`.
    fn reset(&mut self, sockets: [&TcpStream; 2]) {
        for s in sockets {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
        if let Ok(mut list) = self.conns.lock() {
            list.retain(|(n, _)| *n != self.n);
        }
        self.dead = true;
    }
}

fn pump(from: &TcpStream, to: &TcpStream, faults: &Arc<Faults>, cut: &Arc<Mutex<Cut>>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (faults, cut) = (faults.clone(), cut.clone());
    std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        // Small writes must leave at once, not wait for Nagle to join them again.
        let _ = to.set_nodelay(true);
        let mut buf = [0u8; 16 * 1024];
        let mut carried = 0u64;
        loop {
            if cut.lock().is_ok_and(|c| c.dead) {
                return; // reset: close without FIN, so the last close sends RST
            }
            if faults.stalled.load(Ordering::SeqCst) {
                // Read nothing: bytes pile up in the kernel and no answer comes back.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(_) => break,
            };
            let delay = faults.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
            let every = faults.reset_every.load(Ordering::SeqCst);
            let mut chunk = &buf[..n];
            let mut reset = false;
            if every > 0 {
                let at = cut.lock().map_or(every, |c| c.at(every));
                if carried + n as u64 >= at {
                    let keep = usize::try_from(at.saturating_sub(carried)).unwrap_or(n);
                    chunk = &chunk[..keep.min(n)];
                    reset = true;
                }
            }
            carried += chunk.len() as u64;
            if write(&mut to, chunk, faults.chop.load(Ordering::SeqCst)).is_err() {
                break;
            }
            if reset {
                if let Ok(mut c) = cut.lock() {
                    c.reset([&from, &to]);
                }
                faults.resets.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Writes `chunk`, whole or (chopped) in pieces of 1 to 7 bytes.
fn write(to: &mut TcpStream, chunk: &[u8], chop: bool) -> std::io::Result<()> {
    if !chop {
        return to.write_all(chunk);
    }
    let mut rest = chunk;
    let mut size = 1;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        to.write_all(piece)?;
        rest = tail;
        size = size % 7 + 1;
    }
    Ok(())
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
