//! MQTT payloads between edge and hub: the event envelope, the application-level ack, the edge's
//! presence, and the hared-format republish for existing mqttwarn setups.
//!
//! Every payload carries `"v"`; decoders refuse a version they do not know but ignore unknown
//! fields, so a newer peer can add fields without breaking an older one.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DecodeError, Event, EventId};

/// The version this build writes and reads.
pub const VERSION: u32 = 1;

/// Far above any envelope an edge writes; stops a hostile peer from making the hub parse megabytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// One event on its way from an edge to the hub (`warren/v1/event/<site>/<edge_id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`VERSION`].
    pub v: u32,
    /// The event id, the hub's dedup key.
    pub id: EventId,
    /// The edge's site.
    pub site: String,
    /// The edge's id.
    pub edge: String,
    /// When the edge accepted the datagram, in milliseconds since the Unix epoch.
    pub received: u64,
    /// The datagram's source IP address.
    pub remote: String,
    /// Whether the datagram carried a valid signature.
    pub signed: bool,
    /// Every field of the datagram.
    pub event: Event,
}

/// The hub's acknowledgement that these events are durable (`warren/v1/ack/<edge_id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// [`VERSION`].
    pub v: u32,
    /// Ids the edge may now delete.
    pub ids: Vec<EventId>,
}

/// Whether an edge is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    /// Connected and reporting.
    Online,
    /// Disconnected: the last-will, or a clean shutdown.
    Offline,
}

/// An edge's retained status (`warren/v1/status/<edge_id>`); its last-will has `state: offline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// [`VERSION`].
    pub v: u32,
    /// Online, or offline.
    pub state: PresenceState,
    /// The edge's id.
    pub edge: String,
    /// The edge's site.
    pub site: String,
    /// The edge's software version.
    #[serde(default)]
    pub version: String,
    /// Events waiting in its queue.
    #[serde(default)]
    pub queue_depth: u64,
    /// Bytes those events take.
    #[serde(default)]
    pub queue_bytes: u64,
    /// Age of the oldest queued event, in milliseconds.
    #[serde(default)]
    pub oldest_age_ms: Option<u64>,
    /// When this status was written, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub ts: u64,
    /// What keeps the edge from accepting events now, if anything: [`DISK_FULL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// [`Presence::problem`] of an edge whose disk is full: it refuses new events and still
/// forwards the ones it holds.
pub const DISK_FULL: &str = "disk_full";

macro_rules! versioned_json {
    ($($t:ty),*) => {$(
        impl $t {
            /// The JSON payload.
            pub fn encode(&self) -> Vec<u8> {
                // These types hold only strings, numbers and JSON values: serialising cannot fail.
                serde_json::to_vec(self).unwrap_or_default()
            }

            /// Parses a payload, refusing versions other than [`VERSION`].
            ///
            /// # Errors
            /// A [`DecodeError`] for oversized, non-UTF-8, non-JSON or ill-typed payloads.
            pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                decode_versioned(bytes, |decoded: &Self| decoded.v)
            }
        }
    )*};
}

versioned_json!(Envelope, Ack, Presence);

fn decode_versioned<T: DeserializeOwned>(
    bytes: &[u8],
    version: impl Fn(&T) -> u32,
) -> Result<T, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_PAYLOAD,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
    // One pass for a payload of this version. Anything else is read again as a JSON value, to
    // say what is wrong with it (an unknown version before an unknown shape). An array would
    // fill the struct's fields in order: only an object is one.
    if text.trim_start().starts_with('{')
        && let Ok(decoded) = serde_json::from_str::<T>(text)
        && version(&decoded) == VERSION
    {
        return Ok(decoded);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let Value::Object(map) = &value else {
        return Err(DecodeError::NotObject);
    };
    match map.get("v") {
        Some(v) if v.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) => return Err(DecodeError::UnsupportedVersion(v.to_string())),
        None => return Err(DecodeError::MissingField("v")),
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Json(e.to_string()))
}

impl Envelope {
    /// The hared format on `logging/hare`: the datagram's fields plus `"remote"`, so an existing
    /// mqttwarn configuration keeps working against the hub's broker.
    pub fn legacy_republish(&self) -> Vec<u8> {
        let mut fields = self.event.fields().clone();
        for key in ["v", "id", "kind"] {
            fields.shift_remove(key);
        }
        fields.insert("remote".into(), self.remote.clone().into());
        serde_json::to_vec(&fields).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    fn envelope() -> Envelope {
        let mut event = Event::new(Kind::Login, 1_795_708_571);
        event
            .set_str("hostname", Some("vm"))
            .set_str("user", Some("dan"));
        Envelope {
            v: VERSION,
            id: event.legacy_id(),
            site: "home".into(),
            edge: "gw".into(),
            received: 1,
            remote: "192.0.2.10".into(),
            signed: false,
            event,
        }
    }

    #[test]
    fn round_trips() {
        let e = envelope();
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let a = Ack {
            v: VERSION,
            ids: vec![e.id, EventId::generate()],
        };
        assert_eq!(Ack::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn versions_and_types_are_checked() {
        assert_eq!(
            Ack::decode(br#"{"v":2,"ids":[]}"#).unwrap_err().reason(),
            "bad_version"
        );
        assert_eq!(
            Ack::decode(br#"{"ids":[]}"#).unwrap_err().reason(),
            "bad_field"
        );
        assert_eq!(
            Ack::decode(br#"{"v":1,"ids":["x"]}"#).unwrap_err().reason(),
            "not_json"
        );
        assert_eq!(
            Ack::decode(br#"{"v":1,"ids":[],"later":true}"#)
                .unwrap()
                .ids
                .len(),
            0
        );
        let bad_event = br#"{"v":1,"id":"000102030405060708090a0b0c0d0e0f","site":"s","edge":"e","received":1,"remote":"r","signed":false,"event":{"tst":"x"}}"#;
        assert!(
            Envelope::decode(bad_event)
                .unwrap_err()
                .to_string()
                .contains("tst")
        );
    }

    #[test]
    fn only_an_object_is_a_payload() {
        // serde would fill a struct's fields from an array, in order.
        assert_eq!(
            Ack::decode(br#"[1,[]]"#).unwrap_err().reason(),
            "not_object"
        );
        let e = envelope();
        let fields: Vec<Value> = serde_json::to_value(&e)
            .unwrap()
            .as_object()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let as_array = serde_json::to_vec(&fields).unwrap();
        assert_eq!(
            Envelope::decode(&as_array).unwrap_err().reason(),
            "not_object"
        );
        // Whitespace before the object is still JSON.
        assert_eq!(
            Envelope::decode(&[b" \n".as_slice(), &e.encode()].concat()).unwrap(),
            e
        );
    }

    #[test]
    fn legacy_republish_is_the_hared_format() {
        let out: Value = serde_json::from_slice(&envelope().legacy_republish()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"tst":1_795_708_571,"hostname":"vm","user":"dan","remote":"192.0.2.10"})
        );
    }
}
