//! `type = "smtp"`: a plain-text mail per notification, through a mail server (lettre).
//!
//! The subject and the body are templates (default `{title}` and `{message}`). Every mail has
//! a `Date` (lettre sets it) and a `Message-ID` `<EVENT-ID.NOTIFIER@HOSTNAME>`: the same for
//! every retry of one notification, and after a restart, so a mail client can fold the copy
//! a lost reply or a crash made the hub send twice; the event id is already unique.
//!
//! A 4xx reply, a refused or lost connection, a TLS failure are retried; a 5xx reply (a
//! refused login or recipient) is permanent, as is a server that cannot take the message as it
//! is (no SMTPUTF8 for a non-ASCII address, no STARTTLS with `security = "starttls"`).
//!
//! One connection per mail, not a pool: an attempt dropped at the delivery timeout would give
//! lettre's pool back a connection in the middle of a transaction, and the next attempt would
//! read the replies meant for the last one (a stale 250 taken for its own, or a 503 that turns
//! a good notification into a dead letter). A connection of its own, dropped with the attempt,
//! cannot outlive it. Login notifications are few; a handshake each is cheap.

use std::net::IpAddr;
use std::path::PathBuf;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};
use crate::template::{Escape, Template};

/// `[notifier.NAME] type = "smtp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The mail server's host name (or address).
    pub server: String,
    /// Its port (default 465 for `tls`, 587 for `starttls`, 25 for `none`).
    pub port: Option<u16>,
    /// How the connection is secured (default `starttls`).
    #[serde(default)]
    pub security: Security,
    /// An extra CA (PEM) to trust, besides the system's, for a private mail server.
    pub ca_file: Option<PathBuf>,
    /// Login.
    pub username: Option<String>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
    /// The sender: `warren@example.org` or `Warren <warren@example.org>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The subject template (default `{title}`).
    pub subject: Option<String>,
    /// The body template (default `{message}`).
    pub body: Option<String>,
}

/// How the connection to the mail server is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain, then STARTTLS, which must succeed before anything else is sent (port 587).
    #[default]
    Starttls,
    /// No encryption: only to a server on this host (a local relay).
    None,
}

/// The built notifier. Its `Debug` shows the server and the addresses, no password.
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    what: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: Template,
    body: Template,
    /// `NONCE@HOSTNAME`, the end of every Message-ID.
    id_tail: String,
}

impl std::fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpNotifier")
            .field("server", &self.what)
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Sink for SmtpNotifier {
    type Config = SmtpConfig;

    /// Reads the files, checks the addresses and templates, and builds the transport. Nothing
    /// connects or spawns here (`hub check-config` has no runtime).
    fn build(name: &NotifierName, c: &SmtpConfig, _: &BuildContext) -> Result<Self, BuildError> {
        let err = BuildError::of(name);
        // `[::1]` as well as `::1`: lettre and TLS want the bare address.
        let server = c.server.trim_start_matches('[').trim_end_matches(']');
        if server.is_empty() || server.contains(char::is_whitespace) {
            return Err(err("server", &"must be a host name or an address"));
        }
        if server.contains(':') && server.parse::<IpAddr>().is_err() {
            return Err(err(
                "server",
                &"a host name or an address, without a port (that is `port`)",
            ));
        }
        if c.security == Security::None && !loopback(server) {
            return Err(err(
                "security",
                &"\"none\" would send the mail (and the password) in clear: only for a server on this host (localhost, 127.0.0.1, ::1)",
            ));
        }
        let tls = match c.security {
            Security::None => {
                if c.ca_file.is_some() {
                    return Err(err("ca_file", &"is only used with TLS"));
                }
                Tls::None
            }
            Security::Tls | Security::Starttls => {
                // A name is checked against the certificate's DNS names, an address against
                // its IP addresses.
                let mut params = TlsParameters::builder(server.to_owned());
                if let Some(path) = &c.ca_file {
                    let bad = |e: &dyn std::fmt::Display| {
                        err("ca_file", &format!("{}: {e}", path.display()))
                    };
                    let pem = std::fs::read(path).map_err(|e| bad(&e))?;
                    for der in warren_daemon::tls::parse_certificates(&pem).map_err(|e| bad(&e))? {
                        params = params.add_root_certificate(
                            Certificate::from_der(der.to_vec()).map_err(|e| bad(&e))?,
                        );
                    }
                }
                let params = params.build_rustls().map_err(|e| err("ca_file", &e))?;
                if c.security == Security::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let port = c.port.unwrap_or(match c.security {
            Security::Tls => 465,
            Security::Starttls => 587,
            Security::None => 25,
        });
        let credentials = match (&c.username, &c.password_file) {
            (Some(user), Some(path)) => Some(Credentials::new(
                user.clone(),
                super::read_secret(path)
                    .map_err(|e| err("password_file", &e))?
                    .expose()
                    .to_owned(),
            )),
            (None, None) => None,
            (Some(_), None) => return Err(err("password_file", &"is needed with username")),
            (None, Some(_)) => return Err(err("username", &"is needed with password_file")),
        };
        let from: Mailbox = c.from.parse().map_err(|e| err("from", &e))?;
        if c.to.is_empty() {
            return Err(err("to", &"names no recipient"));
        }
        let to =
            c.to.iter()
                .map(|t| t.parse().map_err(|e| err("to", &format!("{t:?}: {e}"))))
                .collect::<Result<Vec<Mailbox>, _>>()?;
        let subject = Template::parse(c.subject.as_deref().unwrap_or("{title}"))
            .map_err(|e| err("subject", &e))?;
        let body = Template::parse(c.body.as_deref().unwrap_or("{message}"))
            .map_err(|e| err("body", &e))?;
        let host = hostname();
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server)
            .port(port)
            .tls(tls)
            .hello_name(match &host {
                Some(h) => ClientId::Domain(h.clone()),
                None => ClientId::default(),
            });
        if let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }
        Ok(Self {
            // Without the `pool` feature, building spawns nothing.
            transport: builder.build(),
            what: format!("{server}:{port}"),
            from,
            to,
            subject,
            body,
            id_tail: format!("{name}@{}", host.as_deref().unwrap_or("warren-hub.invalid")),
        })
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let now = chrono::Utc::now();
        // One line: an event must not be able to add headers through its fields.
        let subject: String = n
            .render(&self.subject, now, Escape::None)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let body = n.render(&self.body, now, Escape::None);
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!("<{}.{}>", n.envelope.id, self.id_tail)))
            .user_agent(concat!("warren-hub/", env!("CARGO_PKG_VERSION")).to_owned())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(body)
            .map_err(|e| NotifyError::Permanent(format!("{}: {e}", self.what)))?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| classify(&self.what, &e))
    }
}

/// 5xx replies, and what this server can never take, are permanent; 4xx replies, connection,
/// TLS and I/O failures are worth a retry.
fn classify(what: &str, e: &lettre::transport::smtp::Error) -> NotifyError {
    let m = format!("{what}: {e}");
    if e.is_permanent() || e.is_client() {
        NotifyError::Permanent(m)
    } else {
        NotifyError::Transient(m)
    }
}

/// Whether `host` names this host: `localhost` or a loopback address.
fn loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.eq_ignore_ascii_case("localhost.")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// This host's name, if it can stand in a Message-ID and an EHLO: letters, digits, dots and
/// dashes.
fn hostname() -> Option<String> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let ok = !host.is_empty()
        && !host.starts_with(['.', '-'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use warren_harness::smtp::{Mail, SmtpServer, SmtpTls};

    use super::*;
    use crate::notify::Notifier;
    use crate::notify::conformance::{self, Behaviour, Endpoint};
    use crate::testing::notification;

    fn build(text: &str) -> Result<SmtpNotifier, BuildError> {
        let c: SmtpConfig = toml::from_str(text).unwrap();
        let name = NotifierName::try_from("mail".to_owned()).unwrap();
        SmtpNotifier::build(&name, &c, &BuildContext::default())
    }

    /// A relay on loopback, in `dir`.
    fn relay(dir: &Path, tls: &SmtpTls, users: &[(&str, &str)]) -> SmtpServer {
        SmtpServer::start(&dir.join("smtp"), tls, users)
    }

    /// A CA and a server certificate for localhost, 127.0.0.1 and ::1.
    fn pki(dir: &Path) -> (PathBuf, SmtpTls, SmtpTls) {
        let at = dir.join("pki");
        let issued = crate::pki::init(&at, &[], 30).unwrap();
        (
            at.join("ca.pem"),
            SmtpTls::Implicit(issued.cert.clone(), issued.key.clone()),
            SmtpTls::StartTls(issued.cert, issued.key),
        )
    }

    fn password(dir: &Path, password: &str) -> PathBuf {
        let path = dir.join("password");
        std::fs::write(&path, format!("{password}\n")).unwrap();
        path
    }

    #[tokio::test]
    async fn a_plain_text_mail_to_a_local_relay() {
        if !SmtpServer::available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let server = relay(dir.path(), &SmtpTls::None, &[]);
        let n = build(&format!(
            "server = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"Warren <warren@example.org>\"\nto = [\"ops@example.org\", \"Dan <dan@example.org>\"]\nsubject = \"[{{site}}] {{title}}\"\nbody = \"{{message}}\\n.\\nfrom {{rhost}}\"",
            server.port
        ))
        .unwrap();
        let mut hostile = notification("dan");
        hostile.title = "login\r\nBcc: eve@example.org".into();
        let before = chrono::Utc::now();
        n.send(&notification("dan")).await.unwrap();
        n.send(&hostile).await.unwrap();
        n.send(&notification("eve")).await.unwrap();
        let mails = server.messages();
        assert_eq!(mails.len(), 3);
        let mail = &mails[0];
        assert_eq!(mail.mail_from, "warren@example.org");
        assert_eq!(mail.rcpt_tos, ["ops@example.org", "dan@example.org"]);
        assert!(!mail.tls && !mail.authenticated);
        assert_eq!(mail.header("From").unwrap(), "Warren <warren@example.org>");
        assert_eq!(
            mail.header("To").unwrap(),
            "ops@example.org, Dan <dan@example.org>"
        );
        assert_eq!(mail.header("Subject").unwrap(), "[home] login on vm");
        let date = chrono::DateTime::parse_from_rfc2822(&mail.header("Date").unwrap()).unwrap();
        assert!(
            (date.with_timezone(&chrono::Utc) - before)
                .num_seconds()
                .abs()
                < 60,
            "{date}"
        );
        assert!(
            mail.header("Content-Type")
                .unwrap()
                .starts_with("text/plain; charset=utf-8")
        );
        // The line holding a lone dot went through (dot-stuffed on the wire).
        assert_eq!(
            mail.body().trim_end(),
            "User dan logged into vm\r\n.\r\nfrom 192.0.2.10"
        );
        let id = mail.header("Message-ID").unwrap();
        let envelope_id = notification("dan").envelope.id.to_string();
        let (local, host) = id
            .strip_prefix('<')
            .and_then(|i| i.strip_suffix('>'))
            .and_then(|i| i.split_once('@'))
            .unwrap();
        let (event, notifier) = local.split_once('.').unwrap();
        assert_eq!(event, envelope_id);
        assert_eq!(notifier, "mail");
        assert!(!host.is_empty());
        // A retry of the same notification carries the same id; another event another.
        assert_eq!(mails[1].header("Message-ID").unwrap(), id);
        assert_ne!(mails[2].header("Message-ID").unwrap(), id);

        // No header of the event's making, and no recipient.
        let hostile = &mails[1];
        assert_eq!(hostile.rcpt_tos, mail.rcpt_tos);
        assert_eq!(hostile.header("Bcc"), None);
        assert_eq!(
            hostile.header("Subject").unwrap(),
            "[home] login  Bcc: eve@example.org"
        );
    }

    #[tokio::test]
    async fn a_non_ascii_mail_is_encoded() {
        if !SmtpServer::available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let server = relay(dir.path(), &SmtpTls::None, &[]);
        let n = build(&format!(
            "server = \"localhost\"\nport = {}\nsecurity = \"none\"\nfrom = \"warren@example.org\"\nto = [\"ops@example.org\"]",
            server.port
        ))
        .unwrap();
        let mut note = notification("dan");
        note.title = "Connexion de René".into();
        note.message = "René s'est connecté sur vm — ✓".into();
        n.send(&note).await.unwrap();
        let mail = &server.messages()[0];
        assert!(
            mail.data.is_ascii(),
            "encoded for any server: {}",
            mail.data
        );
        assert_eq!(decode_header(&mail.header("Subject").unwrap()), note.title);
        assert_eq!(decode_body(mail), note.message);
    }

    #[tokio::test]
    async fn starttls_with_a_private_ca_and_a_login() {
        if !SmtpServer::available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, starttls) = pki(dir.path());
        let server = relay(dir.path(), &starttls, &[("warren", "s3cret")]);
        let n = build(&format!(
            "server = \"localhost\"\nport = {}\nca_file = \"{}\"\nusername = \"warren\"\npassword_file = \"{}\"\nfrom = \"warren@example.org\"\nto = [\"ops@example.org\"]",
            server.port,
            ca.display(),
            password(dir.path(), "s3cret").display()
        ))
        .unwrap();
        assert!(!format!("{n:?}").contains("s3cret"));
        n.send(&notification("dan")).await.unwrap();
        let mail = &server.messages()[0];
        assert!(mail.tls && mail.authenticated, "{mail:?}");
        assert_eq!(mail.header("Subject").unwrap(), "login on vm");
        assert_eq!(mail.body().trim_end(), "User dan logged into vm");
    }

    #[tokio::test]
    async fn implicit_tls() {
        if !SmtpServer::available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (ca, implicit, _) = pki(dir.path());
        let server = relay(dir.path(), &implicit, &[("warren", "s3cret")]);
        let config = |password: &Path, ca: Option<&Path>| {
            let ca = ca.map_or(String::new(), |ca| {
                format!("ca_file = \"{}\"\n", ca.display())
            });
            format!(
                "server = \"127.0.0.1\"\nport = {}\nsecurity = \"tls\"\n{ca}username = \"warren\"\npassword_file = \"{}\"\nfrom = \"warren@example.org\"\nto = [\"ops@example.org\"]",
                server.port,
                password.display()
            )
        };
        let good = password(dir.path(), "s3cret");
        build(&config(&good, Some(&ca)))
            .unwrap()
            .send(&notification("dan"))
            .await
            .unwrap();
        assert!(server.messages()[0].tls);

        // A certificate no CA vouches for: retried (it may be fixed), never sent in clear.
        let err = build(&config(&good, None))
            .unwrap()
            .send(&notification("dan"))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Transient(_)), "{err:?}");

        // A refused login (535) is permanent.
        let bad = password(dir.path(), "wrong");
        let err = build(&config(&bad, Some(&ca)))
            .unwrap()
            .send(&notification("dan"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NotifyError::Permanent(m) if m.contains("535")),
            "{err:?}"
        );
        assert_eq!(server.messages().len(), 1);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_a_hang_not_a_failure() {
        let silent = warren_harness::Silent::bind(0).unwrap();
        let n = build(&format!(
            "server = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"warren@example.org\"\nto = [\"ops@example.org\"]",
            silent.port
        ))
        .unwrap();
        let attempt = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            n.send(&notification("dan")),
        )
        .await;
        assert!(attempt.is_err(), "{attempt:?}");
    }

    #[test]
    fn build_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let bad_ca = dir.path().join("ca.pem");
        std::fs::write(&bad_ca, "not a certificate").unwrap();
        let base = "from = \"w@example.org\"\nto = [\"o@example.org\"]";
        for (text, key) in [
            (
                "server = \"mail.example.org\"\nsecurity = \"none\"",
                "security",
            ),
            ("server = \"192.0.2.1\"\nsecurity = \"none\"", "security"),
            ("server = \"\"", "server"),
            ("server = \"mail.example.org:587\"", "server"),
            (
                "server = \"localhost\"\nsecurity = \"none\"\nca_file = \"/x\"",
                "ca_file",
            ),
            (
                "server = \"mail.example.org\"\nca_file = \"/nonexistent\"",
                "ca_file",
            ),
            (
                &format!(
                    "server = \"mail.example.org\"\nca_file = \"{}\"",
                    bad_ca.display()
                ),
                "ca_file",
            ),
            (
                "server = \"mail.example.org\"\nusername = \"u\"",
                "password_file",
            ),
            (
                "server = \"mail.example.org\"\npassword_file = \"/x\"",
                "username",
            ),
            (
                "server = \"mail.example.org\"\nusername = \"u\"\npassword_file = \"/nonexistent\"",
                "password_file",
            ),
            (
                "server = \"mail.example.org\"\nsubject = \"{oops\"",
                "subject",
            ),
            ("server = \"mail.example.org\"\nbody = \"oops}\"", "body"),
        ] {
            let err = build(&format!("{text}\n{base}")).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        for (text, key) in [
            (
                "from = \"not an address\"\nto = [\"o@example.org\"]",
                "from",
            ),
            ("from = \"w@example.org\"\nto = []", "to"),
            (
                "from = \"w@example.org\"\nto = [\"o@example.org\", \"nope\"]",
                "to",
            ),
        ] {
            let err = build(&format!("server = \"mail.example.org\"\n{text}")).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        for server in ["localhost", "127.0.0.1", "::1", "[::1]", "127.0.0.2"] {
            build(&format!(
                "server = \"{server}\"\nsecurity = \"none\"\n{base}"
            ))
            .unwrap();
        }
        // Built without a runtime, as `hub check-config` does.
        build(&format!("server = \"mail.example.org\"\n{base}")).unwrap();
    }

    /// The relay as the conformance test stages it: DATA answered 250, 451, never, or 550.
    struct Staged(SmtpServer);

    impl Endpoint for Staged {
        fn behave(&self, b: Behaviour) -> bool {
            self.0.reply(match b {
                Behaviour::Accept => None,
                Behaviour::Fail => Some("451 4.3.0 Try again later"),
                Behaviour::Hang => Some("hang"),
                Behaviour::Reject => Some("550 5.7.1 Refused"),
            });
            true
        }

        fn delivered(&self) -> usize {
            self.0.messages().len()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conforms() {
        if !SmtpServer::available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let server = relay(dir.path(), &SmtpTls::None, &[]);
        let n = build(&format!(
            "server = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"warren@example.org\"\nto = [\"ops@example.org\"]",
            server.port
        ))
        .unwrap();
        conformance::run(Notifier::Smtp(n), &Staged(server)).await;
    }

    /// A header with RFC 2047 encoded words (`=?utf-8?b?…?=` or `?q?`), decoded: the space
    /// between two encoded words is not part of the text.
    fn decode_header(value: &str) -> String {
        use base64::Engine;
        let mut out = String::new();
        let mut last_encoded = false;
        for word in value.split_whitespace() {
            let encoded = word.strip_prefix("=?").and_then(|w| w.strip_suffix("?="));
            if !(out.is_empty() || last_encoded && encoded.is_some()) {
                out.push(' ');
            }
            last_encoded = encoded.is_some();
            let Some(inner) = encoded else {
                out.push_str(word);
                continue;
            };
            let mut parts = inner.splitn(3, '?');
            let (_, enc, text) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
            let bytes = match enc {
                "b" | "B" => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .unwrap(),
                _ => quoted_printable(&text.replace('_', " ")),
            };
            out.push_str(&String::from_utf8(bytes).unwrap());
        }
        out
    }

    /// The body, undone of its transfer encoding.
    fn decode_body(mail: &Mail) -> String {
        use base64::Engine;
        let body = mail.body();
        let bytes = match mail.header("Content-Transfer-Encoding").as_deref() {
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(body.split_whitespace().collect::<String>())
                .unwrap(),
            Some("quoted-printable") => quoted_printable(body),
            other => panic!("unexpected encoding {other:?}"),
        };
        String::from_utf8(bytes).unwrap().trim_end().to_owned()
    }

    fn quoted_printable(text: &str) -> Vec<u8> {
        let text = text.replace("=\r\n", "");
        let mut out = Vec::new();
        let mut bytes = text.bytes();
        while let Some(b) = bytes.next() {
            if b == b'=' {
                let hex: String = [bytes.next().unwrap(), bytes.next().unwrap()]
                    .iter()
                    .map(|&c| c as char)
                    .collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            } else {
                out.push(b);
            }
        }
        out
    }
}
