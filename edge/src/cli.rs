//! The command line: `edge run | check-config | status`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warren_daemon::cli::{ConfigArg, StatusArgs};

use crate::config::EdgeConfig;
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
        Command::Status { args, thresholds } => {
            let check = |s: Result<&status::EdgeStatus, &str>| {
                let (state, line) = status::check(s, &thresholds);
                (state.code(), line)
            };
            warren_daemon::cli::status(
                "edge",
                &args,
                |config| {
                    EdgeConfig::load(config)
                        .map(|c| c.status_socket)
                        .map_err(|e| e.to_string())
                },
                thresholds.any().then_some(&check),
                &status::human,
            )
        }
    }
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
