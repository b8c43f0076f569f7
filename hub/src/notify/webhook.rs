//! `type = "webhook"`: an HTTP POST per notification.
//!
//! The body is JSON `{"title","message","priority","event"}` (the envelope), or the rendered
//! `body` template. 2xx is delivered; 408, 429, 5xx and network errors are retried; any other
//! status is permanent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError};
use crate::template::Template;

/// `[notifier.NAME] type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
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

/// The built notifier. Its `Debug` shows no header values.
pub struct WebhookNotifier {
    http: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Option<Template>,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &self.url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WebhookNotifier {
    /// Parses the URL and headers and reads the secret header files.
    ///
    /// # Errors
    /// A bad URL, header or unreadable file.
    pub fn build(
        name: &NotifierName,
        c: &WebhookConfig,
        cx: &BuildContext,
    ) -> Result<Self, BuildError> {
        let err = |r: String| BuildError::new(name, r);
        let url = reqwest::Url::parse(&c.url).map_err(|e| err(format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("url must be http or https".into()));
        }
        let mut headers = HeaderMap::new();
        let content_type = c.content_type.clone().unwrap_or_else(|| {
            if c.body.is_some() {
                "text/plain; charset=utf-8"
            } else {
                "application/json"
            }
            .to_owned()
        });
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&content_type).map_err(|e| err(format!("content_type: {e}")))?,
        );
        for (k, v) in &c.headers {
            let key = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| err(format!("header {k}: {e}")))?;
            headers.insert(
                key,
                HeaderValue::from_str(v).map_err(|e| err(format!("header {k}: {e}")))?,
            );
        }
        for (k, path) in &c.secret_headers {
            let key = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| err(format!("header {k}: {e}")))?;
            let value = std::fs::read_to_string(path)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            let mut value = HeaderValue::from_str(value.trim_end_matches(['\n', '\r']))
                .map_err(|_| err(format!("{}: not a valid header value", path.display())))?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        let body = c
            .body
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| err(format!("body: {e}")))?;
        Ok(Self {
            http: cx.http.clone(),
            url,
            headers,
            body,
        })
    }

    /// POSTs once.
    ///
    /// # Errors
    /// See the module docs.
    pub async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = match &self.body {
            Some(t) => t
                .render_with(
                    &n.envelope,
                    chrono::Utc::now(),
                    &[("title", &n.title), ("message", &n.message)],
                )
                .into_bytes(),
            None => serde_json::to_vec(&serde_json::json!({
                "title": n.title,
                "message": n.message,
                "priority": n.priority,
                "event": n.envelope,
            }))
            .unwrap_or_default(),
        };
        let resp = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| NotifyError::Transient(format!("{}: {e}", self.url)))?;
        classify(resp.status())
    }
}

/// What an HTTP status means for a delivery; shared by every HTTP-based notifier.
pub fn classify(status: reqwest::StatusCode) -> Result<(), NotifyError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(NotifyError::Transient(format!("HTTP {status}")))
    } else {
        Err(NotifyError::Permanent(format!("HTTP {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::notification;
    use std::time::Duration;
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
        let cx = BuildContext::new(Duration::from_millis(500)).unwrap();
        WebhookNotifier::build(&NotifierName::try_from("hook".to_owned()).unwrap(), &c, &cx)
            .unwrap()
    }

    #[tokio::test]
    async fn posts_json_with_headers() {
        let server = HttpServer::start(vec![Reply::Status(204)]);
        let n = notifier(&server.url("/hook"), "headers = { X-Site = \"home\" }");
        assert!(!format!("{n:?}").contains("s3cret"));
        n.send(&notification("dan")).await.unwrap();
        let req = server.requests().remove(0);
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/hook"));
        assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(req.header("x-site"), Some("home"));
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["message"], "User dan logged into vm");
        assert_eq!(body["event"]["event"]["user"], "dan");
    }

    #[tokio::test]
    async fn body_template_and_status_classes() {
        let server = HttpServer::start(vec![
            Reply::Status(503),
            Reply::Status(400),
            Reply::Status(200),
        ]);
        let n = notifier(&server.url("/t"), "body = \"{title}: {user}@{hostname}\"");
        assert!(matches!(
            n.send(&notification("dan")).await,
            Err(NotifyError::Transient(_))
        ));
        assert!(matches!(
            n.send(&notification("dan")).await,
            Err(NotifyError::Permanent(_))
        ));
        n.send(&notification("dan")).await.unwrap();
        assert_eq!(server.requests()[2].body, b"login on vm: dan@vm");
    }

    #[tokio::test]
    async fn a_hanging_server_times_out() {
        let server = HttpServer::start(vec![Reply::Hang]);
        let n = notifier(&server.url("/"), "");
        assert!(matches!(
            n.send(&notification("dan")).await,
            Err(NotifyError::Transient(_))
        ));
    }
}
