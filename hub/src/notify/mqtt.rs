//! `type = "mqtt"`: publishes each notification on a topic, on the hub's own broker or on
//! another one.
//!
//! The payload is JSON `{"title","message","priority","event"}` (the envelope), as the webhook
//! sends it, the rendered `payload` template, or (`payload_format = "hared"`) the event in
//! the classic chain's format, for an mqttwarn that reads it.
//!
//! - `broker = "hub"`: the publish is handed to the hub's own client of its broker. That client
//!   queues it and sends it (again after a reconnect) on its own, so the notification counts
//!   as delivered once queued: the hub's broker is local, there is no further answer to wait
//!   for. Until the hub's client exists (during start-up), an attempt fails and is retried.
//! - an external broker (`address`): a connection of the notifier's own, opened on the first
//!   send (not at build: `hub check-config` has no runtime and connects nowhere) and kept. At
//!   QoS 1 a delivery is done when the broker's PUBACK arrives; at QoS 0 once the publish is
//!   written. A refused connection, a lost one, a timeout are retried; a broker that refuses
//!   the login is a permanent failure.
//!
//! Topics under `warren/` are warren's own (events, acks, presence): a notifier may never
//! publish there, neither by its config nor by what an event brings into a topic template
//! (an event field could otherwise forge an ack and make an edge drop an event). This holds
//! for external brokers too, which may be the hub's own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use warren_daemon::Secret;
use warren_daemon::config::ConfigError;
use warren_proto::envelope::MAX_PAYLOAD;

use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};
use crate::bus::{self, BusOptions};
use crate::template::{Escape, Template};

/// `[notifier.NAME] type = "mqtt"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `"hub"`: the hub's own broker. Unset: the broker at `address`.
    pub broker: Option<String>,
    /// An external broker, `host:port`.
    pub address: Option<String>,
    /// TLS to the external broker (default true).
    pub tls: Option<bool>,
    /// The external broker's CA (PEM); required with TLS.
    pub ca_file: Option<PathBuf>,
    /// A client certificate for the external broker (PEM)…
    pub client_cert_file: Option<PathBuf>,
    /// …and its key.
    pub key_file: Option<PathBuf>,
    /// Login to the external broker.
    pub username: Option<String>,
    /// A file holding its password.
    pub password_file: Option<PathBuf>,
    /// MQTT client id (default `warren-NAME-HOSTNAME`).
    pub client_id: Option<String>,
    /// The topic, a template rendered per event.
    pub topic: String,
    /// 0 or 1 (default 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Publish retained.
    #[serde(default)]
    pub retain: bool,
    /// A payload template instead of the JSON document; fields as in titles, plus `title` and
    /// `message`.
    pub payload: Option<String>,
    /// What `payload` produces: `"text"` (default) or `"json"` (inserted values JSON-escaped);
    /// or, without a `payload`, `"hared"`: the event as hared published it.
    pub payload_format: Option<PayloadFormat>,
}

fn default_qos() -> u8 {
    1
}

/// What a `payload` template produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// Plain text: values inserted as they are.
    Text,
    /// JSON: values inserted JSON-escaped, so an event cannot break out of a string.
    Json,
    /// No template: the event's fields plus `remote`, as hared published them on
    /// `logging/hare` ([`warren_proto::Envelope::legacy_republish`]).
    Hared,
}

/// What a notifier publishes.
enum Payload {
    /// The JSON document of [`Notification::document`].
    Document,
    /// A rendered template.
    Template(Template, Escape),
    /// The hared format.
    Hared,
}

/// The built notifier. Its `Debug` shows where it publishes, never a password.
pub struct MqttNotifier {
    target: Target,
    topic: Template,
    qos: QoS,
    retain: bool,
    payload: Payload,
}

enum Target {
    /// The hub's own client, once `run` has set it.
    Hub(Arc<OnceLock<AsyncClient>>),
    External(Box<External>),
}

/// A broker of the notifier's own, and the connection to it once opened.
struct External {
    opts: BusOptions,
    conn: Mutex<Option<Connection>>,
}

/// One connection: the client, the events of its event loop (driven by `task`), and whether
/// it is known good — no attempt was dropped or failed on it, so no stale publish is queued
/// or in flight on it and its events belong to the next attempt.
struct Connection {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Progress>,
    task: AbortOnDrop,
    clean: bool,
}

/// What an attempt waits for from the event loop.
enum Progress {
    /// A publish was written, with this packet id (0 at QoS 0).
    Sent(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
    /// The connection failed; the event loop is no longer driven.
    Lost(ConnectionError),
}

/// The event loop's task, stopped with the connection (or the notifier).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for MqttNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let broker = match &self.target {
            Target::Hub(_) => "hub".to_owned(),
            Target::External(e) => format!("{}:{}", e.opts.host, e.opts.port),
        };
        f.debug_struct("MqttNotifier")
            .field("broker", &broker)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

impl Sink for MqttNotifier {
    type Config = MqttConfig;

    fn build(name: &NotifierName, c: &MqttConfig, cx: &BuildContext) -> Result<Self, BuildError> {
        let err = BuildError::of(name);
        let hub = match (c.broker.as_deref(), &c.address) {
            (Some("hub"), None) => true,
            (None, Some(_)) => false,
            (Some("hub"), Some(_)) => {
                return Err(err("address", &"is for another broker than the hub's"));
            }
            (Some(_), _) => {
                return Err(err(
                    "broker",
                    &"must be \"hub\"; for another broker, give its address instead",
                ));
            }
            (None, None) => {
                return Err(err(
                    "address",
                    &"give the broker's host:port, or broker = \"hub\"",
                ));
            }
        };
        if c.topic.is_empty() {
            return Err(err("topic", &"is empty"));
        }
        // A field name cannot hold `+` or `#`: any there is literal text.
        if c.topic.contains(['+', '#']) {
            return Err(err("topic", &"a topic cannot hold the wildcards + and #"));
        }
        // The text before the first field is there whatever the event; the send-time check
        // catches what fields bring.
        let fixed = c.topic.split('{').next().unwrap_or_default();
        if fixed.starts_with('$')
            || fixed
                .split_once('/')
                .is_some_and(|(first, _)| first == "warren")
            || c.topic == "warren"
        {
            return Err(err(
                "topic",
                &"topics under warren/ are warren's own, and $ topics the broker's",
            ));
        }
        let topic = Template::parse(&c.topic).map_err(|e| err("topic", &e))?;
        let qos = match c.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => return Err(err("qos", &"must be 0 or 1")),
        };
        let payload = match &c.payload {
            Some(text) => {
                let format = match c.payload_format {
                    Some(f) => f,
                    // `{{` is a literal brace: most likely a JSON object, which must not take
                    // event values unescaped.
                    None if text.trim_start().starts_with("{{") => {
                        return Err(err(
                            "payload_format",
                            &"the payload looks like JSON: say payload_format = \"json\" (values escaped) or \"text\"",
                        ));
                    }
                    None => PayloadFormat::Text,
                };
                let escape = match format {
                    PayloadFormat::Text => Escape::None,
                    PayloadFormat::Json => Escape::Json,
                    PayloadFormat::Hared => {
                        return Err(err(
                            "payload_format",
                            &"\"hared\" is a fixed format: leave out `payload`",
                        ));
                    }
                };
                Payload::Template(
                    Template::parse(text).map_err(|e| err("payload", &e))?,
                    escape,
                )
            }
            None => match c.payload_format {
                None => Payload::Document,
                Some(PayloadFormat::Hared) => Payload::Hared,
                Some(_) => {
                    return Err(err("payload_format", &"is only for a payload template"));
                }
            },
        };
        let target = if hub {
            for (set, key) in [
                (c.tls.is_some(), "tls"),
                (c.ca_file.is_some(), "ca_file"),
                (c.client_cert_file.is_some(), "client_cert_file"),
                (c.key_file.is_some(), "key_file"),
                (c.username.is_some(), "username"),
                (c.password_file.is_some(), "password_file"),
                (c.client_id.is_some(), "client_id"),
            ] {
                if set {
                    return Err(err(key, &"is only for an external broker (address)"));
                }
            }
            Target::Hub(cx.hub_bus.clone())
        } else {
            Target::External(Box::new(External {
                opts: external(name, c)?,
                conn: Mutex::new(None),
            }))
        };
        Ok(Self {
            target,
            topic,
            qos,
            retain: c.retain,
            payload,
        })
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let now = chrono::Utc::now();
        let topic = n.render(&self.topic, now, Escape::None);
        let hub = matches!(self.target, Target::Hub(_));
        check_topic(&topic, hub).map_err(|why| {
            let shown: String = topic.chars().take(200).collect();
            NotifyError::Permanent(format!("topic {shown:?}: {why}"))
        })?;
        let payload = match &self.payload {
            Payload::Document => n.document(),
            Payload::Template(t, escape) => n.render(t, now, *escape).into_bytes(),
            Payload::Hared => n.envelope.legacy_republish(),
        };
        // rumqttc fails the whole connection on a packet over its limit: for the hub's own
        // client that would cut the hub off its broker. Fixed header, topic length and packet
        // id take at most 9 bytes more.
        if topic.len() + payload.len() + 9 > MAX_PAYLOAD {
            return Err(NotifyError::Permanent(format!(
                "the message ({} bytes) is over the MQTT packet limit of {MAX_PAYLOAD} bytes",
                topic.len() + payload.len()
            )));
        }
        match &self.target {
            Target::Hub(bus) => {
                let client = bus.get().ok_or_else(|| {
                    NotifyError::Transient("the hub's broker client is not running yet".into())
                })?;
                client
                    .try_publish(topic, self.qos, self.retain, payload)
                    .map_err(|e| NotifyError::Transient(format!("hub broker: {e}")))
            }
            Target::External(ext) => ext.publish(topic, self.qos, self.retain, payload).await,
        }
    }
}

/// The external broker's connection settings, its files read.
fn external(name: &NotifierName, c: &MqttConfig) -> Result<BusOptions, BuildError> {
    let err = BuildError::of(name);
    let (host, port) = c
        .address
        .as_deref()
        .and_then(crate::config::host_port)
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| err("address", &"must be host:port"))?;
    let client = match (&c.client_cert_file, &c.key_file) {
        (Some(cert), Some(key)) => Some((
            ("client_cert_file", cert.as_path()),
            ("key_file", key.as_path()),
        )),
        (None, None) => None,
        _ => return Err(err("client_cert_file", &"and key_file go together")),
    };
    let tls = match (c.tls.unwrap_or(true), &c.ca_file) {
        (true, Some(ca)) => Some(
            bus::client_tls(Path::new(""), ("ca_file", ca), client)
                .map_err(|e| from_config_error(name, e))?
                .0,
        ),
        (true, None) => {
            return Err(err(
                "ca_file",
                &"is required with TLS (the system's bundle, /etc/ssl/certs/ca-certificates.crt, for a public broker)",
            ));
        }
        (false, ca) => {
            if ca.is_some() || client.is_some() {
                let key = if ca.is_some() {
                    "ca_file"
                } else {
                    "client_cert_file"
                };
                return Err(err(key, &"is only used with TLS (tls = false is set)"));
            }
            None
        }
    };
    let credentials = match (&c.username, &c.password_file) {
        (Some(user), Some(path)) => Some((
            user.clone(),
            super::read_secret(path).map_err(|e| err("password_file", &e))?,
        )),
        (Some(user), None) => Some((user.clone(), Secret::new(""))),
        (None, Some(_)) => return Err(err("password_file", &"needs username")),
        (None, None) => None,
    };
    let client_id = match &c.client_id {
        Some(id) if id.is_empty() => return Err(err("client_id", &"is empty")),
        Some(id) => id.clone(),
        None => format!("warren-{name}-{}", warren_daemon::short_hostname()),
    };
    Ok(BusOptions {
        host,
        port,
        tls,
        credentials,
        client_id,
        share_group: None,
    })
}

/// The config error of a file the notifier names, as a build error naming the key.
fn from_config_error(name: &NotifierName, e: ConfigError) -> BuildError {
    match e {
        ConfigError::Invalid { key, reason, .. } => BuildError::new(name, key, reason),
        other => BuildError::new(name, "ca_file", other),
    }
}

/// Whether a rendered topic may be published on: not empty, no wildcard or NUL, not
/// warren's own or the broker's (`$`). On the hub's broker, the rule local tools have
/// ([`crate::acl`]), printable ASCII included: rumqttd slices topics by byte.
fn check_topic(topic: &str, hub: bool) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("is empty");
    }
    if topic.contains(['+', '#', '\0']) {
        return Err("holds a wildcard (+ #) or a NUL");
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err("is longer than MQTT allows");
    }
    let first = topic.split('/').next().unwrap_or_default();
    if first == "warren" || first.starts_with('$') {
        return Err("topics under warren/ are warren's own, and $ topics the broker's");
    }
    if hub && !crate::acl::outside_warren(topic) {
        return Err("the hub's broker takes only printable ASCII topics");
    }
    Ok(())
}

impl External {
    /// Publishes once, on the kept connection or a new one, and waits for the broker's
    /// acknowledgement (QoS 1) or for the write (QoS 0).
    ///
    /// Cancel-safe: a dropped attempt leaves its connection marked unclean, and the next one
    /// opens a fresh connection (clean session) instead of reading the old one's events, so a
    /// stale PUBACK is never taken for a new publish.
    async fn publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), NotifyError> {
        let mut slot = self.conn.lock().await;
        if slot
            .as_ref()
            .is_none_or(|c| !c.clean || c.task.0.is_finished())
        {
            // Dropping the old connection stops its event loop, and with it anything it
            // still had queued.
            *slot = None;
            *slot = Some(self.open());
        }
        let Some(conn) = slot.as_mut() else {
            return Err(NotifyError::Transient("no connection".into()));
        };
        conn.clean = false;
        let what = format!("{}:{}", self.opts.host, self.opts.port);
        conn.client
            .publish(topic, qos, retain, payload)
            .await
            .map_err(|e| NotifyError::Transient(format!("{what}: {e}")))?;
        let mut sent = None;
        loop {
            match conn.events.recv().await {
                Some(Progress::Sent(pkid)) if sent.is_none() => {
                    if qos == QoS::AtMostOnce {
                        break;
                    }
                    sent = Some(pkid);
                }
                Some(Progress::Acked(pkid)) if sent == Some(pkid) => break,
                Some(Progress::Sent(_) | Progress::Acked(_)) => {}
                Some(Progress::Lost(e)) => return Err(lost(&what, &e)),
                None => {
                    return Err(NotifyError::Transient(format!(
                        "{what}: the connection ended"
                    )));
                }
            }
        }
        conn.clean = true;
        Ok(())
    }

    /// A new client, its event loop driven by a task that reports publishes, their
    /// acknowledgements and the connection's end, and ends with the connection: the next
    /// attempt opens another, so a broker that is down is retried at the delivery loop's pace
    /// rather than in a tight reconnect loop.
    fn open(&self) -> Connection {
        let (client, mut eventloop) = bus::connect(&self.opts);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let progress = match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Progress::Sent(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => Progress::Acked(ack.pkid),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Progress::Lost(e));
                        return;
                    }
                };
                if tx.send(progress).is_err() {
                    return;
                }
            }
        });
        Connection {
            client,
            events,
            task: AbortOnDrop(task),
            clean: true,
        }
    }
}

/// A lost connection: permanent when the broker refused the login (as an HTTP 401 is),
/// otherwise worth a retry.
fn lost(what: &str, e: &ConnectionError) -> NotifyError {
    let m = format!("{what}: {e}");
    match e {
        // What a retry cannot change: the login, the client id, the protocol.
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
            | ConnectReturnCode::NotAuthorized
            | ConnectReturnCode::BadClientId
            | ConnectReturnCode::RefusedProtocolVersion,
        ) => NotifyError::Permanent(m),
        _ => NotifyError::Transient(m),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use rumqttc::{MqttOptions, TlsConfiguration, Transport};
    use warren_harness::proxy::Proxy;
    use warren_harness::{Mosquitto, WAIT, listening, wait_for};

    use super::*;
    use crate::notify::Notifier;
    use crate::notify::conformance::{self, Behaviour, Endpoint};
    use crate::testing::notification;

    fn name() -> NotifierName {
        NotifierName::try_from("mq".to_owned()).unwrap()
    }

    fn build(text: &str, cx: &BuildContext) -> Result<MqttNotifier, BuildError> {
        let c: MqttConfig = toml::from_str(text).unwrap();
        MqttNotifier::build(&name(), &c, cx)
    }

    /// A broker with the users `notifier`, `sub` and `hub`, and a file holding the notifier's
    /// password.
    struct Setup {
        dir: tempfile::TempDir,
        broker: Mosquitto,
        password_file: PathBuf,
    }

    impl Setup {
        fn start(tls: bool) -> Self {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let dir = tempfile::tempdir().unwrap();
            let pki = tls.then(|| {
                let at = dir.path().join("pki");
                crate::pki::init(&at, &[], 30).unwrap();
                crate::pki::issue(&at, "notifier", 30, false).unwrap();
                // The CA exists: the harness reads it and runs no `hub pki`.
                warren_harness::Pki::init(
                    &warren_harness::Program::role(Path::new("hub"), "hub"),
                    &at,
                )
                .unwrap()
            });
            let broker = Mosquitto::start(
                dir.path(),
                pki.as_ref(),
                &[("notifier", "n0tifier"), ("sub", "subpw"), ("hub", "hubpw")],
            );
            let password_file = dir.path().join("notifier.password");
            std::fs::write(&password_file, "n0tifier\n").unwrap();
            Self {
                dir,
                broker,
                password_file,
            }
        }

        fn ca(&self) -> PathBuf {
            self.dir.path().join("pki/ca.pem")
        }

        /// The config of a notifier publishing to this broker, plus `extra` lines.
        fn config(&self, extra: &str) -> String {
            format!(
                "address = \"127.0.0.1:{}\"\nusername = \"notifier\"\npassword_file = \"{}\"\n{extra}",
                self.broker.port,
                self.password_file.display()
            )
        }

        fn subscribe(&self, filter: &str, tls: bool) -> Subscriber {
            Subscriber::start(self.broker.port, tls.then(|| self.ca()), filter)
        }
    }

    /// A client of the test broker recording what it receives, subscribing again after every
    /// reconnection. Its own thread: the conformance endpoint waits for it synchronously.
    /// A message received: topic, payload, whether retained.
    type Received = (String, Vec<u8>, bool);

    struct Subscriber {
        got: Arc<StdMutex<Vec<Received>>>,
        subscriptions: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        client: rumqttc::Client,
        flushes: AtomicUsize,
    }

    /// The subscriber's own marker topic, for [`Subscriber::flush`].
    const FLUSH: &str = "test/flush";

    impl Subscriber {
        fn start(port: u16, ca: Option<PathBuf>, filter: &str) -> Self {
            let mut o = MqttOptions::new(
                format!("sub-{}", warren_proto::EventId::generate()),
                "127.0.0.1",
                port,
            );
            o.set_credentials("sub", "subpw")
                .set_keep_alive(Duration::from_secs(5));
            if let Some(ca) = ca {
                o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                    ca: std::fs::read(ca).unwrap(),
                    alpn: None,
                    client_auth: None,
                }));
            }
            let (client, mut connection) = rumqttc::Client::new(o, 10);
            let s = Self {
                got: Arc::default(),
                subscriptions: Arc::default(),
                stop: Arc::default(),
                client: client.clone(),
                flushes: AtomicUsize::new(0),
            };
            let (got, subscriptions, stop) =
                (s.got.clone(), s.subscriptions.clone(), s.stop.clone());
            let filter = filter.to_owned();
            std::thread::spawn(move || {
                for event in connection.iter() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.try_subscribe_many([
                                rumqttc::SubscribeFilter::new(filter.clone(), QoS::AtLeastOnce),
                                rumqttc::SubscribeFilter::new(FLUSH.into(), QoS::AtLeastOnce),
                            ]);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            subscriptions.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            got.lock().unwrap().push((
                                p.topic.clone(),
                                p.payload.to_vec(),
                                p.retain,
                            ));
                        }
                        Ok(_) => {}
                        // The broker is down: try again, gently.
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
            s.subscribed_after(0);
            s
        }

        fn subscriptions(&self) -> usize {
            self.subscriptions.load(Ordering::SeqCst)
        }

        /// Waits until it has subscribed more than `n` times in all.
        fn subscribed_after(&self, n: usize) {
            wait_for("the subscriber to subscribe", WAIT, || {
                (self.subscriptions() > n).then_some(())
            });
        }

        /// What it received, but its own markers.
        fn got(&self) -> Vec<Received> {
            let mut got = self.got.lock().unwrap().clone();
            got.retain(|(topic, ..)| topic != FLUSH);
            got
        }

        /// Waits until it has received whatever the broker had acknowledged before: a PUBACK
        /// says the broker has a message, not that it has passed it on. The broker queues
        /// messages to a subscriber in the order it takes them, so once a marker published
        /// now comes back, everything taken before it has arrived.
        fn flush(&self) {
            let n = self.flushes.fetch_add(1, Ordering::SeqCst).to_string();
            self.client
                .try_publish(FLUSH, QoS::AtLeastOnce, false, n.clone())
                .unwrap();
            wait_for("the subscriber's marker", WAIT, || {
                self.got
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(t, p, _)| t == FLUSH && *p == n.as_bytes())
                    .then_some(())
            });
        }

        fn wait_for_messages(&self, n: usize) -> Vec<Received> {
            wait_for("messages", WAIT, || {
                let got = self.got();
                (got.len() >= n).then_some(got)
            })
        }
    }

    impl Drop for Subscriber {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = self.client.try_disconnect();
        }
    }

    #[tokio::test]
    async fn publishes_the_json_document_and_waits_for_the_ack() {
        if !Mosquitto::available() {
            return;
        }
        let s = Setup::start(false);
        let sub = s.subscribe("alerts/#", false);
        let cx = BuildContext::default();
        let n = build(
            &s.config("tls = false\ntopic = \"alerts/{site}/{user}\""),
            &cx,
        )
        .unwrap();
        let debug = format!("{n:?}");
        assert!(!debug.contains("n0tifier"), "{debug}");
        n.send(&notification("dan")).await.unwrap();
        n.send(&notification("eve")).await.unwrap();
        let got = sub.wait_for_messages(2);
        assert_eq!(got[0].0, "alerts/home/dan");
        assert_eq!(got[1].0, "alerts/home/eve");
        let body: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(body["title"], "login on vm");
        assert_eq!(body["message"], "User dan logged into vm");
        assert_eq!(body["priority"], 1);
        assert_eq!(body["event"]["event"]["user"], "dan");
        assert!(!got[0].2, "not retained");
    }

    #[tokio::test]
    async fn tls_with_a_client_certificate_a_retained_json_template() {
        if !Mosquitto::available() {
            return;
        }
        let s = Setup::start(true);
        let pki = s.dir.path().join("pki");
        let cx = BuildContext::default();
        let n = build(
            &s.config(&format!(
                "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nkey_file = \"{}\"\ntopic = \"logins/{{hostname}}\"\nretain = true\nqos = 0\npayload_format = \"json\"\npayload = '{{{{\"who\": \"{{user}}\", \"admin\": false}}}}'",
                s.ca().display(),
                pki.join("notifier.pem").display(),
                pki.join("notifier.key").display(),
            )),
            &cx,
        )
        .unwrap();
        n.send(&notification("\", \"admin\": true, \"x\": \""))
            .await
            .unwrap();
        // Subscribed only now: the message was kept for it (retained).
        let sub = s.subscribe("logins/#", true);
        let got = sub.wait_for_messages(1);
        assert_eq!(got[0].0, "logins/vm");
        assert!(got[0].2, "retained");
        let body: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(body["admin"], false, "{body}");
        assert_eq!(body["who"], "\", \"admin\": true, \"x\": \"");
    }

    #[tokio::test]
    async fn a_refused_login_is_permanent() {
        if !Mosquitto::available() {
            return;
        }
        let s = Setup::start(false);
        std::fs::write(&s.password_file, "wrong").unwrap();
        let cx = BuildContext::default();
        let n = build(&s.config("tls = false\ntopic = \"alerts\""), &cx).unwrap();
        let err = n.send(&notification("dan")).await.unwrap_err();
        assert!(matches!(err, NotifyError::Permanent(_)), "{err:?}");
    }

    // Two workers: the hub client's event loop runs while the test waits for the subscriber.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hubs_own_broker_and_what_an_event_may_not_reach() {
        if !Mosquitto::available() {
            return;
        }
        let s = Setup::start(false);
        let sub = s.subscribe("#", false);
        let cx = BuildContext::default();
        let n = build("broker = \"hub\"\ntopic = \"{user}\"\nqos = 1", &cx).unwrap();
        let err = n.send(&notification("alerts")).await.unwrap_err();
        assert!(
            matches!(err, NotifyError::Transient(_)),
            "before the hub runs: {err:?}"
        );

        // The hub's client, as `run` sets it.
        let (client, mut eventloop) = bus::connect(&BusOptions {
            host: "127.0.0.1".into(),
            port: s.broker.port,
            tls: None,
            credentials: Some(("hub".into(), Secret::new("hubpw"))),
            client_id: "hub".into(),
            share_group: None,
        });
        let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        assert!(cx.hub_bus.set(client).is_ok());
        n.send(&notification("alerts")).await.unwrap();
        for (user, why) in [
            ("warren/v1/ack/gw", "warren"),
            ("warren", "warren"),
            ("$SYS/x", "warren"),
            ("a/+", "wildcard"),
            ("", "empty"),
            ("caf\u{e9}", "ASCII"),
        ] {
            let err = n.send(&notification(user)).await.unwrap_err();
            assert!(
                matches!(&err, NotifyError::Permanent(m) if m.contains(why)),
                "{user:?}: {err:?}"
            );
        }
        n.send(&notification("done")).await.unwrap();
        let hared = build(
            "broker = \"hub\"\ntopic = \"logging/hare\"\npayload_format = \"hared\"",
            &cx,
        )
        .unwrap();
        hared.send(&notification("dan")).await.unwrap();
        let got = sub.wait_for_messages(3);
        let topics: Vec<&str> = got.iter().map(|(t, ..)| t.as_str()).collect();
        assert_eq!(topics, ["alerts", "done", "logging/hare"]);
        assert_eq!(got[2].1, notification("dan").envelope.legacy_republish());
        driver.abort();
    }

    #[test]
    fn an_oversized_message_is_refused_before_it_reaches_the_connection() {
        let cx = BuildContext::default();
        let n = build(
            "broker = \"hub\"\ntopic = \"t\"\npayload = \"{message}\"",
            &cx,
        )
        .unwrap();
        let mut big = notification("dan");
        big.message = "x".repeat(MAX_PAYLOAD);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt.block_on(n.send(&big)).unwrap_err();
        assert!(
            matches!(&err, NotifyError::Permanent(m) if m.contains("limit")),
            "{err:?}"
        );
    }

    #[test]
    fn build_errors_name_the_key() {
        let cx = BuildContext::default();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let ca = ca.display();
        for (text, key) in [
            ("topic = \"t\"", "address"),
            ("broker = \"other\"\ntopic = \"t\"", "broker"),
            (
                "broker = \"hub\"\naddress = \"h:1\"\ntopic = \"t\"",
                "address",
            ),
            (
                "broker = \"hub\"\ntopic = \"t\"\nca_file = \"/x\"",
                "ca_file",
            ),
            (
                "broker = \"hub\"\ntopic = \"t\"\nusername = \"u\"",
                "username",
            ),
            ("broker = \"hub\"\ntopic = \"\"", "topic"),
            ("broker = \"hub\"\ntopic = \"a/+/b\"", "topic"),
            ("broker = \"hub\"\ntopic = \"a/#\"", "topic"),
            (
                "broker = \"hub\"\ntopic = \"warren/v1/ack/{edge}\"",
                "topic",
            ),
            ("broker = \"hub\"\ntopic = \"warren\"", "topic"),
            ("broker = \"hub\"\ntopic = \"$SYS/{user}\"", "topic"),
            ("broker = \"hub\"\ntopic = \"a/{oops\"", "topic"),
            ("broker = \"hub\"\ntopic = \"t\"\nqos = 2", "qos"),
            (
                "broker = \"hub\"\ntopic = \"t\"\npayload = '{{\"a\": \"{user}\"}}'",
                "payload_format",
            ),
            (
                "broker = \"hub\"\ntopic = \"t\"\npayload_format = \"json\"",
                "payload_format",
            ),
            (
                "broker = \"hub\"\ntopic = \"t\"\npayload = \"{x\"\npayload_format = \"text\"",
                "payload",
            ),
            (
                "broker = \"hub\"\ntopic = \"t\"\npayload = \"{user}\"\npayload_format = \"hared\"",
                "payload_format",
            ),
            ("address = \"nowhere\"\ntopic = \"t\"", "address"),
            ("address = \"h:1\"\ntopic = \"t\"", "ca_file"),
            (
                &format!("address = \"h:1\"\ntopic = \"t\"\nca_file = \"{ca}\""),
                "ca_file",
            ),
            (
                "address = \"h:1\"\ntopic = \"t\"\nca_file = \"/nonexistent\"",
                "ca_file",
            ),
            (
                "address = \"h:1\"\ntopic = \"t\"\ntls = false\nca_file = \"/x\"",
                "ca_file",
            ),
            (
                "address = \"h:1\"\ntopic = \"t\"\ntls = false\nkey_file = \"/x\"",
                "client_cert_file",
            ),
            (
                "address = \"h:1\"\ntopic = \"t\"\ntls = false\npassword_file = \"/x\"",
                "password_file",
            ),
            (
                "address = \"h:1\"\ntopic = \"t\"\ntls = false\nusername = \"u\"\npassword_file = \"/nonexistent\"",
                "password_file",
            ),
            (
                "address = \"h:1\"\ntopic = \"t\"\ntls = false\nclient_id = \"\"",
                "client_id",
            ),
        ] {
            let err = build(text, &cx).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        // `warren` as part of a first level is someone else's.
        build("broker = \"hub\"\ntopic = \"warrenfan/{user}\"", &cx).unwrap();
        // Built without a runtime, as `hub check-config` does: nothing connects or spawns.
        let pki = dir.path().join("pki");
        crate::pki::init(&pki, &[], 30).unwrap();
        build(
            &format!(
                "address = \"[::1]:8883\"\ntopic = \"t\"\nca_file = \"{}\"",
                pki.join("ca.pem").display()
            ),
            &cx,
        )
        .unwrap();
    }

    /// The broker as the conformance test stages it, the notifier reaching it through a proxy
    /// and the subscriber directly: the broker down (fail), the proxy stalled (hang), the
    /// notifier's password changed (reject).
    struct Staged {
        setup: StdMutex<Setup>,
        proxy: Proxy,
        sub: Subscriber,
        /// Whether the broker is down or the proxy stalled.
        off: AtomicBool,
    }

    impl Staged {
        /// Waits until the notifier has seen its connection go (no socket of its left
        /// half-closed), so that the next attempt meets what was staged, not a dying
        /// connection.
        fn noticed(&self) {
            let port = self.proxy.port;
            wait_for("the notifier to see its connection go", WAIT, || {
                (!close_wait(port)).then_some(())
            });
        }

        fn restart(&self, s: &mut Setup) {
            let before = self.sub.subscriptions();
            s.broker.restart();
            self.sub.subscribed_after(before);
        }
    }

    /// Whether a socket connected to 127.0.0.1:`port` has seen its peer close and is not
    /// closed itself yet (CLOSE_WAIT): a client that has not yet noticed.
    fn close_wait(port: u16) -> bool {
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(3) == Some(&"08")
                    && f.get(2)
                        .and_then(|r| r.split_once(':'))
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
    }

    impl Endpoint for Staged {
        fn behave(&self, b: Behaviour) -> bool {
            let mut s = self.setup.lock().unwrap();
            match b {
                Behaviour::Accept => {
                    if self.off.swap(false, Ordering::SeqCst) {
                        // The notifier is held back until the subscriber is there again: a
                        // message published before it subscribed would be lost to it.
                        self.proxy.stall(true);
                        if !listening(s.broker.port) {
                            self.restart(&mut s);
                        }
                        // What stalled connections hold never reaches the broker.
                        self.proxy.drop_all();
                        self.proxy.stall(false);
                    }
                }
                Behaviour::Fail => {
                    s.broker.stop();
                    self.off.store(true, Ordering::SeqCst);
                    self.noticed();
                }
                Behaviour::Hang => {
                    self.proxy.stall(true);
                    self.proxy.drop_all();
                    self.off.store(true, Ordering::SeqCst);
                    self.noticed();
                }
                Behaviour::Reject => {
                    let passwd = s.dir.path().join("mosquitto.passwd");
                    let status = std::process::Command::new("mosquitto_passwd")
                        .arg("-b")
                        .arg(&passwd)
                        .args(["notifier", "changed"])
                        .status()
                        .unwrap();
                    assert!(status.success());
                    s.broker.stop();
                    self.noticed();
                    self.restart(&mut s);
                }
            }
            true
        }

        fn delivered(&self) -> usize {
            self.sub.flush();
            self.sub.got().len()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conforms() {
        if !Mosquitto::available() {
            return;
        }
        let setup = Setup::start(false);
        let sub = setup.subscribe("alerts/#", false);
        let proxy = Proxy::start(setup.broker.port);
        let n = build(
            &setup
                .config("tls = false\ntopic = \"alerts/{user}\"")
                .replace(&setup.broker.port.to_string(), &proxy.port.to_string()),
            &BuildContext::default(),
        )
        .unwrap();
        let staged = Staged {
            setup: StdMutex::new(setup),
            proxy,
            sub,
            off: AtomicBool::new(false),
        };
        conformance::run(Notifier::Mqtt(n), &staged).await;
    }
}
