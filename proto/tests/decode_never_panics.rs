//! Properties: decoding arbitrary bytes never panics, and what hare encodes decodes back.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use quickcheck::{QuickCheck, TestResult};
use warren_proto::datagram::encode_v2;
use warren_proto::sign::{KeySet, Verifier};
use warren_proto::{Ack, Datagram, Envelope, Event, EventId, Kind, Presence};

fn decode_everything(bytes: &[u8]) {
    if let Ok(d) = Datagram::decode(bytes) {
        let keys = KeySet::parse("k MDEyMzQ1Njc4OWFiY2RlZg==").unwrap();
        let _ = Verifier::new(keys, true, 300).check(bytes, &d, 0);
    }
    let _ = Envelope::decode(bytes);
    let _ = Ack::decode(bytes);
    let _ = Presence::decode(bytes);
}

#[test]
fn arbitrary_bytes() {
    fn prop(bytes: Vec<u8>) -> bool {
        decode_everything(&bytes);
        true
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(prop as fn(Vec<u8>) -> bool);
}

#[test]
fn json_shaped_mutations() {
    // Random bytes rarely parse as JSON; splice them into a valid datagram instead.
    fn prop(cut: usize, junk: Vec<u8>) -> bool {
        let base = br#"{"v":2,"id":"0123456789abcdeffedcba9876543210","kind":"alert","tst":1,"tags":["a"],"priority":2}
hmac-sha256 k AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="#;
        let cut = cut % base.len();
        let mut bytes = base[..cut].to_vec();
        bytes.extend_from_slice(&junk);
        bytes.extend_from_slice(&base[cut..]);
        decode_everything(&bytes);
        true
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(prop as fn(usize, Vec<u8>) -> bool);
}

#[test]
fn encoded_fields_decode_back() {
    fn prop(user: String, rhost: Option<String>, tst: i64) -> TestResult {
        let mut e = Event::new(Kind::Login, tst);
        e.set_str("user", Some(&user))
            .set_str("rhost", rhost.as_deref());
        let id = EventId::generate();
        let bytes = encode_v2(id, &e, None, false);
        let d = Datagram::decode(&bytes).unwrap();
        if bytes.len() >= 4000 {
            return TestResult::discard(); // may have been truncated
        }
        TestResult::from_bool(
            d.id == id
                && d.event.tst() == tst
                && d.event.get_str("user") == Some(user.as_str())
                && d.event.get_str("rhost") == rhost.as_deref(),
        )
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(prop as fn(String, Option<String>, i64) -> TestResult);
}
