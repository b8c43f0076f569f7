//! The command-line pieces `edge` and `hub` share: the config and status arguments, parsing
//! with warren's exit codes (0 OK, 2 usage or config error), and the `status` subcommand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where configs live by default.
pub const CONFIG_DIR: &str = if cfg!(target_os = "freebsd") {
    "/usr/local/etc/warren"
} else {
    "/etc/warren"
};

/// `CONFIG_DIR/<daemon>.toml`.
pub fn default_config(daemon: &str) -> PathBuf {
    Path::new(CONFIG_DIR).join(format!("{daemon}.toml"))
}

/// `--config FILE`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Config file [default: /etc/warren/<program>.toml, /usr/local/etc/warren/… on FreeBSD].
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The file given, or `daemon`'s default.
    pub fn path(&self, daemon: &str) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| default_config(daemon))
    }
}

/// The arguments of `status` that every daemon has; each adds its own thresholds.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Config file (to find the status socket).
    #[command(flatten)]
    pub config: ConfigArg,
    /// The status socket, instead of the config's.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print the raw JSON snapshot.
    #[arg(long)]
    pub json: bool,
}

/// Parses `args` (the first item is the program name): help and version are printed and
/// exit 0, usage errors are printed and exit 2.
///
/// # Errors
/// The exit code to return when there is nothing to run.
pub fn parse<C: Parser>(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<C, ExitCode> {
    C::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// A monitoring check: the snapshot (or why there is none) → exit code and plugin line.
pub type PluginCheck<'a, T> = &'a dyn Fn(Result<&T, &str>) -> (u8, String);

/// The `status` subcommand of `daemon`: asks the running daemon on its socket (from
/// `--socket`, or from the config through `socket_in`) and prints, in this order of
/// preference, the `plugin` line (thresholds were given), the JSON, or the `human` summary.
///
/// Exit codes: the plugin's own; otherwise 0, 2 when the daemon does not answer (CRITICAL in
/// the plugin convention), 3 when there is no socket to ask (UNKNOWN).
pub fn status<T: Serialize + DeserializeOwned>(
    daemon: &str,
    args: &StatusArgs,
    socket_in: impl FnOnce(&Path) -> Result<PathBuf, String>,
    plugin: Option<PluginCheck<'_, T>>,
    human: &dyn Fn(&T) -> String,
) -> ExitCode {
    let socket = match socket(daemon, args, socket_in) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{daemon}: {e}");
            return ExitCode::from(3);
        }
    };
    let snapshot = crate::query_status::<T>(&socket, daemon);
    if let Some(check) = plugin {
        let (code, line) = check(snapshot.as_ref().map_err(String::as_str));
        println!("{line}");
        return ExitCode::from(code);
    }
    match snapshot {
        Ok(s) if args.json => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            print!("{}", human(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{daemon}: {e}");
            ExitCode::from(2)
        }
    }
}

/// The status socket `args` name: `--socket`, or the one the config names.
///
/// # Errors
/// When the config cannot be read.
pub fn socket(
    daemon: &str,
    args: &StatusArgs,
    socket_in: impl FnOnce(&Path) -> Result<PathBuf, String>,
) -> Result<PathBuf, String> {
    match &args.socket {
        Some(s) => Ok(s.clone()),
        None => socket_in(&args.config.path(daemon)),
    }
}

/// Sends `command` as JSON to the daemon's status socket (from [`socket`]) and reads its
/// answer.
///
/// # Errors
/// A message saying what went wrong: no socket, nothing listening, a bad answer.
pub fn ask<C: Serialize, T: DeserializeOwned>(
    daemon: &str,
    args: &StatusArgs,
    socket_in: impl FnOnce(&Path) -> Result<PathBuf, String>,
    command: &C,
) -> Result<T, String> {
    let path = socket(daemon, args, socket_in)?;
    let body = serde_json::to_vec(command).map_err(|e| e.to_string())?;
    crate::control::request(&path, daemon, &body)
}

/// A time in ms since the epoch as local time with milliseconds, for people.
pub fn local_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// `text` with every control character but the newline escaped: what an event carries (a user
/// name, an error quoting a server) must not drive the operator's terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("dan\u{1b}[2J\r\nok"), "dan\\u{1b}[2J\\r\nok");
    }
}
