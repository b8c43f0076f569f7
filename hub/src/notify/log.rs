//! `type = "log"`: writes the notification to the hub's own log (journald, syslog).

use serde::Deserialize;

use super::{Notification, NotifierName, NotifyError};

/// `[notifier.NAME] type = "log"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {}

/// The built notifier.
#[derive(Debug)]
pub struct LogNotifier {
    name: NotifierName,
}

impl LogNotifier {
    /// Builds it.
    pub fn build(name: &NotifierName, _: &LogConfig) -> Self {
        Self { name: name.clone() }
    }

    /// Logs at info level.
    ///
    /// # Errors
    /// Never.
    pub fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        tracing::info!(notifier = %self.name, id = %n.envelope.id, title = %n.title, message = %n.message, "Notification.");
        Ok(())
    }
}
