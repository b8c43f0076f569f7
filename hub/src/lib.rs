//! The warren hub: embedded MQTT broker, durable inbox, dedup, routing, notifiers.

pub mod pki;
