//! `type = "file"`: appends the message as one line, as mqttwarn's file service does.
//!
//! The file is opened for each line, so a logrotate that moves it away is followed without a
//! signal; appends of one line with `O_APPEND` do not interleave.

use std::path::PathBuf;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{BuildError, Notification, NotifierName, NotifyError};

/// `[notifier.NAME] type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file to append to (created if missing, with its directory).
    pub path: PathBuf,
    /// Prefix the title: `title: message`.
    #[serde(default)]
    pub with_title: bool,
}

/// The built notifier.
#[derive(Debug)]
pub struct FileNotifier {
    path: PathBuf,
    with_title: bool,
}

impl FileNotifier {
    /// Checks that the directory exists or can be created.
    ///
    /// # Errors
    /// When it cannot.
    pub fn build(name: &NotifierName, c: &FileConfig) -> Result<Self, BuildError> {
        if let Some(dir) = c.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| BuildError::new(name, format!("{}: {e}", dir.display())))?;
        }
        Ok(Self {
            path: c.path.clone(),
            with_title: c.with_title,
        })
    }

    /// Appends one line; newlines inside the message are escaped so one event stays one line.
    ///
    /// # Errors
    /// I/O errors are transient (a full disk may be freed).
    pub async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let mut line = if self.with_title {
            format!("{}: {}", n.title, n.message)
        } else {
            n.message.clone()
        };
        line = line.replace('\n', "\\n");
        line.push('\n');
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| NotifyError::Transient(format!("{}: {e}", self.path.display())))?;
        f.write_all(line.as_bytes())
            .await
            .map_err(|e| NotifyError::Transient(format!("{}: {e}", self.path.display())))?;
        f.flush()
            .await
            .map_err(|e| NotifyError::Transient(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::notification;

    #[tokio::test]
    async fn appends_lines_and_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/sshd.log");
        let name = NotifierName::try_from("f".to_owned()).unwrap();
        let n = FileNotifier::build(
            &name,
            &FileConfig {
                path: path.clone(),
                with_title: false,
            },
        )
        .unwrap();
        n.send(&notification("dan")).await.unwrap();
        std::fs::rename(&path, dir.path().join("logs/sshd.log.1")).unwrap();
        let mut multi = notification("eve");
        multi.message.push_str("\nsecond line");
        n.send(&multi).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "User eve logged into vm\\nsecond line\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("logs/sshd.log.1")).unwrap(),
            "User dan logged into vm\n"
        );
    }

    #[tokio::test]
    async fn unwritable_is_transient() {
        let name = NotifierName::try_from("f".to_owned()).unwrap();
        let n = FileNotifier::build(
            &name,
            &FileConfig {
                path: "/proc/warren-test".into(),
                with_title: true,
            },
        )
        .unwrap();
        assert!(matches!(
            n.send(&notification("dan")).await,
            Err(NotifyError::Transient(_))
        ));
    }
}
