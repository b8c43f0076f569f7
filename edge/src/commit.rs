//! Group commit: everything that arrived while the previous flush ran goes into the next
//! batch, so one fsync covers many events and a datagram waits for at most about two flushes.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use crate::queue::{NewEntry, Queue};
use crate::stats::Stats;

/// The most events one batch takes; bounds the time a batch holds the queue lock, and the
/// memory sled holds for one: it copies a node per insert and frees the copies only after
/// the batch. Batches of 8192 took an edge flooded past its rate to 1.7 GiB; 1024 keep it at
/// 150 MiB at the same accepted rate (`bench/edge_ingest.py --rates 50000`).
const MAX_BATCH: usize = 1024;

/// Commits batches until every sender is gone (ingest stopped), then returns.
///
/// # Errors
/// A failed write or fsync is returned: the edge cannot keep its promise and must stop. A full
/// disk is not an error: the queue refuses the events (counted as `disk_full`).
pub async fn run(
    queue: Arc<Queue>,
    mut rx: mpsc::Receiver<NewEntry>,
    stats: Arc<Stats>,
    wake: Arc<Notify>,
) -> Result<(), crate::EdgeError> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (q, w) = (queue.clone(), wake.clone());
        let (outcome, batch_back) = tokio::task::spawn_blocking(move || {
            // The forwarder is woken before the fsync, to send while it runs.
            let outcome = q.commit(&batch, || w.notify_one());
            batch.clear();
            (outcome, batch)
        })
        .await?;
        batch = batch_back;
        let o = outcome?;
        Stats::add(&stats.accepted, o.queued);
        Stats::add(&stats.duplicates, o.duplicates);
        Stats::add(&stats.dropped_oldest, o.dropped_oldest);
        // The queue logged the disk filling; ingest refuses (and logs) what arrives after.
        if o.rejected_disk_full > 0 {
            stats.reject_many("disk_full", o.rejected_disk_full);
        }
        if o.dropped_oldest > 0 {
            tracing::warn!(
                dropped = o.dropped_oldest,
                "Queue full: dropped the oldest events."
            );
        }
        if o.rejected_full > 0 {
            stats.reject_many("queue_full", o.rejected_full);
            tracing::warn!(
                rejected = o.rejected_full,
                "Queue full: rejected new events."
            );
        }
    }
    Ok(())
}
