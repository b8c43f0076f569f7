#![no_main]
//! The edge's datagram decoder and signature check must never panic, whatever arrives on UDP.

use libfuzzer_sys::fuzz_target;
use warren_proto::Datagram;
use warren_proto::sign::{KeySet, Verifier};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(d) = Datagram::decode(bytes) {
        let keys = KeySet::parse("k MDEyMzQ1Njc4OWFiY2RlZg==").expect("static key file");
        let _ = Verifier::new(keys, true, 300).check(bytes, &d, d.event.tst());
    }
});
