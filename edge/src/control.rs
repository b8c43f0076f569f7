//! What the edge's status socket answers: the status document for an empty request (`edge
//! status`, monitoring), or a [`Command`]'s answer (`edge trace`).

use serde::{Deserialize, Serialize};
use warren_daemon::control::Request;
use warren_proto::EventId;

use crate::status::Source;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// The status document.
    Status,
    /// What the edge knows of one event.
    Trace {
        /// The event id.
        id: EventId,
    },
}

/// The answer to `r` (blocking: it reads the queue); `{"error": …}` for a request it cannot read.
pub fn answer(source: &Source, r: &Request) -> Vec<u8> {
    let answer = match r.command() {
        Ok(None | Some(Command::Status)) => serde_json::to_value(source.snapshot()),
        Ok(Some(Command::Trace { id })) => serde_json::to_value(source.trace(id)),
        Err(error) => Ok(serde_json::json!({ "error": error })),
    };
    answer
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default()
}
