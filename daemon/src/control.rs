//! The status socket: how `edge status`, `hub status` and the hub's operator commands talk
//! to the running daemon (its sled database is locked, so the CLI never opens it).
//!
//! One request per connection: the client writes its request (nothing, for the status
//! document), closes its writing side, and reads the answer to the end. A client that never
//! closes its side (`nc -U`) gets the status after [`REQUEST_TIMEOUT`]. Requests that change
//! state are only honoured from the daemon's own user or root ([`Request::trusted`]); the
//! socket's mode keeps others out as well, but a socket opened up for monitoring must not
//! open up the commands with it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// How long a status client waits for the daemon, and the daemon for a slow client.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the daemon waits for a request before it answers with the status.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest request read.
const MAX_REQUEST: u64 = 64 * 1024;

/// One request, as the daemon received it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// What the client wrote; empty for the status.
    pub body: Vec<u8>,
    /// Whether the client runs as the daemon's user or root.
    pub trusted: bool,
}

impl Request {
    /// The JSON command the client sent; `None` for an empty request (the status).
    ///
    /// # Errors
    /// When the request is not such a command.
    pub fn command<C: DeserializeOwned>(&self) -> Result<Option<C>, String> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|e| format!("unreadable request: {e}"))
    }
}

/// Binds the status socket, replacing a stale one (the database lock already keeps a second
/// daemon from running on the same state, so a socket file left behind is a dead daemon's).
///
/// # Errors
/// When the directory cannot be created or the socket bound.
pub fn bind_status(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Answers each connection with what `answer` makes of its request (run on the blocking
/// pool), until `shutdown`.
pub async fn serve<F>(listener: UnixListener, answer: F, shutdown: CancellationToken)
where
    F: Fn(Request) -> Vec<u8> + Send + Sync + Clone + 'static,
{
    let me = rustix::process::geteuid().as_raw();
    loop {
        let (mut stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning (and flooding the log).
                    tracing::warn!(%error, "Status socket accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let trusted = stream
            .peer_cred()
            .is_ok_and(|c| c.uid() == me || c.uid() == 0);
        let answer = answer.clone();
        // Each client in its own task: one that is slow to ask or to read stalls no other.
        tokio::spawn(async move {
            let mut body = Vec::new();
            let mut limited = (&mut stream).take(MAX_REQUEST);
            let read = limited.read_to_end(&mut body);
            if let Ok(Err(error)) = tokio::time::timeout(REQUEST_TIMEOUT, read).await {
                tracing::debug!(%error, "Reading a status request failed.");
                return;
            }
            let reply = tokio::task::spawn_blocking(move || answer(Request { body, trusted }));
            let reply = match reply.await {
                Ok(r) => r,
                Err(error) => {
                    tracing::error!(%error, "Answering a status request failed.");
                    return;
                }
            };
            let _ = tokio::time::timeout(STATUS_TIMEOUT, stream.write_all(&reply)).await;
        });
    }
}

/// Asks the daemon on `path` for its status document.
///
/// # Errors
/// A message saying what went wrong: nothing listening, a timeout, a bad answer.
pub fn query_status<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, String> {
    request(path, what, b"")
}

/// Sends `body` to the daemon on `path` and reads its JSON answer.
///
/// # Errors
/// A message saying what went wrong: nothing listening, a timeout, a bad answer.
pub fn request<T: DeserializeOwned>(path: &Path, what: &str, body: &[u8]) -> Result<T, String> {
    let mut stream = UnixStream::connect(path)
        .map_err(|e| format!("no {what} answers on {}: {e}", path.display()))?;
    stream
        .set_read_timeout(Some(STATUS_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(STATUS_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(body)
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
        .map_err(|e| format!("writing to {}: {e}", path.display()))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading from {}: {e}", path.display()))?;
    serde_json::from_slice(&answer).map_err(|e| format!("bad answer from {}: {e}", path.display()))
}
