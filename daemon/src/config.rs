//! Reading a TOML config file, and the errors that name the file, the line and the key.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;

/// A config that cannot be used, with enough context to fix it.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type; toml's message carries line, column and key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("{path}: `{key}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key, e.g. `hub.address` or `route[2].notify`.
        key: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// A [`ConfigError::Invalid`].
    pub fn invalid(path: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// A [`ConfigError::Invalid`] for a file that `key` names and that cannot be used:
    /// `hub.toml: `broker.cert_file`: /etc/warren/hub.pem: No such file or directory`.
    pub fn file(path: &Path, key: &str, file: &Path, reason: &dyn std::fmt::Display) -> Self {
        Self::invalid(path, key, format!("{}: {reason}", file.display()))
    }
}

/// Reads `path`.
///
/// # Errors
/// [`ConfigError::Read`].
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses TOML `text` (from `path`, for messages) into `T`.
///
/// # Errors
/// [`ConfigError::Parse`].
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
