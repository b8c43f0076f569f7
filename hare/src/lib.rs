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
        Ok(Command::Send(opts)) => *opts,
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
    let sent = run(&opts, &settings, deadline);
    if opts.test.is_some() {
        return report_test(sent, &settings.destinations);
    }
    match sent {
        Ok(s) if !s.failures.is_empty() => report::error(&s.failures.join("; ")),
        Ok(_) => {}
        Err(e) => report::error(&e),
    }
    // Whatever happened, the login goes on.
    ExitCode::SUCCESS
}

/// What a run sent.
#[derive(Default)]
struct Sent {
    /// The event's id; `None` when there was nothing to report or the datagram carries no id
    /// (legacy).
    id: Option<EventId>,
    /// One message per destination it could not be sent to.
    failures: Vec<String>,
}

/// `hare test` is run by a person, who needs the id (even when some destinations failed, the
/// others have it) and an honest exit status.
fn report_test(sent: Result<Sent, String>, destinations: &[String]) -> ExitCode {
    let sent = match sent {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hare: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(id) = sent.id.filter(|_| sent.failures.len() < destinations.len()) {
        println!(
            "test event {id} sent to {}\n\
             follow it on the hub:   hub trace {id}\n\
             and on the edge:        edge trace {id}",
            destinations.join(", ")
        );
    }
    if sent.failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("hare: {}", sent.failures.join("; "));
    ExitCode::FAILURE
}

/// Sends the event this run is for, if there is one.
fn run(opts: &Options, settings: &config::Settings, deadline: Instant) -> Result<Sent, String> {
    let key = match &settings.key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (run hare as root, as PAM does)"
                } else {
                    ""
                };
                format!("reading key file {}: {e}{hint}", path.display())
            })?;
            let keys =
                KeySet::parse(&text).map_err(|e| format!("key file {}: {e}", path.display()))?;
            keys.first().cloned()
        }
        None => None,
    };
    let hostname = settings.hostname.clone().unwrap_or_else(pam::hostname);
    let event: Event = match (&opts.alert, &opts.test) {
        (Some(alert), _) => pam::alert_event(alert, &hostname),
        (None, Some(probe)) => pam::test_event(probe, &hostname),
        (None, None) => {
            let Some(event) = pam::session_event(&pam::PamEnv::from_env(), &hostname, settings)
            else {
                return Ok(Sent::default()); // not a session we report, or an ignored user
            };
            event
        }
    };
    // Legacy mode keeps the original hared working; it cannot carry a kind or a signature, so
    // alerts, logouts, tests and signed events always use v2.
    let legacy = settings.legacy && key.is_none() && event.kind() == &warren_proto::Kind::Login;
    let (bytes, id) = if legacy {
        (encode_legacy(&event), None)
    } else {
        let id = EventId::generate();
        (
            encode_v2(id, &event, key.as_ref(), settings.legacy),
            Some(id),
        )
    };
    let failures = send::to_all(&settings.destinations, &bytes, deadline);
    Ok(Sent { id, failures })
}
