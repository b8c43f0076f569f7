//! The command line: `hub run | check-config | status | trace | dead-letters | pki | acl`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warren_daemon::cli::{ConfigArg, StatusArgs};
use warren_daemon::config::ConfigError;

use crate::config::{Broker, HubConfig};
use crate::control::{Command as Control, Reply};
use crate::inbox::Selection;
use crate::resources::Resources;
use crate::status::{self, Thresholds};
use warren_proto::EventId;

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
    /// What the hub did with one event: when it arrived and from which edge, whether it was
    /// a duplicate, what each route made of it, and every delivery attempt. Exit 1 when the
    /// hub has no record of it.
    Trace {
        #[command(flatten)]
        target: StatusArgs,
        /// The event id (`hare test` prints it).
        id: EventId,
    },
    /// Deliveries given up on (kept for `[delivery] keep_dead_letters`): list them, send
    /// them again once the cause is fixed, or drop them.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// A small CA for this installation.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Translate an mqttwarn.ini into notifiers and routes for hub.toml, printed on stdout.
    /// What has no equivalent is listed at the top with the line it came from; secrets in
    /// the file are written to files of their own, which the output names.
    ImportMqttwarn {
        /// The mqttwarn.ini.
        ini: PathBuf,
        /// Where the secrets go: created (mode 0700), or a directory of yours only you can
        /// enter; each file new, mode 0600.
        #[arg(long, default_value = "mqttwarn-secrets")]
        secrets_dir: PathBuf,
        /// Replace secret files that exist.
        #[arg(long)]
        force: bool,
        /// The topic hared published logins on.
        #[arg(long, default_value = warren_proto::topic::LEGACY)]
        topic: String,
        /// For targets warren has no notifier for: the Python that has mqttwarn, to run
        /// mqttwarn's own plugin through an exec notifier.
        #[arg(long, default_value = "/usr/bin/python3")]
        mqttwarn_python: String,
        /// …and the script that runs it (deploy/mqttwarn/warren-mqttwarn-service).
        #[arg(long, default_value = "/usr/local/bin/warren-mqttwarn-service")]
        runner: String,
        /// List those targets as not imported instead.
        #[arg(long)]
        without_mqttwarn: bool,
    },
    /// Print the access rules the embedded broker enforces, for an external broker:
    /// each edge publishes and reads only its own topics.
    Acl {
        /// The broker's ACL format.
        #[arg(long, value_enum, default_value = "mosquitto")]
        format: AclFormat,
        /// The hub's user on that broker [default: the config's `username`].
        #[arg(long)]
        hub_user: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// List them, newest first.
    List {
        #[command(flatten)]
        target: StatusArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put them back in their notifiers' outboxes, to be delivered at once, with a new
    /// retry budget (after fixing a token, say).
    Retry {
        #[command(flatten)]
        target: StatusArgs,
        #[command(flatten)]
        which: Which,
    },
    /// Forget them.
    Drop {
        #[command(flatten)]
        target: StatusArgs,
        #[command(flatten)]
        which: Which,
    },
}

#[derive(clap::Args)]
#[group(required = true)]
struct Which {
    /// Their numbers, as `list` shows them.
    seqs: Vec<u64>,
    /// Every one.
    #[arg(long, conflicts_with = "seqs")]
    all: bool,
    /// Every one of this notifier.
    #[arg(long, conflicts_with = "seqs")]
    notifier: Option<String>,
}

impl Which {
    fn selection(self) -> Selection {
        if self.all || self.notifier.is_some() {
            Selection::All(self.notifier)
        } else {
            Selection::Seqs(self.seqs)
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AclFormat {
    /// An `acl_file` for mosquitto.
    Mosquitto,
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
        /// Days the hub's certificate is valid.
        #[arg(long, default_value_t = crate::pki::DEFAULT_DAYS)]
        days: u32,
    },
    /// Issue an edge's client certificate (CN = the edge id).
    Issue {
        /// Directory holding the CA.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = crate::pki::DEFAULT_DAYS)]
        days: u32,
        /// Revoke the edge's current certificate and issue a new one.
        #[arg(long)]
        replace: bool,
        /// The edge id.
        name: String,
    },
    /// Revoke an edge's certificate: add it to `crl.pem`, which a running hub with
    /// `crl_file` set there picks up within seconds (or at once on SIGHUP).
    Revoke {
        /// Directory holding the CA.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// The edge id.
        name: String,
    },
    /// List the certificates issued, with their end dates and whether they are revoked.
    List {
        /// Directory holding the CA.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
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
                Ok((c, res)) => {
                    let store = match res.store.as_ref().map(check_store) {
                        None => String::new(),
                        Some(Ok(said)) => format!("; store: {said}"),
                        Some(Err(e)) => {
                            eprintln!(
                                "hub: {}: the store ([store] url_file): {e}",
                                config.display()
                            );
                            return ExitCode::from(2);
                        }
                    };
                    println!(
                        "{}: OK ({} notifiers, {} routes{store})",
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
        Command::Trace { target, id } => trace(&target, id),
        Command::DeadLetters { command } => dead_letters(command),
        Command::Pki { command } => pki(command),
        Command::ImportMqttwarn {
            ini,
            secrets_dir,
            force,
            topic,
            mqttwarn_python,
            runner,
            without_mqttwarn,
        } => {
            let runner = (!without_mqttwarn).then_some((mqttwarn_python, runner));
            import_mqttwarn(&ini, &secrets_dir, force, topic, runner)
        }
        Command::Acl {
            format: AclFormat::Mosquitto,
            hub_user,
            config,
        } => {
            let cfg = match HubConfig::load(&config.path("hub")) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hub: {e}");
                    return ExitCode::from(2);
                }
            };
            let configured = match &cfg.broker {
                Broker::External(b) => b.username.clone(),
                Broker::Embedded(_) => None,
            };
            let Some(hub_user) = hub_user.or(configured) else {
                eprintln!("hub: the config names no broker `username`: give --hub-user");
                return ExitCode::from(2);
            };
            let legacy = cfg.legacy.republish.then_some(cfg.legacy.topic.as_str());
            print!("{}", crate::acl::mosquitto(&hub_user, legacy));
            ExitCode::SUCCESS
        }
    }
}

/// `hub import-mqttwarn`: the fragment on stdout, the secrets in their files, a summary on
/// stderr. Exit 2 when the file cannot be read or the secrets cannot be written.
fn import_mqttwarn(
    ini: &Path,
    secrets_dir: &Path,
    force: bool,
    topic: String,
    runner: Option<(String, String)>,
) -> ExitCode {
    let fail = |what: String| {
        eprintln!("hub: {what}");
        ExitCode::from(2)
    };
    let text = match std::fs::read_to_string(ini) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", ini.display())),
    };
    let secrets_dir = match std::path::absolute(secrets_dir) {
        Ok(d) => d,
        Err(e) => return fail(format!("{}: {e}", secrets_dir.display())),
    };
    let absolute = match std::path::absolute(ini) {
        Ok(a) => a,
        Err(e) => return fail(format!("{}: {e}", ini.display())),
    };
    let opts = crate::mqttwarn::Options {
        source: ini.display().to_string(),
        secrets_dir: secrets_dir.clone(),
        ini_dir: absolute.parent().map(Path::to_owned).unwrap_or_default(),
        topic,
        services: runner.map(|(python, script)| crate::mqttwarn::ServiceRunner {
            python,
            script,
            ini: absolute.display().to_string(),
        }),
    };
    let imported = match crate::mqttwarn::import(&text, &opts) {
        Ok(i) => i,
        Err(e) => return fail(format!("{}: {e}", ini.display())),
    };
    if !imported.secrets.is_empty()
        && let Err(e) = crate::mqttwarn::write_secrets(&secrets_dir, &imported.secrets, force)
    {
        return fail(e);
    }
    print!("{}", imported.toml);
    eprintln!(
        "hub: {} secret files in {}; {} things not imported (listed at the top)",
        imported.secrets.len(),
        secrets_dir.display(),
        imported.not_imported
    );
    ExitCode::SUCCESS
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
    if let Some(state) = cfg.inbox_dir.parent()
        && let Err(e) = warren_daemon::files::secure_state(state)
    {
        eprintln!("hub: state directory {}: {e}", state.display());
        return ExitCode::FAILURE;
    }
    warren_daemon::run_until_signal("hub", |shutdown| crate::run(cfg, res, shutdown))
}

/// Sends `command` to the running hub; its answer, or what went wrong.
fn ask(target: &StatusArgs, command: &Control) -> Result<Reply, String> {
    warren_daemon::cli::ask(
        "hub",
        target,
        |config| {
            HubConfig::load(config)
                .map(|c| c.status_socket)
                .map_err(|e| e.to_string())
        },
        command,
    )
}

fn trace(target: &StatusArgs, id: EventId) -> ExitCode {
    let reply = match ask(target, &Control::Trace { id }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hub: {e}");
            return ExitCode::from(2);
        }
    };
    match (reply.trace, reply.error) {
        (Some(t), _) if target.json => {
            println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
            ExitCode::SUCCESS
        }
        (Some(t), _) => {
            print!("{}", crate::trace::human(&t));
            ExitCode::SUCCESS
        }
        (None, error) => {
            eprintln!("{}", error.unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

fn dead_letters(command: DeadLetterCommand) -> ExitCode {
    let (target, command) = match command {
        DeadLetterCommand::List { target, limit } => (target, Control::ListDeadLetters { limit }),
        DeadLetterCommand::Retry { target, which } => (
            target,
            Control::RetryDeadLetters {
                which: which.selection(),
            },
        ),
        DeadLetterCommand::Drop { target, which } => (
            target,
            Control::DropDeadLetters {
                which: which.selection(),
            },
        ),
    };
    let answer = ask(&target, &command).and_then(|r| match r.error {
        Some(e) => Err(e),
        None => Ok(r),
    });
    let reply = match answer {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hub: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Control::ListDeadLetters { .. } if target.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&reply.dead_letters).unwrap_or_default()
            );
        }
        Control::ListDeadLetters { .. } => {
            for d in &reply.dead_letters {
                let at = warren_daemon::cli::local_time(d.at_ms);
                println!(
                    "#{:<6} {at}  {:<12} {} attempts  {:?}  {}  event {}",
                    d.seq, d.notifier, d.attempts, d.title, d.error, d.id
                );
            }
        }
        Control::RetryDeadLetters { .. } => println!("{} put back for delivery", reply.changed),
        Control::DropDeadLetters { .. } => println!("{} dropped", reply.changed),
        Control::Status | Control::Trace { .. } => {}
    }
    ExitCode::SUCCESS
}

fn pki(command: PkiCommand) -> ExitCode {
    let result = match command {
        PkiCommand::Init { dir, names, days } => crate::pki::init(&dir, &names, days).map(|hub| {
            println!("CA:   {}", dir.join("ca.pem").display());
            println!("hub:  {} (key {})", hub.cert.display(), hub.key.display());
            println!("CRL:  {} (for crl_file)", dir.join("crl.pem").display());
            println!("next: hub pki issue --dir {} EDGE_ID", dir.display());
        }),
        PkiCommand::Issue {
            dir,
            days,
            replace,
            name,
        } => crate::pki::issue(&dir, &name, days, replace).map(|edge| {
            println!(
                "{}: {} (key {})",
                name,
                edge.cert.display(),
                edge.key.display()
            );
        }),
        PkiCommand::Revoke { dir, name } => crate::pki::revoke(&dir, &name).map(|serial| {
            println!(
                "{name}: certificate {serial} revoked in {}",
                dir.join("crl.pem").display()
            );
        }),
        PkiCommand::List { dir } => crate::pki::list(&dir).map(|listed| {
            let now = i64::try_from(crate::now_ms() / 1000).unwrap_or(i64::MAX);
            for l in listed {
                let state = if l.revoked {
                    "revoked".to_owned()
                } else if l.facts.not_after <= now {
                    "expired".to_owned()
                } else {
                    format!("valid, {} days left", (l.facts.not_after - now) / 86_400)
                };
                let until = chrono::DateTime::from_timestamp(l.facts.not_after, 0)
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_default();
                println!(
                    "{:<24} until {until}  {state:<24} serial {}",
                    l.name, l.facts.serial
                );
            }
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

/// Reaches the shared store and reads its schema version, for `check-config`.
fn check_store(o: &crate::store::postgres::Options) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(crate::store::postgres::check(o))
        .map_err(|e| e.to_string())
}
