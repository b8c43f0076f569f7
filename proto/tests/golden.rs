//! Golden fixtures freeze every wire format byte for byte. A change here is a protocol change:
//! regenerate with `WARREN_BLESS=1 cargo test -p warren-proto --test golden` only on purpose.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::path::PathBuf;

use warren_proto::datagram::{encode_legacy, encode_v2};
use warren_proto::envelope::VERSION;
use warren_proto::sign::KeySet;
use warren_proto::{Ack, Datagram, Envelope, Event, EventId, Kind, Presence, PresenceState};

const ID: EventId = EventId::from_bytes([
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
]);
const KEY_FILE: &str = "site-a MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";

fn check(name: &str, actual: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("WARREN_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(&expected),
        "{name} changed"
    );
}

fn login() -> Event {
    let mut e = Event::new(Kind::Login, 1_795_708_571);
    e.set_str("hostname", Some("vm"))
        .set_str("user", Some("dan"))
        .set_str("service", Some("sshd"))
        .set_str("rhost", Some("192.0.2.10"))
        .set_str("tty", Some("ssh"));
    e
}

#[test]
fn original_hare_datagram() {
    // Exactly what the C hare sends; decoded and re-encoded unchanged.
    let raw = br#"{"tst":1795708571,"hostname":"vm","user":"dan","service":"sshd","rhost":"192.0.2.10","tty":"ssh"}"#;
    check("legacy.json", raw);
    let d = Datagram::decode(raw).unwrap();
    assert_eq!(d.version, 1);
    assert_eq!(d.event, login());
    assert_eq!(encode_legacy(&d.event), raw);
    // The derived id is part of the contract: two edges, or two versions, must agree on it.
    check("legacy.id", d.id.to_string().as_bytes());
}

#[test]
fn legacy_datagram_with_nulls() {
    let raw = br#"{"tst":1795708571,"hostname":"vm","user":"dan","service":"su","rhost":null,"tty":null}"#;
    check("legacy-nulls.json", raw);
    let d = Datagram::decode(raw).unwrap();
    assert_eq!(d.event.get_str("rhost"), None);
    assert_eq!(encode_legacy(&d.event), raw);
    check("legacy-nulls.id", d.id.to_string().as_bytes());
}

#[test]
fn v2_login() {
    let bytes = encode_v2(ID, &login(), None, false);
    check("v2-login.json", &bytes);
    let d = Datagram::decode(&bytes).unwrap();
    assert_eq!((d.id, d.version), (ID, 2));
}

#[test]
fn v2_signed_alert() {
    let keys = KeySet::parse(KEY_FILE).unwrap();
    let mut e = Event::new(Kind::Alert, 1_795_708_571);
    e.set_str("hostname", Some("gw"))
        .set_str("title", Some("Power"))
        .set_str("message", Some("Mains lost at paris-dc ⚡"))
        .set("priority", 1.into())
        .set("tags", serde_json::json!(["power", "ups"]));
    let bytes = encode_v2(ID, &e, keys.first(), false);
    check("v2-alert-signed.txt", &bytes);
    let d = Datagram::decode(&bytes).unwrap();
    assert_eq!(d.signature.unwrap().key_id, "site-a");
    assert_eq!(d.event.kind(), &Kind::Alert);
    assert_eq!(
        d.event.get_str("message"),
        Some("Mains lost at paris-dc ⚡")
    );
    assert_eq!(d.event.get("tags"), e.get("tags"));
}

fn envelope() -> Envelope {
    Envelope {
        v: VERSION,
        id: ID,
        site: "home".into(),
        edge: "gw".into(),
        received: 1_795_708_571_123,
        remote: "192.0.2.10".into(),
        signed: false,
        event: login(),
    }
}

#[test]
fn mqtt_envelope() {
    let e = envelope();
    check("envelope.json", &e.encode());
    assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
}

#[test]
fn mqtt_ack() {
    let a = Ack {
        v: VERSION,
        ids: vec![ID],
    };
    check("ack.json", &a.encode());
    assert_eq!(Ack::decode(&a.encode()).unwrap(), a);
}

#[test]
fn mqtt_presence() {
    let p = Presence {
        v: VERSION,
        state: PresenceState::Online,
        edge: "gw".into(),
        site: "home".into(),
        version: "0.1.0".into(),
        queue_depth: 3,
        queue_bytes: 900,
        oldest_age_ms: Some(1500),
        ts: 1_795_708_571_123,
        problem: None,
    };
    check("presence.json", &p.encode());
    assert_eq!(Presence::decode(&p.encode()).unwrap(), p);
}

#[test]
fn mqtt_legacy_republish() {
    check("legacy-republish.json", &envelope().legacy_republish());
}
