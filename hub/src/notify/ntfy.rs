//! `type = "ntfy"`: ntfy's publish API (<https://docs.ntfy.sh/publish/>).
//!
//! ntfy takes a message either as the body of `POST {server}/{topic}` with its options in
//! headers, or as one JSON document POSTed to the server's root. This sink uses the JSON form:
//! a title (or tag) is the route's text and may hold any UTF-8, which headers carry only if the
//! server and every proxy on the way pass raw UTF-8 through, or after RFC 2047 encoding; JSON
//! carries it as is. It also keeps the topic, which is the only secret of an open topic, out of
//! the URL and so out of every access log on the way.
//!
//! ntfy answers a failure with `{"code":…,"http":…,"error":"…"}`; the `error` is the reason.
//! A 429 (ntfy's per-visitor limits) is retried, after its `Retry-After` when it gives one.

use std::path::PathBuf;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::{Explanation, Failed};
use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};
use crate::template::{Escape, Template};

const DEFAULT_SERVER: &str = "https://ntfy.sh";

fn default_server() -> String {
    DEFAULT_SERVER.into()
}
fn default_priority() -> i64 {
    3
}
fn default_message() -> String {
    "{message}".into()
}

/// `[notifier.NAME] type = "ntfy"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtfyConfig {
    /// The ntfy server.
    #[serde(default = "default_server")]
    pub server: String,
    /// The topic to publish to: 1 to 64 characters of `[-_A-Za-z0-9]`.
    pub topic: String,
    /// 1 (min) to 5 (max); a notification's own priority (−2 … 2) replaces it, as 1 … 5.
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// Tags (emoji short codes show as emojis).
    #[serde(default)]
    pub tags: Vec<String>,
    /// A URL opened when the notification is tapped.
    pub click: Option<String>,
    /// Send the message as Markdown: the `message` template is then markup, and what it inserts
    /// is escaped.
    #[serde(default)]
    pub markdown: bool,
    /// The message template; fields as in titles, plus `title` and `message` (the route's).
    #[serde(default = "default_message")]
    pub message: String,
    /// A file holding an access token, for a protected topic.
    pub token_file: Option<PathBuf>,
}

/// The built notifier. Its `Debug` shows neither the token nor the topic (anyone who knows an
/// open topic can read it).
pub struct NtfyNotifier {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    what: String,
    authorization: Option<HeaderValue>,
    topic: String,
    priority: i64,
    tags: Vec<String>,
    click: Option<String>,
    markdown: bool,
    message: Template,
}

impl std::fmt::Debug for NtfyNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtfyNotifier")
            .field("host", &self.endpoint.host_str())
            .field("token", &self.authorization.is_some())
            .field("priority", &self.priority)
            .field("markdown", &self.markdown)
            .finish_non_exhaustive()
    }
}

impl Sink for NtfyNotifier {
    type Config = NtfyConfig;

    fn build(name: &NotifierName, c: &NtfyConfig, cx: &BuildContext) -> Result<Self, BuildError> {
        let err = BuildError::of(name);
        let base = super::http::base_url(&c.server).map_err(|e| err("server", &e))?;
        let topic_ok = !c.topic.is_empty()
            && c.topic.len() <= 64
            && c.topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !topic_ok {
            return Err(err("topic", &"must be 1 to 64 characters of [-_A-Za-z0-9]"));
        }
        if !(1..=5).contains(&c.priority) {
            return Err(err("priority", &"must be 1 to 5"));
        }
        if c.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(err("tags", &"must not hold an empty tag"));
        }
        if let Some(click) = &c.click {
            reqwest::Url::parse(click).map_err(|e| err("click", &e))?;
        }
        let authorization = c
            .token_file
            .as_deref()
            .map(|path| {
                let token = super::read_secret(path).map_err(|e| err("token_file", &e))?;
                super::http::secret_header(&format!("Bearer {}", token.expose()))
                    .map_err(|_| err("token_file", &"not a valid header value"))
            })
            .transpose()?;
        let message = Template::parse(&c.message).map_err(|e| err("message", &e))?;
        Ok(Self {
            http: cx.http(name)?,
            what: format!("ntfy {}", base.host_str().unwrap_or_default()),
            // JSON is published to the root URL (with a trailing slash), never the topic's.
            endpoint: super::http::endpoint(&base, &[""]),
            authorization,
            topic: c.topic.clone(),
            priority: c.priority,
            tags: c.tags.clone(),
            click: c.click.clone(),
            markdown: c.markdown,
            message,
        })
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let mut request = self.http.post(self.endpoint.clone());
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let body = self.body(n, chrono::Utc::now());
        super::http::post_json(request, &body, &self.what, explain).await
    }
}

impl NtfyNotifier {
    /// The JSON message for `n`.
    fn body(&self, n: &Notification, now: chrono::DateTime<chrono::Utc>) -> Value {
        let escape = if self.markdown {
            Escape::Markdown
        } else {
            Escape::None
        };
        let message = n.render(&self.message, now, escape);
        let mut body = Map::new();
        body.insert("topic".into(), self.topic.clone().into());
        body.insert("message".into(), message.into());
        if !n.title.is_empty() {
            body.insert("title".into(), n.title.clone().into());
        }
        body.insert(
            "priority".into(),
            n.priority_on([1, 2, 3, 4, 5])
                .unwrap_or(self.priority)
                .into(),
        );
        if !self.tags.is_empty() {
            body.insert("tags".into(), self.tags.clone().into());
        }
        if let Some(click) = &self.click {
            body.insert("click".into(), click.clone().into());
        }
        if self.markdown {
            body.insert("markdown".into(), true.into());
        }
        Value::Object(body)
    }
}

/// ntfy's `error` (and its code) as the reason.
fn explain(f: &Failed) -> Explanation {
    let said = f.json().and_then(|v| {
        let error = v["error"].as_str()?;
        Some(match v["code"].as_i64() {
            Some(code) => format!("{error} (code {code})"),
            None => error.to_owned(),
        })
    });
    Explanation { said, wait: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Notifier, conformance};
    use crate::testing::notification;
    use serde_json::json;
    use std::time::Duration;
    use warren_harness::http::{HttpServer, Reply};

    fn notifier(server: &str, extra: &str) -> NtfyNotifier {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2\n").unwrap();
        let text = format!(
            "server = \"{server}\"\ntopic = \"warren_alerts-1\"\ntoken_file = \"{}\"\n{extra}",
            token.display()
        );
        let c: NtfyConfig = toml::from_str(&text).unwrap();
        let name = NotifierName::try_from("nt".to_owned()).unwrap();
        NtfyNotifier::build(&name, &c, &BuildContext::default()).unwrap()
    }

    #[tokio::test]
    async fn publishes_json_to_the_root_with_the_token() {
        let server = HttpServer::start(vec![Reply::Full(
            200,
            vec![],
            r#"{"id":"sPs71M8A2T","time":1643935928,"event":"message","topic":"warren_alerts-1"}"#
                .into(),
        )]);
        let n = notifier(
            &server.url(""),
            "priority = 4\ntags = [\"warning\", \"computer\"]\nclick = \"https://example.org/a\"",
        );
        let debug = format!("{n:?}");
        assert!(
            !debug.contains("tk_") && !debug.contains("warren_alerts"),
            "{debug}"
        );
        let mut note = notification("dän");
        note.title = "Login auf vm — ☃".into();
        note.priority = None;
        n.send(&note).await.unwrap();
        let req = server.requests().remove(0);
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.header("authorization"),
            Some("Bearer tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2")
        );
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({
                "topic": "warren_alerts-1",
                "message": "User dän logged into vm",
                "title": "Login auf vm — ☃",
                "priority": 4,
                "tags": ["warning", "computer"],
                "click": "https://example.org/a",
            })
        );
    }

    #[tokio::test]
    async fn the_notification_priority_wins_converted() {
        let server = HttpServer::start(vec![Reply::Status(200)]);
        let n = notifier(&server.url("/ntfy"), "");
        for p in [Some(9), Some(-1), Some(0), Some(2)] {
            let mut note = notification("dan");
            note.priority = p;
            n.send(&note).await.unwrap();
        }
        let priorities: Vec<Value> = server
            .requests()
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["priority"].clone())
            .collect();
        assert_eq!(priorities, [json!(5), json!(2), json!(3), json!(5)]);
        assert_eq!(server.requests()[0].path, "/ntfy/");
    }

    #[tokio::test]
    async fn markdown_escapes_what_it_inserts() {
        let server = HttpServer::start(vec![Reply::Status(200)]);
        let n = notifier(
            &server.url(""),
            "markdown = true\nmessage = \"**{user}** on `{hostname}`\"",
        );
        n.send(&notification("_*[x](y)")).await.unwrap();
        let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
        assert_eq!(body["markdown"], true);
        assert_eq!(body["message"], "**\\_\\*\\[x\\]\\(y\\)** on `vm`");
    }

    #[tokio::test]
    async fn failures_carry_ntfys_error_and_a_429_is_throttled() {
        let server = HttpServer::start(vec![
            Reply::Full(
                403,
                vec![],
                r#"{"code":40301,"http":403,"error":"forbidden","link":"https://ntfy.sh/docs/publish/#authentication"}"#.into(),
            ),
            Reply::Full(
                429,
                vec![("Retry-After".into(), "60".into())],
                r#"{"code":42901,"http":429,"error":"limit reached: too many requests"}"#.into(),
            ),
        ]);
        let n = notifier(&server.url(""), "");
        let err = n.send(&notification("dan")).await.unwrap_err();
        assert_eq!(
            err,
            NotifyError::Permanent(
                "ntfy 127.0.0.1: HTTP 403 Forbidden: \"forbidden (code 40301)\"".into()
            )
        );
        let err = n.send(&notification("dan")).await.unwrap_err();
        assert_eq!(
            err,
            NotifyError::Throttled(
                "ntfy 127.0.0.1: HTTP 429 Too Many Requests: \"limit reached: too many requests (code 42901)\"".into(),
                Duration::from_secs(60)
            )
        );
        assert!(!err.to_string().contains("warren_alerts"));
    }

    #[tokio::test]
    async fn without_a_token_there_is_no_authorization() {
        let server = HttpServer::start(vec![Reply::Status(200)]);
        let c: NtfyConfig =
            toml::from_str(&format!("server = \"{}\"\ntopic = \"t\"", server.url(""))).unwrap();
        let name = NotifierName::try_from("nt".to_owned()).unwrap();
        let n = NtfyNotifier::build(&name, &c, &BuildContext::default()).unwrap();
        n.send(&notification("dan")).await.unwrap();
        assert_eq!(server.requests()[0].header("authorization"), None);
    }

    #[test]
    fn build_errors_name_the_key() {
        let cx = BuildContext::default();
        let name = NotifierName::try_from("nt".to_owned()).unwrap();
        let long = format!("topic = \"{}\"", "a".repeat(65));
        for (text, key) in [
            ("topic = \"a/b\"", "topic"),
            ("topic = \"\"", "topic"),
            (long.as_str(), "topic"),
            ("topic = \"t\"\nserver = \"ntfy.sh\"", "server"),
            ("topic = \"t\"\npriority = 0", "priority"),
            ("topic = \"t\"\npriority = 6", "priority"),
            ("topic = \"t\"\ntags = [\"ok\", \" \"]", "tags"),
            ("topic = \"t\"\nclick = \"not a url\"", "click"),
            ("topic = \"t\"\nmessage = \"{oops\"", "message"),
            ("topic = \"t\"\ntoken_file = \"/nonexistent\"", "token_file"),
        ] {
            let c: NtfyConfig = toml::from_str(text).unwrap();
            let err = NtfyNotifier::build(&name, &c, &cx).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        let c: NtfyConfig = toml::from_str("topic = \"t\"").unwrap();
        assert_eq!(
            (c.server.as_str(), c.priority, c.markdown),
            (DEFAULT_SERVER, 3, false)
        );
        assert!(matches!(
            toml::from_str("type = \"ntfy\"\ntopic = \"t\""),
            Ok(crate::notify::NotifierConfig::Ntfy(_))
        ));
        assert!(toml::from_str::<NtfyConfig>("server = \"https://x\"").is_err());
    }

    #[tokio::test]
    async fn conforms() {
        let server = HttpServer::start(vec![]);
        let n = notifier(&server.url(""), "");
        conformance::run(Notifier::Ntfy(n), &server).await;
    }
}
