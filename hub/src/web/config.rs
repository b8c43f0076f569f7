//! `[web]`: where the page, `/api/v1` and `/metrics` are served, and what protects them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Broker;
use crate::recent::Retention;

/// `[web]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// `address:port`; loopback unless TLS and a token protect it.
    pub listen: Option<SocketAddr>,
    /// Serve HTTPS. Default: on for any address but loopback.
    pub tls: Option<bool>,
    /// The certificate (PEM). Default: the broker's `cert_file`.
    pub cert_file: Option<PathBuf>,
    /// Its key. Default: the broker's `key_file`.
    pub key_file: Option<PathBuf>,
    /// A file holding the token (or password) every request must carry.
    pub token_file: Option<PathBuf>,
    /// How often the page reloads itself.
    #[serde(default, with = "humantime_serde")]
    pub refresh: Option<Duration>,
    /// How long events are listed.
    #[serde(default, with = "humantime_serde")]
    pub keep: Option<Duration>,
    /// How many events are listed at most.
    pub keep_events: Option<u64>,
}

/// `[web]` (or the older `[metrics]`), validated.
#[derive(Debug, Clone)]
pub struct Web {
    /// Where.
    pub listen: SocketAddr,
    /// The page and `/api/v1` besides `/metrics`: false for a `[metrics]` listener, which
    /// serves the counters alone, as it did before the page existed.
    pub page: bool,
    /// Certificate and key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The token file.
    pub token_file: Option<PathBuf>,
    /// The page's reload interval.
    pub refresh: Duration,
    /// What the event list keeps.
    pub retention: Retention,
}

const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
const DEFAULT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_KEEP_EVENTS: u64 = 10_000;
/// A store scan per page, and each record a few hundred bytes: past this, use a log system.
const MAX_KEEP_EVENTS: u64 = 1_000_000;

impl WebConfig {
    /// Checks it against the broker (whose certificate is the default). `metrics` is the
    /// older `[metrics] listen`: without `[web]` it serves `/metrics` alone, unguarded as it
    /// always was (counters, no login). `None` when nothing is served.
    ///
    /// # Errors
    /// `(key, reason)`.
    pub fn validate(
        self,
        metrics: Option<SocketAddr>,
        broker: &Broker,
    ) -> Result<Option<Web>, (&'static str, String)> {
        let err = |k, r: &str| Err((k, r.to_owned()));
        let listen = match (self.listen, metrics) {
            (Some(_), Some(_)) => {
                return err(
                    "metrics.listen",
                    "is not needed with web.listen, which serves /metrics too",
                );
            }
            (Some(a), None) => a,
            (None, Some(listen)) if self.is_empty() => {
                return Ok(Some(Web {
                    listen,
                    page: false,
                    tls: None,
                    token_file: None,
                    refresh: DEFAULT_REFRESH,
                    retention: Retention::NONE,
                }));
            }
            (None, _) => {
                return if self.is_empty() {
                    Ok(None)
                } else {
                    err("web.listen", "is needed for the other [web] keys")
                };
            }
        };
        let local = listen.ip().is_loopback();
        let tls = self.tls.unwrap_or(!local);
        if !local && !tls {
            return err(
                "web.tls",
                "must be on for an address other than loopback: the page lists every login",
            );
        }
        if !local && self.token_file.is_none() {
            return err(
                "web.token_file",
                "is needed for an address other than loopback: the page lists every login",
            );
        }
        let tls = if tls {
            let broker_pair = match broker {
                Broker::Embedded(b) => b
                    .listen_tls
                    .as_ref()
                    .map(|l| (l.cert_file.clone(), l.key_file.clone())),
                Broker::External(_) => None,
            };
            match (self.cert_file, self.key_file, broker_pair) {
                (Some(c), Some(k), _) => Some((c, k)),
                (None, None, Some(pair)) => Some(pair),
                (Some(_), None, _) | (None, Some(_), _) => {
                    return err("web.cert_file", "and web.key_file go together");
                }
                (None, None, None) => {
                    return err(
                        "web.cert_file",
                        "and web.key_file are needed for TLS (there is no broker listen_tls certificate to use)",
                    );
                }
            }
        } else {
            for (set, key) in [
                (self.cert_file.is_some(), "web.cert_file"),
                (self.key_file.is_some(), "web.key_file"),
            ] {
                if set {
                    return err(key, "is only used with TLS (tls = false is set)");
                }
            }
            None
        };
        let refresh = self.refresh.unwrap_or(DEFAULT_REFRESH);
        if refresh < Duration::from_secs(1) {
            return err("web.refresh", "must be at least 1s");
        }
        let keep_events = self.keep_events.unwrap_or(DEFAULT_KEEP_EVENTS);
        if !(1..=MAX_KEEP_EVENTS).contains(&keep_events) {
            return Err(("web.keep_events", format!("must be 1 to {MAX_KEEP_EVENTS}")));
        }
        let keep = self.keep.unwrap_or(DEFAULT_KEEP);
        if keep.is_zero() {
            return err("web.keep", "must be more than 0");
        }
        Ok(Some(Web {
            listen,
            page: true,
            tls,
            token_file: self.token_file,
            refresh,
            retention: Retention { keep, keep_events },
        }))
    }

    /// Whether no key is set.
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
