//! Prometheus metrics: a status snapshot in the text exposition format, served on
//! `/metrics` by the [web listener](crate::web).

use std::fmt::Write;

use crate::status::HubStatus;

/// The exposition text for a snapshot.
pub fn render(s: &HubStatus) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    let per_notifier = |f: &dyn Fn(&crate::status::NotifierStatus) -> u64| {
        s.notifiers
            .iter()
            .map(|(n, st)| (format!("{{notifier=\"{n}\"}}"), f(st)))
            .collect::<Vec<_>>()
    };
    metric(
        "warren_hub_events_received_total",
        "counter",
        "Envelopes received from edges.",
        &one(s.received),
    );
    metric(
        "warren_hub_duplicates_total",
        "counter",
        "Envelopes dropped as duplicates.",
        &one(s.duplicates),
    );
    metric(
        "warren_hub_invalid_total",
        "counter",
        "Payloads that were not valid envelopes.",
        &one(s.invalid),
    );
    metric(
        "warren_hub_acked_total",
        "counter",
        "Event ids acked to edges.",
        &one(s.acked),
    );
    metric(
        "warren_hub_broker_connected",
        "gauge",
        "1 when the hub's MQTT client is connected.",
        &one(u64::from(s.broker_connected)),
    );
    let online = s.edges.values().filter(|e| e.online).count() as u64;
    metric(
        "warren_hub_edges_connected",
        "gauge",
        "Edges whose presence says online.",
        &one(online),
    );
    metric(
        "warren_hub_edges_known",
        "gauge",
        "Edges seen since start.",
        &one(s.edges.len() as u64),
    );
    metric(
        "warren_hub_known_sources",
        "gauge",
        "(user, source network) pairs remembered.",
        &one(s.known_sources),
    );
    metric(
        "warren_hub_folded_total",
        "counter",
        "Notifications folded into digests by route throttles.",
        &one(s.folded),
    );
    metric(
        "warren_hub_dead_letters",
        "gauge",
        "Deliveries given up on, held for inspection.",
        &one(s.dead_letters),
    );
    metric(
        "warren_hub_outbox",
        "gauge",
        "Deliveries waiting, per notifier.",
        &per_notifier(&|n| n.outbox),
    );
    metric(
        "warren_hub_deliveries_total",
        "counter",
        "Deliveries made, per notifier.",
        &per_notifier(&|n| n.delivered),
    );
    metric(
        "warren_hub_delivery_failures_total",
        "counter",
        "Failed delivery attempts, per notifier.",
        &per_notifier(&|n| n.failures),
    );
    out
}
