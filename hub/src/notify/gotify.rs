//! `type = "gotify"`: a Gotify server's message API (<https://gotify.net/api-docs>).
//!
//! One `POST {server}/message` per notification, JSON `{"title","message","priority"}`, the
//! application token in the `X-Gotify-Key` header (not the `token` query parameter, which
//! would put it in the URL and every access log). Markdown is asked for with the
//! `client::display` extra, which Gotify accepts only in a JSON body. Gotify answers a failure
//! with `{"error","errorCode","errorDescription"}`; the description is the reason.

use std::path::PathBuf;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{Explanation, Failed};
use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};
use crate::template::{Escape, Template};

/// Gotify's own clients read 0 (no notification) to 10 (sound and vibration); a higher number
/// would mean no more than 10.
const MAX_PRIORITY: i64 = 10;

fn default_priority() -> i64 {
    5
}
fn default_message() -> String {
    "{message}".into()
}

/// `[notifier.NAME] type = "gotify"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GotifyConfig {
    /// The Gotify server (there is no public one).
    pub server: String,
    /// A file holding the application token.
    pub token_file: PathBuf,
    /// 0 to 10; a notification's own priority (−2 … 2) replaces it, as 0, 2, 5, 8 or 10.
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// Send the message as Markdown: the `message` template is then markup, and what it inserts
    /// is escaped.
    #[serde(default)]
    pub markdown: bool,
    /// The message template; fields as in titles, plus `title` and `message` (the route's).
    #[serde(default = "default_message")]
    pub message: String,
}

/// The built notifier. Its `Debug` shows no token.
pub struct GotifyNotifier {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    what: String,
    key: HeaderValue,
    priority: i64,
    markdown: bool,
    message: Template,
}

impl std::fmt::Debug for GotifyNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GotifyNotifier")
            .field("host", &self.endpoint.host_str())
            .field("priority", &self.priority)
            .field("markdown", &self.markdown)
            .finish_non_exhaustive()
    }
}

impl Sink for GotifyNotifier {
    type Config = GotifyConfig;

    fn build(name: &NotifierName, c: &GotifyConfig, cx: &BuildContext) -> Result<Self, BuildError> {
        let err = BuildError::of(name);
        let base = super::http::base_url(&c.server).map_err(|e| err("server", &e))?;
        let token = super::read_secret(&c.token_file).map_err(|e| err("token_file", &e))?;
        let key = super::http::secret_header(token.expose())
            .map_err(|_| err("token_file", &"not a valid header value"))?;
        if !(0..=MAX_PRIORITY).contains(&c.priority) {
            return Err(err("priority", &"must be 0 to 10"));
        }
        let message = Template::parse(&c.message).map_err(|e| err("message", &e))?;
        Ok(Self {
            http: cx.http(name)?,
            what: format!("gotify {}", base.host_str().unwrap_or_default()),
            endpoint: super::http::endpoint(&base, &["message"]),
            key,
            priority: c.priority,
            markdown: c.markdown,
            message,
        })
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let request = self
            .http
            .post(self.endpoint.clone())
            .header(HeaderName::from_static("x-gotify-key"), self.key.clone());
        let body = self.body(n, chrono::Utc::now());
        super::http::post_json(request, &body, &self.what, explain).await
    }
}

impl GotifyNotifier {
    /// The JSON message for `n`.
    fn body(&self, n: &Notification, now: chrono::DateTime<chrono::Utc>) -> Value {
        let escape = if self.markdown {
            Escape::Markdown
        } else {
            Escape::None
        };
        let message = n.render(&self.message, now, escape);
        // Gotify's Android client: 0 silent, 1-3 quiet, 4-7 sound, 8-10 loud.
        let priority = n
            .priority_on([0, 2, 5, 8, MAX_PRIORITY])
            .unwrap_or(self.priority);
        let mut body = json!({
            "title": n.title,
            "message": message,
            "priority": priority,
        });
        if self.markdown {
            body["extras"] = json!({"client::display": {"contentType": "text/markdown"}});
        }
        body
    }
}

/// Gotify's `errorDescription` (or `error`) as the reason.
fn explain(f: &Failed) -> Explanation {
    let said = f.json().and_then(|v| {
        v["errorDescription"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or_else(|| v["error"].as_str())
            .map(str::to_owned)
    });
    Explanation { said, wait: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Notifier, conformance};
    use crate::testing::notification;
    use std::time::Duration;
    use warren_harness::http::{HttpServer, Reply};

    fn config(server: &str, extra: &str) -> (tempfile::TempDir, GotifyConfig) {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "AWH0wZ5r0Mbac.r\n").unwrap();
        let text = format!(
            "server = \"{server}\"\ntoken_file = \"{}\"\n{extra}",
            token.display()
        );
        (dir, toml::from_str(&text).unwrap())
    }

    fn notifier(server: &str, extra: &str) -> GotifyNotifier {
        let (_dir, c) = config(server, extra);
        let name = NotifierName::try_from("go".to_owned()).unwrap();
        GotifyNotifier::build(&name, &c, &BuildContext::default()).unwrap()
    }

    #[tokio::test]
    async fn posts_json_with_the_key_header() {
        let server = HttpServer::start(vec![Reply::Full(
            200,
            vec![],
            r#"{"id":25,"appid":5,"message":"x","title":"y","priority":5,"date":"2018-02-27T19:36:10.5045044+01:00"}"#.into(),
        )]);
        let n = notifier(&server.url("/gotify"), "");
        assert!(!format!("{n:?}").contains("AWH0"));
        let mut note = notification("dan");
        note.priority = None;
        n.send(&note).await.unwrap();
        let req = server.requests().remove(0);
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/gotify/message")
        );
        assert_eq!(req.header("x-gotify-key"), Some("AWH0wZ5r0Mbac.r"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({"title": "login on vm", "message": "User dan logged into vm", "priority": 5})
        );
    }

    #[tokio::test]
    async fn the_notification_priority_wins_converted() {
        let server = HttpServer::start(vec![Reply::Status(200)]);
        let n = notifier(&server.url(""), "priority = 2");
        for p in [Some(1), Some(99), Some(-1), Some(0)] {
            let mut note = notification("dan");
            note.priority = p;
            n.send(&note).await.unwrap();
        }
        let priorities: Vec<Value> = server
            .requests()
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["priority"].clone())
            .collect();
        assert_eq!(priorities, [json!(8), json!(10), json!(2), json!(5)]);
    }

    #[tokio::test]
    async fn markdown_asks_for_it_and_escapes_what_it_inserts() {
        let server = HttpServer::start(vec![Reply::Status(200)]);
        let n = notifier(
            &server.url(""),
            "markdown = true\nmessage = \"**{user}**: {message}\"",
        );
        n.send(&notification("![x](http://evil/)")).await.unwrap();
        let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
        assert_eq!(
            body["extras"],
            json!({"client::display": {"contentType": "text/markdown"}})
        );
        assert_eq!(
            body["message"],
            "**\\!\\[x\\]\\(http://evil/\\)**: User \\!\\[x\\]\\(http://evil/\\) logged into vm"
        );
    }

    #[tokio::test]
    async fn failures_carry_gotifys_description_and_a_429_is_throttled() {
        let server = HttpServer::start(vec![
            Reply::Full(
                401,
                vec![],
                r#"{"error":"Unauthorized","errorCode":401,"errorDescription":"you need to provide a valid access token or user credentials to access this api"}"#.into(),
            ),
            Reply::Full(429, vec![("Retry-After".into(), "5".into())], String::new()),
        ]);
        let n = notifier(&server.url(""), "");
        let err = n.send(&notification("dan")).await.unwrap_err();
        assert_eq!(
            err,
            NotifyError::Permanent(
                "gotify 127.0.0.1: HTTP 401 Unauthorized: \"you need to provide a valid access token or user credentials to access this api\"".into()
            )
        );
        assert!(matches!(
            n.send(&notification("dan")).await.unwrap_err(),
            NotifyError::Throttled(_, d) if d == Duration::from_secs(5)
        ));
    }

    #[test]
    fn build_errors_name_the_key() {
        let cx = BuildContext::default();
        let name = NotifierName::try_from("go".to_owned()).unwrap();
        for (server, extra, key) in [
            ("gotify.lan", "", "server"),
            ("https://gotify.lan/?x=1", "", "server"),
            ("https://gotify.lan", "priority = 11", "priority"),
            ("https://gotify.lan", "priority = -1", "priority"),
            ("https://gotify.lan", "message = \"}\"", "message"),
        ] {
            let (_dir, c) = config(server, extra);
            let err = GotifyNotifier::build(&name, &c, &cx).unwrap_err();
            assert_eq!(err.key, key, "{server} {extra}: {err}");
        }
        let (_dir, mut c) = config("https://gotify.lan", "");
        c.token_file = "/nonexistent".into();
        assert_eq!(
            GotifyNotifier::build(&name, &c, &cx).unwrap_err().key,
            "token_file"
        );
        assert!(matches!(
            toml::from_str("type = \"gotify\"\nserver = \"https://g\"\ntoken_file = \"/t\""),
            Ok(crate::notify::NotifierConfig::Gotify(_))
        ));
        assert!(
            toml::from_str::<GotifyConfig>("token_file = \"/t\"").is_err(),
            "server is required"
        );
        let c: GotifyConfig =
            toml::from_str("server = \"https://g\"\ntoken_file = \"/t\"").unwrap();
        assert_eq!(
            (c.priority, c.markdown, c.message.as_str()),
            (5, false, "{message}")
        );
    }

    #[tokio::test]
    async fn conforms() {
        let server = HttpServer::start(vec![]);
        let n = notifier(&server.url(""), "");
        conformance::run(Notifier::Gotify(n), &server).await;
    }
}
