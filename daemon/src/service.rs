//! What a daemon tells the service manager that runs it.
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
