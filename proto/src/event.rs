//! The event model: what happened, kept as the JSON object the datagram carried.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{DecodeError, EventId};

/// Fields that must be a string or `null` when present.
const STRING_FIELDS: [&str; 9] = [
    "hostname", "user", "service", "rhost", "tty", "ruser", "title", "message", "kind",
];

/// What an event reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A session opened (PAM `open_session`); every legacy datagram is one.
    Login,
    /// A session closed (PAM `close_session`).
    Logout,
    /// Sent by a script: "the power has gone off", "backups are out of space".
    Alert,
    /// Sent by `hare test`: travels the path a login from its host would take.
    Test,
    /// A kind from a newer sender, kept so that old edges forward it unchanged.
    Other(String),
}

impl Kind {
    /// The kind's wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Login => "login",
            Self::Logout => "logout",
            Self::Alert => "alert",
            Self::Test => "test",
            Self::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "login" => Self::Login,
            "logout" => Self::Logout,
            "alert" => Self::Alert,
            "test" => Self::Test,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event: every field of the datagram that carried it, verbatim and in order, validated.
///
/// Keeping the object rather than a fixed struct means fields this build does not know (a
/// newer hare's, a script's) reach the hub's templates unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct Event {
    kind: Kind,
    tst: i64,
    fields: Map<String, Value>,
}

impl Event {
    /// A new event of `kind` at `tst` (seconds since the Unix epoch), with no other field.
    pub fn new(kind: Kind, tst: i64) -> Self {
        let mut fields = Map::new();
        fields.insert("tst".into(), tst.into());
        if kind != Kind::Login {
            fields.insert("kind".into(), kind.as_str().into());
        }
        Self { kind, tst, fields }
    }

    /// Sets a string field (or `null` for `None`), keeping the field's position if it exists.
    ///
    /// Meant for builders such as hare; `tst` and `kind` are fixed at construction.
    pub fn set_str(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if name != "tst" && name != "kind" {
            let value = value.map_or(Value::Null, |s| Value::String(s.to_owned()));
            self.fields.insert(name.to_owned(), value);
        }
        self
    }

    /// Sets any JSON field other than `tst` and `kind`.
    pub fn set(&mut self, name: &str, value: Value) -> &mut Self {
        if name != "tst" && name != "kind" {
            self.fields.insert(name.to_owned(), value);
        }
        self
    }

    /// Validates a JSON object as an event.
    ///
    /// # Errors
    /// `tst` must be an integer; the hare fields, `ruser`, `title`, `message` and `kind` must be
    /// strings or `null`; `priority` an integer; `tags` an array of strings.
    pub fn from_fields(fields: Map<String, Value>) -> Result<Self, DecodeError> {
        let tst = match fields.get("tst") {
            Some(v) => v.as_i64().ok_or(DecodeError::BadField {
                field: "tst",
                expected: "an integer",
            })?,
            None => return Err(DecodeError::MissingField("tst")),
        };
        for name in STRING_FIELDS {
            if let Some(v) = fields.get(name)
                && !(v.is_string() || v.is_null())
            {
                return Err(DecodeError::BadField {
                    field: name,
                    expected: "a string or null",
                });
            }
        }
        if let Some(p) = fields.get("priority")
            && !(p.is_i64() || p.is_null())
        {
            return Err(DecodeError::BadField {
                field: "priority",
                expected: "an integer",
            });
        }
        if let Some(tags) = fields.get("tags") {
            let ok = tags.is_null()
                || tags
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string));
            if !ok {
                return Err(DecodeError::BadField {
                    field: "tags",
                    expected: "an array of strings",
                });
            }
        }
        let kind = fields
            .get("kind")
            .and_then(Value::as_str)
            .map_or(Kind::Login, Kind::parse);
        Ok(Self { kind, tst, fields })
    }

    /// What the event reports.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// When it happened, in seconds since the Unix epoch, as the sender's clock saw it.
    pub fn tst(&self) -> i64 {
        self.tst
    }

    /// A field by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// A string field by name; `None` when absent, `null` or not a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// Every field, in the order the sender wrote them.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The id a legacy datagram carrying this event gets (see [`EventId::derive_legacy`]).
    pub fn legacy_id(&self) -> EventId {
        let f = |n| self.get_str(n);
        EventId::derive_legacy(
            [f("hostname"), f("user"), f("service"), f("rhost"), f("tty")],
            self.tst,
        )
    }
}

impl TryFrom<Map<String, Value>> for Event {
    type Error = DecodeError;

    fn try_from(fields: Map<String, Value>) -> Result<Self, Self::Error> {
        Self::from_fields(fields)
    }
}

impl From<Event> for Map<String, Value> {
    fn from(e: Event) -> Self {
        e.fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn legacy_fields_validate() {
        let e = Event::from_fields(obj(json!({"tst": 5, "user": "dan", "rhost": null}))).unwrap();
        assert_eq!(e.kind(), &Kind::Login);
        assert_eq!(e.tst(), 5);
        assert_eq!(e.get_str("user"), Some("dan"));
        assert_eq!(e.get_str("rhost"), None);
        assert_eq!(e.get("rhost"), Some(&Value::Null));
    }

    #[test]
    fn wrong_types_are_named() {
        let cases = [
            (json!({}), "tst"),
            (json!({"tst": "5"}), "tst"),
            (json!({"tst": 1.5}), "tst"),
            (json!({"tst": 1, "user": 3}), "user"),
            (json!({"tst": 1, "kind": []}), "kind"),
            (json!({"tst": 1, "priority": "high"}), "priority"),
            (json!({"tst": 1, "tags": ["a", 1]}), "tags"),
        ];
        for (v, field) in cases {
            let err = Event::from_fields(obj(v.clone())).unwrap_err();
            assert!(err.to_string().contains(field), "{v}: {err}");
        }
    }

    #[test]
    fn unknown_kinds_are_kept() {
        let e = Event::from_fields(obj(json!({"tst": 1, "kind": "reboot"}))).unwrap();
        assert_eq!(e.kind(), &Kind::Other("reboot".into()));
        assert_eq!(e.kind().to_string(), "reboot");
    }

    #[test]
    fn builder_keeps_order_and_protects_tst() {
        let mut e = Event::new(Kind::Logout, 7);
        e.set_str("hostname", Some("vm")).set_str("tst", Some("x"));
        let keys: Vec<_> = e.fields().keys().cloned().collect();
        assert_eq!(keys, ["tst", "kind", "hostname"]);
        assert_eq!(e.tst(), 7);
    }
}
