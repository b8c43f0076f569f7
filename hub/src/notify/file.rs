//! `type = "file"`: appends the message as one line, as mqttwarn's file service does.
//!
//! The file is opened for each write, so a logrotate that moves it away is followed without a
//! signal; appends with `O_APPEND` do not interleave. The delivery loop hands it a batch of
//! notifications, written as one `write` of many lines. Before writing, the sink says where the
//! lines will land ([`Mark`]: file, offset, length, digest) so the loop can record it: after a
//! crash, [`FileNotifier::landed`] reads the file back and tells whether the batch was written.
//! A write cut short (a full disk, a crash between two pages) is cut off the file again, so a
//! batch written twice leaves each line once. This counts on the hub being the file's only
//! writer, and on the file not being rotated between a crash and the restart.
//!
//! A write runs on the blocking pool and cannot be interrupted: on a hung filesystem (a dead
//! NFS server) it outlives the delivery loop's timeout. So the sink keeps the write it started,
//! and the retry waits for that one instead of starting another: at most one thread is stuck
//! per file notifier, and a write that lands late counts as delivered rather than being
//! written twice.

use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
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

/// Lines being appended, for a batch of events.
#[derive(Debug)]
struct Pending {
    /// The caller's key and the event of each line.
    lines: Vec<(u64, EventId)>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Where a batch of lines goes: enough to find and check them after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    dev: u64,
    ino: u64,
    offset: u64,
    len: u64,
    sha256: String,
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

    /// Appends one line.
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let id = n.envelope.id;
        // A late write that landed may be another notification's: then this one is written.
        for _ in 0..2 {
            if self.append(&[(0, n)], |_| {}).await?.contains(&(0, id)) {
                return Ok(());
            }
        }
        Err(NotifyError::Transient(
            "an earlier write was in the way".into(),
        ))
    }
}

impl FileNotifier {
    /// Appends one line per notification, in one write; newlines inside a message are escaped
    /// so one event stays one line. Each notification comes with a key of the caller's (the
    /// outbox seq). `mark` is called, on the blocking pool, with where the lines will land,
    /// before they are written. Returns the key and event of every line written: this batch's,
    /// or those of an earlier attempt that timed out and has landed since (this batch is then
    /// not written; the caller records those and asks again). Every I/O error is transient: a
    /// full disk may be freed.
    ///
    /// # Errors
    /// When the file cannot be opened or written.
    pub async fn append(
        &self,
        batch: &[(u64, &Notification)],
        mark: impl FnOnce(&Mark) + Send + 'static,
    ) -> Result<Vec<(u64, EventId)>, NotifyError> {
        let mut writing = self.writing.lock().await;
        if let Some(earlier) = writing.as_mut() {
            // Awaiting through `&mut` leaves the task in place if this attempt is dropped too.
            let landed = matches!((&mut earlier.task).await, Ok(Ok(())));
            let lines = std::mem::take(&mut earlier.lines);
            *writing = None;
            if landed {
                return Ok(lines);
            }
        }
        let mut bytes = Vec::new();
        for (_, n) in batch {
            let line = if self.with_title {
                format!("{}: {}", n.title, n.message)
            } else {
                n.message.clone()
            };
            bytes.extend_from_slice(line.replace('\n', "\\n").as_bytes());
            bytes.push(b'\n');
        }
        let path = self.path.clone();
        let task = tokio::task::spawn_blocking(move || write(&path, &bytes, mark));
        let lines = batch.iter().map(|(k, n)| (*k, n.envelope.id)).collect();
        let write = writing.insert(Pending { lines, task });
        let result = (&mut write.task).await;
        let lines = std::mem::take(&mut write.lines);
        *writing = None;
        match result {
            Ok(Ok(())) => Ok(lines),
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

    /// Whether the lines `mark` describes are in the file, as they were to be written; `None`
    /// when that cannot be told (the file cannot be read). A write cut short by a crash is
    /// cut off the file, so that writing the batch again leaves each line once.
    pub async fn landed(&self, mark: &Mark) -> Option<bool> {
        let (path, mark) = (self.path.clone(), mark.clone());
        let check = move || -> std::io::Result<bool> {
            let file = match std::fs::File::open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                opened => opened?,
            };
            let meta = file.metadata()?;
            let end = mark.offset.saturating_add(mark.len);
            if (meta.dev(), meta.ino()) != (mark.dev, mark.ino) || meta.len() <= mark.offset {
                return Ok(false);
            }
            if meta.len() < end {
                // Only this batch was being appended past `offset`: the hub is the one writer.
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(mark.offset)?;
                return Ok(false);
            }
            let mut bytes = vec![0; usize::try_from(mark.len).unwrap_or(usize::MAX)];
            file.read_exact_at(&mut bytes, mark.offset)?;
            Ok(digest(&bytes) == mark.sha256)
        };
        tokio::task::spawn_blocking(check).await.ok()?.ok()
    }
}

fn write(path: &Path, lines: &[u8], mark: impl FnOnce(&Mark)) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // The hub is the file's one writer, so its length now is where the lines will land.
    let meta = file.metadata()?;
    let offset = meta.len();
    mark(&Mark {
        dev: meta.dev(),
        ino: meta.ino(),
        offset,
        len: lines.len() as u64,
        sha256: digest(lines),
    });
    let written = file.write_all(lines);
    if written.is_err() {
        // A write cut short (a full disk) is taken back, so the retry leaves each line once.
        if let Ok(now) = file.metadata().map(|m| m.len())
            && now > offset
            && now < offset + lines.len() as u64
        {
            let _ = file.set_len(offset);
        }
    }
    written
}

fn digest(bytes: &[u8]) -> String {
    warren_daemon::tls::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
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
