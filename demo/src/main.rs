//! `warren-demo`: a complete warren on loopback, nothing to configure.
//!
//! It writes a CA and certificates, a hub config and two edge configs (sites `home` and
//! `remote`) into a directory, starts the hub and both edges as separate processes, has hare
//! send a login to each edge, and prints each notification as the hub's file notifier writes
//! it. With `--offline` it then stops the hub, sends logins while it is down, starts it again
//! and shows that each arrives once. It keeps running until Ctrl-C (or exits after the script
//! with `--exit`).
//!
//! This one binary is also hare, edge and hub (`warren-demo --role hub run …`), so that
//! `cargo run -p warren-demo` builds everything the demo runs.

mod topology;

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "--role") {
        let role = args.get(2).and_then(|r| r.to_str()).unwrap_or_default();
        let rest = std::iter::once(OsString::from(role)).chain(args.iter().skip(3).cloned());
        return match role {
            "hub" => warren_hub::cli::main(rest),
            "edge" => warren_edge::cli::main(rest),
            "hare" => hare::main(rest),
            _ => {
                eprintln!("warren-demo: unknown role {role:?}");
                ExitCode::from(2)
            }
        };
    }
    let opts = match topology::Options::parse(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("warren-demo: {e}\n\n{}", topology::USAGE);
            return ExitCode::from(2);
        }
    };
    match topology::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
