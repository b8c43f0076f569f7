//! The command line: `edge run | check-config | status`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{DEFAULT_PATH, EdgeConfig};
use crate::status::{self, Thresholds};
use clap::{Parser, Subcommand};
use warren_daemon::StatusView;

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
    Run {
        /// Config file.
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Load and validate a config (and the files it names), then exit: 0 valid, 2 not.
    CheckConfig {
        /// Config file.
        #[arg(default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Ask the running daemon for its status. With thresholds, speak the monitoring-plugin
    /// convention: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, perfdata after `|`.
    Status {
        /// Config file (to find the status socket).
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// The status socket, instead of the config's.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the raw JSON snapshot.
        #[arg(long)]
        json: bool,
        /// Oldest queued event older than this → WARNING (e.g. 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        warn_age: Option<Duration>,
        /// Oldest queued event older than this → CRITICAL.
        #[arg(long, value_parser = humantime::parse_duration)]
        crit_age: Option<Duration>,
        /// More queued events than this → WARNING.
        #[arg(long)]
        warn_depth: Option<u64>,
        /// More queued events than this → CRITICAL.
        #[arg(long)]
        crit_depth: Option<u64>,
    },
}

/// Runs the command line `args` (the first item is the program name), as `main` does.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => {
            match EdgeConfig::load(&config).and_then(|c| c.load_secrets().map(|_| c)) {
                Ok(c) => {
                    println!(
                        "{}: OK (edge {} at site {}, hub {}:{})",
                        config.display(),
                        c.edge_id,
                        c.site,
                        c.hub_host,
                        c.hub_port
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("edge: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Status {
            config,
            socket,
            json,
            warn_age,
            crit_age,
            warn_depth,
            crit_depth,
        } => {
            let thresholds = Thresholds {
                warn_age,
                crit_age,
                warn_depth,
                crit_depth,
            };
            status_command(&config, socket, json, &thresholds)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    warren_daemon::init_tracing();
    let cfg = match EdgeConfig::load(path).and_then(|c| c.load_secrets().map(|s| (c, s))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edge: {e}");
            return ExitCode::from(2);
        }
    };
    let (cfg, secrets) = cfg;
    warren_daemon::run_until_signal("edge", |shutdown| crate::run(cfg, secrets, shutdown))
}

fn status_command(config: &Path, socket: Option<PathBuf>, json: bool, t: &Thresholds) -> ExitCode {
    let socket = socket.map_or_else(
        || {
            EdgeConfig::load(config)
                .map(|c| c.status_socket)
                .map_err(|e| e.to_string())
        },
        Ok,
    );
    let check = |s: Result<&status::EdgeStatus, &str>| {
        let (state, line) = status::check(s, t);
        (state.code(), line)
    };
    let view = if t.any() {
        StatusView::Plugin(&check)
    } else if json {
        StatusView::Json
    } else {
        StatusView::Human(&status::human)
    };
    warren_daemon::status_command("edge", socket, view)
}
