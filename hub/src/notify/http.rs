//! What every HTTP-based sink shares: one client, and which answers are worth a retry.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use super::NotifyError;

/// The HTTP client every sink shares (connection reuse). It has no total timeout of its own:
/// the delivery loop bounds each attempt. It follows no redirect: a token or secret header
/// must never go to a host the config does not name, so a 3xx is a failed delivery.
///
/// # Errors
/// When the TLS stack cannot be set up.
pub fn client() -> reqwest::Result<reqwest::Client> {
    // reqwest is built without a default provider (one TLS stack for the whole hub).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("warren-hub/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// A service's base URL from a sink's config: http or https, without query or fragment, since
/// the sink appends its API's path to it.
///
/// # Errors
/// Why it is not one; the message never quotes the URL.
pub fn base_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be http or https".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment".into());
    }
    Ok(url)
}

/// `base` with `segments` appended to its path, each escaped as a path segment: a server
/// under a path prefix keeps it, and a token with a `:` in it stays a path segment (joined as a
/// relative URL, `bot123:ABC` would parse as a scheme).
pub fn endpoint(base: &reqwest::Url, segments: &[&str]) -> reqwest::Url {
    let mut url = base.clone();
    // An http(s) URL always has a path to append to; `base_url` checked the scheme.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// A header value for a secret (a token): marked sensitive, so no `Debug` of the request
/// shows it, and [`send_explained`] keeps it out of errors.
///
/// # Errors
/// When it is not a valid header value.
pub fn secret_header(value: &str) -> Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
    let mut v = HeaderValue::from_str(value)?;
    v.set_sensitive(true);
    Ok(v)
}

/// POSTs `body` as JSON with [`send_explained`]: the call of every service that takes JSON.
///
/// # Errors
/// As [`send_explained`].
pub async fn post_json(
    request: reqwest::RequestBuilder,
    body: &serde_json::Value,
    what: &str,
    explain: impl FnOnce(&Failed) -> Explanation,
) -> Result<(), NotifyError> {
    let request = request
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body.to_string());
    send_explained(request, what, explain).await.map(drop)
}

/// The longest `Retry-After` honoured: a service asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Sends `request` once and returns the response if it is a 2xx: a network error, 408, 429 or
/// 5xx is transient (throttled, when a 429 or 503 says `Retry-After`); any other status is
/// permanent. `what` names the endpoint in errors; the URL is left out (those of chat and
/// push services carry tokens).
///
/// # Errors
/// See above.
pub async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<reqwest::Response, NotifyError> {
    send_explained(request, what, |_| Explanation::default()).await
}

/// [`send`], for services that explain a failure in their answer (a JSON body naming the bad
/// parameter, a flood wait): `explain` reads the failed answer, and what it finds replaces the
/// raw body in the error, or the `Retry-After` header as the wait. Which statuses are retried
/// stays [`classify`]'s rule, so every sink fails the same way for the same status.
///
/// # Errors
/// As [`send`].
pub async fn send_explained(
    request: reqwest::RequestBuilder,
    what: &str,
    explain: impl FnOnce(&Failed) -> Explanation,
) -> Result<reqwest::Response, NotifyError> {
    let (client, request) = request.build_split();
    let request = request
        .map_err(|e| NotifyError::Permanent(format!("{what}: {}", causes(e.without_url()))))?;
    let secrets = secrets_of(&request);
    let response = client
        .execute(request)
        .await
        .map_err(|e| NotifyError::Transient(format!("{what}: {}", causes(e.without_url()))))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let failed = Failed::read(response).await;
    let Explanation { said, wait } = explain(&failed);
    let said = said.unwrap_or_else(|| String::from_utf8_lossy(&failed.body).into_owned());
    // A server (or a proxy before it) may quote the request back: "Cannot POST /bot<token>/…".
    let said = secrets.iter().fold(said, |said, secret| {
        said.replace(secret.as_str(), "<secret>")
    });
    Err(failure(
        what,
        failed.status,
        &said,
        wait.or_else(|| failed.retry_after()),
    ))
}

/// What in `request` may be a secret, to keep out of errors: the URL's path segments and query
/// values (Telegram's token is a path segment, a webhook's token often a query value) and the
/// headers marked sensitive. Short ones, and path parts without a digit, are left: they are
/// words (`sendMessage`), not tokens.
fn secrets_of(request: &reqwest::Request) -> Vec<String> {
    const SHORTEST: usize = 8;
    let url = request.url();
    let path = url.path_segments().into_iter().flatten().map(str::to_owned);
    let query = url.query_pairs().map(|(_, v)| v.into_owned());
    let headers = request
        .headers()
        .values()
        .filter(|v| v.is_sensitive())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            [v.to_owned()]
                .into_iter()
                .chain(v.split_whitespace().nth(1).map(str::to_owned))
        });
    let tokenish = |s: &String| s.len() >= SHORTEST && s.bytes().any(|b| b.is_ascii_digit());
    path.chain(query)
        .filter(tokenish)
        .chain(headers.filter(|s| s.len() >= SHORTEST))
        .collect()
}

/// The most of a failed answer's body that is read: enough for any service's error document,
/// and a server that streams without end cannot make the hub hold it.
const MAX_FAILED_BODY: usize = 64 * 1024;

/// A non-2xx answer, read whole (the body up to [`MAX_FAILED_BODY`]).
#[derive(Debug, Clone)]
pub struct Failed {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, possibly cut short.
    pub body: Vec<u8>,
}

impl Failed {
    async fn read(mut response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        // A body that breaks off is kept as far as it came: it only words the error.
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = MAX_FAILED_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() == MAX_FAILED_BODY {
                break;
            }
        }
        Self {
            status,
            headers,
            body,
        }
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `Retry-After` header of a 429 or 503 (the statuses it is defined for).
    pub fn retry_after(&self) -> Option<Duration> {
        matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then(|| retry_after(&self.headers))
        .flatten()
    }
}

/// What a sink made of a failed answer; `None` leaves [`send_explained`]'s default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explanation {
    /// The service's own words (its error text), instead of the raw body.
    pub said: Option<String>,
    /// How long the service asked to be left alone, instead of `Retry-After`.
    pub wait: Option<Duration>,
}

/// The error for a failed answer: [`classify`]'s kind, throttled when it is worth a retry and
/// `wait` is known. The service's words help the operator fix a token or a parameter; they are
/// trimmed, cut to 200 characters and quoted (no control character reaches a log line).
fn failure(what: &str, status: StatusCode, said: &str, wait: Option<Duration>) -> NotifyError {
    let Err(e) = classify(status) else {
        // Only a non-2xx is a failure; a 2xx reaching here is a caller's mistake, still failed.
        return NotifyError::Permanent(format!("{what}: HTTP {status}"));
    };
    let said: String = said.trim().chars().take(200).collect();
    let m = if said.is_empty() {
        format!("{what}: {e}")
    } else {
        format!("{what}: {e}: {said:?}")
    };
    match (e, wait) {
        (NotifyError::Permanent(_), _) => NotifyError::Permanent(m),
        (_, Some(wait)) => NotifyError::Throttled(m, wait.min(MAX_RETRY_AFTER)),
        (_, None) => NotifyError::Transient(m),
    }
}

/// `Retry-After` as seconds or as an HTTP date, at most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// What an HTTP status means for a delivery.
///
/// # Errors
/// Transient for 408, 429 and 5xx; permanent for any other non-2xx.
pub fn classify(status: StatusCode) -> Result<(), NotifyError> {
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(NotifyError::Permanent(format!(
            "HTTP {status}: redirects are not followed; configure the final URL"
        )))
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Err(NotifyError::Transient(format!("HTTP {status}")))
    } else {
        Err(NotifyError::Permanent(format!("HTTP {status}")))
    }
}

/// An error with its causes ("error sending request: client error (Connect): tcp connect
/// error: Connection refused"): the top one alone says nothing an operator can act on. The
/// URL is already stripped, and no cause below it carries one.
pub(super) fn causes(e: reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut next = std::error::Error::source(&e);
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_quoting_the_request_back_does_not_put_its_secrets_in_the_error() {
        use warren_harness::http::{HttpServer, Reply};
        let echo = "Cannot POST /bot123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage?key=tok3n-value (Bearer s3cretBearerT0ken)";
        let server = HttpServer::start(vec![Reply::Full(404, vec![], echo.into())]);
        let mut auth = reqwest::header::HeaderValue::from_static("Bearer s3cretBearerT0ken");
        auth.set_sensitive(true);
        let request =
            client()
                .unwrap()
                .post(server.url(
                    "/bot123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage?key=tok3n-value",
                ))
                .header(reqwest::header::AUTHORIZATION, auth);
        let err = send(request, "svc").await.unwrap_err().to_string();
        for secret in ["AAHdqTcv", "tok3n-value", "s3cretBearerT0ken"] {
            assert!(!err.contains(secret), "{err}");
        }
        assert!(
            err.contains("/sendMessage") && err.contains("<secret>"),
            "{err}"
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(30)).to_rfc2822();
        h.insert(RETRY_AFTER, soon.parse().unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn status_classes() {
        assert!(classify(StatusCode::NO_CONTENT).is_ok());
        for transient in [408, 429, 500, 502, 503] {
            let s = StatusCode::from_u16(transient).unwrap();
            assert!(matches!(classify(s), Err(NotifyError::Transient(_))), "{s}");
        }
        for permanent in [301, 400, 401, 403, 404, 410] {
            let s = StatusCode::from_u16(permanent).unwrap();
            assert!(matches!(classify(s), Err(NotifyError::Permanent(_))), "{s}");
        }
    }

    #[test]
    fn endpoints_keep_the_prefix_and_escape_segments() {
        let base = base_url("https://example.org").unwrap();
        assert_eq!(
            endpoint(&base, &["bot123:AB-c_d", "sendMessage"]).as_str(),
            "https://example.org/bot123:AB-c_d/sendMessage"
        );
        let base = base_url("http://127.0.0.1:8080/ntfy/").unwrap();
        assert_eq!(
            endpoint(&base, &[""]).as_str(),
            "http://127.0.0.1:8080/ntfy/"
        );
        assert_eq!(
            endpoint(&base, &["a b/c"]).as_str(),
            "http://127.0.0.1:8080/ntfy/a%20b%2Fc"
        );
        for bad in ["ftp://x", "https://x/?token=1", "https://x/#f", "x"] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_explained_failure_keeps_the_status_rule() {
        use warren_harness::http::{HttpServer, Reply};
        let server = HttpServer::start(vec![
            Reply::Full(400, vec![], r#"{"why":"bad user"}"#.into()),
            Reply::Full(429, vec![], r#"{"wait":7}"#.into()),
            Reply::Full(429, vec![("Retry-After".into(), "3".into())], String::new()),
            Reply::Full(500, vec![], "oops\n".into()),
        ]);
        let client = client().unwrap();
        let explain = |f: &Failed| {
            let v = f.json().unwrap_or_default();
            Explanation {
                said: v["why"].as_str().map(str::to_owned),
                wait: v["wait"].as_u64().map(Duration::from_secs),
            }
        };
        let mut errors = Vec::new();
        for _ in 0..4 {
            let request = client.post(server.url("/x"));
            errors.push(send_explained(request, "svc", explain).await.unwrap_err());
        }
        assert_eq!(
            errors,
            [
                NotifyError::Permanent("svc: HTTP 400 Bad Request: \"bad user\"".into()),
                NotifyError::Throttled(
                    "svc: HTTP 429 Too Many Requests: \"{\\\"wait\\\":7}\"".into(),
                    Duration::from_secs(7)
                ),
                NotifyError::Throttled(
                    "svc: HTTP 429 Too Many Requests".into(),
                    Duration::from_secs(3)
                ),
                NotifyError::Transient("svc: HTTP 500 Internal Server Error: \"oops\"".into()),
            ]
        );
    }
}
