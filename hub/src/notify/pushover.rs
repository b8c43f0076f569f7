//! `type = "pushover"`: Pushover's message API (<https://pushover.net/api>).
//!
//! One `POST {api_url}/1/messages.json` per notification, with the parameters as a JSON body
//! (the API takes JSON as well as a form, and reqwest is built here without its form encoder).
//! Pushover answers a bad request with a 4xx and `{"status":0,"errors":[…]}`: permanent, with
//! those errors as the reason. It answers 429 once the account's monthly message quota is spent,
//! with `X-Limit-App-Reset` (a Unix time) saying when it refills: that is throttled until then
//! (at most [`super::http::MAX_RETRY_AFTER`] at a time), not hammered. 5xx and network failures
//! are retried by the delivery loop, waiting at least the 5 s Pushover asks for.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{Explanation, Failed};
use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};
use crate::template::{Escape, Template};

const DEFAULT_API_URL: &str = "https://api.pushover.net";
/// The emergency priority: Pushover repeats it every `retry` seconds for `expire` seconds.
const EMERGENCY: i64 = 2;
/// The API's limits, in characters (<https://pushover.net/api#limits>).
const MAX_TITLE: usize = 250;
const MAX_MESSAGE: usize = 1024;
const MAX_URL: usize = 512;
const MAX_URL_TITLE: usize = 100;
const MAX_DEVICE_NAME: usize = 25;
/// Pushover's floor for `retry` and ceiling for `expire`, in seconds.
const MIN_RETRY: u32 = 30;
const MAX_EXPIRE: u32 = 10_800;

fn default_api_url() -> String {
    DEFAULT_API_URL.into()
}
fn default_retry() -> u32 {
    60
}
fn default_expire() -> u32 {
    3600
}
fn default_message() -> String {
    "{message}".into()
}

/// `[notifier.NAME] type = "pushover"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushoverConfig {
    /// The API's base URL (`url` is Pushover's own parameter, the link shown with a message).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// A file holding the application's API token.
    pub token_file: PathBuf,
    /// A file holding the user or group key to send to.
    pub user_file: PathBuf,
    /// -2 (no alert) to 2 (emergency, repeated until acknowledged); a notification's own
    /// priority replaces it, clamped into that range.
    #[serde(default)]
    pub priority: i64,
    /// Seconds between repeats of an emergency notification (at least 30).
    #[serde(default = "default_retry")]
    pub retry: u32,
    /// Seconds an emergency notification keeps being repeated (at most 10800).
    #[serde(default = "default_expire")]
    pub expire: u32,
    /// A sound name instead of the user's default.
    pub sound: Option<String>,
    /// A link shown with every message.
    pub url: Option<String>,
    /// The link's title.
    pub url_title: Option<String>,
    /// Device names (comma-separated) to send to instead of all the user's devices.
    pub device: Option<String>,
    /// Send the message as Pushover's HTML subset: the `message` template is then markup, and
    /// what it inserts is escaped.
    #[serde(default)]
    pub html: bool,
    /// The message template; fields as in titles, plus `title` and `message` (the route's).
    #[serde(default = "default_message")]
    pub message: String,
}

/// The built notifier. Its `Debug` shows neither the token nor the user key.
pub struct PushoverNotifier {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    what: String,
    token: warren_daemon::Secret,
    user: warren_daemon::Secret,
    priority: i64,
    retry: u32,
    expire: u32,
    sound: Option<String>,
    url: Option<String>,
    url_title: Option<String>,
    device: Option<String>,
    html: bool,
    message: Template,
}

impl std::fmt::Debug for PushoverNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushoverNotifier")
            .field("host", &self.endpoint.host_str())
            .field("priority", &self.priority)
            .field("html", &self.html)
            .finish_non_exhaustive()
    }
}

impl Sink for PushoverNotifier {
    type Config = PushoverConfig;

    fn build(
        name: &NotifierName,
        c: &PushoverConfig,
        cx: &BuildContext,
    ) -> Result<Self, BuildError> {
        let err = BuildError::of(name);
        let base = super::http::base_url(&c.api_url).map_err(|e| err("api_url", &e))?;
        let token = super::read_secret(&c.token_file).map_err(|e| err("token_file", &e))?;
        let user = super::read_secret(&c.user_file).map_err(|e| err("user_file", &e))?;
        if !(-2..=EMERGENCY).contains(&c.priority) {
            return Err(err("priority", &"must be -2 to 2"));
        }
        if c.retry < MIN_RETRY {
            return Err(err(
                "retry",
                &format!("must be at least {MIN_RETRY} seconds"),
            ));
        }
        if c.expire == 0 || c.expire > MAX_EXPIRE {
            return Err(err("expire", &format!("must be 1 to {MAX_EXPIRE} seconds")));
        }
        let limit = |key: &str, v: &Option<String>, max: usize| match v {
            Some(v) if v.is_empty() || v.chars().count() > max => {
                Err(err(key, &format!("must be 1 to {max} characters")))
            }
            _ => Ok(()),
        };
        limit("url", &c.url, MAX_URL)?;
        limit("url_title", &c.url_title, MAX_URL_TITLE)?;
        if c.sound.as_deref() == Some("") {
            return Err(err(
                "sound",
                &"must not be empty (leave it out for the default)",
            ));
        }
        if let Some(device) = &c.device {
            let ok = device.split(',').all(|d| {
                !d.is_empty()
                    && d.len() <= MAX_DEVICE_NAME
                    && d.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            if !ok {
                return Err(err(
                    "device",
                    &"must be device names of 1 to 25 characters of [A-Za-z0-9_-], comma-separated",
                ));
            }
        }
        let message = Template::parse(&c.message).map_err(|e| err("message", &e))?;
        Ok(Self {
            http: cx.http(name)?,
            what: format!("pushover {}", base.host_str().unwrap_or_default()),
            endpoint: super::http::endpoint(&base, &["1", "messages.json"]),
            token,
            user,
            priority: c.priority,
            retry: c.retry,
            expire: c.expire,
            sound: c.sound.clone(),
            url: c.url.clone(),
            url_title: c.url_title.clone(),
            device: c.device.clone(),
            html: c.html,
            message,
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

impl PushoverNotifier {
    /// The JSON parameters for `n`.
    fn body(&self, n: &Notification, now: chrono::DateTime<chrono::Utc>) -> Value {
        let escape = if self.html {
            Escape::Html
        } else {
            Escape::None
        };
        let message = n.render(&self.message, now, escape);
        let priority = n.priority.map_or(self.priority, |p| p.clamp(-2, EMERGENCY));
        let mut body = Map::new();
        body.insert("token".into(), self.token.expose().into());
        body.insert("user".into(), self.user.expose().into());
        body.insert(
            "message".into(),
            truncate(&message, MAX_MESSAGE, self.html).into(),
        );
        if !n.title.is_empty() {
            body.insert("title".into(), truncate(&n.title, MAX_TITLE, false).into());
        }
        body.insert("priority".into(), priority.into());
        if priority == EMERGENCY {
            // Required with priority 2, and only meaningful there.
            body.insert("retry".into(), self.retry.into());
            body.insert("expire".into(), self.expire.into());
        }
        if self.html {
            body.insert("html".into(), 1.into());
        }
        // The event's time, not the delivery's: a notification retried for an hour still
        // shows when the login happened.
        let tst = n.envelope.event.tst();
        if tst > 0 {
            body.insert("timestamp".into(), tst.into());
        }
        for (key, value) in [
            ("sound", &self.sound),
            ("url", &self.url),
            ("url_title", &self.url_title),
            ("device", &self.device),
        ] {
            if let Some(v) = value {
                body.insert(key.into(), json!(v));
            }
        }
        Value::Object(body)
    }
}

/// Pushover's `errors` as the reason; a spent quota waits for `X-Limit-App-Reset`.
fn explain(f: &Failed) -> Explanation {
    let said = f.json().and_then(|v| {
        let errors: Vec<&str> = v["errors"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    });
    // Pushover asks clients to wait at least 5 s after a 5xx.
    if f.status.is_server_error() {
        return Explanation {
            said,
            wait: Some(
                f.retry_after()
                    .unwrap_or_default()
                    .max(Duration::from_secs(5)),
            ),
        };
    }
    let wait = (f.status == reqwest::StatusCode::TOO_MANY_REQUESTS && f.retry_after().is_none())
        .then(|| {
            let reset: i64 = f
                .headers
                .get("x-limit-app-reset")?
                .to_str()
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let secs = reset.saturating_sub(chrono::Utc::now().timestamp());
            Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
        })
        .flatten();
    Explanation { said, wait }
}

/// `s` cut to `max` characters, ending in `…` when cut, so an over-long message is delivered
/// shortened rather than refused. In HTML, a cut entity or tag at the end is dropped too.
fn truncate(s: &str, max: usize, html: bool) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    if html {
        for (open, close) in [('&', ';'), ('<', '>')] {
            if let Some(at) = out.rfind(open)
                && !out[at..].contains(close)
            {
                out.truncate(at);
            }
        }
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Notifier, conformance};
    use crate::testing::notification;
    use warren_harness::http::{HttpServer, Reply};

    fn config(url: &str, extra: &str) -> (tempfile::TempDir, PushoverConfig) {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        let user = dir.path().join("user");
        std::fs::write(&token, "azGDORePK8gMaC0QOYAMyEEuzJnyUi\n").unwrap();
        std::fs::write(&user, "uQiRzpo4DXghDmr9QzzfQu27cmVRsG\n").unwrap();
        let text = format!(
            "api_url = \"{url}\"\ntoken_file = \"{}\"\nuser_file = \"{}\"\n{extra}",
            token.display(),
            user.display()
        );
        (dir, toml::from_str(&text).unwrap())
    }

    fn notifier(url: &str, extra: &str) -> PushoverNotifier {
        let (_dir, c) = config(url, extra);
        let name = NotifierName::try_from("po".to_owned()).unwrap();
        PushoverNotifier::build(&name, &c, &BuildContext::default()).unwrap()
    }

    fn ok() -> Reply {
        Reply::Full(
            200,
            vec![("Content-Type".into(), "application/json".into())],
            r#"{"status":1,"request":"647d2300-702c-4b38-8b2f-d56326ae460b"}"#.into(),
        )
    }

    #[tokio::test]
    async fn posts_the_documented_json() {
        let server = HttpServer::start(vec![ok()]);
        let n = notifier(
            &server.url("/prefix"),
            "priority = -1\nsound = \"pushover\"\nurl = \"https://example.org/x\"\nurl_title = \"x\"\ndevice = \"phone,tab-2\"",
        );
        let debug = format!("{n:?}");
        assert!(
            !debug.contains("azGDOR") && !debug.contains("uQiRzp"),
            "{debug}"
        );
        let mut note = notification("dan");
        note.priority = None;
        n.send(&note).await.unwrap();
        let req = server.requests().remove(0);
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/prefix/1/messages.json")
        );
        assert_eq!(req.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({
                "token": "azGDORePK8gMaC0QOYAMyEEuzJnyUi",
                "user": "uQiRzpo4DXghDmr9QzzfQu27cmVRsG",
                "message": "User dan logged into vm",
                "title": "login on vm",
                "priority": -1,
                "sound": "pushover",
                "url": "https://example.org/x",
                "url_title": "x",
                "device": "phone,tab-2",
                "timestamp": 1_795_708_571,
            })
        );
    }

    #[tokio::test]
    async fn the_notification_priority_wins_clamped_and_emergency_carries_retry_and_expire() {
        let server = HttpServer::start(vec![ok()]);
        let n = notifier(&server.url(""), "retry = 30\nexpire = 10800");
        for p in [Some(9), Some(-7), Some(1)] {
            let mut note = notification("dan");
            note.priority = p;
            n.send(&note).await.unwrap();
        }
        let bodies: Vec<Value> = server
            .requests()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        assert_eq!(
            (
                &bodies[0]["priority"],
                &bodies[0]["retry"],
                &bodies[0]["expire"]
            ),
            (&json!(2), &json!(30), &json!(10800))
        );
        assert_eq!(bodies[1]["priority"], -2);
        assert_eq!(bodies[2]["priority"], 1);
        assert!(bodies[1].get("retry").is_none() && bodies[2].get("expire").is_none());
        assert_eq!(server.requests()[0].path, "/1/messages.json");
    }

    #[tokio::test]
    async fn html_escapes_what_it_inserts() {
        let server = HttpServer::start(vec![ok()]);
        let n = notifier(
            &server.url(""),
            "html = true\nmessage = \"<b>{user}</b> on {hostname}: {message}\"",
        );
        n.send(&notification("<i>x</i>&")).await.unwrap();
        let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
        assert_eq!(body["html"], 1);
        assert_eq!(
            body["message"],
            "<b>&lt;i&gt;x&lt;/i&gt;&amp;</b> on vm: User &lt;i&gt;x&lt;/i&gt;&amp; logged into vm"
        );
    }

    #[tokio::test]
    async fn a_4xx_is_permanent_with_pushovers_errors() {
        let server = HttpServer::start(vec![Reply::Full(
            400,
            vec![],
            r#"{"user":"invalid","errors":["user identifier is not a valid user, group, or subscribed user key"],"status":0,"request":"5042853c"}"#.into(),
        )]);
        let err = notifier(&server.url(""), "")
            .send(&notification("dan"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            NotifyError::Permanent(
                "pushover 127.0.0.1: HTTP 400 Bad Request: \"user identifier is not a valid user, group, or subscribed user key\"".into()
            )
        );
        assert!(!err.to_string().contains("azGDOR"));
    }

    #[tokio::test]
    async fn a_429_is_throttled_by_retry_after_or_until_the_quota_resets() {
        let server = HttpServer::start(vec![
            Reply::Full(
                429,
                vec![("Retry-After".into(), "42".into())],
                r#"{"status":0,"errors":["message limit reached"]}"#.into(),
            ),
            Reply::Full(
                429,
                vec![(
                    "X-Limit-App-Reset".into(),
                    (chrono::Utc::now().timestamp() + 600).to_string(),
                )],
                r#"{"status":0,"errors":["message limit reached"]}"#.into(),
            ),
        ]);
        let n = notifier(&server.url(""), "");
        let first = n.send(&notification("dan")).await.unwrap_err();
        assert_eq!(
            first,
            NotifyError::Throttled(
                "pushover 127.0.0.1: HTTP 429 Too Many Requests: \"message limit reached\"".into(),
                Duration::from_secs(42)
            )
        );
        let NotifyError::Throttled(_, wait) = n.send(&notification("dan")).await.unwrap_err()
        else {
            panic!("a spent quota is throttled");
        };
        assert!(
            wait > Duration::from_secs(590) && wait <= Duration::from_secs(600),
            "{wait:?}"
        );
    }

    #[test]
    fn truncation_keeps_the_limit_and_whole_markup() {
        assert_eq!(truncate("abc", 3, false), "abc");
        assert_eq!(truncate("abcd", 3, false), "ab…");
        assert_eq!(truncate("ab&amp;cdef", 6, true), "ab…");
        assert_eq!(truncate("a<b>c</b>", 7, true), "a<b>c…");
        assert_eq!(
            truncate(&"é".repeat(2000), MAX_MESSAGE, false)
                .chars()
                .count(),
            MAX_MESSAGE
        );
    }

    #[test]
    fn build_errors_name_the_key() {
        let cx = BuildContext::default();
        let name = NotifierName::try_from("po".to_owned()).unwrap();
        for (extra, key) in [
            ("priority = 3", "priority"),
            ("priority = -3", "priority"),
            ("retry = 29", "retry"),
            ("expire = 10801", "expire"),
            ("expire = 0", "expire"),
            ("device = \"my phone\"", "device"),
            ("device = \"a,,b\"", "device"),
            ("url_title = \"\"", "url_title"),
            ("message = \"{oops\"", "message"),
        ] {
            let (_dir, c) = config("https://api.pushover.net", extra);
            let err = PushoverNotifier::build(&name, &c, &cx).unwrap_err();
            assert_eq!(err.key, key, "{extra}: {err}");
        }
        let (_dir, c) = config("ftp://x", "");
        assert_eq!(
            PushoverNotifier::build(&name, &c, &cx).unwrap_err().key,
            "api_url"
        );
        let (_dir, mut c) = config("https://api.pushover.net", "");
        c.user_file = "/nonexistent".into();
        assert_eq!(
            PushoverNotifier::build(&name, &c, &cx).unwrap_err().key,
            "user_file"
        );
        c.token_file = "/nonexistent".into();
        assert_eq!(
            PushoverNotifier::build(&name, &c, &cx).unwrap_err().key,
            "token_file"
        );
        let c: PushoverConfig = toml::from_str("token_file = \"/t\"\nuser_file = \"/u\"").unwrap();
        assert_eq!(
            (c.api_url.as_str(), c.priority, c.retry, c.expire, c.html),
            (DEFAULT_API_URL, 0, 60, 3600, false)
        );
        assert!(matches!(
            toml::from_str("type = \"pushover\"\ntoken_file = \"/t\"\nuser_file = \"/u\""),
            Ok(crate::notify::NotifierConfig::Pushover(_))
        ));
        assert!(
            toml::from_str::<PushoverConfig>("token_file = \"/t\"\nuser_file = \"/u\"\nx = 1")
                .is_err()
        );
    }

    #[tokio::test]
    async fn conforms() {
        let server = HttpServer::start(vec![]);
        let n = notifier(&server.url(""), "");
        conformance::run(Notifier::Pushover(n), &server).await;
    }
}
