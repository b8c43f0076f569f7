//! What a daemon tells the service manager that runs it, and what it takes from it.
//!
//! Under systemd (`Type=notify`) the units wait for [`ready`] before they count the daemon as
//! started, so `systemctl start` returns only once the status socket answers and the listeners
//! are bound; [`stopping`] tells them a stop is a drain, not a hang. Without `NOTIFY_SOCKET`
//! (a terminal, rc.d, supervisord) both do nothing.

/// Tells the service manager that the daemon serves; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells the service manager that the daemon drains and will exit.
pub fn stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining"),
    ]);
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "Cannot notify the service manager.");
    }
}

/// Raises the soft limit on open files to the hard limit. Every edge holds a few descriptors
/// on the hub, and the usual soft limit (1024) would cap a hub at a few hundred edges however
/// high the administrator set the hard limit (`LimitNOFILE=`, `login.conf`). Returns the limit
/// now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return limit.current;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum,
        Err(error) => {
            tracing::warn!(%error, soft = ?limit.current, "Cannot raise the open-file limit.");
            limit.current
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{Resource, getrlimit};

    #[test]
    fn raises_soft_limit_to_hard() {
        let hard = getrlimit(Resource::Nofile).maximum;
        let low = hard.map_or(256, |h| h.min(256));
        let lowered = rustix::process::Rlimit {
            current: Some(low),
            maximum: hard,
        };
        rustix::process::setrlimit(Resource::Nofile, lowered).expect("lower the soft limit");
        let raised = raise_fd_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, now.maximum);
        assert_eq!(raised, now.current);
    }
}
