//! The test every sink runs (vector's sink compliance tests are the model): the sink, driven
//! by the real delivery loop over a real inbox, against an endpoint its test controls.
//!
//! - a delivery reaches the endpoint once;
//! - transient failures are retried, then delivered once;
//! - an endpoint that hangs is given up on at the attempt timeout and retried;
//! - a permanent failure becomes a dead letter after one attempt, and is not retried.
//!
//! A phase an endpoint cannot stage (a log cannot fail) is skipped; delivery is always run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use warren_harness::http::{HttpServer, Reply};

use super::{Notifier, NotifierName};
use crate::config::DeliveryConfig;
use crate::inbox::Inbox;
use crate::stats::Stats;
use crate::testing::notification;
use crate::trace::Routing;

/// How the endpoint answers the sink's next attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Takes the notification.
    Accept,
    /// Fails in a way worth a retry (a 503, a full disk, a program exiting non-zero).
    Fail,
    /// Never answers.
    Hang,
    /// Fails for good (a 400, a program that does not exist).
    Reject,
}

/// The far side of a sink, as its test stages it.
pub trait Endpoint {
    /// Makes the next attempts meet `b`; false when this endpoint cannot stage it.
    fn behave(&self, b: Behaviour) -> bool;
    /// Notifications the endpoint has taken so far.
    fn delivered(&self) -> usize;
}

impl Endpoint for HttpServer {
    fn behave(&self, b: Behaviour) -> bool {
        self.script(vec![match b {
            Behaviour::Accept => Reply::Status(200),
            Behaviour::Fail => Reply::Status(503),
            Behaviour::Hang => Reply::Hang,
            Behaviour::Reject => Reply::Status(400),
        }]);
        true
    }

    fn delivered(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                matches!(
                    r.reply,
                    Reply::Status(200..=299) | Reply::Full(200..=299, ..)
                )
            })
            .count()
    }
}

/// One attempt's time limit in the test: short, so a hang costs little.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(20);

/// Runs the phases above on `notifier`, whose far side is `endpoint`.
///
/// # Panics
/// When the sink does not conform.
pub async fn run(notifier: Notifier, endpoint: &impl Endpoint) {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Arc::new(Inbox::open(dir.path(), 0).unwrap());
    let name = NotifierName::try_from("sink".to_owned()).unwrap();
    let stats = Arc::new(Stats::default());
    let counters = stats.notifier(&name);
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let policy = DeliveryConfig {
        give_up_after: Duration::from_secs(3600),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        timeout: ATTEMPT_TIMEOUT,
        ..DeliveryConfig::default()
    };
    let wakes = Arc::new(crate::delivery::Wakes::from([(name.clone(), wake.clone())]));
    let task = tokio::spawn(crate::delivery::run(
        crate::delivery::Task {
            name: name.clone(),
            notifier,
            fallback: None,
        },
        inbox.clone(),
        policy,
        wakes,
        stats.clone(),
        stop.clone(),
    ));
    let mut users = 0;
    let mut enqueue = || {
        users += 1;
        let n = notification(&format!("user{users}"));
        inbox
            .commit(std::slice::from_ref(&n.envelope), 1, 1, |_, _| {
                Ok((vec![(name.clone(), n.clone())], Routing::default()))
            })
            .unwrap();
        wake.notify_one();
    };
    let delivered = || counters.delivered.load(Ordering::Relaxed);
    let failures = || counters.failures.load(Ordering::Relaxed);

    assert!(endpoint.behave(Behaviour::Accept), "every endpoint accepts");
    enqueue();
    until("the first delivery", || delivered() == 1).await;
    assert_eq!(endpoint.delivered(), 1, "delivered once");

    if endpoint.behave(Behaviour::Fail) {
        enqueue();
        until("two failed attempts", || failures() >= 2).await;
        assert_eq!(delivered(), 1);
        endpoint.behave(Behaviour::Accept);
        until("the delivery after the failures", || delivered() == 2).await;
        assert_eq!(endpoint.delivered(), 2, "retried, then delivered once");
    }

    if endpoint.behave(Behaviour::Hang) {
        let before = failures();
        let started = tokio::time::Instant::now();
        enqueue();
        until("the hanging attempt to time out", || failures() > before).await;
        assert!(
            started.elapsed() >= ATTEMPT_TIMEOUT,
            "gave up before the timeout"
        );
        // Counted before the endpoint is released: releasing it may let the hung attempt
        // land at once (the file sink's blocked write), before the next line would run.
        let want = delivered() + 1;
        endpoint.behave(Behaviour::Accept);
        until("the delivery after the hang", || delivered() == want).await;
        assert_eq!(
            endpoint.delivered(),
            want as usize,
            "delivered once after a hang"
        );
    }

    if endpoint.behave(Behaviour::Reject) {
        let taken = endpoint.delivered();
        enqueue();
        // The counter moves before the dead letter is written: wait for both.
        until("a dead letter", || {
            counters.dead.load(Ordering::Relaxed) == 1
                && inbox.dead_letters(1).is_ok_and(|d| !d.is_empty())
        })
        .await;
        let dead = inbox.dead_letters(10).unwrap();
        assert_eq!(dead[0].attempts, 1, "a permanent failure is not retried");
        assert_eq!(endpoint.delivered(), taken);
    }

    until("an empty outbox", || inbox.outbox_depths()["sink"] == 0).await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
