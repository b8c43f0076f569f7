//! Passwords and tokens: read from files, never printed.

use std::io;
use std::path::Path;

/// A password or token: its `Debug` and `Display` print `***`, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Reads a secret file: its UTF-8 text without the trailing line break, as `echo` or an
    /// editor leaves it. A file other users can read is warned about.
    ///
    /// # Errors
    /// When the file cannot be read, is not UTF-8, or holds nothing.
    pub fn read(path: &Path) -> io::Result<Self> {
        let bytes = std::fs::read(path)?;
        crate::files::warn_if_exposed(path);
        let text = String::from_utf8(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))?;
        let secret = text.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the file is empty",
            ));
        }
        Ok(Self(secret.to_owned()))
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_trims_the_line_break_and_hides_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\r\n").unwrap();
        let s = Secret::read(&path).unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(
            (format!("{s:?}"), s.to_string()),
            ("***".into(), "***".into())
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(
            Secret::read(&path)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(
            Secret::read(&path)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        assert!(Secret::read(&dir.path().join("missing")).is_err());
    }
}
