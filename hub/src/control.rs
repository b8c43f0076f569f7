//! The operator's commands the status socket answers besides the status itself:
//! `hub dead-letters list | retry | drop` and `hub trace`. The request is one JSON [`Command`]; an empty one
//! is the status. Commands that change state are refused to anyone but the hub's own user
//! and root.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_daemon::control::Request;
use warren_proto::EventId;

use crate::delivery::Wakes;
use crate::inbox::{DeadLetter, Inbox, InboxError, Selection};
use crate::notify::NotifierName;
use crate::status::Source;
use crate::trace::Trace;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// The status document.
    Status,
    /// Dead letters, newest first.
    ListDeadLetters {
        /// At most this many.
        limit: usize,
    },
    /// Put dead letters back in their outboxes.
    RetryDeadLetters {
        /// Which.
        which: Selection,
    },
    /// Forget dead letters.
    DropDeadLetters {
        /// Which.
        which: Selection,
    },
    /// What the hub did with one event.
    Trace {
        /// The event id.
        id: EventId,
    },
}

/// The answer to a command other than the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Why it was not done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Listed dead letters.
    #[serde(default)]
    pub dead_letters: Vec<DeadLetter>,
    /// How many were put back or dropped.
    #[serde(default)]
    pub changed: u64,
    /// The trace asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
}

/// Answers requests on the status socket.
#[derive(Debug, Clone)]
pub struct Control {
    /// Status snapshots.
    pub source: Arc<Source>,
    /// The store.
    pub inbox: Arc<Inbox>,
    /// The notifiers' wake-ups: a retried dead letter is delivered at once.
    pub wakes: Arc<Wakes>,
    /// How long traces are kept (the dedup window), for the answer about an unknown id.
    pub dedup_window: Duration,
}

impl Control {
    /// The answer to `r` (blocking: it reads the store).
    pub fn answer(&self, r: &Request) -> Vec<u8> {
        let command = match r.command() {
            Ok(c) => c.unwrap_or(Command::Status),
            Err(e) => return reply(Err(e)),
        };
        let changes = matches!(
            command,
            Command::RetryDeadLetters { .. } | Command::DropDeadLetters { .. }
        );
        if changes && !r.trusted {
            return reply(Err(
                "only the hub's own user or root may change dead letters".into(),
            ));
        }
        let store = |e: InboxError| e.to_string();
        match command {
            Command::Status => serde_json::to_vec(&self.source.snapshot()).unwrap_or_default(),
            Command::ListDeadLetters { limit } => reply(
                self.inbox
                    .dead_letters(limit)
                    .map(|dead_letters| Reply {
                        dead_letters,
                        ..Reply::default()
                    })
                    .map_err(store),
            ),
            Command::RetryDeadLetters { which } => {
                let known: Vec<NotifierName> = self.wakes.keys().cloned().collect();
                reply(self.inbox.retry_dead(&which, &known).map_err(store).map(
                    |(woken, changed)| {
                        crate::delivery::wake(&self.wakes, &woken);
                        tracing::info!(changed, "Dead letters put back in their outboxes.");
                        Reply {
                            changed,
                            ..Reply::default()
                        }
                    },
                ))
            }
            Command::Trace { id } => reply(match self.inbox.trace_of(&id) {
                Ok(Some(trace)) => Ok(Reply {
                    trace: Some(trace),
                    ..Reply::default()
                }),
                Ok(None) => Err(crate::trace::unknown(&id, self.dedup_window)),
                Err(e) => Err(store(e)),
            }),
            Command::DropDeadLetters { which } => {
                reply(self.inbox.drop_dead(&which).map_err(store).map(|changed| {
                    tracing::info!(changed, "Dead letters dropped.");
                    Reply {
                        changed,
                        ..Reply::default()
                    }
                }))
            }
        }
    }
}

fn reply(r: Result<Reply, String>) -> Vec<u8> {
    let r = r.unwrap_or_else(|error| Reply {
        error: Some(error),
        ..Reply::default()
    });
    serde_json::to_vec(&r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anyone_on_the_socket_may_trace_only_the_hubs_user_may_change() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inbox = Arc::new(Inbox::open(dir.path(), 0).unwrap_or_else(|e| panic!("{e}")));
        let control = Control {
            source: Arc::new(Source {
                mode: "embedded",
                listen: Vec::new(),
                web: None,
                stats: Arc::default(),
                inbox: inbox.clone(),
                notifiers: Vec::new(),
                certificate: None,
                figures: std::sync::Mutex::default(),
            }),
            inbox,
            wakes: Arc::default(),
            dedup_window: Duration::from_secs(60),
        };
        let ask = |command: &Command| {
            let r = Request {
                body: serde_json::to_vec(command).unwrap_or_default(),
                trusted: false,
            };
            serde_json::from_slice::<Reply>(&control.answer(&r)).unwrap_or_default()
        };
        let id = EventId::from_bytes([9; 16]);
        let traced = ask(&Command::Trace { id });
        assert!(
            traced
                .error
                .is_some_and(|e| e.contains("no record of event")),
            "answered, with the guidance"
        );
        let dropped = ask(&Command::DropDeadLetters {
            which: Selection::All(None),
        });
        assert!(
            dropped
                .error
                .is_some_and(|e| e.contains("only the hub's own user")),
            "refused"
        );
    }
}
