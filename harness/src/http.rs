//! A tiny HTTP/1.1 server on loopback standing in for third-party web APIs (webhook, ntfy,
//! pushover…): it records every request and answers with a scripted sequence of replies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How to answer one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// This status, empty body.
    Status(u16),
    /// This status, with these headers and this body.
    Full(u16, Vec<(String, String)>, String),
    /// Never answer (until the client gives up).
    Hang,
    /// This 3xx status, with `Location: http://127.0.0.1:<port>/elsewhere`.
    Redirect(u16, u16),
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How it was answered.
    pub reply: Reply,
}

impl Request {
    /// A header's value by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    script: Vec<Reply>,
    served: usize,
    requests: Vec<Request>,
}

/// The server; it stops accepting when dropped (its threads end with their connections).
#[derive(Debug)]
pub struct HttpServer {
    /// The port it listens on.
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl HttpServer {
    /// Starts on `127.0.0.1:0`. Requests past the end of `script` get its last reply (200 if empty).
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn start(script: Vec<Reply>) -> Self {
        Self::start_on(0, script)
    }

    /// [`HttpServer::start`] on a given port: a service that comes back where it was.
    ///
    /// # Panics
    /// When the port cannot be bound.
    pub fn start_on(port: u16, script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(Mutex::new(State {
            script,
            ..State::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if Arc::strong_count(&s) == 1 {
                    return; // the server was dropped
                }
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        Self { port, state }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    ///
    /// # Panics
    /// When a serving thread panicked.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().expect("state").requests.clone()
    }

    /// Replaces the replies still to come.
    ///
    /// # Panics
    /// When a serving thread panicked.
    pub fn script(&self, script: Vec<Reply>) {
        let mut s = self.state.lock().expect("state");
        s.script = script;
        s.served = 0;
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // Wake the accept loop so it sees it is alone and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut out = write_half;
    loop {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        let reply = {
            let Ok(mut s) = state.lock() else { return };
            let reply = s
                .script
                .get(s.served)
                .or(s.script.last())
                .cloned()
                .unwrap_or(Reply::Status(200));
            s.served += 1;
            s.requests.push(Request {
                reply: reply.clone(),
                ..req
            });
            reply
        };
        match reply {
            Reply::Status(code) => {
                let head = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Full(code, headers, body) => {
                let mut head = format!("HTTP/1.1 {code} X\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                head.push_str(&body);
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Redirect(code, port) => {
                let head = format!(
                    "HTTP/1.1 {code} X\r\nlocation: http://127.0.0.1:{port}/elsewhere\r\ncontent-length: 0\r\n\r\n"
                );
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Hang => {
                // Hold the connection until the client closes it.
                let mut sink = [0u8; 1024];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
        reply: Reply::Hang, // set once the reply is chosen
    })
}
