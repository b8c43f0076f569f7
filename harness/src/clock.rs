//! A wall clock a test can move, for one process: libfaketime (Debian's `faketime`) preloaded
//! into it, reading the offset from a file the test rewrites. The monotonic clock stays real,
//! as it does when an RTC or NTP moves the wall clock.

use std::path::{Path, PathBuf};

use crate::Program;

/// Where Debian installs the library (the multi-threaded build), per architecture.
const LIBRARY_DIR: &str = "/usr/lib";
const LIBRARY: &str = "faketime/libfaketimeMT.so.1";

/// One movable clock; processes started with [`FakeClock::apply`] follow it.
#[derive(Debug)]
pub struct FakeClock {
    file: PathBuf,
}

impl FakeClock {
    /// Whether libfaketime is installed.
    pub fn available() -> bool {
        library().is_some()
    }

    /// A clock at the real time, its offset kept in `file`.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn new(file: &Path) -> Self {
        let clock = Self {
            file: file.to_owned(),
        };
        clock.set("+0");
        clock
    }

    /// Moves the clock to `offset` from the real time: `+1d`, `-1h`, `+0`.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn set(&self, offset: &str) {
        // Written whole and renamed, so the process never reads half an offset.
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n")).expect("clock file");
        std::fs::rename(&tmp, &self.file).expect("clock file");
    }

    /// `program`, running on this clock.
    #[must_use]
    pub fn apply(&self, program: Program) -> Program {
        let library = library().map(|p| p.display().to_string());
        program
            .env("LD_PRELOAD", library.as_deref().unwrap_or_default())
            .env("FAKETIME_TIMESTAMP_FILE", &self.file.display().to_string())
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    }
}

/// The library in `/usr/lib/<triplet>/faketime/`, whatever the machine's architecture.
fn library() -> Option<PathBuf> {
    std::fs::read_dir(LIBRARY_DIR)
        .ok()?
        .flatten()
        .map(|e| e.path().join(LIBRARY))
        .find(|p| p.exists())
}
