//! One delivery task per notifier drains that notifier's part of the outbox, oldest first:
//! transient failures are retried with capped, jittered exponential backoff up to the attempt
//! budget; permanent failures and exhausted budgets become dead letters. Each notifier has its
//! own task, so a slow or dead one never delays another.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use backoff::backoff::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::DeliveryConfig;
use crate::inbox::{Inbox, InboxError};
use crate::notify::{Notifier, NotifierName, NotifyError};
use crate::stats::Stats;

/// Delivers until `stop`; a send in progress is finished first (it is bounded by the
/// notifier's timeout), so the caller's grace period covers it.
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
        let result = notifier.send(&entry.notification).await;
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
                let delay = backoff.next_backoff().unwrap_or(policy.max_backoff);
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
