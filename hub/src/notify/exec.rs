//! `type = "exec"`: runs a program (no shell) with the notification as JSON on stdin.
//!
//! Exit 0 is delivered; any other exit, or a run past the timeout (the program is then
//! killed), is retried; a program that cannot be started at all is a permanent failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{BuildContext, BuildError, Notification, NotifierName, NotifyError};

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
    timeout: Duration,
}

impl ExecNotifier {
    /// Checks the command.
    ///
    /// # Errors
    /// An empty command, or a program path that is not absolute.
    pub fn build(
        name: &NotifierName,
        c: &ExecConfig,
        cx: &BuildContext,
    ) -> Result<Self, BuildError> {
        let Some((program, args)) = c.command.split_first() else {
            return Err(BuildError::new(name, "command is empty"));
        };
        let program = PathBuf::from(program);
        if !program.is_absolute() {
            return Err(BuildError::new(
                name,
                "command[0] must be an absolute path (there is no shell or PATH search)",
            ));
        }
        Ok(Self {
            program,
            args: args.to_vec(),
            timeout: cx.timeout,
        })
    }

    /// Runs the program once.
    ///
    /// # Errors
    /// See the module docs.
    pub async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| NotifyError::Permanent(format!("{}: {e}", self.program.display())))?;
        let input = serde_json::to_vec(n).unwrap_or_default();
        let run = async {
            if let Some(mut stdin) = child.stdin.take() {
                // A program that does not read stdin is fine: ignore a broken pipe.
                let _ = stdin.write_all(&input).await;
            }
            child.wait_with_output().await
        };
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| {
                NotifyError::Transient(format!(
                    "{} timed out after {:?}, killed",
                    self.program.display(),
                    self.timeout
                ))
            })?
            .map_err(|e| NotifyError::Transient(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::notification;

    fn notifier(command: &[&str], timeout: Duration) -> Result<ExecNotifier, BuildError> {
        let name = NotifierName::try_from("x".to_owned()).unwrap();
        let cx = BuildContext::new(timeout).unwrap();
        ExecNotifier::build(
            &name,
            &ExecConfig {
                command: command.iter().map(|s| s.to_string()).collect(),
            },
            &cx,
        )
    }

    #[tokio::test]
    async fn json_on_stdin_and_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        let script = format!("cat > {}", out.display());
        let n = notifier(&["/bin/sh", "-c", &script], Duration::from_secs(5)).unwrap();
        n.send(&notification("dan")).await.unwrap();
        let got: Notification = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got, notification("dan"));

        let failing = notifier(
            &["/bin/sh", "-c", "echo nope >&2; exit 3"],
            Duration::from_secs(5),
        )
        .unwrap();
        let err = failing.send(&notification("dan")).await.unwrap_err();
        assert!(
            matches!(&err, NotifyError::Transient(m) if m.contains("nope")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn timeouts_kill_and_missing_programs_are_permanent() {
        let slow = notifier(&["/bin/sleep", "30"], Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            slow.send(&notification("dan")).await,
            Err(NotifyError::Transient(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
        let missing = notifier(&["/nonexistent/prog"], Duration::from_secs(1)).unwrap();
        assert!(matches!(
            missing.send(&notification("dan")).await,
            Err(NotifyError::Permanent(_))
        ));
        assert!(notifier(&["relative"], Duration::from_secs(1)).is_err());
        assert!(notifier(&[], Duration::from_secs(1)).is_err());
    }
}
