//! Notifier sinks: one module each, holding its config and its send; dispatch through a closed
//! enum. Retries, backoff and dead letters are not here but in [`crate::delivery`], once for all.

pub mod exec;
pub mod file;
pub mod log;
pub mod webhook;

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub use crate::router::Notification;

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

/// `[notifier.NAME]`, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NotifierConfig {
    /// Append a line to a file.
    File(file::FileConfig),
    /// Write to the hub's log.
    Log(log::LogConfig),
    /// Run a program with the notification as JSON on stdin.
    Exec(exec::ExecConfig),
    /// HTTP POST.
    Webhook(webhook::WebhookConfig),
}

/// What building a notifier needs.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// One HTTP client for every HTTP-based notifier.
    pub http: reqwest::Client,
    /// One attempt's time limit.
    pub timeout: Duration,
}

impl BuildContext {
    /// A context with a shared HTTP client whose requests end after `timeout`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots).
    pub fn new(timeout: Duration) -> Result<Self, BuildError> {
        // reqwest is built without a default provider (one TLS stack for the whole hub).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("warren-hub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::new("http client", e))?;
        Ok(Self { http, timeout })
    }
}

/// A notifier that could not be built from its config.
#[derive(Debug, Error)]
#[error("notifier {name}: {reason}")]
pub struct BuildError {
    /// Which.
    pub name: String,
    /// Why.
    pub reason: String,
}

impl BuildError {
    /// An error for `name`.
    pub fn new(name: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// One failed delivery attempt.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// Worth retrying: a timeout, a refused connection, a 5xx.
    #[error("{0}")]
    Transient(String),
    /// Will never work: a 4xx, a program that cannot be run.
    #[error("{0}")]
    Permanent(String),
}

/// A built notifier.
#[derive(Debug)]
pub enum Notifier {
    /// See [`file`].
    File(file::FileNotifier),
    /// See [`log`].
    Log(log::LogNotifier),
    /// See [`exec`].
    Exec(exec::ExecNotifier),
    /// See [`webhook`].
    Webhook(webhook::WebhookNotifier),
}

impl Notifier {
    /// Builds a notifier, reading the files its config names.
    ///
    /// # Errors
    /// A [`BuildError`] naming the notifier.
    pub fn build(
        name: &NotifierName,
        cfg: &NotifierConfig,
        cx: &BuildContext,
    ) -> Result<Self, BuildError> {
        Ok(match cfg {
            NotifierConfig::File(c) => Self::File(file::FileNotifier::build(name, c)?),
            NotifierConfig::Log(c) => Self::Log(log::LogNotifier::build(name, c)),
            NotifierConfig::Exec(c) => Self::Exec(exec::ExecNotifier::build(name, c, cx)?),
            NotifierConfig::Webhook(c) => {
                Self::Webhook(webhook::WebhookNotifier::build(name, c, cx)?)
            }
        })
    }

    /// Delivers one notification (one attempt, bounded by the notifier's timeout).
    ///
    /// # Errors
    /// Whether the failure is worth a retry.
    pub async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        match self {
            Self::File(s) => s.send(n).await,
            Self::Log(s) => s.send(n),
            Self::Exec(s) => s.send(n).await,
            Self::Webhook(s) => s.send(n).await,
        }
    }
}
