#![no_main]
//! The hub's MQTT payload decoders, and its parsing of the topics they arrive on, must never
//! panic, whatever an edge publishes.

use libfuzzer_sys::fuzz_target;
use warren_proto::{Ack, Envelope, Presence, topic};

fuzz_target!(|bytes: &[u8]| {
    let _ = Envelope::decode(bytes);
    let _ = Ack::decode(bytes);
    let _ = Presence::decode(bytes);
    let name = String::from_utf8_lossy(bytes);
    let _ = topic::parse_event(&name);
    let _ = topic::parse_status(&name);
});
