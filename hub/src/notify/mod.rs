//! Notifier sinks: one module each, holding its config and its [`Sink`]; dispatch through
//! two closed enums, declared together by [`sinks!`]. Retries, the per-attempt timeout and
//! dead letters are not here but in [`crate::delivery`], once for every sink.
//!
//! Adding a sink: a module with its `XConfig` (serde, `deny_unknown_fields`) and `XNotifier`
//! (implementing [`Sink`]), one line in `sinks!` below, and a test that runs
//! [`conformance::run`] on it.

pub mod exec;
pub mod file;
pub mod gotify;
pub mod http;
pub mod log;
pub mod mqtt;
pub mod ntfy;
pub mod pushover;
pub mod smtp;
pub mod telegram;
pub mod webhook;

#[cfg(test)]
pub mod conformance;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use warren_proto::Envelope;

use crate::template::{Escape, Template};

/// What one notifier is asked to deliver for one event: rendered by the route, kept in the
/// outbox until delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Rendered title.
    pub title: String,
    /// Rendered message.
    pub message: String,
    /// Rendered priority.
    pub priority: Option<i64>,
    /// The event as the edge sent it.
    pub envelope: Envelope,
}

impl Notification {
    /// Its priority converted to a sink's scale, given as that scale's values for warren's
    /// −2 (lowest) … 2 (emergency), 0 being normal — Pushover's scale, and hare's. Out-of-range
    /// values are clamped.
    pub fn priority_on(&self, scale: [i64; 5]) -> Option<i64> {
        let p = self.priority?.clamp(-2, 2) + 2;
        scale.get(usize::try_from(p).ok()?).copied()
    }

    /// A sink's template rendered for this notification at `now`: the event's fields plus the
    /// route's `title` and `message`, each inserted value escaped for `escape`.
    pub fn render(&self, t: &Template, now: DateTime<Utc>, escape: Escape) -> String {
        t.render_escaped(
            &self.envelope,
            now,
            &[("title", &self.title), ("message", &self.message)],
            escape,
        )
    }

    /// The JSON document webhook and mqtt send by default:
    /// `{"title","message","priority","event"}`.
    pub fn document(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "title": self.title,
            "message": self.message,
            "priority": self.priority,
            "event": self.envelope,
        }))
        .unwrap_or_default()
    }
}

/// One kind of notifier: built once from its config (reading the files it names), then asked
/// to send each notification once per attempt.
pub trait Sink: Sized {
    /// Its `[notifier.NAME]` table.
    type Config;

    /// Builds the sink, reading the files its config names.
    ///
    /// # Errors
    /// A [`BuildError`] naming the config key at fault.
    fn build(name: &NotifierName, c: &Self::Config, cx: &BuildContext) -> Result<Self, BuildError>;

    /// Makes one delivery attempt. It need not bound its own time: the delivery loop drops an
    /// attempt that outlives `[delivery] timeout`, so it must be cancel-safe (no state that a
    /// dropped future leaves half-changed).
    fn send(&self, n: &Notification) -> impl Future<Output = Result<(), NotifyError>> + Send;
}

/// Declares [`NotifierConfig`] (by `type`) and [`Notifier`] with one variant per sink, and the
/// dispatch between them.
macro_rules! sinks {
    ($($(#[$doc:meta])* $variant:ident($config:ty => $sink:ty),)*) => {
        /// `[notifier.NAME]`, by `type`.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum NotifierConfig {
            $($(#[$doc])* $variant($config),)*
        }

        /// A built notifier.
        #[derive(Debug)]
        pub enum Notifier {
            $($(#[$doc])* $variant($sink),)*
        }

        impl Notifier {
            /// Builds the notifier `cfg` describes.
            ///
            /// # Errors
            /// A [`BuildError`] naming the config key at fault.
            pub fn build(
                name: &NotifierName,
                cfg: &NotifierConfig,
                cx: &BuildContext,
            ) -> Result<Self, BuildError> {
                Ok(match cfg {
                    $(NotifierConfig::$variant(c) => Self::$variant(<$sink>::build(name, c, cx)?),)*
                })
            }

            /// Makes one delivery attempt.
            ///
            /// # Errors
            /// Whether the failure is worth a retry.
            pub async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
                match self {
                    $(Self::$variant(s) => s.send(n).await,)*
                }
            }
        }
    };
}

sinks! {
    /// Append a line to a file.
    File(file::FileConfig => file::FileNotifier),
    /// Write to the hub's log.
    Log(log::LogConfig => log::LogNotifier),
    /// Run a program with the notification as JSON on stdin.
    Exec(exec::ExecConfig => exec::ExecNotifier),
    /// HTTP POST.
    Webhook(webhook::WebhookConfig => webhook::WebhookNotifier),
    /// Pushover's message API.
    Pushover(pushover::PushoverConfig => pushover::PushoverNotifier),
    /// Publish to an ntfy topic.
    Ntfy(ntfy::NtfyConfig => ntfy::NtfyNotifier),
    /// A Gotify server's message API.
    Gotify(gotify::GotifyConfig => gotify::GotifyNotifier),
    /// A Telegram bot's sendMessage.
    Telegram(telegram::TelegramConfig => telegram::TelegramNotifier),
    /// A mail through an SMTP server.
    Smtp(smtp::SmtpConfig => smtp::SmtpNotifier),
    /// Publish on an MQTT topic.
    Mqtt(mqtt::MqttConfig => mqtt::MqttNotifier),
}

/// A notifier's name: the `NAME` of `[notifier.NAME]`, 1 to 64 characters of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct NotifierName(String);

impl NotifierName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NotifierName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s))
        } else {
            Err(format!(
                "notifier name `{s}` must be 1 to 64 characters of [a-z0-9_-]"
            ))
        }
    }
}

impl fmt::Display for NotifierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads a secret file named by a sink's config.
///
/// # Errors
/// The path and why it cannot be read (never the file's content).
pub fn read_secret(path: &std::path::Path) -> Result<warren_daemon::Secret, String> {
    warren_daemon::Secret::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// What building a notifier needs.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// One HTTP client for every HTTP-based notifier, made when the first one is built: a hub
    /// with none never needs the platform's trust store.
    http: OnceLock<reqwest::Client>,
    /// The hub's own client of its broker, set by `run` once it exists (notifiers are built
    /// before it, and by `check-config`, which never connects).
    pub hub_bus: Arc<OnceLock<rumqttc::AsyncClient>>,
}

impl BuildContext {
    /// The shared HTTP client, for notifier `name`.
    ///
    /// # Errors
    /// When it cannot be made (no CA certificates on the host, say), as `name`'s error.
    pub fn http(&self, name: &NotifierName) -> Result<reqwest::Client, BuildError> {
        if let Some(client) = self.http.get() {
            return Ok(client.clone());
        }
        let client = http::client().map_err(|e| {
            BuildError::new(
                name,
                "type",
                format!("cannot make an HTTPS client: {}", http::causes(e)),
            )
        })?;
        Ok(self.http.get_or_init(|| client).clone())
    }
}

/// A notifier that could not be built from its config.
#[derive(Debug, Error)]
#[error("notifier {name}: `{key}`: {reason}")]
pub struct BuildError {
    /// Which notifier.
    pub name: String,
    /// The key of its table at fault (`url`, `secret_headers.Authorization`, …).
    pub key: String,
    /// Why.
    pub reason: String,
}

impl BuildError {
    /// An error for the key `key` of notifier `name`.
    pub fn new(name: impl fmt::Display, key: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self {
            name: name.to_string(),
            key: key.into(),
            reason: reason.to_string(),
        }
    }

    /// The errors of notifier `name`, made from a key and a reason: what every sink's `build`
    /// reports through.
    pub fn of(name: &NotifierName) -> impl Fn(&str, &dyn fmt::Display) -> Self + '_ {
        move |key, reason| Self::new(name, key, reason)
    }
}

/// One failed delivery attempt.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// Worth retrying: a timeout, a refused connection, a 5xx.
    #[error("{0}")]
    Transient(String),
    /// The service asked to be left alone for a while (a 429 with Retry-After): retried, but
    /// not before then.
    #[error("{0} (retry after {wait})", wait = humantime::format_duration(*.1))]
    Throttled(String, Duration),
    /// Will never work: a 4xx, a program that cannot be run.
    #[error("{0}")]
    Permanent(String),
}
