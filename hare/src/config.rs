//! The optional settings file, merged with the command line.
//!
//! The file is a flat subset of TOML (`key = "string"`, `key = ["a", "b"]`, `key = true`,
//! `key = 250`, `# comments`): enough for hare's few keys without a parser dependency, which
//! keeps hare std-only. Unknown keys are errors, reported with their line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::args::Options;

const DEFAULT_PATHS: [&str; 2] = ["/etc/warren/hare.toml", "/usr/local/etc/warren/hare.toml"];

/// The cap on hare's whole run when the file sets none: short enough that no one notices it
/// at login, long enough for a loopback or LAN send and a cached DNS answer.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
const MAX_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Debug, PartialEq)]
pub struct Settings {
    pub destinations: Vec<String>,
    pub key_file: Option<PathBuf>,
    pub ignore_users: Vec<String>,
    pub legacy: bool,
    pub logout: bool,
    pub hostname: Option<String>,
    pub timeout: Duration,
}

impl Settings {
    /// The command line over the settings file (`--config`, else the first default path that exists).
    pub fn load(opts: &Options) -> Result<Self, String> {
        let file = match &opts.config {
            Some(path) => Some(read(path)?),
            None => DEFAULT_PATHS
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .map(read)
                .transpose()?,
        };
        let mut s = match file {
            Some((path, text)) => parse(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            None => Self::default(),
        };
        if !opts.destinations.is_empty() {
            s.destinations.clone_from(&opts.destinations);
        }
        if opts.key_file.is_some() {
            s.key_file.clone_from(&opts.key_file);
        }
        s.legacy |= opts.legacy;
        s.logout |= opts.logout;
        if s.destinations.is_empty() {
            return Err(
                "no destination: give HOST[:PORT] or `destinations` in the settings file".into(),
            );
        }
        Ok(s)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            destinations: Vec::new(),
            key_file: None,
            ignore_users: Vec::new(),
            legacy: false,
            logout: false,
            hostname: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

fn read(path: &Path) -> Result<(PathBuf, String), String> {
    std::fs::read_to_string(path)
        .map(|t| (path.to_owned(), t))
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

enum Value {
    Str(String),
    List(Vec<String>),
    Bool(bool),
    Int(u64),
}

fn parse(text: &str) -> Result<Settings, String> {
    let mut s = Settings::default();
    for (n, line) in text.lines().enumerate() {
        let err = |msg: &str| format!("line {}: {msg}", n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err("expected `key = value`"))?;
        let (value, rest) = parse_value(value.trim()).map_err(|e| err(&e))?;
        let rest = rest.trim();
        if !(rest.is_empty() || rest.starts_with('#')) {
            return Err(err("unexpected text after the value"));
        }
        let key = key.trim();
        match (key, value) {
            ("destinations", Value::List(v)) => s.destinations = v,
            ("ignore_users", Value::List(v)) => s.ignore_users = v,
            ("key_file", Value::Str(v)) => s.key_file = Some(v.into()),
            ("hostname", Value::Str(v)) => s.hostname = Some(v),
            ("legacy", Value::Bool(v)) => s.legacy = v,
            ("logout", Value::Bool(v)) => s.logout = v,
            ("timeout_ms", Value::Int(v)) => {
                s.timeout = Duration::from_millis(v).min(MAX_TIMEOUT);
            }
            ("destinations" | "ignore_users", _) => {
                return Err(err(&format!("`{key}` must be a list of strings")));
            }
            ("key_file" | "hostname", _) => return Err(err(&format!("`{key}` must be a string"))),
            ("legacy" | "logout", _) => return Err(err(&format!("`{key}` must be true or false"))),
            ("timeout_ms", _) => return Err(err("`timeout_ms` must be an integer")),
            _ => {
                return Err(err(&format!(
                    "unknown key `{key}`, expected one of destinations, key_file, ignore_users, legacy, logout, hostname, timeout_ms"
                )));
            }
        }
    }
    Ok(s)
}

/// Parses one value at the start of `s`; returns it and the text after it.
fn parse_value(s: &str) -> Result<(Value, &str), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let mut items = Vec::new();
        let mut rest = rest.trim_start();
        loop {
            if let Some(after) = rest.strip_prefix(']') {
                return Ok((Value::List(items), after));
            }
            let (item, after) = parse_string(rest)?;
            items.push(item);
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after.trim_start();
            } else if !rest.starts_with(']') {
                return Err("expected `,` or `]` in list".into());
            }
        }
    }
    if s.starts_with('"') {
        let (v, rest) = parse_string(s)?;
        return Ok((Value::Str(v), rest));
    }
    let end = s
        .find(|c: char| c.is_whitespace() || c == '#')
        .unwrap_or(s.len());
    let (word, rest) = s.split_at(end);
    match word {
        "true" => Ok((Value::Bool(true), rest)),
        "false" => Ok((Value::Bool(false), rest)),
        w => w
            .parse()
            .map(|n| (Value::Int(n), rest))
            .map_err(|_| format!("cannot read value `{w}` (strings need double quotes)")),
    }
}

/// A basic TOML string: double quotes, with `\"`, `\\`, `\n` and `\t` escapes.
fn parse_string(s: &str) -> Result<(String, &str), String> {
    let body = s
        .strip_prefix('"')
        .ok_or("expected a double-quoted string")?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                _ => return Err("unsupported escape in string".into()),
            },
            c => out.push(c),
        }
    }
    Err("unterminated string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key() {
        let s = parse(
            r#"
            # where to send
            destinations = ["192.168.1.130", "[::1]:8035"]  # two edges
            key_file = "/etc/warren/hare.key"
            ignore_users = ["backup", "deploy"]
            legacy = false
            logout = true
            hostname = "web \"1\""
            timeout_ms = 5000
            "#,
        )
        .unwrap();
        assert_eq!(s.destinations, ["192.168.1.130", "[::1]:8035"]);
        assert_eq!(s.key_file.unwrap().to_str(), Some("/etc/warren/hare.key"));
        assert_eq!(s.ignore_users, ["backup", "deploy"]);
        assert!(s.logout && !s.legacy);
        assert_eq!(s.hostname.as_deref(), Some("web \"1\""));
        assert_eq!(s.timeout, MAX_TIMEOUT, "capped");
    }

    #[test]
    fn errors_name_the_line() {
        for (text, needle) in [
            ("destinatons = []", "line 1: unknown key `destinatons`"),
            (
                "\nlegacy = \"yes\"",
                "line 2: `legacy` must be true or false",
            ),
            ("key_file = /etc/x", "line 1: cannot read value"),
            ("destinations = [\"a\" \"b\"]", "expected `,`"),
            ("hostname = \"x", "unterminated"),
            ("legacy", "expected `key = value`"),
            ("legacy = true false", "unexpected text"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn command_line_wins() {
        let dir = std::env::temp_dir().join(format!("hare-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hare.toml");
        std::fs::write(&path, "destinations = [\"10.0.0.1\"]\nlegacy = true\n").unwrap();
        let opts = Options {
            config: Some(path.clone()),
            ..Options::default()
        };
        let s = Settings::load(&opts).unwrap();
        assert_eq!(s.destinations, ["10.0.0.1"]);
        assert!(s.legacy);
        let opts = Options {
            config: Some(path),
            destinations: vec!["127.0.0.1".into()],
            ..Options::default()
        };
        assert_eq!(Settings::load(&opts).unwrap().destinations, ["127.0.0.1"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
