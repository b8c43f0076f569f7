//! The command line: `edge run | check-config | status | trace`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warren_daemon::cli::{ConfigArg, StatusArgs};

use warren_proto::EventId;

use crate::config::EdgeConfig;
use crate::control::Command as Control;
use crate::history::{self, EdgeTrace};
use crate::status::{self, Thresholds};

#[derive(Parser)]
#[command(
    name = "edge",
    version,
    about = "warren edge: UDP ingest, durable queue, forwarding to the hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(ConfigArg),
    /// Load and validate a config and read every file it names, then exit: 0 valid, 2 not.
    CheckConfig {
        /// Config file [default: /etc/warren/edge.toml, /usr/local/etc/warren/… on FreeBSD].
        config: Option<PathBuf>,
    },
    /// Ask the running daemon for its status. With thresholds, speak the monitoring-plugin
    /// convention: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, perfdata after `|`.
    Status {
        #[command(flatten)]
        args: StatusArgs,
        #[command(flatten)]
        thresholds: Thresholds,
    },
    /// What the edge knows of one event: when it was accepted and from where, when it was
    /// sent to the hub, and whether the hub acked it. Exit 1 when it has no record of it.
    Trace {
        #[command(flatten)]
        args: StatusArgs,
        /// The event id (`hare test` prints it).
        id: EventId,
    },
}

/// Runs the command line `args` (the first item is the program name), as `main` does.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli: Cli = match warren_daemon::cli::parse(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Run(config) => run(&config.path("edge")),
        Command::CheckConfig { config } => {
            let config = config.unwrap_or_else(|| warren_daemon::cli::default_config("edge"));
            match EdgeConfig::load(&config).and_then(|c| c.load_secrets().map(|_| c)) {
                Ok(c) => {
                    println!(
                        "{}: OK (edge {} at site {}, hub {})",
                        config.display(),
                        c.edge_id,
                        c.site,
                        c.hubs
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" or ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("edge: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Status { args, thresholds } => {
            let check = |s: Result<&status::EdgeStatus, &str>| {
                let (state, line) = status::check(s, &thresholds);
                (state.code(), line)
            };
            warren_daemon::cli::status(
                "edge",
                &args,
                socket,
                thresholds.any().then_some(&check),
                &status::human,
            )
        }
        Command::Trace { args, id } => trace(&args, id),
    }
}

fn trace(args: &StatusArgs, id: EventId) -> ExitCode {
    let body = serde_json::to_vec(&Control::Trace { id }).unwrap_or_default();
    let answer = warren_daemon::cli::socket("edge", args, socket)
        .and_then(|path| warren_daemon::control::request::<EdgeTrace>(&path, "edge", &body));
    let t = match answer {
        Ok(t) => t,
        Err(e) => {
            eprintln!("edge: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
    } else if t.found() {
        print!("{}", history::human(&t));
    } else {
        eprintln!(
            "Edge {} has no record of event {id}: no datagram with this id reached it since it \
             started, or it was one of more than {} since.\n\
             `edge status` shows the last datagram it received and the last it rejected, and why.",
            t.edge_id,
            history::CAPACITY
        );
    }
    if t.found() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The status socket a config names.
fn socket(config: &Path) -> Result<PathBuf, String> {
    EdgeConfig::load(config)
        .map(|c| c.status_socket)
        .map_err(|e| e.to_string())
}

fn run(path: &Path) -> ExitCode {
    warren_daemon::init_tracing();
    let cfg = match EdgeConfig::load(path).and_then(|c| c.load_secrets().map(|s| (c, s))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edge: {e}");
            return ExitCode::from(2);
        }
    };
    let (cfg, secrets) = cfg;
    if let Some(state) = cfg.queue_dir.parent()
        && let Err(e) = warren_daemon::files::secure_state(state)
    {
        eprintln!("edge: state directory {}: {e}", state.display());
        return ExitCode::FAILURE;
    }
    warren_daemon::run_until_signal("edge", |shutdown| crate::run(cfg, secrets, shutdown))
}
