#![no_main]
//! The hub's MQTT payload decoders must never panic, whatever an edge publishes.

use libfuzzer_sys::fuzz_target;
use warren_proto::{Ack, Envelope, Presence};

fuzz_target!(|bytes: &[u8]| {
    let _ = Envelope::decode(bytes);
    let _ = Ack::decode(bytes);
    let _ = Presence::decode(bytes);
});
