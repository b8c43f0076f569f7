//! One delivery task per notifier drains that notifier's part of the outbox, oldest first.
//!
//! Each attempt is bounded by `[delivery] timeout`. A transient failure is retried after a
//! delay that starts at `initial_backoff` and doubles up to `max_backoff` (longer if the
//! service said `Retry-After`), for as long as `give_up_after` from the delivery's first
//! failure — a duration, so an outage of a known length is outlasted whatever the backoff.
//! A permanent failure or a spent budget makes a dead letter, and hands the notification to
//! the notifier's `fallback`, if it has one, in the same atomic write. Each notifier has its
//! own task, so a slow or dead one never delays another.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_daemon::retry::RetrySchedule;

use crate::config::DeliveryConfig;
use crate::inbox::{Inbox, InboxError};
use crate::notify::{Notifier, NotifierName, NotifyError};
use crate::stats::Stats;
use crate::trace::{AttemptResult, Step};

/// The wake-up of each notifier's task, to be notified when its outbox grows.
pub type Wakes = HashMap<NotifierName, Arc<Notify>>;

/// How long the bookkeeping of a delivery waits before trying a full disk again.
const DISK_RETRY: Duration = Duration::from_secs(2);

/// Wakes every notifier (deliveries may be waiting that no one announced).
pub fn wake_all(wakes: &Wakes) {
    for w in wakes.values() {
        w.notify_one();
    }
}

/// A notifier and where its failures go.
#[derive(Debug)]
pub struct Task {
    /// Its name.
    pub name: NotifierName,
    /// The sink.
    pub notifier: Notifier,
    /// The notifier that gets what this one gives up on.
    pub fallback: Option<NotifierName>,
}

/// Starts one delivery task per notifier on `tracker`; they stop at `stop`, each finishing
/// the attempt it has begun.
pub fn spawn(
    tracker: &TaskTracker,
    tasks: Vec<Task>,
    inbox: &Arc<Inbox>,
    policy: &DeliveryConfig,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) -> Arc<Wakes> {
    let wakes: Arc<Wakes> = Arc::new(
        tasks
            .iter()
            .map(|t| (t.name.clone(), Arc::new(Notify::new())))
            .collect(),
    );
    for task in tasks {
        // Entries left from a previous run are delivered at once.
        if let Some(w) = wakes.get(&task.name) {
            w.notify_one();
        }
        let name = task.name.clone();
        let run = run(
            task,
            inbox.clone(),
            policy.clone(),
            wakes.clone(),
            stats.clone(),
            stop.clone(),
        );
        tracker.spawn(async move {
            if let Err(error) = run.await {
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
    task: Task,
    inbox: Arc<Inbox>,
    policy: DeliveryConfig,
    wakes: Arc<Wakes>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<(), InboxError> {
    let Task {
        name,
        notifier,
        fallback,
    } = task;
    let wake = wakes.get(&name).cloned().unwrap_or_default();
    let budget_ms = u64::try_from(policy.give_up_after.as_millis()).unwrap_or(u64::MAX);
    let mut schedule = RetrySchedule::new(policy.initial_backoff, policy.max_backoff);
    let counters = stats.notifier(&name);
    while !stop.is_cancelled() {
        let next = blocking(&inbox, &stop, {
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
        let now = crate::now_ms();
        entry.attempts += 1;
        let error = match result {
            Ok(()) => {
                schedule.reset();
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                counters.set_last_error(None);
                tracing::debug!(notifier = %name, %id, attempts = entry.attempts, "Delivered.");
                let step = Step::attempt(&name, now, entry.attempts, AttemptResult::Delivered);
                blocking(&inbox, &stop, {
                    let name = name.clone();
                    move |i| i.done(&name, seq, &id, &step)
                })
                .await?;
                continue;
            }
            Err(error) => error,
        };
        counters.failures.fetch_add(1, Ordering::Relaxed);
        counters.set_last_error(Some(error.to_string()));
        // On the steady clock, so a wall clock that jumps neither gives up early nor holds a
        // dead letter (and its fallback) back.
        let at = crate::clock::steady_ms();
        let failing_for = at.saturating_sub(*entry.first_failure_ms.get_or_insert(at));
        if matches!(error, NotifyError::Permanent(_)) || failing_for >= budget_ms {
            // A fallback's own failure stops here: one fallback, never a chain or a loop.
            let to = fallback.clone().filter(|_| entry.fallback_of.is_none());
            match &to {
                Some(to) => {
                    tracing::error!(notifier = %name, %id, attempts = entry.attempts, %error, fallback = %to, "Delivery failed for good; kept as a dead letter and handed to the fallback.")
                }
                None => {
                    tracing::error!(notifier = %name, %id, attempts = entry.attempts, %error, "Delivery failed for good; kept as a dead letter.")
                }
            }
            counters.dead.fetch_add(1, Ordering::Relaxed);
            let msg = error.to_string();
            blocking(&inbox, &stop, {
                let (name, to) = (name.clone(), to.clone());
                move |i| i.give_up(&name, seq, &entry, &msg, now, to.as_ref())
            })
            .await?;
            if let Some(w) = to.as_ref().and_then(|to| wakes.get(to)) {
                w.notify_one();
            }
            continue;
        }
        let left = Duration::from_millis(budget_ms - failing_for);
        // One last attempt when the budget ends, rather than a dead letter an hour late; but
        // a service that asked for quiet gets it, budget or not.
        let delay = match &error {
            NotifyError::Throttled(_, wait) => schedule.next_delay().max(*wait),
            _ => schedule.next_delay().min(left),
        };
        tracing::warn!(notifier = %name, %id, attempts = entry.attempts, %error, retry_in = ?delay, "Delivery failed, will retry.");
        entry.last_error = Some(error.to_string());
        let step = Step::attempt(
            &name,
            now,
            entry.attempts,
            AttemptResult::Failed {
                error: error.to_string(),
                retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            },
        );
        blocking(&inbox, &stop, {
            let name = name.clone();
            move |i| i.retry(&name, seq, &entry, &step)
        })
        .await?;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => break,
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    inbox: &Arc<Inbox>,
    stop: &CancellationToken,
    f: impl Fn(&Inbox) -> Result<T, InboxError> + Send + Sync + 'static,
) -> Result<T, InboxError> {
    use warren_daemon::database::StorageFull;
    let f = Arc::new(f);
    loop {
        let (inbox, f) = (inbox.clone(), f.clone());
        match tokio::task::spawn_blocking(move || f(&inbox)).await {
            // The store gave all its reserve and the disk is still full: the bookkeeping
            // waits for room rather than the notifier stopping (a delivery made and not
            // recorded would be made again).
            Ok(Err(e)) if e.is_storage_full() => {
                tracing::warn!(error = %e, "Waiting for disk space to record a delivery.");
                tokio::select! {
                    () = tokio::time::sleep(DISK_RETRY) => {}
                    () = stop.cancelled() => return Err(e),
                }
            }
            Ok(r) => return r,
            Err(e) => return Err(InboxError::Sync(std::io::Error::other(e))),
        }
    }
}
