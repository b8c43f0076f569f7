//! `type = "file"`: appends the message as one line, as mqttwarn's file service does.
//!
//! The file is opened for each line, so a logrotate that moves it away is followed without a
//! signal; appends of one line with `O_APPEND` do not interleave.
//!
//! A write runs on the blocking pool and cannot be interrupted: on a hung filesystem (a dead
//! NFS server) it outlives the delivery loop's timeout. So the sink keeps the write it started,
//! and the retry waits for that one instead of starting another: at most one thread is stuck
//! per file notifier, and a write that lands late counts as delivered rather than being
//! written twice.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use warren_proto::EventId;

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
    /// The write in progress, kept across a timed-out attempt.
    writing: Mutex<Option<Pending>>,
}

/// A line being appended, for one event.
#[derive(Debug)]
struct Pending {
    id: EventId,
    task: JoinHandle<std::io::Result<()>>,
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
            writing: Mutex::new(None),
        })
    }

    /// Appends one line; newlines inside the message are escaped so one event stays one
    /// line. Every I/O error is transient: a full disk may be freed.
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let id = n.envelope.id;
        let mut writing = self.writing.lock().await;
        if let Some(earlier) = writing.as_mut() {
            // Awaiting through `&mut` leaves the task in place if this attempt is dropped too.
            let landed = matches!((&mut earlier.task).await, Ok(Ok(())));
            let same = earlier.id == id;
            *writing = None;
            if landed && same {
                return Ok(());
            }
        }
        let mut line = if self.with_title {
            format!("{}: {}", n.title, n.message)
        } else {
            n.message.clone()
        };
        line = line.replace('\n', "\\n");
        line.push('\n');
        let path = self.path.clone();
        let task = tokio::task::spawn_blocking(move || append(&path, line.as_bytes()));
        let write = writing.insert(Pending { id, task });
        let result = (&mut write.task).await;
        *writing = None;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NotifyError::Transient(format!(
                "{}: {e}",
                self.path.display()
            ))),
            Err(e) => Err(NotifyError::Transient(format!(
                "{}: {e}",
                self.path.display()
            ))),
        }
    }
}

fn append(path: &Path, line: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line)
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
        FileNotifier::build(&name, &c, &BuildContext::default()).unwrap()
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

    /// `dir/sub/out.log`. Failing is `sub` being a file; hanging is `out.log` being a FIFO
    /// nobody reads, so an open for writing blocks in the kernel as on a dead network mount.
    struct Disk {
        dir: tempfile::TempDir,
        /// Lines the hung write delivered once released.
        through_fifo: std::sync::atomic::AtomicUsize,
    }

    impl Disk {
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn out(&self) -> PathBuf {
            self.path("sub/out.log")
        }

        fn restore(&self) {
            if self.path("sub").is_file() {
                std::fs::remove_file(self.path("sub")).unwrap();
                std::fs::rename(self.path("sub.aside"), self.path("sub")).unwrap();
            }
            if self.path("out.kept").exists() {
                // The sink waits for its blocked write before it starts another, so nothing
                // writes between these steps: move the FIFO away, put the file back, then read
                // the FIFO, which lets the blocked write finish.
                std::fs::rename(self.out(), self.path("fifo")).unwrap();
                std::fs::rename(self.path("out.kept"), self.out()).unwrap();
                let text = std::fs::read_to_string(self.path("fifo")).unwrap();
                self.through_fifo
                    .fetch_add(text.lines().count(), std::sync::atomic::Ordering::SeqCst);
                std::fs::remove_file(self.path("fifo")).unwrap();
            }
        }
    }

    impl Endpoint for Disk {
        fn behave(&self, b: Behaviour) -> bool {
            self.restore();
            match b {
                Behaviour::Accept => {}
                Behaviour::Fail => {
                    std::fs::rename(self.path("sub"), self.path("sub.aside")).unwrap();
                    std::fs::write(self.path("sub"), "").unwrap();
                }
                Behaviour::Hang => {
                    std::fs::rename(self.out(), self.path("out.kept")).unwrap();
                    let made = std::process::Command::new("mkfifo")
                        .arg(self.out())
                        .status()
                        .unwrap();
                    assert!(made.success(), "mkfifo");
                }
                Behaviour::Reject => return false, // every I/O error may pass
            }
            true
        }

        fn delivered(&self) -> usize {
            let in_file = std::fs::read_to_string(self.out()).map_or(0, |t| t.lines().count());
            in_file + self.through_fifo.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conforms() {
        let disk = Disk {
            dir: tempfile::tempdir().unwrap(),
            through_fifo: 0.into(),
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
