//! `type = "webhook"`: an HTTP POST per notification.
//!
//! The body is JSON `{"title","message","priority","event"}` (the envelope), or the rendered
//! `body` template. Which answers are retried is [`super::http::send`]'s rule.

use std::collections::BTreeMap;
use std::path::PathBuf;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};
use crate::template::{Escape, Template};

/// `[notifier.NAME] type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: Option<String>,
    /// A file holding the URL instead, for URLs that carry a token.
    pub url_file: Option<PathBuf>,
    /// Extra headers (not secret: they may be logged).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose value is read from a file (tokens): `{ Authorization = "/etc/warren/hook.auth" }`.
    #[serde(default)]
    pub secret_headers: BTreeMap<String, PathBuf>,
    /// A body template instead of the JSON document; fields as in titles, plus `title` and `message`.
    pub body: Option<String>,
    /// The body's content type (default JSON, or text for a `body` template).
    pub content_type: Option<String>,
}

/// The built notifier. Its `Debug` shows no header values, and of the URL (which may carry a
/// token) only the host.
pub struct WebhookNotifier {
    http: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Option<Template>,
    escape: Escape,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("host", &self.url.host_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Sink for WebhookNotifier {
    type Config = WebhookConfig;

    fn build(
        name: &NotifierName,
        c: &WebhookConfig,
        cx: &BuildContext,
    ) -> Result<Self, BuildError> {
        let err = BuildError::of(name);
        let (key, url) = match (&c.url, &c.url_file) {
            (Some(url), None) => ("url", url.clone()),
            (None, Some(path)) => (
                "url_file",
                super::read_secret(path)
                    .map_err(|e| err("url_file", &e))?
                    .expose()
                    .trim()
                    .to_owned(),
            ),
            _ => return Err(err("url", &"give either url or url_file")),
        };
        // The parser's message never quotes the URL, so no token reaches a log.
        let url = reqwest::Url::parse(&url).map_err(|e| err(key, &e))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(key, &"must be http or https"));
        }
        let mut headers = HeaderMap::new();
        let content_type = c.content_type.as_deref().unwrap_or(if c.body.is_some() {
            "text/plain; charset=utf-8"
        } else {
            "application/json"
        });
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type).map_err(|e| err("content_type", &e))?,
        );
        let header = |k: &str, v: &str, key: &str| {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| err(key, &e))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| err(key, &"not a valid header value"))?;
            Ok::<_, BuildError>((name, value))
        };
        for (k, v) in &c.headers {
            let (name, value) = header(k, v, &format!("headers.{k}"))?;
            headers.insert(name, value);
        }
        for (k, path) in &c.secret_headers {
            let key = format!("secret_headers.{k}");
            let secret = super::read_secret(path).map_err(|e| err(&key, &e))?;
            let (name, _) = header(k, "", &key)?;
            let value = super::http::secret_header(secret.expose())
                .map_err(|_| err(&key, &"not a valid header value"))?;
            headers.insert(name, value);
        }
        let body = c
            .body
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| err("body", &e))?;
        // A JSON body template gets JSON-escaped values, so an event cannot break out of its
        // strings.
        let escape = if content_type.contains("json") {
            Escape::Json
        } else {
            Escape::None
        };
        Ok(Self {
            http: cx.http(name)?,
            url,
            headers,
            body,
            escape,
        })
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = match &self.body {
            Some(t) => n.render(t, chrono::Utc::now(), self.escape).into_bytes(),
            None => n.document(),
        };
        let request = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body);
        super::http::send(request, self.url.host_str().unwrap_or("webhook"))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Notifier, conformance};
    use crate::testing::notification;
    use warren_harness::http::{HttpServer, Reply};

    fn notifier(url: &str, extra: &str) -> WebhookNotifier {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "Bearer s3cret\n").unwrap();
        let text = format!(
            "url = \"{url}\"\nsecret_headers = {{ Authorization = \"{}\" }}\n{extra}",
            token.display()
        );
        let c: WebhookConfig = toml::from_str(&text).unwrap();
        let cx = BuildContext::default();
        WebhookNotifier::build(&NotifierName::try_from("hook".to_owned()).unwrap(), &c, &cx)
            .unwrap()
    }

    #[tokio::test]
    async fn posts_json_with_headers() {
        let server = HttpServer::start(vec![Reply::Status(204)]);
        let n = notifier(&server.url("/hook"), "headers = { X-Site = \"home\" }");
        let debug = format!("{n:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("/hook"),
            "{debug}"
        );
        n.send(&notification("dan")).await.unwrap();
        let req = server.requests().remove(0);
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/hook"));
        assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(req.header("x-site"), Some("home"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["message"], "User dan logged into vm");
        assert_eq!(body["event"]["event"]["user"], "dan");
    }

    #[tokio::test]
    async fn body_template() {
        let server = HttpServer::start(vec![Reply::Status(200)]);
        let n = notifier(&server.url("/t"), "body = \"{title}: {user}@{hostname}\"");
        n.send(&notification("dan")).await.unwrap();
        let req = server.requests().remove(0);
        assert_eq!(req.body, b"login on vm: dan@vm");
        assert_eq!(
            req.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }

    #[tokio::test]
    async fn a_json_body_template_escapes_what_it_inserts() {
        let server = HttpServer::start(vec![Reply::Status(200)]);
        let n = notifier(
            &server.url("/t"),
            "content_type = \"application/json\"\nbody = '{{\"text\": \"{user}\", \"admin\": false}}'",
        );
        n.send(&notification("\", \"admin\": true, \"x\": \""))
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
        assert_eq!(body["admin"], false, "{body}");
        assert_eq!(body["text"], "\", \"admin\": true, \"x\": \"");
    }

    #[tokio::test]
    async fn a_redirect_is_a_failure_and_the_secret_stays_home() {
        let elsewhere = HttpServer::start(vec![Reply::Status(200)]);
        for status in [301, 302, 307, 308] {
            let server = HttpServer::start(vec![Reply::Redirect(status, elsewhere.port)]);
            let n = notifier(&server.url("/hook"), "");
            let err = n.send(&notification("dan")).await.unwrap_err();
            assert!(
                matches!(&err, NotifyError::Permanent(m) if m.contains("redirects are not followed")),
                "{status}: {err:?}"
            );
            assert_eq!(server.requests().len(), 1);
        }
        assert!(
            elsewhere.requests().is_empty(),
            "the request, and its Authorization header, went on to the other host"
        );
    }

    #[tokio::test]
    async fn the_url_can_come_from_a_file() {
        let server = HttpServer::start(vec![Reply::Status(204)]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, format!("{}\n", server.url("/hook?token=s3cret"))).unwrap();
        let c: WebhookConfig =
            toml::from_str(&format!("url_file = \"{}\"", file.display())).unwrap();
        let n = WebhookNotifier::build(
            &NotifierName::try_from("hook".to_owned()).unwrap(),
            &c,
            &BuildContext::default(),
        )
        .unwrap();
        assert!(!format!("{n:?}").contains("s3cret"));
        n.send(&notification("dan")).await.unwrap();
        assert_eq!(server.requests()[0].path, "/hook?token=s3cret");
    }

    #[test]
    fn build_errors_name_the_key() {
        let cx = BuildContext::default();
        let name = NotifierName::try_from("hook".to_owned()).unwrap();
        for (text, key) in [
            ("url = \"ftp://x\"", "url"),
            (
                "url = \"http://x\"\nsecret_headers = { Authorization = \"/nonexistent\" }",
                "secret_headers.Authorization",
            ),
            (
                "url = \"http://x\"\nheaders = { \"bad header\" = \"v\" }",
                "headers.bad header",
            ),
            ("url = \"http://x\"\nbody = \"{oops\"", "body"),
            ("", "url"),
            ("url = \"http://x\"\nurl_file = \"/u\"", "url"),
            ("url_file = \"/nonexistent\"", "url_file"),
        ] {
            let c: WebhookConfig = toml::from_str(text).unwrap();
            let err = WebhookNotifier::build(&name, &c, &cx).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }

    #[tokio::test]
    async fn conforms() {
        let server = HttpServer::start(vec![]);
        let n = notifier(&server.url("/hook"), "");
        conformance::run(Notifier::Webhook(n), &server).await;
    }
}
