//! Command-line parsing, by hand: hare stays std-only.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: hare [OPTIONS] HOST[:PORT]...
       hare alert --title TITLE --message TEXT [--priority N] [--tag TAG]... [OPTIONS] [HOST[:PORT]...]
       hare test [--user USER] [--rhost ADDR] [--service NAME] [OPTIONS] [HOST[:PORT]...]

Sends one login event per PAM session to each warren edge (or the original hared) by UDP,
default port 8035. Run from PAM:
    session optional pam_exec.so /usr/local/sbin/hare 192.168.1.130

`hare test` sends a test event that takes the path a login from this host would, prints its
id and the `hub trace` command that follows it (run it as root when the key file is root's).

options:
    --config FILE     settings file (default /etc/warren/hare.toml or /usr/local/etc/warren/hare.toml)
    --key-file FILE   sign with the first key of FILE (`<key-id> <base64 secret>` lines); sends v2
    --legacy          send the original hare's format (no id, kind or signature)
    --logout          also send a logout event on close_session
    -h, --help        this text
    -V, --version     the version
";

pub enum Command {
    Help,
    Version,
    Send(Box<Options>),
}

/// What the command line asked for; the settings file fills what it leaves out.
#[derive(Debug, Default)]
pub struct Options {
    pub destinations: Vec<String>,
    pub config: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub legacy: bool,
    pub logout: bool,
    pub alert: Option<Alert>,
    pub test: Option<Probe>,
}

#[derive(Debug, Default)]
pub struct Alert {
    pub title: String,
    pub message: String,
    pub priority: Option<i64>,
    pub tags: Vec<String>,
}

/// What `hare test` pretends: a login of `user` from `rhost` by `service` (each defaulted from
/// the environment when not given).
#[derive(Debug, Default)]
pub struct Probe {
    pub user: Option<String>,
    pub rhost: Option<String>,
    pub service: Option<String>,
}

#[derive(Debug)]
pub struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut args = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .peekable();
    let mut opts = Options::default();
    match args.peek().map(String::as_str) {
        Some("alert") => opts.alert = Some(Alert::default()),
        Some("test") => opts.test = Some(Probe::default()),
        _ => {}
    }
    if opts.alert.is_some() || opts.test.is_some() {
        args.next();
    }
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--config" => opts.config = Some(value("--config")?.into()),
            "--key-file" => opts.key_file = Some(value("--key-file")?.into()),
            "--legacy" => opts.legacy = true,
            "--logout" => opts.logout = true,
            "--title" | "--message" | "--priority" | "--tag" => {
                let v = value(&arg)?;
                let Some(alert) = opts.alert.as_mut() else {
                    return Err(usage(format!("{arg} is only for `hare alert`")));
                };
                match arg.as_str() {
                    "--title" => alert.title = v,
                    "--message" => alert.message = v,
                    "--tag" => alert.tags.push(v),
                    _ => {
                        let p = v
                            .parse()
                            .map_err(|_| usage(format!("--priority {v:?} is not an integer")))?;
                        alert.priority = Some(p);
                    }
                }
            }
            "--user" | "--rhost" | "--service" => {
                let v = value(&arg)?;
                let Some(probe) = opts.test.as_mut() else {
                    return Err(usage(format!("{arg} is only for `hare test`")));
                };
                let field = match arg.as_str() {
                    "--user" => &mut probe.user,
                    "--rhost" => &mut probe.rhost,
                    _ => &mut probe.service,
                };
                *field = Some(v);
            }
            s if s.starts_with('-') => return Err(usage(format!("unknown option {s}"))),
            _ => opts.destinations.push(arg),
        }
    }
    if let Some(alert) = &opts.alert
        && alert.title.is_empty()
        && alert.message.is_empty()
    {
        return Err(usage("`hare alert` needs --title or --message"));
    }
    Ok(Command::Send(Box::new(opts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(a: &[&str]) -> Result<Command, UsageError> {
        parse(a.iter().map(OsString::from))
    }

    #[test]
    fn login_form_like_the_original() {
        let Ok(Command::Send(o)) = parse_strs(&["192.168.1.130", "[::1]:9000", "--key-file", "/k"])
        else {
            panic!()
        };
        assert_eq!(o.destinations, ["192.168.1.130", "[::1]:9000"]);
        assert_eq!(o.key_file.unwrap().to_str(), Some("/k"));
        assert!(o.alert.is_none());
    }

    #[test]
    fn alert_form() {
        let Ok(Command::Send(o)) = parse_strs(&[
            "alert",
            "--title",
            "Power",
            "--message",
            "off",
            "--priority",
            "2",
            "--tag",
            "ups",
            "--tag",
            "site",
        ]) else {
            panic!()
        };
        let a = o.alert.unwrap();
        assert_eq!(
            (a.title.as_str(), a.message.as_str(), a.priority),
            ("Power", "off", Some(2))
        );
        assert_eq!(a.tags, ["ups", "site"]);
    }

    #[test]
    fn test_form() {
        let Ok(Command::Send(o)) = parse_strs(&["test", "--rhost", "192.0.2.7", "10.0.0.1"]) else {
            panic!()
        };
        let p = o.test.unwrap();
        assert_eq!(p.rhost.as_deref(), Some("192.0.2.7"));
        assert_eq!((p.user, p.service), (None, None));
        assert_eq!(o.destinations, ["10.0.0.1"]);
        assert!(o.alert.is_none());
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--bogus"][..],
            &["--config"],
            &["--title", "x"],
            &["alert"],
            &["alert", "--title", "t", "--priority", "high"],
            &["--user", "dan"],
            &["test", "--title", "t"],
        ] {
            assert!(parse_strs(bad).is_err(), "{bad:?}");
        }
    }
}
