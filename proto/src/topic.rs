//! Every MQTT topic warren uses is built and parsed here.

/// Events, edge → hub: `warren/v1/event/<site>/<edge_id>`.
pub const EVENT_FILTER: &str = "warren/v1/event/+/+";
/// Acks, hub → edge: `warren/v1/ack/<edge_id>`.
pub const ACK_FILTER: &str = "warren/v1/ack/+";
/// Presence, edge → anyone, retained: `warren/v1/status/<edge_id>`.
pub const STATUS_FILTER: &str = "warren/v1/status/+";
/// The original hared's topic, for the legacy republish.
pub const LEGACY: &str = "logging/hare";

const EVENT: &str = "warren/v1/event/";
const ACK: &str = "warren/v1/ack/";
const STATUS: &str = "warren/v1/status/";

/// Whether `name` can be a site or an edge id: 1 to 64 characters of `[A-Za-z0-9._-]`, so it is
/// one topic level, never a wildcard, and safe in a certificate CN and a file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The topic an edge publishes its events on.
pub fn event(site: &str, edge: &str) -> String {
    format!("{EVENT}{site}/{edge}")
}

/// `(site, edge_id)` of an event topic.
pub fn parse_event(topic: &str) -> Option<(&str, &str)> {
    let (site, edge) = topic.strip_prefix(EVENT)?.split_once('/')?;
    (valid_name(site) && valid_name(edge)).then_some((site, edge))
}

/// The topic the hub acks an edge's events on.
pub fn ack(edge: &str) -> String {
    format!("{ACK}{edge}")
}

/// The edge id of an ack topic.
pub fn parse_ack(topic: &str) -> Option<&str> {
    topic.strip_prefix(ACK).filter(|e| valid_name(e))
}

/// The topic of an edge's retained presence.
pub fn status(edge: &str) -> String {
    format!("{STATUS}{edge}")
}

/// The edge id of a presence topic.
pub fn parse_status(topic: &str) -> Option<&str> {
    topic.strip_prefix(STATUS).filter(|e| valid_name(e))
}

/// A shared-subscription filter, so several hubs on one external broker split the events.
pub fn shared(group: &str, filter: &str) -> String {
    format!("$share/{group}/{filter}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse() {
        assert_eq!(event("home", "gw-1"), "warren/v1/event/home/gw-1");
        assert_eq!(
            parse_event("warren/v1/event/home/gw-1"),
            Some(("home", "gw-1"))
        );
        assert_eq!(parse_event("warren/v1/event/home/gw/x"), None);
        assert_eq!(parse_event("warren/v1/event/home"), None);
        assert_eq!(parse_ack(&ack("gw")), Some("gw"));
        assert_eq!(parse_status(&status("gw")), Some("gw"));
        assert_eq!(parse_status("warren/v1/status/+"), None);
    }

    #[test]
    fn names_are_single_levels() {
        for bad in ["", "a/b", "+", "#", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_name("paris-dc.01_a"));
    }
}
