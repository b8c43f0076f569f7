//! A real browser for the page's tests: Debian's chromium, headless, each run in a profile of
//! its own (so tests running side by side share nothing), killed if it hangs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Proc, WAIT, which};

/// Headless chromium.
#[derive(Debug, Clone)]
pub struct Browser {
    exe: PathBuf,
}

impl Browser {
    /// Chromium, if installed.
    pub fn find() -> Option<Self> {
        which("chromium")
            .or_else(|| which("chromium-browser"))
            .map(|exe| Self { exe })
    }

    /// The document `url` leads to, as the browser built it once loaded (`--dump-dom`).
    ///
    /// # Panics
    /// When the browser fails or hangs.
    pub fn dump_dom(&self, url: &str) -> String {
        let out = self.run(&["--dump-dom", url]);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A PNG of `url` in a window of `width` × `height` CSS pixels, written to `file`.
    ///
    /// # Panics
    /// When the browser fails, hangs, or writes no PNG.
    pub fn screenshot(&self, url: &str, file: &Path, (width, height): (u32, u32)) {
        self.run(&[
            &format!("--screenshot={}", file.display()),
            &format!("--window-size={width},{height}"),
            url,
        ]);
        let png = std::fs::read(file).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG"),
            "no screenshot in {}",
            file.display()
        );
    }

    /// Runs the browser with `args`; its standard output.
    fn run(&self, args: &[&str]) -> Vec<u8> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "warren-chromium-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile).expect("a browser profile directory");
        let (stdout, stderr) = (profile.join("stdout"), profile.join("stderr"));
        let file = |p: &Path| std::fs::File::create(p).expect("browser output file");
        let mut cmd = Command::new(&self.exe);
        cmd.args([
            "--headless",
            // Root (CI) cannot use chromium's sandbox; the pages are the test's own.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-crash-reporter",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(file(&stdout))
        .stderr(file(&stderr));
        let code = Proc::spawn("chromium", &mut cmd).wait_exit(WAIT);
        let out = std::fs::read(&stdout).unwrap_or_default();
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&profile);
        assert_eq!(code, Some(0), "chromium {args:?} failed:\n{err}");
        out
    }
}
