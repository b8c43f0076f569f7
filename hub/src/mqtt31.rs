//! MQTT 3.1 (`MQIsdp`, protocol level 3) clients, such as mqttwarn with its default
//! `protocol = 3`. rumqttd and rumqttc's codec speak only 3.1.1, which differs from 3.1 on the
//! wire in the CONNECT alone: protocol name `MQTT`, level 4. Every other packet a client sends
//! is the same in both, and 3.1.1's CONNACK, SUBACK and PUBLISH read the same to a 3.1 client
//! (its 3.1 CONNACK flags byte is reserved, and refused subscriptions are closed, never
//! answered with 3.1.1's 0x80). So the front rewrites the CONNECT and relays the rest.

use bytes::{BufMut, BytesMut};

const V31: &[u8] = b"\x00\x06MQIsdp\x03";
const V311: &[u8] = b"\x00\x04MQTT\x04";

/// If `buf` starts with a complete 3.1 CONNECT, rewrites it in place as 3.1.1 and returns true.
pub fn upgrade_connect(buf: &mut BytesMut) -> bool {
    let Some((header_len, remaining)) = fixed_header(buf) else {
        return false;
    };
    let body = header_len..header_len + remaining;
    if buf.first() != Some(&0x10) || buf.len() < body.end || !buf[body.clone()].starts_with(V31) {
        return false;
    }
    let rest = buf.split_off(body.end);
    let mut out = BytesMut::with_capacity(buf.len() + rest.len());
    out.put_u8(0x10);
    put_remaining_length(&mut out, remaining - (V31.len() - V311.len()));
    out.put_slice(V311);
    out.put_slice(&buf[body.start + V31.len()..body.end]);
    out.unsplit(rest);
    *buf = out;
    true
}

/// The fixed header's length and the remaining length, once enough bytes are there.
fn fixed_header(buf: &[u8]) -> Option<(usize, usize)> {
    let mut remaining = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((i + 2, remaining));
        }
    }
    None
}

fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = u8::try_from(len % 128).unwrap_or_default();
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::Packet;

    /// mqttwarn 0.36's CONNECT with its defaults (paho-mqtt 1.6, MQTTv31), as captured.
    const MQTTWARN: &[u8] =
        b"\x10\x2b\x00\x06MQIsdp\x03\x24\x00\x3c\x00\x08mqttwarn\x00\x10clients/mqttwarn\x00\x010";

    #[test]
    fn a_31_connect_reads_as_311_and_what_follows_is_kept() {
        let mut buf = BytesMut::from(MQTTWARN);
        buf.put_slice(b"\xc0\x00"); // a PINGREQ behind it
        assert!(upgrade_connect(&mut buf));
        let Packet::Connect(c) = Packet::read(&mut buf, 1024).unwrap() else {
            panic!("not a CONNECT");
        };
        assert_eq!(c.client_id, "mqttwarn");
        assert_eq!(c.keep_alive, 60);
        assert!(!c.clean_session);
        let will = c.last_will.unwrap();
        assert_eq!(will.topic, "clients/mqttwarn");
        assert!(will.retain);
        assert_eq!(Packet::read(&mut buf, 1024).unwrap(), Packet::PingReq);
    }

    #[test]
    fn anything_else_is_left_alone() {
        let mut c311 = BytesMut::new();
        Packet::Connect(rumqttc::mqttbytes::v4::Connect::new("gw"))
            .write(&mut c311, 1024)
            .unwrap();
        let before = c311.clone();
        assert!(!upgrade_connect(&mut c311));
        assert_eq!(c311, before);
        let mut partial = BytesMut::from(&MQTTWARN[..20]);
        assert!(!upgrade_connect(&mut partial));
        assert_eq!(&partial[..], &MQTTWARN[..20]);
    }
}
