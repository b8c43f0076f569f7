//! UDP ingest: receive, check source, decode, verify, wrap in an envelope, hand to the committer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warren_proto::envelope::VERSION;
use warren_proto::sign::Verifier;
use warren_proto::{Datagram, DecodeError, Envelope, MAX_DATAGRAM};

use crate::queue::{NewEntry, Queue};
use crate::stats::Stats;

/// What every ingest socket shares.
#[derive(Debug)]
pub struct Ingest {
    /// Signature policy and replay guard (shared so a replay to another socket is caught too).
    pub verifier: Mutex<Verifier>,
    /// Allowed sources; empty = all.
    pub allow: Vec<IpNet>,
    /// Site, for envelopes.
    pub site: String,
    /// Edge id, for envelopes.
    pub edge_id: String,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The queue, to refuse events at once while its disk is full.
    pub queue: Arc<Queue>,
}

/// Binds a UDP socket with a large receive buffer, so a burst waits in the kernel.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack is the OS's choice; be explicit so `[::]` means IPv6 only everywhere.
        sock.set_only_v6(true)?;
    }
    if let Err(error) = sock.set_recv_buffer_size(recv_buffer) {
        tracing::warn!(%error, recv_buffer, "Could not enlarge the UDP receive buffer.");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Reads datagrams until `shutdown`, sending each accepted one to `tx`.
pub async fn run(
    sock: UdpSocket,
    ingest: Arc<Ingest>,
    tx: mpsc::Sender<NewEntry>,
    shutdown: CancellationToken,
) {
    // One byte more than the limit: a datagram that fills it was truncated by the kernel.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (len, source) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(error) => {
                    // ICMP errors and the like: nothing is lost, keep serving.
                    tracing::debug!(%error, "UDP receive error.");
                    continue;
                }
            },
        };
        let Some(entry) = ingest.accept(&buf[..len], source) else {
            continue;
        };
        if tx.send(entry).await.is_err() {
            return; // the committer is gone: shutting down
        }
    }
}

impl Ingest {
    /// Checks one datagram; `None` when it is refused (counted and logged).
    pub fn accept(&self, raw: &[u8], source: SocketAddr) -> Option<NewEntry> {
        let received_ms = crate::now_ms();
        self.stats.received(source, received_ms);
        let ip = source.ip().to_canonical();
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&ip)) {
            self.stats.reject("source_not_allowed", source, &ip);
            return None;
        }
        if raw.len() > MAX_DATAGRAM {
            let e = DecodeError::TooLarge {
                len: raw.len(),
                max: MAX_DATAGRAM,
            };
            self.stats.reject(e.reason(), source, &e);
            return None;
        }
        let datagram = match Datagram::decode(raw) {
            Ok(d) => d,
            Err(e) => {
                self.stats.reject(e.reason(), source, &e);
                return None;
            }
        };
        if self.queue.disk_full_since().is_some() {
            // Before the signature check, so a signed datagram refused now is no replay later.
            self.stats
                .reject("disk_full", source, &"the edge's disk is full");
            return None;
        }
        let checked = {
            let mut v = self
                .verifier
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            v.check(raw, &datagram, crate::now_secs())
        };
        let signed = match checked {
            Ok(signed) => signed,
            Err(e) => {
                self.stats.reject(e.reason(), source, &e);
                return None;
            }
        };
        let envelope = Envelope {
            v: VERSION,
            id: datagram.id,
            site: self.site.clone(),
            edge: self.edge_id.clone(),
            received: received_ms,
            remote: ip.to_string(),
            signed,
            event: datagram.event,
        };
        tracing::debug!(id = %envelope.id, %source, "Datagram received.");
        self.stats
            .history
            .accepted(envelope.id, source, received_ms);
        Some(NewEntry {
            id: envelope.id,
            received_ms,
            payload: envelope.encode(),
        })
    }
}
