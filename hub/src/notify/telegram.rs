//! `type = "telegram"`: a bot's `sendMessage` (<https://core.telegram.org/bots/api#sendmessage>).
//!
//! One `POST {api_url}/bot<token>/sendMessage` per notification, JSON `{"chat_id","text",…}`.
//! The token is part of the path, so no error names the URL: [`super::http::send`] strips it
//! from network errors, and the rest name only the host.
//!
//! Telegram answers a failure with `{"ok":false,"error_code":…,"description":…}`, and some with
//! `parameters`: `retry_after` (seconds) on flood control, which is honoured as the wait, and
//! `migrate_to_chat_id` when a group became a supergroup, which is permanent (the configured
//! chat is gone) and names the new id to configure.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::{Explanation, Failed};
use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};
use crate::template::{Escape, Template};

const DEFAULT_API_URL: &str = "https://api.telegram.org";

fn default_api_url() -> String {
    DEFAULT_API_URL.into()
}

/// A chat: its numeric id, or a channel's `@username`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ChatId {
    /// A numeric id (groups and channels are negative).
    Id(i64),
    /// `@channelusername`, or a numeric id written as a string.
    Name(String),
}

/// How Telegram parses the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ParseMode {
    /// Telegram's HTML subset.
    #[serde(rename = "HTML")]
    Html,
    /// Telegram's MarkdownV2 (legacy `Markdown` cannot escape everything, so it is not offered).
    MarkdownV2,
}

/// `[notifier.NAME] type = "telegram"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The Bot API server (a local `telegram-bot-api` works too).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// A file holding the bot token.
    pub token_file: PathBuf,
    /// The chat to send to.
    pub chat_id: ChatId,
    /// `"HTML"` or `"MarkdownV2"`; plain text when left out.
    pub parse_mode: Option<ParseMode>,
    /// The text template, markup in the chosen parse mode; fields as in titles, plus `title` and
    /// `message` (the route's), escaped for that mode.
    pub text: Option<String>,
    /// Deliver silently.
    #[serde(default)]
    pub disable_notification: bool,
}

/// The built notifier. Its `Debug` shows neither the token nor the URL (which holds it).
pub struct TelegramNotifier {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    what: String,
    chat_id: Value,
    parse_mode: Option<ParseMode>,
    text: Template,
    disable_notification: bool,
}

impl std::fmt::Debug for TelegramNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramNotifier")
            .field("host", &self.endpoint.host_str())
            .field("chat_id", &self.chat_id)
            .field("parse_mode", &self.parse_mode)
            .finish_non_exhaustive()
    }
}

impl Sink for TelegramNotifier {
    type Config = TelegramConfig;

    fn build(
        name: &NotifierName,
        c: &TelegramConfig,
        cx: &BuildContext,
    ) -> Result<Self, BuildError> {
        let err = BuildError::of(name);
        let base = super::http::base_url(&c.api_url).map_err(|e| err("api_url", &e))?;
        let token = super::read_secret(&c.token_file).map_err(|e| err("token_file", &e))?;
        // `<bot id>:<secret>`; anything else would change the path it is put in.
        let token_ok = token.expose().split_once(':').is_some_and(|(id, secret)| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !secret.is_empty()
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !token_ok {
            return Err(err(
                "token_file",
                &"not a bot token (digits, `:`, then letters, digits, `_` and `-`)",
            ));
        }
        let chat_id = match &c.chat_id {
            ChatId::Id(0) => return Err(err("chat_id", &"0 is no chat")),
            ChatId::Id(id) => Value::from(*id),
            ChatId::Name(s) => match s.parse::<i64>() {
                Ok(id) if id != 0 => Value::from(id),
                _ => {
                    let username = s.strip_prefix('@').unwrap_or_default();
                    let ok = !username.is_empty()
                        && username.len() <= 32
                        && username
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !ok {
                        return Err(err(
                            "chat_id",
                            &"must be a numeric chat id or a channel's @username",
                        ));
                    }
                    Value::from(s.clone())
                }
            },
        };
        let text = c.text.as_deref().unwrap_or(match c.parse_mode {
            Some(ParseMode::Html) => "<b>{title}</b>\n{message}",
            Some(ParseMode::MarkdownV2) => "*{title}*\n{message}",
            None => "{title}\n{message}",
        });
        let text = Template::parse(text).map_err(|e| err("text", &e))?;
        Ok(Self {
            http: cx.http(name)?,
            what: format!("telegram {}", base.host_str().unwrap_or_default()),
            endpoint: super::http::endpoint(
                &base,
                &[&format!("bot{}", token.expose()), "sendMessage"],
            ),
            chat_id,
            parse_mode: c.parse_mode,
            text,
            disable_notification: c.disable_notification,
        })
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = self.body(n, chrono::Utc::now());
        super::http::post_json(
            self.http.post(self.endpoint.clone()),
            &body,
            &self.what,
            explain,
        )
        .await
    }
}

impl TelegramNotifier {
    /// The JSON parameters for `n`.
    fn body(&self, n: &Notification, now: chrono::DateTime<chrono::Utc>) -> Value {
        let (escape, mode) = match self.parse_mode {
            Some(ParseMode::Html) => (Escape::Html, Some("HTML")),
            Some(ParseMode::MarkdownV2) => (Escape::TelegramMarkdownV2, Some("MarkdownV2")),
            None => (Escape::None, None),
        };
        let text = n.render(&self.text, now, escape);
        let mut body = Map::new();
        body.insert("chat_id".into(), self.chat_id.clone());
        body.insert("text".into(), text.into());
        if let Some(mode) = mode {
            body.insert("parse_mode".into(), mode.into());
        }
        if self.disable_notification {
            body.insert("disable_notification".into(), true.into());
        }
        Value::Object(body)
    }
}

/// Telegram's `description` as the reason, its `retry_after` as the wait, and a migrated
/// group's new id.
fn explain(f: &Failed) -> Explanation {
    let Some(v) = f.json() else {
        return Explanation::default();
    };
    let description = v["description"].as_str().unwrap_or_default();
    let parameters = &v["parameters"];
    let said = match parameters["migrate_to_chat_id"].as_i64() {
        Some(new) => format!("the group is now a supergroup: set chat_id = {new} ({description})"),
        None => description.to_owned(),
    };
    Explanation {
        said: (!said.is_empty()).then_some(said),
        wait: parameters["retry_after"].as_u64().map(Duration::from_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Notifier, conformance};
    use crate::testing::notification;
    use serde_json::json;
    use warren_harness::http::{HttpServer, Reply};

    const TOKEN: &str = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11";

    fn config(api_url: &str, extra: &str) -> (tempfile::TempDir, TelegramConfig) {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let text = format!(
            "api_url = \"{api_url}\"\ntoken_file = \"{}\"\n{extra}",
            token.display()
        );
        (dir, toml::from_str(&text).unwrap())
    }

    fn notifier(api_url: &str, extra: &str) -> TelegramNotifier {
        let (_dir, c) = config(api_url, extra);
        let name = NotifierName::try_from("tg".to_owned()).unwrap();
        TelegramNotifier::build(&name, &c, &BuildContext::default()).unwrap()
    }

    fn sent(server: &HttpServer, i: usize) -> Value {
        serde_json::from_slice(&server.requests()[i].body).unwrap()
    }

    #[tokio::test]
    async fn sends_the_documented_json_to_the_bot_path() {
        let server = HttpServer::start(vec![Reply::Full(
            200,
            vec![],
            r#"{"ok":true,"result":{"message_id":42,"date":1746268800,"chat":{"id":-1001,"type":"supergroup"}}}"#.into(),
        )]);
        let n = notifier(
            &server.url(""),
            "chat_id = -1001234567890\ndisable_notification = true",
        );
        assert!(!format!("{n:?}").contains("ABC-DEF"), "{n:?}");
        n.send(&notification("dan")).await.unwrap();
        let req = server.requests().remove(0);
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", format!("/bot{TOKEN}/sendMessage").as_str())
        );
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            sent(&server, 0),
            json!({
                "chat_id": -1001234567890_i64,
                "text": "login on vm\nUser dan logged into vm",
                "disable_notification": true,
            })
        );
    }

    #[tokio::test]
    async fn html_and_markdown_v2_escape_what_they_insert() {
        let server = HttpServer::start(vec![Reply::Status(200)]);
        let user = "<b>_*[x]</b>.";
        let html = notifier(
            &server.url(""),
            "chat_id = \"@warren_ops\"\nparse_mode = \"HTML\"",
        );
        html.send(&notification(user)).await.unwrap();
        let md = notifier(&server.url(""), "chat_id = 42\nparse_mode = \"MarkdownV2\"");
        md.send(&notification(user)).await.unwrap();
        let custom = notifier(
            &server.url(""),
            "chat_id = \"-100123\"\nparse_mode = \"HTML\"\ntext = \"<i>{user}</i> on {hostname}\"",
        );
        custom.send(&notification(user)).await.unwrap();
        assert_eq!(
            sent(&server, 0),
            json!({
                "chat_id": "@warren_ops",
                "text": "<b>login on vm</b>\nUser &lt;b&gt;_*[x]&lt;/b&gt;. logged into vm",
                "parse_mode": "HTML",
            })
        );
        assert_eq!(
            sent(&server, 1),
            json!({
                "chat_id": 42,
                "text": "*login on vm*\nUser <b\\>\\_\\*\\[x\\]</b\\>\\. logged into vm",
                "parse_mode": "MarkdownV2",
            })
        );
        assert_eq!(sent(&server, 2)["chat_id"], -100_123);
        assert_eq!(
            sent(&server, 2)["text"],
            "<i>&lt;b&gt;_*[x]&lt;/b&gt;.</i> on vm"
        );
    }

    #[tokio::test]
    async fn a_flood_wait_is_throttled_by_retry_after() {
        let server = HttpServer::start(vec![Reply::Full(
            429,
            vec![],
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 17","parameters":{"retry_after":17}}"#.into(),
        )]);
        let err = notifier(&server.url(""), "chat_id = 42")
            .send(&notification("dan"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            NotifyError::Throttled(
                "telegram 127.0.0.1: HTTP 429 Too Many Requests: \"Too Many Requests: retry after 17\"".into(),
                Duration::from_secs(17)
            )
        );
    }

    #[tokio::test]
    async fn a_migrated_group_is_permanent_and_names_the_new_id() {
        let server = HttpServer::start(vec![Reply::Full(
            400,
            vec![],
            r#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1001234567890}}"#.into(),
        )]);
        let err = notifier(&server.url(""), "chat_id = -4242")
            .send(&notification("dan"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            NotifyError::Permanent(
                "telegram 127.0.0.1: HTTP 400 Bad Request: \"the group is now a supergroup: set chat_id = -1001234567890 (Bad Request: group chat was upgraded to a supergroup chat)\"".into()
            )
        );
    }

    #[tokio::test]
    async fn no_error_shows_the_token() {
        let server = HttpServer::start(vec![Reply::Full(
            401,
            vec![],
            r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#.into(),
        )]);
        let err = notifier(&server.url(""), "chat_id = 42")
            .send(&notification("dan"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            NotifyError::Permanent(
                "telegram 127.0.0.1: HTTP 401 Unauthorized: \"Unauthorized\"".into()
            )
        );
        // A refused connection: reqwest's error would name the URL, were it not removed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = notifier(&format!("http://127.0.0.1:{port}"), "chat_id = 42")
            .send(&notification("dan"))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Transient(_)), "{err:?}");
        assert!(!err.to_string().contains("ABC-DEF"), "{err}");
    }

    #[test]
    fn build_errors_name_the_key() {
        let cx = BuildContext::default();
        let name = NotifierName::try_from("tg".to_owned()).unwrap();
        for (extra, key) in [
            ("chat_id = 0", "chat_id"),
            ("chat_id = \"warren\"", "chat_id"),
            ("chat_id = \"@\"", "chat_id"),
            ("chat_id = \"@a b\"", "chat_id"),
            ("chat_id = 1\ntext = \"{oops\"", "text"),
        ] {
            let (_dir, c) = config("https://api.telegram.org", extra);
            let err = TelegramNotifier::build(&name, &c, &cx).unwrap_err();
            assert_eq!(err.key, key, "{extra}: {err}");
        }
        let (_dir, c) = config("api.telegram.org", "chat_id = 1");
        assert_eq!(
            TelegramNotifier::build(&name, &c, &cx).unwrap_err().key,
            "api_url"
        );
        for bad in ["123456", "abc:def", "123:a/b", "123:"] {
            let (dir, c) = config("https://api.telegram.org", "chat_id = 1");
            std::fs::write(&c.token_file, bad).unwrap();
            let err = TelegramNotifier::build(&name, &c, &cx).unwrap_err();
            assert_eq!(err.key, "token_file", "{bad}");
            assert!(!err.to_string().contains(bad), "{err}");
            drop(dir);
        }
        let (_dir, mut c) = config("https://api.telegram.org", "chat_id = 1");
        c.token_file = "/nonexistent".into();
        assert_eq!(
            TelegramNotifier::build(&name, &c, &cx).unwrap_err().key,
            "token_file"
        );
        assert!(
            toml::from_str::<TelegramConfig>(
                "token_file = \"/t\"\nchat_id = 1\nparse_mode = \"Markdown\""
            )
            .is_err(),
            "legacy Markdown is not offered"
        );
        assert!(matches!(
            toml::from_str("type = \"telegram\"\ntoken_file = \"/t\"\nchat_id = \"@x\""),
            Ok(crate::notify::NotifierConfig::Telegram(_))
        ));
        let c: TelegramConfig = toml::from_str("token_file = \"/t\"\nchat_id = 1").unwrap();
        assert_eq!(
            (c.api_url.as_str(), c.parse_mode, c.disable_notification),
            (DEFAULT_API_URL, None, false)
        );
    }

    #[tokio::test]
    async fn conforms() {
        let server = HttpServer::start(vec![]);
        let n = notifier(&server.url(""), "chat_id = 42");
        conformance::run(Notifier::Telegram(n), &server).await;
    }
}
