//! warren's wire contract: every byte that crosses a process boundary is built and parsed here.
//!
//! - [`datagram`]: the UDP datagram from `hare` to `edge`, legacy (the original C hare's JSON) and v2
//!   (with an event id, a kind and an optional HMAC signature line);
//! - [`sign`]: HMAC-SHA256 keys, signing, and verification with a clock-skew window and a replay guard;
//! - [`envelope`]: the MQTT payloads between edge and hub (event envelope, ack, presence) and the
//!   legacy `logging/hare` republish;
//! - [`topic`]: every MQTT topic string.
//!
//! The crate has no async runtime: `hare` depends on it and stays std-only.
#![deny(missing_docs)]

pub mod datagram;
pub mod envelope;
mod error;
mod event;
mod id;
pub mod sign;
pub mod topic;

pub use datagram::{Datagram, MAX_DATAGRAM, MAX_LEGACY_DATAGRAM};
pub use envelope::{Ack, Envelope, Presence, PresenceState};
pub use error::{DecodeError, VerifyError};
pub use event::{Event, Kind};
pub use id::EventId;

/// The UDP port the original hared listened on, and the edge's default.
pub const DEFAULT_PORT: u16 = 8035;
