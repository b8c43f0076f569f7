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

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_daemon::retry::RetrySchedule;
use warren_proto::EventId;

use crate::config::DeliveryConfig;
use crate::inbox::{Delivered, Inbox, InboxError, OutboxEntry};
use crate::notify::file::{FileNotifier, Mark};
use crate::notify::{Notifier, NotifierName, NotifyError};
use crate::stats::Stats;
use crate::trace::{AttemptResult, Step};

/// The wake-up of each notifier's task, to be notified when its outbox grows.
pub type Wakes = HashMap<NotifierName, Arc<Notify>>;

/// The most lines a file notifier writes in one write (two fsyncs: where they go, then done).
const FILE_BATCH: usize = 512;

/// How often a notifier of a hub sharing its store looks for deliveries no one woke it for.
const SHARED_POLL: Duration = Duration::from_secs(1);

/// How long the bookkeeping of a delivery waits before trying a full disk again.
const DISK_RETRY: Duration = Duration::from_secs(2);

/// Wakes the notifiers `names` (a commit gave them deliveries).
pub fn wake(wakes: &Wakes, names: &[NotifierName]) {
    for name in names {
        if let Some(w) = wakes.get(name) {
            w.notify_one();
        }
    }
}

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
    let batch = match &notifier {
        Notifier::File(file) => {
            recover(file, &name, &inbox, policy.timeout, &stop).await?;
            FILE_BATCH
        }
        _ => 1,
    };
    while !stop.is_cancelled() {
        let (entries, mark) = blocking(&inbox, &stop, {
            let name = name.clone();
            move |i| i.next_batch_marked(&name, batch)
        })
        .await?;
        if entries.is_empty() {
            // Hubs sharing a store are not woken by each other's commits, nor by a lease that
            // ran out: they look again every so often.
            let poll = async {
                match inbox.shared_store() {
                    Some(_) => tokio::time::sleep(SHARED_POLL).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake.notified() => continue,
                () = poll => continue,
                () = stop.cancelled() => break,
            }
        }
        // Read while the commit that wrote them may still be on its way to disk: they go out
        // once it is there, and are read again if a full disk reopened the store.
        let settled = tokio::select! {
            settled = inbox.settled(mark) => settled,
            () = stop.cancelled() => break,
        };
        if !settled {
            continue;
        }
        let now = crate::now_ms();
        // Dropping a sink's attempt at the deadline is the one time limit every sink obeys
        // (sinks are cancel-safe; a program run by `exec` is killed).
        let result = tokio::time::timeout(
            policy.timeout,
            attempt(&notifier, &name, &entries, now, &inbox),
        )
        .await
        .unwrap_or_else(|_| {
            Err(NotifyError::Transient(format!(
                "no answer within {}",
                humantime::format_duration(policy.timeout)
            )))
        });
        let error = match result {
            Ok(delivered) => {
                schedule.reset();
                counters.set_last_error(None);
                let count = delivered.len() as u64;
                let made: HashMap<u64, &OutboxEntry> =
                    entries.iter().map(|(seq, e)| (*seq, e)).collect();
                let done: Vec<_> = delivered
                    .into_iter()
                    .map(|(seq, id)| {
                        // A late write may hold lines no longer in this round (given up since).
                        let made = made.get(&seq);
                        let attempts = made.map_or(1, |e| e.attempts + 1);
                        tracing::debug!(notifier = %name, %id, attempts, "Delivered.");
                        Delivered {
                            seq,
                            id,
                            recorded_ms: made.and_then(|e| e.recorded_ms),
                            step: Step::attempt(&name, now, attempts, AttemptResult::Delivered),
                        }
                    })
                    .collect();
                blocking(&inbox, &stop, {
                    let name = name.clone();
                    move |i| i.done_many(&name, &done)
                })
                .await?;
                // Counted once recorded, as the outbox is: status never shows a delivery
                // made and still pending.
                counters.delivered.fetch_add(count, Ordering::Relaxed);
                continue;
            }
            Err(error) => error,
        };
        // A failed attempt is the first entry's; the others wait for the next round.
        let Some((seq, mut entry)) = entries.into_iter().next() else {
            continue;
        };
        let id = entry.notification.envelope.id;
        entry.attempts += 1;
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
            move |i| i.retry(&name, seq, &entry, &step, delay)
        })
        .await?;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => break,
        }
    }
    Ok(())
}

/// Makes one attempt at delivering `entries` (one, but for a file notifier), oldest first;
/// returns the seq and event of each delivery made.
async fn attempt(
    notifier: &Notifier,
    name: &NotifierName,
    entries: &[(u64, OutboxEntry)],
    now: u64,
    inbox: &Arc<Inbox>,
) -> Result<Vec<(u64, EventId)>, NotifyError> {
    let Notifier::File(file) = notifier else {
        return match entries.first() {
            Some((seq, e)) => {
                notifier.send(&e.notification).await?;
                Ok(vec![(*seq, e.notification.envelope.id)])
            }
            None => Ok(Vec::new()),
        };
    };
    let batch: Vec<_> = entries
        .iter()
        .map(|(seq, e)| (*seq, &e.notification))
        .collect();
    // A single line goes without a memo (one fsync less at rest): a crash repeats at most it.
    let memo = (entries.len() > 1).then(|| {
        let done = entries
            .iter()
            .map(|(seq, e)| (*seq, e.notification.envelope.id, e.attempts + 1))
            .collect::<Vec<_>>();
        let (inbox, name) = (inbox.clone(), name.clone());
        move |mark: &Mark| {
            let memo = Memo {
                mark: mark.clone(),
                at_ms: now,
                done,
            };
            let bytes = serde_json::to_vec(&memo).unwrap_or_default();
            if let Err(error) = inbox.set_memo(&name, &bytes) {
                // Written anyway: a crash before its record then repeats the batch.
                tracing::warn!(notifier = %name, %error, "Could not record a batch before writing it.");
            }
        }
    });
    file.append(&batch, |mark| {
        if let Some(memo) = memo {
            memo(mark);
        }
    })
    .await
}

/// What a file notifier was writing, recorded before the write: after a crash, the next start
/// reads the file back and records the batch as delivered if it landed.
#[derive(Serialize, Deserialize)]
struct Memo {
    mark: Mark,
    at_ms: u64,
    /// Each line's outbox seq, event and attempt number.
    done: Vec<(u64, EventId, u32)>,
}

/// Settles the batch a file notifier was writing when the hub stopped: delivered if it is in
/// the file, else still pending (and written again). A file that cannot be read yet (a mount
/// not back) is asked again, each check bounded by `timeout`, until `stop`.
async fn recover(
    file: &FileNotifier,
    name: &NotifierName,
    inbox: &Arc<Inbox>,
    timeout: Duration,
    stop: &CancellationToken,
) -> Result<(), InboxError> {
    let found = blocking(inbox, stop, {
        let name = name.clone();
        move |i| i.memo(&name)
    })
    .await?;
    let Some(bytes) = found else {
        return Ok(());
    };
    let name = name.clone();
    let Ok(memo) = serde_json::from_slice::<Memo>(&bytes) else {
        tracing::error!(notifier = %name, "Unreadable write memo removed: its batch is written again.");
        return blocking(inbox, stop, move |i| i.clear_memo(&name)).await;
    };
    loop {
        match tokio::time::timeout(timeout, file.landed(&memo.mark)).await {
            Ok(Some(true)) => break,
            Ok(Some(false)) => return blocking(inbox, stop, move |i| i.clear_memo(&name)).await,
            Ok(None) | Err(_) => {
                tracing::warn!(notifier = %name, "Cannot read the file to tell whether the last batch landed; trying again.");
                tokio::select! {
                    () = tokio::time::sleep(DISK_RETRY) => {}
                    () = stop.cancelled() => return Ok(()),
                }
            }
        }
    }
    tracing::info!(notifier = %name, lines = memo.done.len(), "The batch being written when the hub stopped is in the file: recorded as delivered.");
    let done: Vec<_> = memo
        .done
        .iter()
        .map(|&(seq, id, attempt)| Delivered {
            seq,
            id,
            recorded_ms: None,
            step: Step::attempt(&name, memo.at_ms, attempt, AttemptResult::Delivered),
        })
        .collect();
    blocking(inbox, stop, move |i| i.done_many(&name, &done)).await
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
            Ok(Err(e)) if e.is_storage_full() || e.is_unavailable() => {
                tracing::warn!(error = %e, "Waiting for the store to record a delivery.");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::file::FileConfig;
    use crate::notify::{BuildContext, Sink};
    use crate::testing::notification;

    const WAIT: Duration = Duration::from_secs(10);

    fn setup(dir: &std::path::Path, users: &[&str]) -> (Arc<Inbox>, NotifierName, Notifier) {
        let inbox = Arc::new(Inbox::open(&dir.join("inbox"), 0).unwrap());
        let name = NotifierName::try_from("f".to_owned()).unwrap();
        let c = FileConfig {
            path: dir.join("out.log"),
            with_title: false,
        };
        let file = FileNotifier::build(&name, &c, &BuildContext::default()).unwrap();
        enqueue(&inbox, &name, users);
        (inbox, name, Notifier::File(file))
    }

    fn enqueue(inbox: &Inbox, name: &NotifierName, users: &[&str]) {
        inbox
            .transact(|tx| {
                for u in users {
                    tx.enqueue(name.clone(), notification(u))?;
                }
                Ok(())
            })
            .unwrap();
    }

    fn lines(dir: &std::path::Path) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("out.log")).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }

    /// A hub killed between a batch's write and its record: the next start finds the lines in
    /// the file and records them as delivered instead of writing them again; a batch whose
    /// lines are not in the file stays pending.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_in_the_file_at_a_restart_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, name, notifier) = setup(dir.path(), &["ann", "bob", "cid"]);
        let Notifier::File(file) = &notifier else {
            unreachable!()
        };
        let stop = CancellationToken::new();

        // Written, not recorded: what a crash right after the write leaves.
        let entries = inbox.next_batch(&name, FILE_BATCH).unwrap();
        assert_eq!(entries.len(), 3);
        let written = attempt(&notifier, &name, &entries, 1, &inbox).await;
        assert_eq!(written.unwrap().len(), 3);
        assert!(inbox.memo(&name).unwrap().is_some());
        assert_eq!(inbox.next_batch(&name, FILE_BATCH).unwrap().len(), 3);

        recover(file, &name, &inbox, WAIT, &stop).await.unwrap();
        assert!(inbox.next_batch(&name, FILE_BATCH).unwrap().is_empty());
        assert!(inbox.memo(&name).unwrap().is_none());
        assert_eq!(inbox.outbox_depths().get("f"), Some(&0));
        assert_eq!(lines(dir.path()).len(), 3);

        // Recorded as about to be written, but cut short by the crash: half a line landed.
        enqueue(&inbox, &name, &["dan", "eve"]);
        let entries = inbox.next_batch(&name, FILE_BATCH).unwrap();
        attempt(&notifier, &name, &entries, 2, &inbox)
            .await
            .unwrap();
        let before = lines(dir.path())[..3].join("\n") + "\n";
        std::fs::write(dir.path().join("out.log"), before.clone() + "User da").unwrap();

        recover(file, &name, &inbox, WAIT, &stop).await.unwrap();
        assert!(inbox.memo(&name).unwrap().is_none());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.log")).unwrap(),
            before,
            "the torn line is cut off"
        );
        let pending = inbox.next_batch(&name, FILE_BATCH).unwrap();
        assert_eq!(
            pending.len(),
            2,
            "a batch that did not land is written again"
        );
        let written = attempt(&notifier, &name, &pending, 3, &inbox).await;
        assert_eq!(written.unwrap().len(), 2);
        let all = lines(dir.path());
        assert_eq!(all.len(), 5);
        assert!(all[3].contains("dan") && all[4].contains("eve"), "{all:?}");
    }
}
