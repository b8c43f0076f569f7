//! Prometheus metrics: `GET /metrics` in the text exposition format, on a listener that should
//! stay on loopback (or behind the scraper's own network policy).

use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::status::{HubStatus, Source};

/// Serves until `stop`.
pub async fn serve(listener: TcpListener, source: Arc<Source>, stop: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "Metrics listener accept failed.");
                    continue;
                }
            },
        };
        let source = source.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| respond(req, source.clone()));
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "Metrics connection ended.");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    source: Arc<Source>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    match tokio::task::spawn_blocking(move || source.snapshot()).await {
        Ok(snapshot) => {
            *resp.body_mut() = Full::new(Bytes::from(render(&snapshot)));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
        }
        Err(_) => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    Ok(resp)
}

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
