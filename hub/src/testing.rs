//! Fixtures for the hub's unit tests.

use warren_proto::envelope::VERSION;
use warren_proto::{Envelope, Event, Kind, Presence, PresenceState};

use crate::notify::Notification;

/// An sshd login of `user` on `vm` from 192.0.2.10, through edge `gw` of site `home`.
pub fn envelope(user: &str) -> Envelope {
    let mut event = Event::new(Kind::Login, 1_795_708_571);
    event
        .set_str("hostname", Some("vm"))
        .set_str("user", Some(user))
        .set_str("service", Some("sshd"))
        .set_str("rhost", Some("192.0.2.10"));
    Envelope {
        v: 1,
        id: event.legacy_id(),
        site: "home".into(),
        edge: "gw".into(),
        received: 0,
        remote: "127.0.0.1".into(),
        signed: false,
        event,
    }
}

/// A notification of [`envelope`]`(user)`.
pub fn notification(user: &str) -> Notification {
    Notification {
        title: "login on vm".into(),
        message: format!("User {user} logged into vm"),
        priority: Some(1),
        envelope: envelope(user),
    }
}

/// What `edge` of site `paris` says of itself, with 3 events queued.
pub fn presence(edge: &str, online: bool) -> Presence {
    Presence {
        v: VERSION,
        state: if online {
            PresenceState::Online
        } else {
            PresenceState::Offline
        },
        edge: edge.into(),
        site: "paris".into(),
        version: String::new(),
        queue_depth: 3,
        queue_bytes: 0,
        oldest_age_ms: None,
        ts: 0,
        problem: None,
    }
}
