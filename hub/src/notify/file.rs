//! `type = "file"`: appends the message as one line, as mqttwarn's file service does.
//!
//! The file is opened for each line, so a logrotate that moves it away is followed without a
//! signal; appends of one line with `O_APPEND` do not interleave.

use std::path::PathBuf;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};

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

impl Sink for FileNotifier {
    type Config = FileConfig;

    /// Checks that the directory exists or can be created.
    fn build(name: &NotifierName, c: &FileConfig, _: &BuildContext) -> Result<Self, BuildError> {
        if let Some(dir) = c.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| BuildError::new(name, "path", format!("{}: {e}", dir.display())))?;
        }
        Ok(Self {
            path: c.path.clone(),
            with_title: c.with_title,
        })
    }

    /// Appends one line; newlines inside the message are escaped so one event stays one
    /// line. Every I/O error is transient: a full disk may be freed.
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let mut line = if self.with_title {
            format!("{}: {}", n.title, n.message)
        } else {
            n.message.clone()
        };
        line = line.replace('\n', "\\n");
        line.push('\n');
        let failed =
            |e: std::io::Error| NotifyError::Transient(format!("{}: {e}", self.path.display()));
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(failed)?;
        f.write_all(line.as_bytes()).await.map_err(failed)?;
        f.flush().await.map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::notify::Notifier;
    use crate::notify::conformance::{self, Behaviour, Endpoint};
    use crate::testing::notification;

    fn notifier(path: &Path, with_title: bool) -> FileNotifier {
        let name = NotifierName::try_from("f".to_owned()).unwrap();
        let c = FileConfig {
            path: path.to_owned(),
            with_title,
        };
        FileNotifier::build(&name, &c, &BuildContext::new().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn appends_lines_and_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/sshd.log");
        let n = notifier(&path, false);
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

    /// `dir/sub/out.log`; failing is `sub` being a file. Hanging is not staged: a write that
    /// blocks in the kernel (a hung network mount) would hold a blocking-pool thread that no
    /// test can release reliably; the delivery loop's timeout is shown by the other sinks.
    struct Disk {
        dir: tempfile::TempDir,
    }

    impl Disk {
        fn sub(&self) -> PathBuf {
            self.dir.path().join("sub")
        }

        fn out(&self) -> PathBuf {
            self.sub().join("out.log")
        }

        fn aside(&self) -> PathBuf {
            self.dir.path().join("sub.aside")
        }
    }

    impl Endpoint for Disk {
        fn behave(&self, b: Behaviour) -> bool {
            match b {
                Behaviour::Accept => {
                    if self.sub().is_file() {
                        std::fs::remove_file(self.sub()).unwrap();
                        std::fs::rename(self.aside(), self.sub()).unwrap();
                    }
                    true
                }
                Behaviour::Fail => {
                    std::fs::rename(self.sub(), self.aside()).unwrap();
                    std::fs::write(self.sub(), "").unwrap();
                    true
                }
                Behaviour::Hang | Behaviour::Reject => false,
            }
        }

        fn delivered(&self) -> usize {
            std::fs::read_to_string(self.out()).map_or(0, |t| t.lines().count())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conforms() {
        let disk = Disk {
            dir: tempfile::tempdir().unwrap(),
        };
        let n = notifier(&disk.out(), true);
        conformance::run(Notifier::File(n), &disk).await;
        assert!(
            std::fs::read_to_string(disk.out())
                .unwrap()
                .starts_with("login on vm: User ")
        );
    }
}
