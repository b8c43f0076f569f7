//! The hub's MQTT client: the same code whether the broker is embedded or external, so event
//! handling never assumes it holds the broker in-process (docs/DESIGN.md). It subscribes to
//! events (a shared subscription on an external broker, so several hubs split the load) and to
//! edge presence, and it publishes acks and the legacy republish.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warren_daemon::config::ConfigError;
use warren_daemon::tls::{self, CertFacts};
use warren_proto::envelope::MAX_PAYLOAD;
use warren_proto::topic;

use crate::stats::Stats;

/// Requests the client may queue for the event loop: acks for a large batch fit.
const REQUEST_CAPACITY: usize = 10_000;

/// A message for the inbox.
#[derive(Debug)]
pub enum Inbound {
    /// On an event topic: `(site, edge)` from the topic, and the payload.
    Event {
        /// Site from the topic.
        site: String,
        /// Edge id from the topic.
        edge: String,
        /// The envelope bytes.
        payload: Vec<u8>,
    },
    /// An edge's presence.
    Presence {
        /// Edge id from the topic.
        edge: String,
        /// The presence bytes (empty when a retained message is cleared).
        payload: Vec<u8>,
    },
}

/// Where and how to connect. Its `Debug` leaves out the TLS material and the password.
#[derive(Clone)]
pub struct BusOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS settings, if any.
    pub tls: Option<TlsConfiguration>,
    /// Username and password.
    pub credentials: Option<(String, warren_daemon::Secret)>,
    /// MQTT client id.
    pub client_id: String,
    /// Shared-subscription group (external brokers), or none.
    pub share_group: Option<String>,
}

impl std::fmt::Debug for BusOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("client_id", &self.client_id)
            .field("share_group", &self.share_group)
            .finish()
    }
}

/// A file a config names, with the key that names it (`broker.ca_file`, …).
pub type KeyedFile<'a> = (&'a str, &'a Path);

/// rumqttc's TLS for a broker the hub is a client of — its own external broker, or one an
/// `mqtt` notifier publishes to: the broker's CA, and a client certificate with its key,
/// checked to belong together. `ca` and `client` pair each file with the config key that names
/// it, so errors name the key; `config` is the config file, for the same reason. Returns the
/// client certificate's facts too, to warn before it ends.
///
/// # Errors
/// A [`ConfigError`] naming the key and the file at fault.
pub fn client_tls(
    config: &Path,
    ca: KeyedFile<'_>,
    client: Option<(KeyedFile<'_>, KeyedFile<'_>)>,
) -> Result<(TlsConfiguration, Option<CertFacts>), ConfigError> {
    let ca = tls::load_certificates(config, ca.0, ca.1)?.pem;
    let mut facts = None;
    let client_auth = match client {
        Some((cert, key)) => {
            let pair = tls::load_pair(config, cert, key)?;
            facts = CertFacts::of(&pair.certs[0]).ok();
            Some((pair.cert_pem, pair.key_pem))
        }
        None => None,
    };
    let tls = TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    };
    Ok((tls, facts))
}

/// Creates the client; [`drive`] must poll the returned event loop.
pub fn connect(o: &BusOptions) -> (AsyncClient, EventLoop) {
    let mut m = MqttOptions::new(&o.client_id, &o.host, o.port);
    m.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PAYLOAD, MAX_PAYLOAD)
        .set_inflight(100);
    if let Some((u, p)) = &o.credentials {
        m.set_credentials(u, p.expose());
    }
    if let Some(tls) = &o.tls {
        m.set_transport(Transport::tls_with_config(tls.clone()));
    }
    let (client, mut eventloop) = AsyncClient::new(m, REQUEST_CAPACITY);
    // Acks and events are small packets: Nagle would hold one back until the peer's delayed
    // ACK (40 ms) whenever an earlier one is still unacknowledged.
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

/// Polls the event loop until `stop`: subscribes after every ConnAck (sessions are clean: the
/// edges resend whatever was missed), forwards messages to `tx`, and reconnects with capped,
/// jittered backoff.
pub async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    opts: BusOptions,
    tx: mpsc::Sender<Inbound>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let events = match &opts.share_group {
        Some(group) => topic::shared(group, topic::EVENT_FILTER),
        None => topic::EVENT_FILTER.to_owned(),
    };
    let mut backoff = warren_daemon::retry::RetrySchedule::new(
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                tracing::info!(host = %opts.host, port = opts.port, "Connected to the broker.");
                for filter in [events.as_str(), topic::STATUS_FILTER] {
                    if let Err(error) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                        tracing::error!(%error, filter, "Cannot subscribe.");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                // The first SUBACK answers the events subscription: from now on an edge's
                // events reach the hub, so the TLS front may let edges in.
                stats.bus_connected.send_replace(true);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let inbound = if let Some((site, edge)) = topic::parse_event(&p.topic) {
                    Inbound::Event {
                        site: site.to_owned(),
                        edge: edge.to_owned(),
                        payload: p.payload.to_vec(),
                    }
                } else if let Some(edge) = topic::parse_status(&p.topic) {
                    Inbound::Presence {
                        edge: edge.to_owned(),
                        payload: p.payload.to_vec(),
                    }
                } else {
                    continue;
                };
                // Waiting here pushes back on the broker through TCP: the inbox is the bottleneck.
                if tx.send(inbound).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                let was = stats.bus_connected.send_replace(false);
                let delay = backoff.next_delay();
                if was {
                    tracing::warn!(%error, "Lost the broker; reconnecting.");
                } else {
                    tracing::debug!(%error, retry_in = ?delay, "Cannot reach the broker.");
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
