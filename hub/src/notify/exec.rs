//! `type = "exec"`: runs a program (no shell) with the notification as JSON on stdin.
//!
//! Exit 0 is delivered; any other exit is retried; a program that cannot be started at all
//! is a permanent failure, unless that is only for now: the system is short of resources (file
//! descriptors, processes, memory), or the program file is being written (an upgrade). A run
//! that outlives the attempt timeout is killed, with every process it started: it runs in a
//! process group of its own, and the whole group goes (a shell script's `curl` too).

use std::path::PathBuf;
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError, Sink};

/// `[notifier.NAME] type = "exec"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments: `["/usr/local/bin/page", "--team", "ops"]`.
    pub command: Vec<String>,
}

/// The built notifier.
#[derive(Debug)]
pub struct ExecNotifier {
    program: PathBuf,
    args: Vec<String>,
}

impl Sink for ExecNotifier {
    type Config = ExecConfig;

    /// Checks the command: not empty, an absolute program path.
    fn build(name: &NotifierName, c: &ExecConfig, _: &BuildContext) -> Result<Self, BuildError> {
        let Some((program, args)) = c.command.split_first() else {
            return Err(BuildError::new(name, "command", "is empty"));
        };
        let program = PathBuf::from(program);
        if !program.is_absolute() {
            return Err(BuildError::new(
                name,
                "command",
                "the program must be an absolute path (there is no shell or PATH search)",
            ));
        }
        Ok(Self {
            program,
            args: args.to_vec(),
        })
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // The delivery loop drops an attempt at its timeout: the program goes with it, and
            // so does what it started (see `Group`).
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                let why = format!("{}: {e}", self.program.display());
                if for_now(&e) {
                    NotifyError::Transient(why)
                } else {
                    NotifyError::Permanent(why)
                }
            })?;
        let group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
        let input = serde_json::to_vec(n).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read stdin is fine: ignore a broken pipe.
            let _ = stdin.write_all(&input).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| NotifyError::Transient(e.to_string()))?;
        // Finished on its own: what it left running in the background is its business.
        group.disarm();
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(NotifyError::Transient(format!(
            "{} exited with {}: {}",
            self.program.display(),
            out.status,
            stderr.trim().chars().take(200).collect::<String>()
        )))
    }
}

/// The process group of a run, killed when the attempt is dropped before the run ended. The
/// group's id cannot be reused while any of its processes lives, so the kill reaches only
/// what this run started.
struct Group(Option<i32>);

impl Group {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// EAGAIN, ENOMEM, ENFILE, EMFILE: the program exists, the system is only short of something;
/// ETXTBSY: the program file is open for writing — being upgraded, or, for an instant, held by
/// a process another thread forked while writing it.
fn for_now(e: &std::io::Error) -> bool {
    // ENOMEM, ENFILE, EMFILE and ETXTBSY have the same numbers on Linux and the BSDs; EAGAIN
    // differs, and std reports it as WouldBlock on both.
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ETXTBSY: i32 = 26;
    matches!(
        e.kind(),
        std::io::ErrorKind::OutOfMemory | std::io::ErrorKind::WouldBlock
    ) || matches!(e.raw_os_error(), Some(ENOMEM | ENFILE | EMFILE | ETXTBSY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Notifier;
    use crate::notify::conformance::{self, Behaviour, Endpoint};
    use crate::testing::notification;

    fn notifier(command: &[&str]) -> Result<ExecNotifier, BuildError> {
        let name = NotifierName::try_from("x".to_owned()).unwrap();
        let c = ExecConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
        };
        ExecNotifier::build(&name, &c, &BuildContext::default())
    }

    #[tokio::test]
    async fn json_on_stdin_and_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        let script = format!("cat > {}", out.display());
        let n = notifier(&["/bin/sh", "-c", &script]).unwrap();
        n.send(&notification("dan")).await.unwrap();
        let got: Notification = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got, notification("dan"));

        let failing = notifier(&["/bin/sh", "-c", "echo nope >&2; exit 3"]).unwrap();
        let err = failing.send(&notification("dan")).await.unwrap_err();
        assert!(
            matches!(&err, NotifyError::Transient(m) if m.contains("nope")),
            "{err}"
        );
        let missing = notifier(&["/nonexistent/prog"]).unwrap();
        assert!(matches!(
            missing.send(&notification("dan")).await,
            Err(NotifyError::Permanent(_))
        ));
        assert_eq!(notifier(&["relative"]).unwrap_err().key, "command");
        assert_eq!(notifier(&[]).unwrap_err().key, "command");
    }

    #[test]
    fn resource_shortage_is_transient() {
        assert!(for_now(&std::io::Error::from_raw_os_error(24)));
        assert!(!for_now(&std::io::Error::from(
            std::io::ErrorKind::NotFound
        )));
    }

    #[tokio::test]
    async fn a_run_cut_off_at_the_timeout_takes_what_it_started_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let n = notifier(&["/bin/sh", "-c", &script]).unwrap();
        let dan = notification("dan");
        let attempt = n.send(&dan);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(500), attempt)
                .await
                .is_err()
        );
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let proc = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
        for _ in 0..200 {
            // Gone, or a zombie waiting for init to reap it.
            let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z ") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the background `sleep` {} outlived the attempt", pid.trim());
    }

    #[tokio::test]
    async fn a_program_being_written_is_retried_not_given_up() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrading.sh");
        let mut writing = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&path)
            .unwrap();
        writing.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        let n = notifier(&[path.to_str().unwrap()]).unwrap();
        let err = n.send(&notification("dan")).await.unwrap_err();
        assert!(matches!(err, NotifyError::Transient(_)), "{err}");
        drop(writing);
        // Another test's child, forked before it exec'd, may hold the file open a moment
        // longer: that is the same transient, and the delivery loop would retry it too.
        for _ in 0..100 {
            match n.send(&notification("dan")).await {
                Err(NotifyError::Transient(e)) if e.contains("Text file busy") => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                done => return done.unwrap(),
            }
        }
        panic!("the program stayed busy after it was written");
    }

    /// The Apprise recipe (docs/notifiers.md): `deploy/apprise/warren-apprise` run by this
    /// notifier, Apprise posting to a local server through its `json://` scheme, the URL in
    /// Apprise's config file. Apprise's failure is the notifier's retry.
    #[tokio::test]
    async fn the_apprise_recipe() {
        use warren_harness::http::{HttpServer, Reply};
        let apprise = warren_harness::venv_tool("apprise");
        if !warren_harness::require(
            "apprise (pip install apprise; .ci/run puts it in .venv)",
            apprise.is_some(),
        ) {
            return;
        }
        let apprise = apprise.unwrap();
        let wrapper = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/apprise/warren-apprise"
        );
        let server = HttpServer::start(vec![Reply::Status(200)]);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("apprise.txt");
        std::fs::write(
            &config,
            format!("json://127.0.0.1:{}/hook/s3cret\n", server.port),
        )
        .unwrap();
        let n = notifier(&[
            wrapper,
            "--config",
            config.to_str().unwrap(),
            "--apprise",
            apprise.to_str().unwrap(),
        ])
        .unwrap();
        let mut note = notification("dan");
        note.title = "-t login on vm".into();
        note.priority = Some(2);
        n.send(&note).await.unwrap();
        let req = server.requests().remove(0);
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/hook/s3cret")
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["title"], "-t login on vm");
        assert_eq!(body["message"], "User dan logged into vm");
        assert_eq!(body["type"], "failure");

        server.script(vec![Reply::Status(500)]);
        let err = n.send(&notification("dan")).await.unwrap_err();
        assert!(matches!(err, NotifyError::Transient(_)), "{err:?}");
    }

    /// A script whose behaviour a file sets; rejecting is the script being gone. The script
    /// is written once, before anything runs it: writing a program while another thread
    /// forks can make its exec fail with ETXTBSY.
    struct Script {
        dir: tempfile::TempDir,
    }

    impl Script {
        fn new() -> Self {
            use std::os::unix::fs::PermissionsExt;
            let s = Self {
                dir: tempfile::tempdir().unwrap(),
            };
            let text = format!(
                "#!/bin/sh\ncase \"$(cat {mode})\" in\n  fail) exit 75 ;;\n  hang) exec sleep 60 ;;\nesac\ncat >> {out}\necho >> {out}\n",
                mode = s.file("mode").display(),
                out = s.file("out").display()
            );
            std::fs::write(s.path(), text).unwrap();
            std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            s
        }

        fn path(&self) -> PathBuf {
            self.file("notify.sh")
        }

        fn file(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    impl Endpoint for Script {
        fn behave(&self, b: Behaviour) -> bool {
            let mode = match b {
                Behaviour::Reject => {
                    std::fs::rename(self.path(), self.file("gone.sh")).unwrap();
                    return true;
                }
                Behaviour::Accept => "ok",
                Behaviour::Fail => "fail",
                Behaviour::Hang => "hang",
            };
            std::fs::write(self.file("mode"), mode).unwrap();
            true
        }

        fn delivered(&self) -> usize {
            std::fs::read_to_string(self.file("out")).map_or(0, |t| t.lines().count())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conforms() {
        let script = Script::new();
        let n = notifier(&[script.path().to_str().unwrap()]).unwrap();
        conformance::run(Notifier::Exec(n), &script).await;
    }
}
