//! Forwarding to the hub: owns the rumqttc client and event loop.
//!
//! An event leaves the queue only when the hub's application-level ack names it
//! (docs/DESIGN.md): a broker PUBACK proves nothing, since rumqttd keeps messages in memory and rumqttc drops
//! unacked publishes when a reconnect finds no session. So after every ConnAck all unacked
//! events are sent again from the queue, and any event unacked after `ack_timeout` is resent;
//! the hub drops the duplicates.
//!
//! Order: at each connect the queue splits into the *backlog* (everything queued before it)
//! and the *live* lane (everything after). Each fill sends live events first, then backlog
//! events in FIFO order with the rest of the window, so a login is forwarded at once even while
//! a long outage's backlog drains.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ClientError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use warren_proto::envelope::{MAX_PAYLOAD, VERSION};
use warren_proto::{Ack, EventId, Presence, PresenceState, topic};

use crate::EdgeError;
use crate::config::{EdgeConfig, HubAddress, Secrets};
use crate::queue::{Entry, Queue};
use crate::stats::Stats;
use warren_daemon::database::StorageFull;

/// How often ack timeouts and the presence interval are checked.
const TICK: Duration = Duration::from_secs(1);
/// How long a clean shutdown waits for the DISCONNECT to go out.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// What the event-loop driver reports.
#[derive(Debug)]
enum Link {
    /// Connected, to this broker.
    Up(String),
    Down,
    Acked(Vec<EventId>),
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    seq: u64,
    sent: Instant,
}

/// What wakes the forwarder besides the link.
#[derive(Debug)]
pub struct Wake {
    /// New events are queued.
    pub queued: Arc<Notify>,
    /// The edge's state changed (its disk filled, or has room again): publish the presence now.
    pub announce: Arc<Notify>,
}

/// Sends queued events and applies acks, until `stop`.
///
/// # Errors
/// When the MQTT client is gone or the queue fails.
pub async fn run(
    cfg: Arc<EdgeConfig>,
    secrets: &Secrets,
    queue: Arc<Queue>,
    stats: Arc<Stats>,
    wake: Wake,
    stop: CancellationToken,
) -> Result<(), EdgeError> {
    // One set of options per broker; the driver moves to the next when one fails.
    let brokers: Vec<MqttOptions> = cfg
        .hubs
        .iter()
        .map(|hub| mqtt_options(&cfg, secrets, hub))
        .collect();
    let (client, mut eventloop) = AsyncClient::new(brokers[0].clone(), cfg.window.max(16));
    // Events are small packets: Nagle would hold one back until the hub's delayed ACK (40 ms)
    // whenever an earlier one is still unacknowledged.
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    // Unbounded so the driver never blocks: it carries acks for at most `window` events.
    let (link_tx, mut link_rx) = mpsc::unbounded_channel();
    let driver_stop = CancellationToken::new();
    let driver = tokio::spawn(drive(
        eventloop,
        brokers,
        link_tx,
        cfg.clone(),
        stats.clone(),
        driver_stop.clone(),
    ));
    let mut f = Forwarder {
        event_topic: topic::event(&cfg.site, &cfg.edge_id),
        status_topic: topic::status(&cfg.edge_id),
        cfg,
        queue,
        stats,
        client,
        in_flight: HashMap::new(),
        connected: false,
        live_next: 0,
        backlog_next: 0,
        backlog_end: 0,
        unsent: true,
    };
    let mut tick = tokio::time::interval(TICK);
    let mut next_presence = Instant::now();
    let result = loop {
        let step = tokio::select! {
            () = stop.cancelled() => break Ok(()),
            link = link_rx.recv() => match link {
                Some(Link::Up(broker)) => f.on_up(&broker).await,
                Some(Link::Down) => {
                    f.connected = false;
                    Ok(())
                }
                Some(Link::Acked(ids)) => f.on_ack(ids).await,
                None => break Err(EdgeError::Mqtt("event loop ended".into())),
            },
            () = wake.queued.notified() => f.fill().await,
            () = wake.announce.notified() => {
                if f.connected {
                    f.presence(PresenceState::Online).await;
                }
                Ok(())
            }
            _ = tick.tick() => {
                if f.connected && Instant::now() >= next_presence {
                    f.presence(PresenceState::Online).await;
                    next_presence = Instant::now() + f.cfg.status_interval;
                }
                f.resend_expired().await
            }
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    if f.connected {
        f.presence(PresenceState::Offline).await;
        let _ = f.client.try_disconnect();
        if tokio::time::timeout(DISCONNECT_GRACE, driver)
            .await
            .is_err()
        {
            driver_stop.cancel();
        }
    } else {
        driver_stop.cancel();
    }
    result
}

struct Forwarder {
    cfg: Arc<EdgeConfig>,
    queue: Arc<Queue>,
    stats: Arc<Stats>,
    client: AsyncClient,
    event_topic: String,
    status_topic: String,
    in_flight: HashMap<EventId, Flight>,
    connected: bool,
    /// Next seq of the live lane.
    live_next: u64,
    /// Next seq of the backlog lane, which ends before `backlog_end`.
    backlog_next: u64,
    backlog_end: u64,
    /// Whether the last [`Forwarder::fill`] may have left events it could send (a full window
    /// or request channel, a backlog, no link): an ack then fills again. When it sent all
    /// there was, only a commit brings more, and the commit wakes it.
    unsent: bool,
}

impl Forwarder {
    async fn on_up(&mut self, broker: &str) -> Result<(), EdgeError> {
        self.connected = true;
        // Whatever was in flight is unacked: send it all again, from the start of the queue.
        self.in_flight.clear();
        self.backlog_next = 0;
        self.backlog_end = self.queue.next_seq();
        self.live_next = self.backlog_end;
        let backlog = self.queue.len();
        tracing::info!(%broker, backlog, "Connected to the hub.");
        self.client
            .try_subscribe(topic::ack(&self.cfg.edge_id), QoS::AtLeastOnce)
            .map_err(client_error)?;
        self.presence(PresenceState::Online).await;
        self.fill().await
    }

    async fn on_ack(&mut self, ids: Vec<EventId>) -> Result<(), EdgeError> {
        for id in &ids {
            self.in_flight.remove(id);
        }
        self.stats.history.acked(&ids, crate::now_ms());
        let q = self.queue.clone();
        let removed = match tokio::task::spawn_blocking(move || q.ack(&ids)).await? {
            Ok(n) => n,
            // The disk is full even with the reserve given: the events stay queued and are
            // sent again later, and the hub drops them as duplicates.
            Err(error) if error.is_storage_full() => {
                tracing::warn!(%error, "Could not delete acked events.");
                0
            }
            Err(error) => return Err(error.into()),
        };
        Stats::add(&self.stats.acked, removed);
        if self.unsent {
            return self.fill().await;
        }
        self.set_gauge();
        Ok(())
    }

    /// Sends queued events until the window is full or the queue has no more to send.
    async fn fill(&mut self) -> Result<(), EdgeError> {
        self.unsent = true;
        while self.connected && self.in_flight.len() < self.cfg.window {
            let room = self.cfg.window - self.in_flight.len();
            let live = self.read(self.live_next, u64::MAX, room).await?;
            // Fewer than asked for: the live lane is sent up to the last commit, and the next
            // commit wakes this again, so reading it once more would find nothing.
            let live_drained = live.len() < room;
            let (sent_live, next) = self.send(&live, false)?;
            self.live_next = next.unwrap_or(self.live_next);
            let mut progress = sent_live > 0;
            let room = self.cfg.window.saturating_sub(self.in_flight.len());
            if room > 0 && sent_live == live.len() && self.backlog_next < self.backlog_end {
                let backlog = self.read(self.backlog_next, self.backlog_end, room).await?;
                let (sent_backlog, next) = self.send(&backlog, false)?;
                self.backlog_next = match next {
                    Some(n) => n,
                    None if backlog.is_empty() => self.backlog_end,
                    None => self.backlog_next,
                };
                progress |= sent_backlog > 0;
            }
            if live_drained && sent_live == live.len() && self.backlog_next >= self.backlog_end {
                self.unsent = false;
                break;
            }
            if !progress {
                break;
            }
        }
        self.set_gauge();
        Ok(())
    }

    /// Publishes `entries` in order (counted as resent when `resend`); returns how many went out
    /// and the seq after the last one. Stops early when the client's request channel is full (the next trigger resumes).
    fn send(&mut self, entries: &[Entry], resend: bool) -> Result<(usize, Option<u64>), EdgeError> {
        let mut next = None;
        for (n, e) in entries.iter().enumerate() {
            if !self.in_flight.contains_key(&e.id) {
                match self.publish(e) {
                    Ok(()) => {}
                    Err(ClientError::TryRequest(_)) => return Ok((n, next)),
                    Err(e) => return Err(client_error(e)),
                }
                self.in_flight.insert(
                    e.id,
                    Flight {
                        seq: e.seq,
                        sent: Instant::now(),
                    },
                );
                self.stats
                    .history
                    .sent(e.id, e.received_ms, crate::now_ms());
                Stats::add(
                    if resend {
                        &self.stats.resent
                    } else {
                        &self.stats.sent
                    },
                    1,
                );
            }
            next = Some(e.seq + 1);
        }
        Ok((entries.len(), next))
    }

    fn publish(&self, e: &Entry) -> Result<(), ClientError> {
        tracing::debug!(id = %e.id, seq = e.seq, "Publishing event.");
        self.client.try_publish(
            &self.event_topic,
            QoS::AtLeastOnce,
            false,
            e.payload.clone(),
        )
    }

    /// Sends again every event unacked for longer than `ack_timeout`.
    async fn resend_expired(&mut self) -> Result<(), EdgeError> {
        if !self.connected {
            return Ok(());
        }
        let now = Instant::now();
        let expired: Vec<(EventId, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now.duration_since(f.sent) >= self.cfg.ack_timeout)
            .map(|(id, f)| (*id, f.seq))
            .collect();
        if !expired.is_empty() {
            tracing::warn!(
                count = expired.len(),
                "No ack from the hub in time, resending."
            );
        }
        for (id, seq) in expired {
            self.in_flight.remove(&id);
            // Absent when the event was dropped to make room: then it is simply forgotten.
            let entries = self.read(seq, seq + 1, 1).await?;
            self.send(&entries, true)?;
        }
        // Events queued, none in flight, and both lanes done: sweep the queue from the front
        // again. (After a restart on a full disk the lanes were once seen to pass events by,
        // which a further restart then sent; this catches whatever does that.)
        if self.in_flight.is_empty()
            && !self.queue.is_empty()
            && self.backlog_next >= self.backlog_end
        {
            self.backlog_next = 0;
            self.backlog_end = self.queue.next_seq();
            self.live_next = self.live_next.max(self.backlog_end);
        }
        self.fill().await
    }

    async fn read(&self, from: u64, until: u64, max: usize) -> Result<Vec<Entry>, EdgeError> {
        let q = self.queue.clone();
        Ok(tokio::task::spawn_blocking(move || q.read(from, until, max)).await??)
    }

    /// Publishes the retained presence (best effort: a full request channel skips one).
    async fn presence(&self, state: PresenceState) {
        let q = self.queue.clone();
        let oldest = tokio::task::spawn_blocking(move || q.oldest_received_ms().ok().flatten())
            .await
            .ok()
            .flatten();
        let p = presence(&self.cfg, state, &self.queue, oldest);
        if let Err(error) =
            self.client
                .try_publish(&self.status_topic, QoS::AtLeastOnce, true, p.encode())
        {
            tracing::debug!(%error, "Presence not published.");
        }
    }

    fn set_gauge(&self) {
        self.stats.in_flight.store(
            self.in_flight.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

fn presence(
    cfg: &EdgeConfig,
    state: PresenceState,
    queue: &Queue,
    oldest_ms: Option<u64>,
) -> Presence {
    let now = crate::now_ms();
    Presence {
        v: VERSION,
        state,
        edge: cfg.edge_id.clone(),
        site: cfg.site.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        queue_depth: queue.len(),
        queue_bytes: queue.bytes(),
        oldest_age_ms: oldest_ms.map(|t| now.saturating_sub(t)),
        ts: now,
        problem: queue
            .disk_full_since()
            .map(|_| warren_proto::envelope::DISK_FULL.to_owned()),
    }
}

fn client_error(e: ClientError) -> EdgeError {
    EdgeError::Mqtt(e.to_string())
}

/// Polls the event loop: reports connects, disconnects and acks. A failed connection or a lost
/// link moves on to the next of `brokers` (the options for each of `[hub] address`) at once;
/// once each has failed in turn it waits, with capped, jittered exponential backoff (rumqttc
/// itself retries at once). The application-level ack makes a switch safe: whatever the old
/// broker did not ack is sent again through the new one.
async fn drive(
    mut eventloop: EventLoop,
    brokers: Vec<MqttOptions>,
    tx: mpsc::UnboundedSender<Link>,
    cfg: Arc<EdgeConfig>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut backoff =
        warren_daemon::retry::RetrySchedule::new(Duration::from_millis(200), cfg.max_backoff);
    let (mut at, mut failed_in_turn) = (0, 0);
    // Since when the link is up: the backoff starts again only after a link that held.
    let mut up_since = None;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            e = eventloop.poll() => e,
        };
        let link = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                up_since = Some(Instant::now());
                failed_in_turn = 0;
                let broker = cfg.hubs[at].to_string();
                stats.set_link(true, broker.clone(), None);
                Link::Up(broker)
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if topic::parse_ack(&p.topic) != Some(cfg.edge_id.as_str()) {
                    continue;
                }
                match Ack::decode(&p.payload) {
                    Ok(ack) => Link::Acked(ack.ids),
                    Err(error) => {
                        tracing::warn!(%error, "Ignoring a malformed ack.");
                        continue;
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(error) => {
                let was_up = stats.link().connected;
                // A broker that accepts the edge and drops it at once (a client id taken
                // over, an ACL) must not make it reconnect in a loop: the wait keeps growing
                // until a link holds for a keep-alive.
                if up_since
                    .take()
                    .is_some_and(|t| t.elapsed() >= cfg.keep_alive)
                {
                    backoff.reset();
                }
                let broker = &cfg.hubs[at];
                stats.set_link(false, broker.to_string(), Some(error.to_string()));
                failed_in_turn += 1;
                // The next address at once after a refused connection; after a link that was
                // up, or once each has failed in turn, a wait (a broker that accepts and then
                // drops the edge must not make it reconnect in a loop).
                let delay = if was_up || failed_in_turn % brokers.len() == 0 {
                    backoff.next_delay()
                } else {
                    Duration::ZERO
                };
                if was_up {
                    tracing::warn!(%broker, %error, "Lost the hub; events stay queued.");
                } else {
                    tracing::debug!(%broker, %error, retry_in = ?delay, "Cannot reach the hub.");
                }
                if brokers.len() > 1 {
                    at = (at + 1) % brokers.len();
                    eventloop.mqtt_options = brokers[at].clone();
                    tracing::debug!(broker = %cfg.hubs[at], "Trying the next hub address.");
                }
                if tx.send(Link::Down).is_err() {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        if tx.send(link).is_err() {
            return;
        }
    }
}

fn mqtt_options(cfg: &EdgeConfig, secrets: &Secrets, hub: &HubAddress) -> MqttOptions {
    let mut o = MqttOptions::new(&cfg.edge_id, &hub.host, hub.port);
    o.set_keep_alive(cfg.keep_alive)
        // No broker session is trusted: the queue is the session.
        .set_clean_session(true)
        .set_max_packet_size(MAX_PAYLOAD, MAX_PAYLOAD)
        // As many unacked publishes as the window holds: a smaller MQTT window would make the
        // client wait for the broker's PUBACKs inside the hub's.
        .set_inflight(u16::try_from(cfg.window).unwrap_or(u16::MAX))
        .set_last_will(LastWill::new(
            topic::status(&cfg.edge_id),
            Presence {
                v: VERSION,
                state: PresenceState::Offline,
                edge: cfg.edge_id.clone(),
                site: cfg.site.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                queue_depth: 0,
                queue_bytes: 0,
                oldest_age_ms: None,
                ts: 0,
                problem: None,
            }
            .encode(),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &cfg.username {
        o.set_credentials(user, secrets.password.as_ref().map_or("", |p| p.expose()));
    }
    if cfg.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: secrets.ca.clone().unwrap_or_default(),
            alpn: None,
            client_auth: secrets.client.clone(),
        }));
    }
    o
}
