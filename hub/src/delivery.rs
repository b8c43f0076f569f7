//! One delivery task per notifier drains that notifier's part of the outbox, oldest first:
//! each attempt is bounded by `[delivery] timeout`; transient failures are retried with capped,
//! jittered exponential backoff up to the attempt budget; permanent failures and exhausted
//! budgets become dead letters. Each notifier has its own task, so a slow or dead one never
//! delays another.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use backoff::backoff::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DeliveryConfig;
use crate::inbox::{Inbox, InboxError};
use crate::notify::{Notifier, NotifierName, NotifyError};
use crate::stats::Stats;

/// Starts one delivery task per notifier on `tracker`; they stop at `stop`, each finishing
/// the attempt it has begun. Returns the wake-up of each, to be notified when its outbox
/// grows.
pub fn spawn(
    tracker: &TaskTracker,
    notifiers: Vec<(NotifierName, Notifier)>,
    inbox: &Arc<Inbox>,
    policy: &DeliveryConfig,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) -> HashMap<NotifierName, Arc<Notify>> {
    let mut wakes = HashMap::new();
    for (name, notifier) in notifiers {
        let wake = Arc::new(Notify::new());
        // Entries left from a previous run are delivered at once.
        wake.notify_one();
        wakes.insert(name.clone(), wake.clone());
        let task = run(
            name.clone(),
            notifier,
            inbox.clone(),
            policy.clone(),
            wake,
            stats.clone(),
            stop.clone(),
        );
        tracker.spawn(async move {
            if let Err(error) = task.await {
                tracing::error!(notifier = %name, %error, "Delivery task failed.");
            }
        });
    }
    wakes
}

/// Delivers until `stop`; an attempt in progress is finished first (it is bounded by the
/// timeout), so the caller's grace period covers it.
///
/// # Errors
/// When the inbox fails.
pub async fn run(
    name: NotifierName,
    notifier: Notifier,
    inbox: Arc<Inbox>,
    policy: DeliveryConfig,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<(), InboxError> {
    let mut backoff = warren_daemon::retry_backoff(policy.initial_backoff, policy.max_backoff);
    let counters = stats.notifier(&name);
    while !stop.is_cancelled() {
        let next = blocking(&inbox, {
            let name = name.clone();
            move |i| i.next(&name)
        })
        .await?;
        let Some((seq, mut entry)) = next else {
            tokio::select! {
                () = wake.notified() => continue,
                () = stop.cancelled() => break,
            }
        };
        // Dropping a sink's attempt at the deadline is the one time limit every sink obeys
        // (sinks are cancel-safe; a program run by `exec` is killed).
        let result = tokio::time::timeout(policy.timeout, notifier.send(&entry.notification))
            .await
            .unwrap_or_else(|_| {
                Err(NotifyError::Transient(format!(
                    "no answer within {}",
                    humantime::format_duration(policy.timeout)
                )))
            });
        let id = entry.notification.envelope.id;
        entry.attempts += 1;
        match result {
            Ok(()) => {
                backoff.reset();
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(notifier = %name, %id, attempts = entry.attempts, "Delivered.");
                blocking(&inbox, {
                    let name = name.clone();
                    move |i| i.done(&name, seq)
                })
                .await?;
            }
            Err(error) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                let permanent = matches!(error, NotifyError::Permanent(_));
                if permanent || entry.attempts >= policy.max_attempts {
                    tracing::error!(notifier = %name, %id, attempts = entry.attempts, %error, "Delivery failed for good; kept as a dead letter.");
                    counters.dead.fetch_add(1, Ordering::Relaxed);
                    let now = crate::now_ms();
                    let msg = error.to_string();
                    blocking(&inbox, {
                        let name = name.clone();
                        move |i| i.give_up(&name, seq, &entry, &msg, now)
                    })
                    .await?;
                    continue;
                }
                let mut delay = backoff.next_backoff().unwrap_or(policy.max_backoff);
                if let NotifyError::Throttled(_, wait) = &error {
                    delay = delay.max(*wait);
                }
                tracing::warn!(notifier = %name, %id, attempts = entry.attempts, %error, retry_in = ?delay, "Delivery failed, will retry.");
                entry.last_error = Some(error.to_string());
                blocking(&inbox, {
                    let name = name.clone();
                    move |i| i.retry(&name, seq, &entry)
                })
                .await?;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    inbox: &Arc<Inbox>,
    f: impl FnOnce(&Inbox) -> Result<T, InboxError> + Send + 'static,
) -> Result<T, InboxError> {
    let inbox = inbox.clone();
    tokio::task::spawn_blocking(move || f(&inbox))
        .await
        .unwrap_or_else(|e| Err(InboxError::Sync(std::io::Error::other(e))))
}
