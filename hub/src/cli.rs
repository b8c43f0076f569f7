//! The command line: `hub run | check-config | status | pki`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warren_daemon::cli::{ConfigArg, StatusArgs};
use warren_daemon::config::ConfigError;

use crate::config::HubConfig;
use crate::resources::Resources;
use crate::status::{self, Thresholds};

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
    Run(ConfigArg),
    /// Load and validate a config, read every file it names and build its notifiers, then
    /// exit: 0 valid, 2 not (naming the file, the key and the reason).
    CheckConfig {
        /// Config file [default: /etc/warren/hub.toml, /usr/local/etc/warren/… on FreeBSD].
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
    let cli: Cli = match warren_daemon::cli::parse(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Run(config) => run(&config.path("hub")),
        Command::CheckConfig { config } => {
            // Warnings from validation (unused notifiers) go to the terminal.
            warren_daemon::init_tracing();
            let config = config.unwrap_or_else(|| warren_daemon::cli::default_config("hub"));
            match load(&config) {
                Ok((c, _)) => {
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
        Command::Status { args, thresholds } => {
            let check = |s: Result<&status::HubStatus, &str>| {
                let (state, line) = status::check(s, &thresholds);
                (state.code(), line)
            };
            warren_daemon::cli::status(
                "hub",
                &args,
                |config| {
                    HubConfig::load(config)
                        .map(|c| c.status_socket)
                        .map_err(|e| e.to_string())
                },
                thresholds.any().then_some(&check),
                &status::human,
            )
        }
        Command::Pki { command } => pki(command),
    }
}

/// The config and everything it names: what `run` starts from and `check-config` checks.
fn load(path: &Path) -> Result<(HubConfig, Resources), ConfigError> {
    let cfg = HubConfig::load(path)?;
    let res = Resources::load(&cfg)?;
    Ok((cfg, res))
}

fn run(path: &Path) -> ExitCode {
    warren_daemon::init_tracing();
    let (cfg, res) = match load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hub: {e}");
            return ExitCode::from(2);
        }
    };
    warren_daemon::run_until_signal("hub", |shutdown| crate::run(cfg, res, shutdown))
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
