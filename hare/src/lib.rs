//! `hare`: PAM runs it on every login; it sends one UDP datagram per destination and exits.
//! (A library with a thin `main`, so the demo can embed it.)
//!
//! It must never delay or break a login: its whole run is capped (DNS included), every runtime
//! failure is reported to stderr and syslog and still exits 0; only a usage or config error
//! exits 2. It is std-only (plus the proto crate) so that it starts as fast as a C program.

pub mod args;
pub mod config;
pub mod pam;
pub mod report;
pub mod send;

use std::process::ExitCode;
use std::time::Instant;

use warren_proto::datagram::{encode_legacy, encode_v2};
use warren_proto::sign::KeySet;
use warren_proto::{Event, EventId};

use crate::args::{Command, Options};

/// Runs hare with `args` (the first item is the program name) and the process environment.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let started = Instant::now();
    let opts = match args::parse(args.into_iter().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("hare {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Send(opts)) => opts,
        Err(e) => {
            report::error(&format!("{e}\n\n{}", args::USAGE));
            return ExitCode::from(2);
        }
    };
    let settings = match config::Settings::load(&opts) {
        Ok(s) => s,
        Err(e) => {
            report::error(&e);
            return ExitCode::from(2);
        }
    };
    let deadline = started + settings.timeout;
    if let Err(e) = run(&opts, &settings, deadline) {
        report::error(&e);
    }
    // Whatever happened, the login goes on.
    ExitCode::SUCCESS
}

fn run(opts: &Options, settings: &config::Settings, deadline: Instant) -> Result<(), String> {
    let key = match &settings.key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading key file {}: {e}", path.display()))?;
            let keys =
                KeySet::parse(&text).map_err(|e| format!("key file {}: {e}", path.display()))?;
            keys.first().cloned()
        }
        None => None,
    };
    let hostname = settings.hostname.clone().unwrap_or_else(pam::hostname);
    let event: Event = match &opts.alert {
        Some(alert) => pam::alert_event(alert, &hostname),
        None => {
            let Some(event) = pam::session_event(&pam::PamEnv::from_env(), &hostname, settings)
            else {
                return Ok(()); // not a session we report, or an ignored user
            };
            event
        }
    };
    // Legacy mode keeps the original hared working; it cannot carry a kind or a signature, so
    // alerts, logouts and signed events always use v2.
    let legacy = settings.legacy
        && key.is_none()
        && opts.alert.is_none()
        && event.kind() == &warren_proto::Kind::Login;
    let bytes = if legacy {
        encode_legacy(&event)
    } else {
        encode_v2(EventId::generate(), &event, key.as_ref(), settings.legacy)
    };
    let failures = send::to_all(&settings.destinations, &bytes, deadline);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
