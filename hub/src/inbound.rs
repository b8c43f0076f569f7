//! The inbox task: validates what arrives from the broker, makes new events and their
//! deliveries durable, then acks every event to its edge (duplicates too: the edge must stop
//! resending them), republishes new logins in the hared format, and wakes the notifiers.
//!
//! With `[presence] events = true`, an edge whose presence turns offline (its last-will, or a
//! clean stop) or back online becomes an event of kind `edge_offline` / `edge_online`, routed
//! like any other: "the power has gone off at paris-dc".

use std::collections::BTreeMap;
use std::sync::Arc;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;
use warren_proto::envelope::VERSION;
use warren_proto::{Ack, Envelope, Event, EventId, Kind, Presence, PresenceState, topic};

use crate::bus::Inbound;
use crate::config::HubConfig;
use crate::delivery::Wakes;
use crate::inbox::{Inbox, InboxError};
use crate::router::{self, Route};
use crate::stats::Stats;

/// The most messages one commit takes.
const MAX_BATCH: usize = 2048;
/// Ids per ack message, well inside the packet size limit.
const MAX_ACK_IDS: usize = 500;

/// Everything the inbox task uses.
pub struct Pipeline {
    /// The store.
    pub inbox: Arc<Inbox>,
    /// Routes.
    pub routes: Arc<Vec<Route>>,
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
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let now = crate::now_ms();
        let (envelopes, from_edge): (Vec<Envelope>, Vec<bool>) =
            batch.drain(..).filter_map(|m| p.accept(m, now)).unzip();
        if envelopes.is_empty() {
            continue;
        }
        let (inbox, routes) = (p.inbox.clone(), p.routes.clone());
        let window_ms = u64::try_from(p.cfg.dedup.window.as_millis()).unwrap_or(u64::MAX);
        let (committed, envelopes) = tokio::task::spawn_blocking(move || {
            let received = chrono::Utc::now();
            let c = inbox.commit(&envelopes, now, window_ms, |e| {
                router::route(&routes, e, received)
            });
            (c, envelopes)
        })
        .await
        .map_err(|e| InboxError::Sync(std::io::Error::other(e)))?;
        let committed = committed?;
        Stats::add(&p.stats.duplicates, committed.duplicates);
        p.ack(
            envelopes
                .iter()
                .zip(from_edge)
                .filter_map(|(e, from_edge)| from_edge.then_some(e)),
        );
        for &i in &committed.new {
            p.republish(&envelopes[i]);
        }
        for name in &committed.woken {
            if let Some(w) = p.wakes.get(name) {
                w.notify_one();
            }
        }
    }
    Ok(())
}

impl Pipeline {
    /// The envelope a message carries, if it is a valid event, and whether it came from an edge
    /// (to be acked); presence is recorded, and may itself become an event.
    fn accept(&self, m: Inbound, now: u64) -> Option<(Envelope, bool)> {
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
                    Some((e, true))
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
                let p = match Presence::decode(&payload) {
                    Ok(p) if p.edge == edge => p,
                    Ok(_) | Err(_) => {
                        tracing::debug!(%edge, "Ignoring an unreadable presence message.");
                        return None;
                    }
                };
                let before = self.stats.saw_presence(&p, now);
                let changed = before.is_some_and(|was| was != (p.state == PresenceState::Online));
                (self.cfg.presence.events && changed)
                    .then(|| (presence_event(&p, now, self.inbox.salt()), false))
            }
        }
    }

    /// Acks every envelope to its edge, in batches.
    fn ack<'a>(&self, envelopes: impl Iterator<Item = &'a Envelope>) {
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

/// The kinds of events the hub makes itself; an edge that sends one is refused.
const HUB_KINDS: [&str; 2] = ["edge_offline", "edge_online"];

fn presence_event(p: &Presence, now_ms: u64, salt: &str) -> Envelope {
    let kind = if p.state == PresenceState::Online {
        "edge_online"
    } else {
        "edge_offline"
    };
    let tst = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let mut event = Event::new(Kind::Other(kind.to_owned()), tst);
    event
        .set_str("hostname", Some(&p.edge))
        .set_str(
            "title",
            Some(&format!(
                "{} is {}",
                p.edge,
                if kind == "edge_online" {
                    "back online"
                } else {
                    "offline"
                }
            )),
        )
        .set_str(
            "message",
            Some(&format!(
                "Edge {} at site {} went {}.",
                p.edge,
                p.site,
                &kind[5..]
            )),
        )
        .set("queue_depth", p.queue_depth.into());
    Envelope {
        v: VERSION,
        // One id per transition instant: a repeated presence message is a duplicate. The salt
        // keeps it unpredictable to edges.
        id: EventId::derive_legacy(
            [Some(kind), Some(&p.edge), Some(&p.site), Some(salt), None],
            tst,
        ),
        site: p.site.clone(),
        edge: p.edge.clone(),
        received: now_ms,
        remote: String::new(),
        signed: false,
        event,
    }
}
