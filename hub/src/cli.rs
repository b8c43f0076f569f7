//! The command line: `hub run | check-config | status | pki`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{DEFAULT_PATH, HubConfig};
use crate::status::{self, Thresholds};
use clap::{Parser, Subcommand};
use warren_daemon::StatusView;

#[derive(Parser)]
#[command(
    name = "hub",
    version,
    about = "warren hub: broker, durable inbox, dedup, routing, notifiers"
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
    /// Load and validate a config and build its notifiers, then exit: 0 valid, 2 not.
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
        /// More dead letters than this → WARNING.
        #[arg(long)]
        warn_dead: Option<u64>,
        /// More dead letters than this → CRITICAL.
        #[arg(long)]
        crit_dead: Option<u64>,
        /// A notifier's outbox longer than this → WARNING.
        #[arg(long)]
        warn_outbox: Option<u64>,
        /// A notifier's outbox longer than this → CRITICAL.
        #[arg(long)]
        crit_outbox: Option<u64>,
        /// More offline edges than this → WARNING.
        #[arg(long)]
        warn_offline: Option<u64>,
        /// More offline edges than this → CRITICAL.
        #[arg(long)]
        crit_offline: Option<u64>,
    },
    /// A small CA for this installation.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create the CA and the hub's server certificate.
    Init {
        /// Directory for the files.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Host names or addresses edges use to reach the hub (localhost and loopback are added).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Issue an edge's client certificate (CN = the edge id).
    Issue {
        /// Directory holding the CA.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// The edge id.
        name: String,
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
            // Warnings from validation (unused notifiers) go to the terminal.
            warren_daemon::init_tracing();
            match HubConfig::load(&config)
                .map_err(crate::HubError::from)
                .and_then(|c| {
                    crate::build_notifiers(&c)?;
                    Ok(c)
                }) {
                Ok(c) => {
                    println!(
                        "{}: OK ({} notifiers, {} routes)",
                        config.display(),
                        c.notifiers.len(),
                        c.routes.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hub: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Status {
            config,
            socket,
            json,
            warn_dead,
            crit_dead,
            warn_outbox,
            crit_outbox,
            warn_offline,
            crit_offline,
        } => {
            let t = Thresholds {
                warn_dead,
                crit_dead,
                warn_outbox,
                crit_outbox,
                warn_offline,
                crit_offline,
            };
            status_command(&config, socket, json, &t)
        }
        Command::Pki { command } => pki(command),
    }
}

fn run(path: &Path) -> ExitCode {
    warren_daemon::init_tracing();
    let cfg = match HubConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hub: {e}");
            return ExitCode::from(2);
        }
    };
    warren_daemon::run_until_signal("hub", |shutdown| crate::run(cfg, shutdown))
}

fn status_command(config: &Path, socket: Option<PathBuf>, json: bool, t: &Thresholds) -> ExitCode {
    let socket = socket.map_or_else(
        || {
            HubConfig::load(config)
                .map(|c| c.status_socket)
                .map_err(|e| e.to_string())
        },
        Ok,
    );
    let check = |s: Result<&status::HubStatus, &str>| {
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
    warren_daemon::status_command("hub", socket, view)
}

fn pki(command: PkiCommand) -> ExitCode {
    let result = match command {
        PkiCommand::Init { dir, names } => crate::pki::init(&dir, &names).map(|hub| {
            println!("CA:   {}", dir.join("ca.pem").display());
            println!("hub:  {} (key {})", hub.cert.display(), hub.key.display());
            println!("next: hub pki issue --dir {} EDGE_ID", dir.display());
        }),
        PkiCommand::Issue { dir, name } => crate::pki::issue(&dir, &name).map(|edge| {
            println!(
                "{}: {} (key {})",
                name,
                edge.cert.display(),
                edge.key.display()
            );
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e}");
            ExitCode::FAILURE
        }
    }
}
