#![no_main]
//! The hub's TLS front parses what any client sends before anything else sees it: a CONNECT
//! (MQTT 3.1 upgraded to 3.1.1), then packets checked against the client's identity. None of
//! it may panic, whatever the bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    warren_hub::session::fuzz_client_bytes(bytes);
});
