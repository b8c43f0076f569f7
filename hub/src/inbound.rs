//! The inbox task: validates what arrives from the broker, makes new events and their
//! deliveries durable, then acks every event to its edge (duplicates too: the edge must stop
//! resending them), republishes new logins in the hared format, and wakes the notifiers.
//!
//! It also keeps the hub's own clock-driven work in the same transactions: edges announced
//! offline or back ([`crate::presence`], with `[presence] events = true`) and the digests of
//! throttle intervals that have ended ([`crate::throttle`]), checked every [`TICK`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;
use warren_proto::envelope::VERSION;
use warren_proto::{Ack, Envelope, EventId, Kind, Presence, topic};

use crate::bus::Inbound;
use crate::config::HubConfig;
use crate::delivery::Wakes;
use crate::inbox::{Inbox, InboxError, Tx};
use crate::presence::{HUB_KINDS, Tracker};
use crate::router::Router;
use crate::stats::{Stats, lock};

/// The most messages one commit takes.
const MAX_BATCH: usize = 2048;
/// Ids per ack message, well inside the packet size limit.
const MAX_ACK_IDS: usize = 500;
/// How often silent edges and ended throttle intervals are looked for.
const TICK: Duration = Duration::from_secs(1);
/// A wait for the tick this much longer than [`TICK`] means the hub did not run.
const PAUSE_SLACK: Duration = Duration::from_secs(3);

/// Everything the inbox task uses.
pub struct Pipeline {
    /// The store.
    pub inbox: Arc<Inbox>,
    /// Routes.
    pub router: Arc<Router>,
    /// Edges' presence.
    pub presence: Arc<Mutex<Tracker>>,
    /// To publish acks and the legacy republish.
    pub client: AsyncClient,
    /// Counters and the edge table.
    pub stats: Arc<Stats>,
    /// One wake-up per notifier.
    pub wakes: Arc<Wakes>,
    /// Config.
    pub cfg: Arc<HubConfig>,
}

/// Processes batches until the bus ends (every sender dropped).
///
/// # Errors
/// When the inbox fails: the hub can then no longer make events durable and must stop.
pub async fn run(mut rx: mpsc::Receiver<Inbound>, p: Pipeline) -> Result<(), InboxError> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting = std::time::Instant::now();
    loop {
        let ticked = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    break;
                }
                false
            }
            _ = tick.tick() => true,
        };
        // The tick comes every second: a longer wait means the hub did not run (stopped,
        // starved). It heard nothing because it was deaf, not because its edges were silent.
        let waited = waiting.elapsed();
        if waited > TICK + PAUSE_SLACK {
            let lost = waited.saturating_sub(TICK);
            lock(&p.presence).forgive(u64::try_from(lost.as_millis()).unwrap_or(u64::MAX));
        }
        p.process(&mut batch, ticked).await?;
        waiting = std::time::Instant::now();
    }
    Ok(())
}

impl Pipeline {
    async fn process(&self, batch: &mut Vec<Inbound>, ticked: bool) -> Result<(), InboxError> {
        // Stamps are wall time; silence and the dedup window are measured on clocks that do
        // not jump with it (crate::clock).
        let now = crate::clock::wall_ms();
        let steady = crate::clock::steady_ms();
        let mut envelopes: Vec<Envelope> = batch
            .drain(..)
            .filter_map(|m| self.accept(m, now, steady))
            .collect();
        // Those from edges come first, and are acked; the hub's own follow.
        let from_edges = envelopes.len();
        if self.inbox.disk_full_since().is_some() {
            // Nothing new can be recorded: unacked, the edges keep these and send them again;
            // presence changes are decided once they can be recorded.
            Stats::add(&self.stats.unacked_disk_full, from_edges as u64);
            return Ok(());
        }
        let transitions = lock(&self.presence).due(steady);
        // The announcements among the envelopes, after those from edges.
        let mut announcing = Vec::new();
        for t in &transitions {
            if let Some(online) = t.change.online() {
                let since = crate::clock::steady_to_wall(t.since_ms);
                self.stats.set_online(&t.edge, &t.site, online, since);
            }
            tracing::warn!(edge = %t.edge, site = %t.site, change = t.change.kind(), why = %t.why, "Edge presence changed.");
            if self.cfg.presence.events {
                envelopes.push(t.event(now, self.inbox.salt()));
                announcing.push(t.clone());
            }
        }
        if envelopes.is_empty() && !ticked && !lock(&self.presence).is_dirty() {
            return Ok(());
        }
        let (inbox, router, presence, wakes) = (
            self.inbox.clone(),
            self.router.clone(),
            self.presence.clone(),
            self.wakes.clone(),
        );
        // The window ends at the window clock's now, which may be behind the wall's: widen it
        // by the difference, as seen from the wall time the records are stamped with.
        let window_ms = u64::try_from(self.cfg.dedup.window.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(now.saturating_sub(crate::clock::window_ms()));
        let listed = self.cfg.web.as_ref().is_some_and(|w| w.page);
        let (committed, envelopes) = tokio::task::spawn_blocking(move || {
            let received = chrono::Utc::now();
            // The notifiers are woken before the fsync, to read their deliveries while it runs:
            // a notification is what a user waits for.
            let wake = |woken: &[_]| crate::delivery::wake(&wakes, woken);
            let record = |tx: &mut Tx<'_>| {
                // A change another hub sharing the store announced first is not announced
                // again (one hub alone always finds the store as it left it).
                let mut kept = None;
                for (i, t) in announcing.iter().enumerate().rev() {
                    if Tracker::announced_elsewhere(tx, t)? {
                        kept.get_or_insert_with(|| envelopes.clone())
                            .remove(from_edges + i);
                    }
                }
                lock(&presence).store(tx);
                let c = tx.record(
                    kept.as_deref().unwrap_or(&envelopes),
                    now,
                    window_ms,
                    |e, tx| {
                        let (deliveries, routing) = router.route(e, received, tx)?;
                        if listed {
                            crate::recent::put(tx, e, &routing, now)?;
                        }
                        Ok((deliveries, routing))
                    },
                )?;
                if ticked {
                    for (name, n) in router.close_intervals(received, tx)? {
                        tx.enqueue(name, n)?;
                    }
                }
                Ok((c, kept))
            };
            let c = inbox.transact_waking(record, wake);
            (c, envelopes)
        })
        .await
        .map_err(|e| InboxError::Sync(std::io::Error::other(e)))?;
        let ((committed, kept), _) = match committed {
            Err(InboxError::DiskFull) => {
                lock(&self.presence).unannounce(&transitions);
                Stats::add(&self.stats.unacked_disk_full, from_edges as u64);
                // The write that failed may have landed after all: its deliveries are in the
                // outbox, and their events come back as duplicates, which wake no one.
                crate::delivery::wake_all(&self.wakes);
                return Ok(());
            }
            Err(error) if error.is_unavailable() => {
                // Nothing is acked: the edges send it all again.
                tracing::warn!(%error, events = from_edges, "Could not record; not acked.");
                lock(&self.presence).unannounce(&transitions);
                Stats::add(&self.stats.unacked_store, from_edges as u64);
                return Ok(());
            }
            r => r?,
        };
        lock(&self.presence).stored();
        let envelopes = kept.unwrap_or(envelopes);
        Stats::add(&self.stats.duplicates, committed.duplicates);
        self.ack(&envelopes[..from_edges]);
        for &i in &committed.new {
            self.republish(&envelopes[i]);
        }
        Ok(())
    }

    /// The envelope a message carries, if it is a valid event; presence is recorded.
    fn accept(&self, m: Inbound, now: u64, steady: u64) -> Option<Envelope> {
        match m {
            Inbound::Event {
                site,
                edge,
                payload,
            } => match Envelope::decode(&payload) {
                Ok(e) if HUB_KINDS.contains(&e.event.kind().as_str()) => {
                    let detail = format!(
                        "an event of kind {}, which only the hub makes",
                        e.event.kind().as_str()
                    );
                    self.stats
                        .invalid
                        .refuse("an envelope", "hub_kind", &edge, &detail);
                    None
                }
                Ok(e) if e.site == site && e.edge == edge => {
                    Stats::add(&self.stats.received, 1);
                    self.stats.saw_event(&edge, &site, now);
                    lock(&self.presence).heard_event(&edge, &site, steady);
                    Some(e)
                }
                Ok(e) => {
                    let detail = format!(
                        "envelope of {}/{} on the topic of {site}/{edge}",
                        e.site, e.edge
                    );
                    self.stats
                        .invalid
                        .refuse("an envelope", "topic_mismatch", &edge, &detail);
                    None
                }
                Err(error) => {
                    self.stats
                        .invalid
                        .refuse("an envelope", "invalid", &edge, &error);
                    None
                }
            },
            Inbound::Presence { edge, payload } => {
                if payload.is_empty() {
                    return None; // a retained status being cleared
                }
                match Presence::decode(&payload) {
                    Ok(p) if p.edge == edge => {
                        self.stats.saw_presence(&p, now);
                        lock(&self.presence).heard_presence(&p, steady);
                    }
                    Ok(_) | Err(_) => {
                        tracing::debug!(%edge, "Ignoring an unreadable presence message.");
                    }
                }
                None
            }
        }
    }

    /// Acks every envelope to its edge, in batches.
    fn ack(&self, envelopes: &[Envelope]) {
        let mut by_edge: BTreeMap<&str, Vec<EventId>> = BTreeMap::new();
        for e in envelopes {
            by_edge.entry(&e.edge).or_default().push(e.id);
        }
        for (edge, ids) in by_edge {
            for chunk in ids.chunks(MAX_ACK_IDS) {
                let ack = Ack {
                    v: VERSION,
                    ids: chunk.to_vec(),
                };
                match self.client.try_publish(
                    topic::ack(edge),
                    QoS::AtLeastOnce,
                    false,
                    ack.encode(),
                ) {
                    Ok(()) => Stats::add(&self.stats.acked, chunk.len() as u64),
                    // Not fatal: the edge resends after its ack timeout and gets acked then.
                    Err(error) => tracing::warn!(%edge, %error, "Could not publish an ack."),
                }
            }
        }
    }

    /// Republishes a new login in the hared format, when configured.
    fn republish(&self, e: &Envelope) {
        if !self.cfg.legacy.republish || e.event.kind() != &Kind::Login {
            return;
        }
        match self.client.try_publish(
            &self.cfg.legacy.topic,
            QoS::AtLeastOnce,
            false,
            e.legacy_republish(),
        ) {
            Ok(()) => Stats::add(&self.stats.republished, 1),
            Err(error) => tracing::warn!(%error, "Could not republish on the legacy topic."),
        }
    }
}
