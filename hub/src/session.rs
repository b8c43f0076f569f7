//! One client's MQTT session through the hub's front. Its CONNECT is checked against who it is
//! (certificate CN, password), every packet it sends against what that identity may do
//! ([`Access`]), and only then relayed to rumqttd — which sees nothing else, and takes only the
//! front's and the hub's own per-start logins. rumqttd's answers go back unchanged.
//!
//! A refused CONNECT gets its CONNACK code and the connection closes; an edge's forbidden
//! packet closes its connection. A local tool's forbidden QoS 0 publish (mqttwarn announces
//! itself on `clients/mqttwarn`) is dropped instead, as mosquitto's ACLs do. Every refusal is
//! counted by reason and logged at a bounded rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Login, Packet};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use warren_daemon::Secret;
use warren_daemon::tls::CertFacts;
use warren_proto::envelope::MAX_PAYLOAD;
use warren_proto::topic::valid_name;

use crate::acl::Access;
use crate::passwd::{HUB_CLIENT_ID, Users};
use crate::stats::Stats;
use crate::trust::Trust;

/// The largest packet a client may send: an envelope and its topic. rumqttd is given the same.
pub const MAX_PACKET: usize = MAX_PAYLOAD + 1024;

/// Who may connect, and how the front logs into rumqttd.
pub struct Gate {
    /// Password users; when set, every client needs one.
    pub users: Option<Users>,
    /// TLS clients with neither certificate nor password may connect (`allow_anonymous`).
    pub anonymous: bool,
    /// Local tools may also publish and subscribe outside `warren/` (`local_access = "bus"`).
    pub local_bus: bool,
    /// The legacy republish topic, which local tools read.
    pub legacy_topic: String,
    /// rumqttd's internal listener.
    pub upstream: SocketAddr,
    /// The front's login there, made at start.
    pub login: (String, Secret),
    /// A client that has not finished its TLS handshake by then, or then sent its CONNECT
    /// within as long again, is dropped.
    pub handshake_timeout: Duration,
    /// Refusals and the edges' certificates.
    pub stats: Arc<Stats>,
}

/// How a client reached the front.
pub enum Via {
    /// The TLS listener, with the client's certificate if it presented one.
    Tls(Option<CertFacts>),
    /// The plain loopback listener.
    Local,
}

/// A refused client or packet: the counter's reason, what happened, and the CONNACK code when
/// the CONNECT itself is refused.
struct Refusal {
    reason: &'static str,
    detail: String,
    code: Option<ConnectReturnCode>,
}

impl Refusal {
    fn connect(code: ConnectReturnCode, reason: &'static str, detail: String) -> Self {
        Self {
            reason,
            detail,
            code: Some(code),
        }
    }

    fn packet(reason: &'static str, detail: String) -> Self {
        Self {
            reason,
            detail,
            code: None,
        }
    }
}

/// What to do with a packet.
enum Verdict {
    Relay,
    Drop(Refusal),
    Close(Refusal),
}

/// Serves one client until it or rumqttd closes, it breaks the rules, its certificate is
/// revoked, or the hub stops (the caller drops this future).
pub async fn serve<S>(
    client: S,
    peer: SocketAddr,
    via: Via,
    gate: Arc<Gate>,
    trust: Option<watch::Receiver<Trust>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(client);
    let mut buf = BytesMut::with_capacity(4096);
    let serial = match &via {
        Via::Tls(Some(cert)) => Some(cert.serial.clone()),
        _ => None,
    };
    let connect =
        match tokio::time::timeout(gate.handshake_timeout, read_connect(&mut rd, &mut buf)).await {
            Ok(Ok(c)) => c,
            Ok(Err(r)) => return gate.refused(peer, "", &r),
            Err(_) => {
                return gate.refused(
                    peer,
                    "",
                    &Refusal::packet("connect_timeout", "no CONNECT in time".into()),
                );
            }
        };
    let claimed = connect.client_id.clone();
    let (access, connect) = match gate.admit(&via, connect) {
        Ok(a) => a,
        Err(r) => {
            if let Some(code) = r.code {
                let mut ack = BytesMut::new();
                if ConnAck::new(code, false).write(&mut ack).is_ok() {
                    let _ = wr.write_all(&ack).await;
                    let _ = wr.shutdown().await;
                }
            }
            return gate.refused(peer, &claimed, &r);
        }
    };
    let who = match &access {
        Access::Edge(id) => id.clone(),
        Access::Local { .. } => connect.client_id.clone(),
    };
    if let (Access::Edge(id), Via::Tls(Some(cert))) = (&access, &via) {
        gate.stats.saw_certificate(id, cert.not_after);
    }
    let upstream = match TcpStream::connect(gate.upstream).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "Cannot reach the embedded broker.");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let (mut up_rd, mut up_wr) = upstream.into_split();
    let mut out = BytesMut::with_capacity(4096);
    if Packet::Connect(connect)
        .write(&mut out, MAX_PACKET)
        .is_err()
    {
        return;
    }
    let inbound = async {
        loop {
            loop {
                match Packet::read(&mut buf, MAX_PACKET) {
                    Ok(packet) => match check(&access, &packet) {
                        Verdict::Relay => {
                            if packet.write(&mut out, MAX_PACKET).is_err() {
                                return;
                            }
                        }
                        Verdict::Drop(r) => gate.refused(peer, &who, &r),
                        Verdict::Close(r) => return gate.refused(peer, &who, &r),
                    },
                    Err(CodecError::InsufficientBytes(_)) => break,
                    Err(e) => {
                        return gate.refused(
                            peer,
                            &who,
                            &Refusal::packet("malformed", e.to_string()),
                        );
                    }
                }
            }
            // Everything the client sent at once goes to rumqttd in one write.
            if !out.is_empty() {
                if up_wr.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let outbound = tokio::io::copy(&mut up_rd, &mut wr);
    let revoked = async {
        let (Some(serial), Some(mut trust)) = (&serial, trust) else {
            return std::future::pending().await;
        };
        while trust.changed().await.is_ok() {
            if trust.borrow().revoked.contains(serial) {
                return;
            }
        }
        std::future::pending().await
    };
    tokio::select! {
        () = inbound => {}
        _ = outbound => {}
        () = revoked => {
            gate.refused(peer, &who, &Refusal::packet("revoked", "its certificate was revoked; connection closed".into()));
        }
    }
}

/// Reads until the first packet is complete: it must be a CONNECT (3.1 ones are upgraded).
async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> Result<Connect, Refusal> {
    loop {
        crate::mqtt31::upgrade_connect(buf);
        match Packet::read(buf, MAX_PACKET) {
            Ok(Packet::Connect(c)) => return Ok(c),
            Ok(other) => {
                return Err(Refusal::packet(
                    "protocol",
                    format!("{other:?} before CONNECT"),
                ));
            }
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(Refusal::packet("malformed", e.to_string())),
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(Refusal::packet("protocol", "closed before CONNECT".into())),
            Err(e) => return Err(Refusal::packet("protocol", e.to_string())),
            Ok(_) => {}
        }
    }
}

impl Gate {
    /// Decides who the client is and what it may do; returns the CONNECT to relay, logged in
    /// with the front's own credentials.
    fn admit(&self, via: &Via, mut c: Connect) -> Result<(Access, Connect), Refusal> {
        use ConnectReturnCode::{BadClientId, BadUserNamePassword, NotAuthorized};
        let login = c.login.take();
        let password = |users: &Users| match &login {
            Some(l) if users.check(&l.username, l.password.as_bytes()) => Ok(l.username.clone()),
            Some(l) => Err(Refusal::connect(
                BadUserNamePassword,
                "bad_password",
                format!("wrong password for user `{}`", l.username),
            )),
            None => Err(Refusal::connect(
                BadUserNamePassword,
                "no_password",
                "no user name and password".into(),
            )),
        };
        let access = match via {
            Via::Local => {
                if let Some(users) = &self.users {
                    password(users)?;
                }
                // Local tools' ids live apart from edges' and the hub's, so that none can
                // take over another's session.
                c.client_id = if c.client_id.is_empty() {
                    format!("local:{}", warren_proto::EventId::generate())
                } else {
                    format!("local:{}", c.client_id)
                };
                let access = Access::Local {
                    legacy: self.legacy_topic.clone(),
                    bus: self.local_bus,
                };
                if c.last_will
                    .as_ref()
                    .is_some_and(|w| !access.may_publish(&w.topic))
                {
                    c.last_will = None; // as its other publishes there would be dropped
                }
                access
            }
            Via::Tls(cert) => {
                let identity = match (cert, &self.users) {
                    (Some(cert), users) => {
                        let cn = cert.cn.clone().ok_or_else(|| {
                            Refusal::connect(
                                NotAuthorized,
                                "identity",
                                "its certificate has no CN".into(),
                            )
                        })?;
                        if let Some(users) = users {
                            let user = password(users)?;
                            if user != cn {
                                return Err(Refusal::connect(
                                    NotAuthorized,
                                    "identity",
                                    format!("user `{user}` with the certificate of `{cn}`"),
                                ));
                            }
                        }
                        cn
                    }
                    (None, Some(users)) => password(users)?,
                    (None, None) if self.anonymous => c.client_id.clone(),
                    (None, None) => {
                        return Err(Refusal::connect(
                            NotAuthorized,
                            "identity",
                            "no certificate and no password".into(),
                        ));
                    }
                };
                if !valid_name(&identity) || identity.starts_with(HUB_CLIENT_ID) {
                    return Err(Refusal::connect(
                        NotAuthorized,
                        "identity",
                        format!("`{identity}` cannot be an edge id"),
                    ));
                }
                if c.client_id != identity {
                    return Err(Refusal::connect(
                        BadClientId,
                        "client_id",
                        format!(
                            "client id `{}` is not its identity `{identity}`",
                            c.client_id
                        ),
                    ));
                }
                let access = Access::Edge(identity);
                if let Some(w) = &c.last_will
                    && !access.may_publish(&w.topic)
                {
                    return Err(Refusal::connect(
                        NotAuthorized,
                        "publish_denied",
                        format!("last-will on `{}`", w.topic),
                    ));
                }
                access
            }
        };
        c.login = Some(Login::new(self.login.0.clone(), self.login.1.expose()));
        Ok((access, c))
    }

    fn refused(&self, peer: SocketAddr, client_id: &str, r: &Refusal) {
        let from = format!("{client_id}@{peer}");
        self.stats
            .refused
            .refuse("a client", r.reason, &from, &r.detail);
    }
}

/// Whether `access` lets `packet` through.
fn check(access: &Access, packet: &Packet) -> Verdict {
    match packet {
        // rumqttd holds every QoS 2 message until its PUBREL, without bound; warren uses QoS 1.
        Packet::Publish(p) if p.qos == QoS::ExactlyOnce => Verdict::Close(Refusal::packet(
            "qos2",
            format!("QoS 2 publish on `{}`", p.topic),
        )),
        // A retained event would be replayed to the hub at every resubscribe, and kept.
        Packet::Publish(p) if p.retain && warren_proto::topic::parse_event(&p.topic).is_some() => {
            Verdict::Close(Refusal::packet(
                "retained_event",
                format!("retained event on `{}`", p.topic),
            ))
        }
        Packet::Publish(p) if !access.may_publish(&p.topic) => {
            let r = Refusal::packet("publish_denied", format!("publish on `{}`", p.topic));
            match access {
                Access::Local { .. } if p.qos == QoS::AtMostOnce => Verdict::Drop(r),
                _ => Verdict::Close(r),
            }
        }
        Packet::Subscribe(s) => match s.filters.iter().find(|f| !access.may_subscribe(&f.path)) {
            Some(f) => Verdict::Close(Refusal::packet(
                "subscribe_denied",
                format!("subscribe to `{}`", f.path),
            )),
            None => Verdict::Relay,
        },
        Packet::Connect(_) => {
            Verdict::Close(Refusal::packet("protocol", "a second CONNECT".into()))
        }
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            Verdict::Close(Refusal::packet(
                "protocol",
                format!("{packet:?} from a client"),
            ))
        }
        _ => Verdict::Relay,
    }
}

/// What the front does with the bytes one client sends, without a network, for the fuzzer
/// (`fuzz/fuzz_targets/front.rs`): the CONNECT read (a 3.1 one upgraded) and admitted, as an
/// edge with a certificate and as a local tool; every later packet checked against what that
/// client may do, and written out again for rumqttd. None of it may panic, whatever the bytes.
#[cfg(feature = "fuzzing")]
pub fn fuzz_client_bytes(bytes: &[u8]) {
    let gate = Gate {
        users: None,
        anonymous: false,
        local_bus: bytes.len() % 2 == 0,
        legacy_topic: "logins".into(),
        upstream: SocketAddr::from(([127, 0, 0, 1], 1)),
        login: ("front".into(), Secret::new("pass")),
        handshake_timeout: Duration::from_secs(1),
        stats: Arc::new(Stats::default()),
    };
    let edge = Via::Tls(Some(CertFacts {
        cn: Some("gw".into()),
        serial: "01".into(),
        not_after: i64::MAX,
    }));
    for via in [edge, Via::Local] {
        let mut buf = BytesMut::from(bytes);
        crate::mqtt31::upgrade_connect(&mut buf);
        let Ok(Packet::Connect(connect)) = Packet::read(&mut buf, MAX_PACKET) else {
            continue;
        };
        let Ok((access, connect)) = gate.admit(&via, connect) else {
            continue;
        };
        let mut out = BytesMut::new();
        let _ = Packet::Connect(connect).write(&mut out, MAX_PACKET);
        while let Ok(packet) = Packet::read(&mut buf, MAX_PACKET) {
            if let Verdict::Relay = check(&access, &packet) {
                let _ = packet.write(&mut out, MAX_PACKET);
            }
        }
    }
}
