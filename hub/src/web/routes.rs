//! One request: who may ask (the token, a loopback host name), what they asked for, and the
//! headers every answer carries.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use subtle::ConstantTimeEq as _;
use warren_daemon::Secret;

use crate::recent::{self, Cursor};
use crate::status::Source;

/// Events per page when the request does not say.
const DEFAULT_LIMIT: usize = 50;
/// Events per page at most.
const MAX_LIMIT: usize = 500;
/// The page's style sheet, served from `/style.css` so the page needs no inline style.
const STYLE: &str = include_str!("style.css");
/// The page runs no script and loads nothing but its style sheet.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the listener serves, and to whom.
#[derive(Debug)]
pub struct Site {
    /// Status snapshots and the store.
    pub source: Arc<Source>,
    /// What every request must carry, if set.
    pub token: Option<Secret>,
    /// The page and `/api/v1` besides `/metrics` (not for a `[metrics]` listener).
    pub page: bool,
    /// How often the page reloads itself.
    pub refresh: Duration,
}

type Answer = Response<Full<Bytes>>;

/// Answers one request.
pub async fn respond(
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    site: Arc<Site>,
) -> Result<Answer, Infallible> {
    let mut resp = answer(&req, peer, site).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    Ok(resp)
}

async fn answer(req: &Request<hyper::body::Incoming>, peer: SocketAddr, site: Arc<Site>) -> Answer {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only: GET and HEAD only\n",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path();
    let refused = &site.source.stats.refused;
    match &site.token {
        Some(token) => match credentials(req.headers()) {
            Some(given) if matches(&given, token) => {}
            given => {
                if given.is_some() {
                    refused.refuse("a web request", "web_bad_token", &peer, &path);
                } else {
                    // What a browser sends first, before it asks for the password: no news.
                    refused.count("web_no_token", 1);
                }
                let mut resp = text(
                    StatusCode::UNAUTHORIZED,
                    "a token is needed: Authorization: Bearer TOKEN, or the token as password\n",
                );
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"warren hub\", charset=\"UTF-8\""),
                );
                return resp;
            }
        },
        // The counters alone, as a `[metrics]` listener always served them.
        None if !site.page => {}
        None if !names_loopback(req) => {
            refused.refuse("a web request", "web_host", &peer, &path);
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                "without a token, ask for a loopback address or localhost\n",
            );
        }
        None => {}
    }
    if !site.page && path != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: this listener serves /metrics\n",
        );
    }
    let query = Query::parse(req.uri().query());
    match path {
        "/" => match query.before() {
            Ok(before) => {
                let refresh = site.refresh;
                blocking(&site, move |s| {
                    let page =
                        recent::page(&s.inbox, before, DEFAULT_LIMIT).map_err(|e| e.to_string())?;
                    let html = super::page::render(&s.snapshot(), &page, before.is_some(), refresh);
                    let mut resp = Response::new(Full::new(Bytes::from(html)));
                    set_type(&mut resp, "text/html; charset=utf-8");
                    resp.headers_mut().insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(PAGE_POLICY),
                    );
                    Ok(resp)
                })
                .await
            }
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        },
        "/style.css" => {
            let mut resp = Response::new(Full::new(Bytes::from_static(STYLE.as_bytes())));
            set_type(&mut resp, "text/css; charset=utf-8");
            resp
        }
        "/metrics" => {
            blocking(&site, |s| {
                let mut resp = Response::new(Full::new(Bytes::from(crate::metrics::render(
                    &s.snapshot(),
                ))));
                set_type(&mut resp, "text/plain; version=0.0.4");
                Ok(resp)
            })
            .await
        }
        "/api/v1/status" => blocking(&site, |s| Ok(json(StatusCode::OK, &s.snapshot()))).await,
        "/api/v1/events" => match (query.before(), query.limit()) {
            (Ok(before), Ok(limit)) => {
                blocking(&site, move |s| {
                    let page = recent::page(&s.inbox, before, limit).map_err(|e| e.to_string())?;
                    Ok(json(StatusCode::OK, &page))
                })
                .await
            }
            (Err(e), _) | (_, Err(e)) => json(StatusCode::BAD_REQUEST, &ApiError { error: e }),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Runs `f` on the blocking pool (it reads the store); a failure is a 500, logged.
async fn blocking(
    site: &Site,
    f: impl FnOnce(&Source) -> Result<Answer, String> + Send + 'static,
) -> Answer {
    let source = site.source.clone();
    let error = match tokio::task::spawn_blocking(move || f(&source)).await {
        Ok(Ok(resp)) => return resp,
        Ok(Err(e)) => e,
        Err(e) => e.to_string(),
    };
    tracing::error!(%error, "Answering a web request failed.");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the hub could not read its store\n",
    )
}

/// What the request offers as the token, if anything: a bearer token, or the password of HTTP
/// Basic authentication (any user name), which a browser asks for by itself. Something
/// unreadable counts as a wrong token.
fn credentials(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let text = String::from_utf8_lossy(value);
    let (scheme, rest) = text.split_once(' ').unwrap_or((&text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    let password = scheme
        .eq_ignore_ascii_case("basic")
        .then(|| base64::engine::general_purpose::STANDARD.decode(rest).ok())
        .flatten()
        .and_then(|d| {
            d.iter()
                .position(|&b| b == b':')
                .map(|i| d[i + 1..].to_vec())
        });
    Some(password.unwrap_or_default())
}

/// Whether `given` is the token. Digests are compared, in constant time, so neither the
/// token's bytes nor its length show in the answer's timing.
fn matches(given: &[u8], token: &Secret) -> bool {
    let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
    digest(given)
        .as_ref()
        .ct_eq(digest(token.expose().as_bytes()).as_ref())
        .into()
}

/// Whether the request's host is `localhost` or a loopback address: what a browser sends when
/// the page is opened through loopback, and not what it sends to a rebound domain name.
fn names_loopback(req: &Request<hyper::body::Incoming>) -> bool {
    let host = req
        .uri()
        .host()
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok());
    host.is_some_and(is_loopback_host)
}

fn is_loopback_host(host: &str) -> bool {
    let port = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((name, "")) => name,
            Some((name, rest)) if rest.strip_prefix(':').is_some_and(port) => name,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, p)) if port(p) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The query's `before` and `limit`.
struct Query {
    before: Option<String>,
    limit: Option<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let mut q = Self {
            before: None,
            limit: None,
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "before" => q.before = Some(v.into_owned()),
                "limit" => q.limit = Some(v.into_owned()),
                _ => {}
            }
        }
        q
    }

    fn before(&self) -> Result<Option<Cursor>, String> {
        self.before.as_deref().map(str::parse).transpose()
    }

    fn limit(&self) -> Result<usize, String> {
        match self.limit.as_deref().map(str::parse::<usize>) {
            None => Ok(DEFAULT_LIMIT),
            Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(format!("limit must be a number from 1 to {MAX_LIMIT}")),
        }
    }
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

fn json(status: StatusCode, body: &impl Serialize) -> Answer {
    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(body).unwrap_or_default(),
    )));
    *resp.status_mut() = status;
    set_type(&mut resp, "application/json");
    resp
}

fn text(status: StatusCode, body: &str) -> Answer {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = status;
    set_type(&mut resp, "text/plain; charset=utf-8");
    resp
}

fn set_type(resp: &mut Answer, content_type: &'static str) {
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        h
    }

    fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
        credentials(headers).is_some_and(|given| matches(&given, token))
    }

    #[test]
    fn the_token_is_taken_as_bearer_or_as_a_basic_password() {
        let token = Secret::new("s3cret-t0ken");
        let basic = |creds: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(creds)
            )
        };
        for ok in [
            "Bearer s3cret-t0ken".to_owned(),
            "bearer  s3cret-t0ken".to_owned(),
            basic("anyone:s3cret-t0ken"),
            basic(":s3cret-t0ken"),
        ] {
            assert!(authorized(&headers(&ok), &token), "{ok}");
        }
        for bad in [
            "Bearer s3cret-t0ke".to_owned(),
            "Bearer s3cret-t0ken2".to_owned(),
            "Bearer ".to_owned(),
            "s3cret-t0ken".to_owned(),
            "Token s3cret-t0ken".to_owned(),
            basic("s3cret-t0ken"),
            basic("s3cret-t0ken:wrong"),
            "Basic !!!".to_owned(),
        ] {
            assert!(!authorized(&headers(&bad), &token), "{bad}");
        }
        assert!(!authorized(&HeaderMap::new(), &token));
        assert_eq!(
            credentials(&HeaderMap::new()),
            None,
            "no credentials at all"
        );
        assert_eq!(
            credentials(&headers("Basic !!!")),
            Some(Vec::new()),
            "a wrong one"
        );
    }

    #[test]
    fn only_loopback_names_pass_without_a_token() {
        for ok in [
            "localhost",
            "LOCALHOST:9108",
            "127.0.0.1",
            "127.0.0.1:9108",
            "127.1.2.3:80",
            "[::1]:9108",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9108",
            "localhost.evil.example",
            "192.0.2.1:9108",
            "[2001:db8::1]:9108",
            "[::1]evil",
            "[::1]:x",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn paging_queries_are_checked() {
        let q = |s| Query::parse(Some(s));
        assert_eq!(q("").limit(), Ok(DEFAULT_LIMIT));
        assert_eq!(q("limit=7").limit(), Ok(7));
        for bad in ["limit=0", "limit=501", "limit=x", "limit=-1"] {
            assert!(q(bad).limit().is_err(), "{bad}");
        }
        assert_eq!(q("").before(), Ok(None));
        assert!(q("before=nonsense").before().is_err());
        let c = format!("12-3-{}", warren_proto::EventId::generate());
        assert_eq!(
            q(&format!("before={c}"))
                .before()
                .unwrap()
                .map(|c| c.to_string()),
            Some(c)
        );
    }
}
