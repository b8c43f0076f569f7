//! The UDP datagram from hare to edge.
//!
//! Legacy: the JSON object the original C hare sends, e.g.
//! `{"tst":1795708571,"hostname":"vm","user":"dan","service":"sshd","rhost":"192.0.2.10","tty":"ssh"}`.
//! v2: the same object plus `"v":2`, `"id"` and `"kind"`, optionally followed by a newline and
//! `hmac-sha256 <key-id> <base64 MAC of exactly the JSON bytes>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use crate::sign::{Key, MAC_LEN, Signature};
use crate::{DecodeError, Event, EventId};

/// The most a legacy datagram may hold: the original hared read at most 1024 bytes.
pub const MAX_LEGACY_DATAGRAM: usize = 1024;

/// The largest datagram an edge accepts; v2 alerts may carry longer messages than a login.
/// Kept well below rumqttc's 10 KiB default packet limit once wrapped in an envelope.
pub const MAX_DATAGRAM: usize = 4096;

/// The prefix of a signature line.
const SIGNATURE_SCHEME: &str = "hmac-sha256";

/// Marks a field that was cut to fit the size limit.
const TRUNCATION_MARK: &str = "…";

/// A decoded datagram, not yet checked against a signature policy (see [`crate::sign::Verifier`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Datagram {
    /// Carried by v2, derived for legacy.
    pub id: EventId,
    /// 1 for legacy, 2 for v2.
    pub version: u8,
    /// Every field of the JSON object.
    pub event: Event,
    /// The signature line, if any.
    pub signature: Option<Signature>,
}

impl Datagram {
    /// Decodes one datagram.
    ///
    /// # Errors
    /// Any way the bytes can be wrong gives a [`DecodeError`]; this never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        if bytes.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_DATAGRAM,
            });
        }
        let (json, signature) = split_signature(bytes)?;
        let text = std::str::from_utf8(json).map_err(|_| DecodeError::NotUtf8)?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(DecodeError::NotObject);
        };
        let version = match fields.get("v") {
            None => 1,
            Some(v) if v.as_u64() == Some(2) => 2,
            Some(v) => return Err(DecodeError::UnsupportedVersion(v.to_string())),
        };
        let id = if version == 2 {
            match fields.get("id") {
                Some(Value::String(s)) => s.parse()?,
                Some(_) => {
                    return Err(DecodeError::BadField {
                        field: "id",
                        expected: "32 hex digits",
                    });
                }
                None => return Err(DecodeError::MissingField("id")),
            }
        } else {
            // Filled in below, once the event is validated.
            EventId::from_bytes([0; 16])
        };
        if version == 2 && !fields.contains_key("kind") {
            return Err(DecodeError::MissingField("kind"));
        }
        let event = Event::from_fields(fields)?;
        let id = if version == 1 { event.legacy_id() } else { id };
        Ok(Self {
            id,
            version,
            event,
            signature,
        })
    }
}

/// Splits off a trailing signature line, if the last line is one.
fn split_signature(bytes: &[u8]) -> Result<(&[u8], Option<Signature>), DecodeError> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let Some(nl) = body.iter().rposition(|&b| b == b'\n') else {
        return Ok((bytes, None));
    };
    let line = &body[nl + 1..];
    if !line.starts_with(b"hmac") {
        // Trailing JSON whitespace or garbage: the JSON parser reports it.
        return Ok((bytes, None));
    }
    let line = std::str::from_utf8(line).map_err(|_| DecodeError::BadSignatureLine)?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(SIGNATURE_SCHEME), Some(key_id), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DecodeError::BadSignatureLine);
    };
    if key_id.is_empty() {
        return Err(DecodeError::BadSignatureLine);
    }
    let mac: [u8; MAC_LEN] = BASE64
        .decode(mac)
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or(DecodeError::BadSignatureLine)?;
    let json = &body[..nl];
    Ok((
        json,
        Some(Signature {
            key_id: key_id.to_owned(),
            mac,
            signed_len: json.len(),
        }),
    ))
}

/// Encodes `event` as the original hare would: its fields only, no `v`, `id` or `kind`.
///
/// Long string fields are cut (and end in `…`) so the datagram fits in
/// [`MAX_LEGACY_DATAGRAM`], which the original hared's 1024-byte read requires.
pub fn encode_legacy(event: &Event) -> Vec<u8> {
    let mut fields = event.fields().clone();
    for key in ["v", "id", "kind"] {
        fields.shift_remove(key);
    }
    encode_fitted(fields, MAX_LEGACY_DATAGRAM)
}

/// Encodes a v2 datagram: `v`, `id` and `kind` first, then the event's fields; at most
/// [`MAX_DATAGRAM`] bytes (long fields cut), or [`MAX_LEGACY_DATAGRAM`] when `legacy_size`.
pub fn encode_v2(id: EventId, event: &Event, key: Option<&Key>, legacy_size: bool) -> Vec<u8> {
    let mut fields = Map::new();
    fields.insert("v".into(), 2.into());
    fields.insert("id".into(), id.to_string().into());
    fields.insert("kind".into(), event.kind().as_str().into());
    for (k, v) in event.fields() {
        if !matches!(k.as_str(), "v" | "id" | "kind") {
            fields.insert(k.clone(), v.clone());
        }
    }
    let max = if legacy_size {
        MAX_LEGACY_DATAGRAM
    } else {
        MAX_DATAGRAM
    };
    match key {
        None => encode_fitted(fields, max),
        Some(key) => {
            // "\n" + scheme + " " + id + " " + base64(32 bytes) = 44 characters.
            let line_len = 1 + SIGNATURE_SCHEME.len() + 1 + key.id().len() + 1 + 44;
            let json = encode_fitted(fields, max.saturating_sub(line_len));
            sign(json, key)
        }
    }
}

/// Appends the signature line for `json` to it.
pub fn sign(mut json: Vec<u8>, key: &Key) -> Vec<u8> {
    let mac = key.mac(&json);
    json.push(b'\n');
    json.extend_from_slice(SIGNATURE_SCHEME.as_bytes());
    json.push(b' ');
    json.extend_from_slice(key.id().as_bytes());
    json.push(b' ');
    json.extend_from_slice(BASE64.encode(mac).as_bytes());
    json
}

/// Serialises `fields`, cutting the longest string values until the result fits in `max`.
fn encode_fitted(mut fields: Map<String, Value>, max: usize) -> Vec<u8> {
    // A handful of rounds always suffices for hare's fields; the bound keeps a pathological
    // object (hundreds of tiny fields) from looping: it is then sent oversize and rejected.
    for _ in 0..16 {
        let bytes = to_vec(&fields);
        if bytes.len() <= max {
            return bytes;
        }
        let excess = bytes.len() - max;
        let longest = fields
            .iter_mut()
            .filter(|(k, _)| !matches!(k.as_str(), "v" | "id" | "kind" | "tst"))
            .filter_map(|(_, v)| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .max_by_key(|s| s.len());
        let Some(s) = longest else { return bytes };
        if s.len() <= TRUNCATION_MARK.len() {
            return bytes;
        }
        // Escaping can make a character cost up to six bytes in JSON; cutting by bytes of the
        // raw string may need another round, which the loop gives it.
        let mut keep = s.len().saturating_sub(excess + TRUNCATION_MARK.len());
        while !s.is_char_boundary(keep) {
            keep -= 1;
        }
        s.truncate(keep);
        s.push_str(TRUNCATION_MARK);
    }
    to_vec(&fields)
}

fn to_vec(fields: &Map<String, Value>) -> Vec<u8> {
    // Serialising a map of JSON values cannot fail: keys are strings, values are valid JSON.
    serde_json::to_vec(fields).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    const ORIGINAL: &[u8] = br#"{"tst":1795708571,"hostname":"vm","user":"dan","service":"sshd","rhost":"192.0.2.10","tty":"ssh"}"#;

    #[test]
    fn decodes_the_original_hare_datagram() {
        let d = Datagram::decode(ORIGINAL).unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.event.kind(), &Kind::Login);
        assert_eq!(d.event.get_str("rhost"), Some("192.0.2.10"));
        assert!(d.signature.is_none());
        assert_eq!(encode_legacy(&d.event), ORIGINAL);
    }

    #[test]
    fn key_order_does_not_change_the_legacy_id() {
        let a = Datagram::decode(ORIGINAL).unwrap();
        let b = Datagram::decode(br#"{"tty":"ssh","rhost":"192.0.2.10","service":"sshd","user":"dan","hostname":"vm","tst":1795708571}"#).unwrap();
        assert_eq!(a.id, b.id);
    }

    #[test]
    fn v2_round_trip_and_signature_split() {
        let key = Key::new("k1", b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
        let mut e = Event::new(Kind::Alert, 10);
        e.set_str("title", Some("power"))
            .set_str("message", Some("mains lost\nat site"));
        let id = EventId::generate();
        for key in [None, Some(&key)] {
            let bytes = encode_v2(id, &e, key, false);
            let d = Datagram::decode(&bytes).unwrap();
            assert_eq!(d.id, id);
            assert_eq!(d.version, 2);
            assert_eq!(d.event.kind(), &Kind::Alert);
            assert_eq!(d.event.get_str("message"), Some("mains lost\nat site"));
            assert_eq!(d.signature.is_some(), key.is_some());
        }
    }

    #[test]
    fn malformed_inputs_have_reasons() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (&[b' '; MAX_DATAGRAM + 1], "too_large"),
            (b"{\"tst\":1,\"user\":\"\xff\"}", "not_utf8"),
            (b"{\"tst\":", "not_json"),
            (b"[1,2]", "not_object"),
            (b"{\"v\":3,\"tst\":1}", "bad_version"),
            (b"{\"v\":2,\"tst\":1,\"kind\":\"login\"}", "bad_field"),
            (
                b"{\"v\":2,\"tst\":1,\"id\":\"zz\",\"kind\":\"login\"}",
                "bad_field",
            ),
            (b"{\"tst\":1}\nhmac-sha256 k1", "bad_signature_line"),
            (
                b"{\"tst\":1}\nhmac-sha256 k1 bm90IDMyIGJ5dGVz",
                "bad_signature_line",
            ),
        ];
        for (bytes, reason) in cases {
            let err = Datagram::decode(bytes).unwrap_err();
            assert_eq!(
                err.reason(),
                *reason,
                "{:?}: {err}",
                String::from_utf8_lossy(bytes)
            );
        }
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(
            Datagram::decode(deep.as_bytes()).unwrap_err().reason(),
            "not_json"
        );
    }

    #[test]
    fn long_fields_are_cut_to_the_legacy_limit() {
        let mut e = Event::new(Kind::Login, 1);
        e.set_str("hostname", Some("vm"))
            .set_str("user", Some(&"é".repeat(2000)))
            .set_str("rhost", Some(&"\u{1}".repeat(300)));
        let bytes = encode_legacy(&e);
        assert!(bytes.len() <= MAX_LEGACY_DATAGRAM, "{}", bytes.len());
        let d = Datagram::decode(&bytes).unwrap();
        assert!(d.event.get_str("user").unwrap().ends_with(TRUNCATION_MARK));
        assert_eq!(d.event.get_str("hostname"), Some("vm"));
        let key = Key::new("site-a", vec![7; 32]).unwrap();
        let signed = encode_v2(EventId::generate(), &e, Some(&key), true);
        assert!(signed.len() <= MAX_LEGACY_DATAGRAM, "{}", signed.len());
        assert!(Datagram::decode(&signed).unwrap().signature.is_some());
    }
}
