//! The ways bytes from the network can be wrong.

use thiserror::Error;

/// Why a datagram or an MQTT payload could not be decoded.
///
/// [`DecodeError::reason`] gives a short stable label for counters and logs.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty payload")]
    Empty,
    /// Larger than the format allows.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Bytes received.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The JSON part is not valid UTF-8.
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    /// Not parseable as JSON (includes nesting deeper than the parser's limit).
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    /// Valid JSON, but not an object.
    #[error("payload is not a JSON object")]
    NotObject,
    /// A `v` this build does not understand.
    #[error("unsupported version {0}")]
    UnsupportedVersion(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type or an invalid value.
    #[error("field `{field}` must be {expected}")]
    BadField {
        /// The field's name.
        field: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
    /// The line after the JSON is not `hmac-sha256 <key-id> <base64 mac>`.
    #[error("malformed signature line")]
    BadSignatureLine,
}

impl DecodeError {
    /// A short, stable label for counting rejections by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge { .. } => "too_large",
            Self::NotUtf8 => "not_utf8",
            Self::Json(_) => "not_json",
            Self::NotObject => "not_object",
            Self::UnsupportedVersion(_) => "bad_version",
            Self::MissingField(_) | Self::BadField { .. } => "bad_field",
            Self::BadSignatureLine => "bad_signature_line",
        }
    }
}

/// Why a decoded datagram was not accepted by signature policy.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// Unsigned, and the policy requires a signature.
    #[error("datagram is not signed")]
    Unsigned,
    /// Signed with a key id not in the key set.
    #[error("unknown key id `{0}`")]
    UnknownKey(String),
    /// The MAC does not match the JSON bytes.
    #[error("signature does not match")]
    BadMac,
    /// `tst` is further from now than the skew window allows.
    #[error("timestamp {tst} is {off_by}s outside the skew window")]
    Stale {
        /// The datagram's `tst`.
        tst: i64,
        /// Seconds between `tst` and now, beyond the window.
        off_by: i64,
    },
    /// An id already seen inside the skew window.
    #[error("event id was already seen (replay)")]
    Replayed,
}

impl VerifyError {
    /// A short, stable label for counting rejections by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadMac => "bad_mac",
            Self::Stale { .. } => "stale",
            Self::Replayed => "replayed",
        }
    }
}
