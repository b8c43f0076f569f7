//! Turns what PAM (or a script) gives hare into an event.

use std::ffi::OsString;
use std::time::{SystemTime, UNIX_EPOCH};

use warren_proto::{Event, Kind};

use crate::args::{Alert, Probe};
use crate::config::Settings;

/// The PAM items pam_exec exports, converted lossily to UTF-8 (a byte PAM passed through from a
/// client must not crash the login hook).
#[derive(Debug, Default)]
pub struct PamEnv {
    pub user: Option<String>,
    pub rhost: Option<String>,
    pub service: Option<String>,
    pub tty: Option<String>,
    pub ruser: Option<String>,
    /// Linux pam_exec: `open_session`, `close_session`, `auth`, …
    pub pam_type: Option<String>,
    /// FreeBSD pam_exec: `pam_sm_open_session`, … (it sets no `PAM_TYPE`).
    pub sm_func: Option<String>,
}

impl PamEnv {
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Self {
        let item = |name| get(name).map(|v| v.to_string_lossy().into_owned());
        Self {
            user: item("PAM_USER"),
            rhost: item("PAM_RHOST"),
            service: item("PAM_SERVICE"),
            tty: item("PAM_TTY"),
            ruser: item("PAM_RUSER"),
            pam_type: item("PAM_TYPE"),
            sm_func: item("PAM_SM_FUNC"),
        }
    }
}

enum Phase {
    Open,
    Close,
    Other,
}

fn phase(env: &PamEnv) -> Phase {
    let name = env.pam_type.as_deref().or_else(|| {
        env.sm_func
            .as_deref()
            .map(|f| f.trim_start_matches("pam_sm_"))
    });
    match name {
        // Run by hand, outside PAM: report, as the original did.
        None | Some("open_session") => Phase::Open,
        Some("close_session") => Phase::Close,
        Some(_) => Phase::Other,
    }
}

/// The event for this PAM call, or `None` when it is not one to report: another PAM phase, a
/// close without `logout`, or an ignored user.
pub fn session_event(env: &PamEnv, hostname: &str, settings: &Settings) -> Option<Event> {
    let kind = match phase(env) {
        Phase::Open => Kind::Login,
        Phase::Close if settings.logout => Kind::Logout,
        Phase::Close | Phase::Other => return None,
    };
    if env
        .user
        .as_ref()
        .is_some_and(|u| settings.ignore_users.contains(u))
    {
        return None;
    }
    let mut event = Event::new(kind, now());
    // The original hare's fields, in its order; unset items are null.
    event
        .set_str("hostname", Some(hostname))
        .set_str("user", env.user.as_deref())
        .set_str("service", env.service.as_deref())
        .set_str("rhost", env.rhost.as_deref())
        .set_str("tty", env.tty.as_deref());
    if !settings.legacy {
        event.set_str("ruser", env.ruser.as_deref());
    }
    Some(event)
}

/// An `alert` event for `hare alert`.
pub fn alert_event(alert: &Alert, hostname: &str) -> Event {
    let mut event = Event::new(Kind::Alert, now());
    event
        .set_str("hostname", Some(hostname))
        .set_str("title", Some(&alert.title))
        .set_str("message", Some(&alert.message));
    if let Some(p) = alert.priority {
        event.set("priority", p.into());
    }
    if !alert.tags.is_empty() {
        event.set("tags", alert.tags.clone().into());
    }
    event
}

/// A `test` event for `hare test`: the fields of a login from this host, so it takes the routes
/// such a login takes. Unset, the user is whoever ran it (through sudo too; `ID` stands for
/// `id -un`), the service sshd, and the source the ssh client this shell came from, if any.
pub fn test_event(probe: &Probe, hostname: &str) -> Event {
    test_event_from(probe, hostname, |name| match name {
        // The environment may name no one (cron, a bare `su`); `id` always can.
        "ID" => std::process::Command::new("id")
            .arg("-un")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        _ => std::env::var(name).ok(),
    })
}

fn test_event_from(probe: &Probe, hostname: &str, get: impl Fn(&str) -> Option<String>) -> Event {
    let user = probe.user.clone().or_else(|| {
        ["SUDO_USER", "USER", "LOGNAME", "ID"]
            .into_iter()
            .find_map(|v| get(v).filter(|u| !u.is_empty()))
    });
    // `SSH_CLIENT` is "address port port".
    let rhost = probe
        .rhost
        .clone()
        .or_else(|| get("SSH_CLIENT").and_then(|c| c.split_whitespace().next().map(str::to_owned)));
    let mut event = Event::new(Kind::Test, now());
    event
        .set_str("hostname", Some(hostname))
        .set_str("user", user.as_deref())
        .set_str("service", Some(probe.service.as_deref().unwrap_or("sshd")))
        .set_str("rhost", rhost.as_deref())
        .set_str("tty", None);
    event
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The host name, without libc: the kernel's on Linux, else `/etc/hostname`, else `hostname`
/// (FreeBSD); `hostname` in the settings file skips all of this.
pub fn hostname() -> String {
    let from_file = |p| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s: String| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| {
            std::process::Command::new("hostname")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStringExt;

    fn env(vars: &[(&str, &[u8])]) -> PamEnv {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from_vec(v.to_vec())))
            .collect();
        PamEnv::from_lookup(|n| map.get(n).cloned())
    }

    #[test]
    fn open_session_is_a_login_in_the_original_field_order() {
        let e = session_event(
            &env(&[
                ("PAM_TYPE", b"open_session"),
                ("PAM_USER", b"dan"),
                ("PAM_SERVICE", b"sshd"),
                ("PAM_RHOST", b"192.0.2.10"),
            ]),
            "vm",
            &Settings {
                legacy: true,
                ..Settings::default()
            },
        )
        .unwrap();
        assert_eq!(e.kind(), &Kind::Login);
        let keys: Vec<_> = e.fields().keys().map(String::as_str).collect();
        assert_eq!(keys, ["tst", "hostname", "user", "service", "rhost", "tty"]);
        assert_eq!(e.get("tty"), Some(&serde_json::Value::Null));
    }

    #[test]
    fn phases() {
        let s = Settings::default();
        let logout = Settings {
            logout: true,
            ..Settings::default()
        };
        assert!(session_event(&env(&[("PAM_TYPE", b"close_session")]), "h", &s).is_none());
        assert!(session_event(&env(&[("PAM_TYPE", b"auth")]), "h", &s).is_none());
        let e = session_event(&env(&[("PAM_TYPE", b"close_session")]), "h", &logout).unwrap();
        assert_eq!(e.kind(), &Kind::Logout);
        // FreeBSD sets PAM_SM_FUNC instead.
        let e = session_event(&env(&[("PAM_SM_FUNC", b"pam_sm_open_session")]), "h", &s).unwrap();
        assert_eq!(e.kind(), &Kind::Login);
        assert!(
            session_event(&env(&[("PAM_SM_FUNC", b"pam_sm_close_session")]), "h", &s).is_none()
        );
    }

    #[test]
    fn a_test_event_looks_like_a_login_from_here() {
        let env = |name: &str| match name {
            "SUDO_USER" => Some("dan".to_owned()),
            "USER" => Some("root".to_owned()),
            "SSH_CLIENT" => Some("192.0.2.10 50000 22".to_owned()),
            _ => None,
        };
        let e = test_event_from(&Probe::default(), "vm", env);
        assert_eq!(e.kind(), &Kind::Test);
        let f = |n| e.get_str(n);
        assert_eq!(
            (f("hostname"), f("user"), f("service"), f("rhost")),
            (Some("vm"), Some("dan"), Some("sshd"), Some("192.0.2.10"))
        );
        let probe = Probe {
            user: Some("eve".into()),
            rhost: Some("203.0.113.9".into()),
            service: Some("login".into()),
        };
        let e = test_event_from(&probe, "vm", |_| None);
        assert_eq!(
            (e.get_str("user"), e.get_str("rhost"), e.get_str("service")),
            (Some("eve"), Some("203.0.113.9"), Some("login"))
        );
    }

    #[test]
    fn ignored_users_and_invalid_utf8() {
        let s = Settings {
            ignore_users: vec!["deploy".into()],
            ..Settings::default()
        };
        assert!(session_event(&env(&[("PAM_USER", b"deploy")]), "h", &s).is_none());
        let e = session_event(&env(&[("PAM_USER", b"d\xffn")]), "h", &s).unwrap();
        assert_eq!(e.get_str("user"), Some("d\u{fffd}n"));
    }
}
