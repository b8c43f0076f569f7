//! A real SMTP server (Python's aiosmtpd, Debian package python3-aiosmtpd) on a loopback port,
//! started and stopped by the test: it keeps every message it accepts as a file, and answers
//! DATA as a file says, so a test can stage a temporary (4xx) or permanent (5xx) refusal or a
//! server that stops answering in the middle of a transaction.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::{Proc, listening, require, wait_until, which};

/// The server, run by `python3 smtpd.py CONFIG`: it binds `127.0.0.1:0` itself and writes the
/// port it got to a file once it listens, so no port can be taken from under it.
const SCRIPT: &str = r#"
import asyncio, json, os, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

conf = json.load(open(sys.argv[1]))
root = conf["dir"]
mail = os.path.join(root, "mail")
os.makedirs(mail, exist_ok=True)
reply_file = os.path.join(root, "reply")
users = conf.get("users") or {}
mode = conf.get("tls", "none")


def context():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(conf["cert"], conf["key"])
    return ctx


class Handler:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        try:
            with open(reply_file) as f:
                reply = f.read().strip()
        except FileNotFoundError:
            reply = ""
        if reply == "hang":
            # Until the client goes away: aiosmtpd cancels the handler then.
            await asyncio.sleep(3600)
        if reply:
            return reply
        self.count += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("utf-8", "replace"),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated),
        }
        name = os.path.join(mail, "%06d" % self.count)
        with open(name + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(name + ".tmp", name + ".json")
        return "250 2.0.0 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and users.get(
        auth_data.login.decode()) == auth_data.password.decode()
    return AuthResult(success=ok, handled=False)


handler = Handler()
implicit = context() if mode == "implicit" else None
starttls = context() if mode == "starttls" else None


def factory():
    return SMTP(
        handler,
        hostname="warren-test-smtp",
        decode_data=False,
        enable_SMTPUTF8=True,
        tls_context=starttls,
        require_starttls=starttls is not None,
        authenticator=authenticator if users else None,
        auth_required=bool(users),
        # aiosmtpd only knows of STARTTLS: with implicit TLS it would never offer AUTH.
        auth_require_tls=mode == "starttls",
    )


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host="127.0.0.1", port=0, ssl=implicit)
    port = server.sockets[0].getsockname()[1]
    tmp = os.path.join(root, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, os.path.join(root, "port"))
    await server.serve_forever()


asyncio.run(main())
"#;

/// How the server secures its connections.
#[derive(Debug, Clone, Default)]
pub enum SmtpTls {
    /// Plain SMTP.
    #[default]
    None,
    /// TLS from the first byte (port 465 style), with this certificate and key.
    Implicit(PathBuf, PathBuf),
    /// STARTTLS, required before any mail, with this certificate and key.
    StartTls(PathBuf, PathBuf),
}

/// One message the server accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`).
    pub rcpt_tos: Vec<String>,
    /// The message as sent: headers and body, CRLF line ends.
    pub data: String,
    /// Whether it came over TLS.
    pub tls: bool,
    /// Whether the client had logged in.
    pub authenticated: bool,
}

impl Mail {
    /// The value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push_str(line);
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }

    /// The body, as sent (transfer-encoded, if the sender encoded it).
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }
}

/// The server; killed when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    _proc: Proc,
    dir: PathBuf,
    /// The port it listens on.
    pub port: u16,
}

impl SmtpServer {
    /// A Python 3 that has aiosmtpd: the one on `PATH`, or Debian's (which is where the
    /// python3-aiosmtpd package puts it, when `PATH` leads to another Python first).
    pub fn python() -> Option<PathBuf> {
        which("python3")
            .into_iter()
            .chain([PathBuf::from("/usr/bin/python3")])
            .find(|py| {
                Command::new(py)
                    .args(["-c", "import aiosmtpd"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
    }

    /// Whether aiosmtpd can be run; [`require`]s it.
    pub fn available() -> bool {
        require(
            "python3 with aiosmtpd (Debian package python3-aiosmtpd)",
            Self::python().is_some(),
        )
    }

    /// Starts the server in `dir` (which it fills), securing connections as `tls` says and
    /// asking for a login when `users` are given.
    ///
    /// # Errors
    /// When aiosmtpd is missing or the server does not come up.
    pub fn try_start(dir: &Path, tls: &SmtpTls, users: &[(&str, &str)]) -> Result<Self, String> {
        let python = Self::python().ok_or("no python3 with aiosmtpd")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (mode, cert, key) = match tls {
            SmtpTls::None => ("none", None, None),
            SmtpTls::Implicit(c, k) => ("implicit", Some(c), Some(k)),
            SmtpTls::StartTls(c, k) => ("starttls", Some(c), Some(k)),
        };
        let conf = serde_json::json!({
            "dir": dir,
            "tls": mode,
            "cert": cert,
            "key": key,
            "users": users.iter().copied().collect::<std::collections::BTreeMap<_, _>>(),
        });
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map(|()| path)
                .map_err(|e| format!("{name}: {e}"))
        };
        let script = write("smtpd.py", SCRIPT)?;
        let conf = write("smtpd.json", &conf.to_string())?;
        let log =
            std::fs::File::create(dir.join("smtpd.log")).map_err(|e| format!("smtpd.log: {e}"))?;
        let mut proc = Proc::try_spawn(
            "aiosmtpd",
            Command::new(python)
                .arg(&script)
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )?;
        let port_file = dir.join("port");
        let port = wait_until("aiosmtpd to listen", Duration::from_secs(20), || {
            if !proc.running() {
                return Some(Err(()));
            }
            let port: u16 = std::fs::read_to_string(&port_file)
                .ok()?
                .trim()
                .parse()
                .ok()?;
            listening(port).then_some(Ok(port))
        })?
        .map_err(|()| {
            let log = std::fs::read_to_string(dir.join("smtpd.log")).unwrap_or_default();
            format!("aiosmtpd exited: {}", log.trim())
        })?;
        Ok(Self {
            _proc: proc,
            dir: dir.to_owned(),
            port,
        })
    }

    /// [`SmtpServer::try_start`] for tests.
    ///
    /// # Panics
    /// When the server does not start.
    pub fn start(dir: &Path, tls: &SmtpTls, users: &[(&str, &str)]) -> Self {
        Self::try_start(dir, tls, users).unwrap_or_else(|e| panic!("{e}"))
    }

    /// How DATA is answered from now on: `None` accepts and keeps the message; `Some` gives
    /// this reply instead (`"451 4.3.0 Try again later"`, `"550 5.7.1 Refused"`), or, for
    /// `"hang"`, no reply at all.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn reply(&self, reply: Option<&str>) {
        std::fs::write(self.dir.join("reply"), reply.unwrap_or(""))
            .expect("writing the reply file");
    }

    /// The messages accepted so far, oldest first.
    ///
    /// # Panics
    /// When a message file cannot be read.
    pub fn messages(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("mail")) else {
            return Vec::new();
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).expect("a message file");
                serde_json::from_str(&text).expect("a message record")
            })
            .collect()
    }
}
