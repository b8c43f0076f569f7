//! `type = "log"`: writes the notification to the hub's own log (journald, syslog).

use serde::Deserialize;

use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};

/// `[notifier.NAME] type = "log"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The level it logs at (default `info`).
    #[serde(default)]
    pub level: Level,
}

/// A log level, as mqttwarn's `log` service names its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `debug`.
    Debug,
    /// `info`, the default.
    #[default]
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

/// The built notifier.
#[derive(Debug)]
pub struct LogNotifier {
    name: NotifierName,
    level: Level,
}

impl Sink for LogNotifier {
    type Config = LogConfig;

    fn build(name: &NotifierName, c: &LogConfig, _: &BuildContext) -> Result<Self, BuildError> {
        Ok(Self {
            name: name.clone(),
            level: c.level,
        })
    }

    /// Logs at the configured level; never fails.
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        // tracing's macros take the level as a constant.
        macro_rules! log {
            ($macro:ident) => {
                tracing::$macro!(notifier = %self.name, id = %n.envelope.id, title = %n.title, message = %n.message, "Notification.")
            };
        }
        match self.level {
            Level::Debug => log!(debug),
            Level::Info => log!(info),
            Level::Warn => log!(warn),
            Level::Error => log!(error),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::notify::Notifier;
    use crate::notify::conformance::{self, Behaviour, Endpoint};

    /// The log itself: what the subscriber has written.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Endpoint for Captured {
        fn behave(&self, b: Behaviour) -> bool {
            b == Behaviour::Accept // a log cannot refuse
        }

        fn delivered(&self) -> usize {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains("Notification.") && l.contains("User user"))
                .count()
        }
    }

    impl Captured {
        /// A log capturing this thread's events until the guard is dropped.
        fn installed() -> (Self, tracing::subscriber::DefaultGuard) {
            let log = Self::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            (log, tracing::subscriber::set_default(subscriber))
        }
    }

    // Single-threaded, so the delivery task logs on the thread that holds the subscriber.
    #[tokio::test(flavor = "current_thread")]
    async fn conforms() {
        let (log, _guard) = Captured::installed();
        let name = NotifierName::try_from("log".to_owned()).unwrap();
        let n = LogNotifier::build(&name, &LogConfig::default(), &BuildContext::default()).unwrap();
        conformance::run(Notifier::Log(n), &log).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn logs_at_its_level() {
        let (log, _guard) = Captured::installed();
        let name = NotifierName::try_from("log".to_owned()).unwrap();
        let cfg: LogConfig = toml::from_str("level = \"error\"").unwrap();
        let n = LogNotifier::build(&name, &cfg, &BuildContext::default()).unwrap();
        n.send(&crate::testing::notification("hello"))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        assert!(text.contains("ERROR") && text.contains("hello"), "{text}");
        assert!(toml::from_str::<LogConfig>("level = \"loud\"").is_err());
    }
}
