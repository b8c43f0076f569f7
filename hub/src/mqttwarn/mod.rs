//! `hub import-mqttwarn`: an `mqttwarn.ini` as a fragment of `hub.toml`.
//!
//! Each target of a launched `[config:SERVICE]` becomes a notifier `SERVICE_TARGET`; each
//! topic section that hared's logins reach (`logging/hare`, or a filter matching it) becomes
//! a `[[route]]` for logins with its `targets`, `title`, `format` and `priority`. What has no
//! equivalent — Python functions (`filter`, `alldata`, a function as `format`), services
//! warren has no notifier for, topics warren's edges never publish — is listed at the top
//! with its line, never dropped in silence. Secrets become files that the output names.

mod ini;
mod literal;
mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use literal::Literal;
use services::{Keys, Secrets, ServiceConfig};
use toml::Value;

use crate::template::Template;

/// What to import and where secrets go.
#[derive(Debug, Clone)]
pub struct Options {
    /// The file, as the output's header names it.
    pub source: String,
    /// The directory for secret files (absolute, so the output names them absolutely).
    pub secrets_dir: PathBuf,
    /// The ini's directory (absolute): mqttwarn reads a relative `$FILE:` from there.
    pub ini_dir: PathBuf,
    /// The topic hared published logins on.
    pub topic: String,
    /// Runs mqttwarn's own service plugins for the targets warren has no notifier for; none:
    /// those are listed as not imported.
    pub services: Option<ServiceRunner>,
}

/// How the hub runs one of mqttwarn's service plugins: `deploy/mqttwarn/warren-mqttwarn-service`
/// under a Python that has mqttwarn, reading the imported ini.
#[derive(Debug, Clone)]
pub struct ServiceRunner {
    /// The Python interpreter with mqttwarn installed.
    pub python: String,
    /// The `warren-mqttwarn-service` script.
    pub script: String,
    /// The mqttwarn.ini, absolute: the script reads the service's config from it.
    pub ini: String,
}

/// The imported config.
#[derive(Debug)]
pub struct Imported {
    /// The `hub.toml` fragment: notes, notifiers, routes.
    pub toml: String,
    /// Secret files to write (0600): path and content.
    pub secrets: Vec<(PathBuf, String)>,
    /// How many things were not imported (each a note in the output).
    pub not_imported: usize,
}

/// Sections that are not topics.
const NOT_TOPICS: [&str; 3] = ["defaults", "failover", "cron"];

/// A login datagram's fields; a template also has [`crate::template::BUILT_IN`].
const LOGIN_FIELDS: [&str; 7] = [
    "hostname", "user", "service", "rhost", "tty", "ruser", "tst",
];

/// Imports `text`, an `mqttwarn.ini`.
///
/// # Errors
/// The line and reason when the file is not an INI file Python could read.
pub fn import(text: &str, opts: &Options) -> Result<Imported, String> {
    let sections = ini::parse(text).map_err(|(line, why)| format!("line {line}: {why}"))?;
    let mut im = Importer {
        opts,
        notes: Vec::new(),
        notifiers: Vec::new(),
        targets: BTreeMap::new(),
        secrets: Secrets::new(opts.secrets_dir.clone(), opts.ini_dir.clone()),
        fields: BTreeSet::new(),
        routed: BTreeSet::new(),
    };
    let defaults = sections.iter().find(|s| s.name == "defaults");
    let launched: Vec<String> = defaults
        .and_then(|d| d.get("launch"))
        .map(|e| e.value.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    if let Some(d) = defaults {
        im.defaults(d);
    }
    for s in &sections {
        if let Some(service) = s.name.strip_prefix("config:") {
            if launched.iter().any(|l| l == service) {
                im.service(service, s);
            } else {
                im.note(
                    s.line,
                    format!("[{}]: not in `launch`, so mqttwarn never loaded it", s.name),
                );
            }
        }
    }
    let mut routes = Vec::new();
    for s in &sections {
        if s.name.starts_with("config:") || s.name == "defaults" {
            continue;
        }
        if let Some(route) = im.route(s) {
            routes.push(route);
        }
    }
    let unknown: Vec<String> = im
        .fields
        .iter()
        .filter(|f| {
            let f = f.as_str();
            !LOGIN_FIELDS.contains(&f) && !crate::template::BUILT_IN.contains(&f)
        })
        .map(|f| format!("{{{f}}}"))
        .collect();
    if !unknown.is_empty() {
        im.note(
            0,
            format!(
                "the templates use {}, which neither a login nor warren has (an `alldata` function's?): they render empty",
                unknown.join(", ")
            ),
        );
    }
    let toml = im.render(&routes);
    Ok(Imported {
        toml,
        not_imported: im.notes.len(),
        secrets: im.secrets.files,
    })
}

/// Writes the secret files into `dir`: created private (0700) if it is not there; an
/// existing one must be a directory of this user's that no one else can enter, so nothing
/// already there is loosened or tightened (think `--secrets-dir /etc/warren`). Files are
/// new (or, with `overwrite`, replaced), 0600, never through a symbolic link.
///
/// # Errors
/// The path and the reason.
pub fn write_secrets(
    dir: &Path,
    files: &[(PathBuf, String)],
    overwrite: bool,
) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let shown = dir.display();
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            let mine = m.uid() == rustix::process::geteuid().as_raw();
            if !m.is_dir() || !mine || m.permissions().mode() & 0o077 != 0 {
                return Err(format!(
                    "{shown}: must be a directory of yours that only you can enter (mode 0700), or not exist"
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{shown}: {e}"))?,
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    for (path, secret) in files {
        warren_daemon::files::write_private(path, secret, overwrite).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
                " (--force replaces it)"
            } else {
                ""
            };
            format!("{}: {e}{hint}", path.display())
        })?;
    }
    Ok(())
}

/// A notifier as printed.
struct Notifier {
    name: String,
    origin: String,
    keys: Keys,
}

/// A route as printed.
struct Route {
    origin: String,
    notify: Vec<String>,
    left_out: Vec<String>,
    title: Option<String>,
    format: Option<String>,
    priority: Option<String>,
}

struct Importer<'a> {
    opts: &'a Options,
    /// `(line, text)` of everything not imported; line 0 is the file as a whole.
    notes: Vec<(usize, String)>,
    notifiers: Vec<Notifier>,
    /// Service → its targets in file order, each with its notifier if imported.
    targets: BTreeMap<String, Vec<(String, Option<String>)>>,
    secrets: Secrets,
    /// The fields the imported templates use.
    fields: BTreeSet<String>,
    /// The notifiers earlier routes send to.
    routed: BTreeSet<String>,
}

impl Importer<'_> {
    fn note(&mut self, line: usize, text: String) {
        self.notes.push((line, text));
    }

    fn defaults(&mut self, d: &ini::Section) {
        if let Some(f) = d.get("functions") {
            self.note(
                f.line,
                format!("[defaults] functions = {}: warren runs no Python; each function this config uses is listed here", f.value),
            );
        }
        let own: Vec<&str> = d
            .entries
            .iter()
            .filter(|e| e.key != "functions" && e.key != "launch")
            .map(|e| e.key.as_str())
            .collect();
        if !own.is_empty() {
            self.note(
                d.line,
                format!("[defaults] {}: how mqttwarn itself runs (its broker, its log); the hub's own settings replace them", own.join(", ")),
            );
        }
    }

    fn service(&mut self, service: &str, s: &ini::Section) {
        let module = s
            .get("module")
            .and_then(|m| literal::value(&m.value).text())
            .unwrap_or_else(|| service.to_owned());
        let Some(targets) = s.get("targets") else {
            self.note(s.line, format!("[{}]: no `targets`", s.name));
            return;
        };
        let Ok(Literal::Dict(items)) = literal::parse(&targets.value) else {
            self.note(
                targets.line,
                format!("[{}] targets: not a Python dict", s.name),
            );
            return;
        };
        let config: ServiceConfig = s
            .entries
            .iter()
            .filter(|e| e.key != "targets" && e.key != "module")
            .map(|e| (e.key.clone(), literal::value(&e.value)))
            .collect();
        let mut names = Vec::new();
        for (target, address) in &items {
            let Some(target) = target.text() else {
                self.note(
                    targets.line,
                    format!("[{}]: a target named by a {target:?}, not a string", s.name),
                );
                continue;
            };
            let name = self.unique_name(service, &target);
            let written = self.secrets.files.len();
            let keys = services::notifier(&name, &module, address, &config, &mut self.secrets)
                .or_else(|why| {
                    // Secrets of a translation that failed half-way are not needed.
                    self.secrets.files.truncate(written);
                    self.through_mqttwarn(service, &target, why)
                });
            match keys {
                Ok(keys) => {
                    self.notifiers.push(Notifier {
                        name: name.clone(),
                        origin: format!("[{}] '{target}' (line {})", s.name, targets.line),
                        keys,
                    });
                    names.push((target, Some(name)));
                }
                Err(why) => {
                    self.note(targets.line, format!("{service}:{target}: {why}"));
                    names.push((target, None));
                }
            }
        }
        self.targets.insert(service.to_owned(), names);
    }

    /// An `exec` notifier running mqttwarn's own plugin for a target warren cannot send to
    /// itself (`why`), when a runner is configured.
    fn through_mqttwarn(&self, service: &str, target: &str, why: String) -> Result<Keys, String> {
        let Some(r) = &self.opts.services else {
            return Err(why);
        };
        let mut command = vec![
            r.python.as_str(),
            r.script.as_str(),
            "--ini",
            r.ini.as_str(),
            "--service",
            service,
            "--target",
            target,
        ];
        if self.opts.topic != warren_proto::topic::LEGACY {
            command.extend(["--topic", self.opts.topic.as_str()]);
        }
        Ok(Keys::through_mqttwarn(command, why))
    }

    /// `SERVICE_TARGET` as a notifier name: `[a-z0-9_-]`, at most 64, not yet taken.
    fn unique_name(&self, service: &str, target: &str) -> String {
        let base: String = format!("{service}_{target}")
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        let taken = |n: &str| self.notifiers.iter().any(|x| x.name == n);
        let mut name = base.clone();
        for i in 2.. {
            if !taken(&name) {
                break;
            }
            name = format!("{base}_{i}");
        }
        name
    }

    fn route(&mut self, s: &ini::Section) -> Option<Route> {
        if NOT_TOPICS.contains(&s.name.as_str()) {
            let what = match s.name.as_str() {
                "failover" => {
                    "mqttwarn's targets for its own failures; warren's are `fallback` notifiers and dead letters (`hub status`)"
                }
                _ => "periodic Python functions; warren runs none",
            };
            self.note(s.line, format!("[{}]: {what}", s.name));
            return None;
        }
        let Some(targets) = s.get("targets") else {
            self.note(
                s.line,
                format!("[{}]: no `targets`, so mqttwarn ignored it", s.name),
            );
            return None;
        };
        let topic = s.get("topic").map_or(s.name.as_str(), |e| e.value.as_str());
        let logins = self.opts.topic.as_str();
        if !topic_matches(topic, logins) {
            self.note(
                s.line,
                format!("[{}]: topic {topic} is not where hared published logins ({logins}); warren's edges publish nothing there — keep mqttwarn for it", s.name),
            );
            return None;
        }
        let mut route = Route {
            origin: format!("[{}] (line {})", s.name, s.line),
            notify: Vec::new(),
            left_out: Vec::new(),
            title: None,
            format: None,
            priority: None,
        };
        for target in self.target_list(s.name.as_str(), targets) {
            let (service, one) = match target.split_once(':') {
                Some((svc, t)) => (svc.to_owned(), Some(t.to_owned())),
                None => (target.clone(), None),
            };
            let Some(known) = self.targets.get(&service) else {
                route
                    .left_out
                    .push(format!("{target} (no such service imported)"));
                continue;
            };
            let picked: Vec<&(String, Option<String>)> = known
                .iter()
                .filter(|(t, _)| one.as_ref().is_none_or(|o| o == t))
                .collect();
            if picked.is_empty() {
                route.left_out.push(format!("{target} (no such target)"));
            }
            for (t, name) in picked {
                match name {
                    Some(n) if !route.notify.contains(n) => route.notify.push(n.clone()),
                    Some(_) => {}
                    None => route.left_out.push(format!("{service}:{t} (not imported)")),
                }
            }
        }
        route.title = match s.get("title") {
            Some(e) => self.template(s, e),
            // mqttwarn's own default title.
            None => Some(format!("mqttwarn: {}", literal_braces(logins))),
        };
        match s.get("format") {
            Some(e) => route.format = self.template(s, e),
            None => self.note(
                s.line,
                format!("[{}]: without `format` mqttwarn sent the message as it came (the JSON); warren sends its default message", s.name),
            ),
        }
        if let Some(e) = s.get("priority") {
            route.priority = self.template(s, e);
        }
        for e in &s.entries {
            let why = match e.key.as_str() {
                "targets" | "topic" | "title" | "format" | "priority" => continue,
                "filter" => {
                    "a Python function deciding which messages to drop: warren has none, so the route below notifies every login, those it dropped too; a route's `unless` (user, rhost_cidr, service, …) or `match` does this"
                }
                "alldata" | "datamap" => {
                    "a Python function adding fields: warren has none; its templates have tstamp (the login's local time), site, edge, id and remote built in"
                }
                "template" => "a Jinja2 template: warren's templates are `{field}` text",
                "qos" => "mqttwarn's subscription QoS: warren delivers every event at least once",
                _ => "not a key warren imports",
            };
            self.note(
                e.line,
                format!("[{}] {} = {}: {why}", s.name, e.key, e.value),
            );
        }
        if route.notify.is_empty() {
            self.note(
                targets.line,
                format!(
                    "[{}]: none of its targets was imported, so no route",
                    s.name
                ),
            );
            return None;
        }
        // mqttwarn sent once per section; a warren notifier gets an event once, with the
        // first route's words.
        let shared: Vec<&str> = route
            .notify
            .iter()
            .filter(|n| self.routed.contains(*n))
            .map(String::as_str)
            .collect();
        if !shared.is_empty() {
            let shared = shared.join(", ");
            self.note(
                s.line,
                format!("[{}]: an earlier section also sends to {shared}; mqttwarn sent once per section, warren sends each notifier a login once, with the first route's title and format", s.name),
            );
        }
        self.routed.extend(route.notify.iter().cloned());
        Some(route)
    }

    /// The targets of a topic section: a list (`svc:target, …`) or a dict by topic.
    fn target_list(&mut self, section: &str, e: &ini::Entry) -> Vec<String> {
        if is_function(&e.value) {
            self.note(e.line, format!("[{section}] targets = {}: a Python function choosing targets; list them instead", e.value));
            return Vec::new();
        }
        let split = |s: &str| -> Vec<String> {
            s.split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect()
        };
        match literal::value(&e.value) {
            // As mqttwarn picks: the most specific matching topic (most levels, then
            // wildcards last).
            Literal::Dict(by_topic) => {
                let key = |t: &str| {
                    let levels = t.split('/').count();
                    (levels, t.replace('#', "\u{1}").replace('+', "\u{2}"))
                };
                let best = by_topic
                    .iter()
                    .filter_map(|(t, v)| Some((t.as_str()?, v)))
                    .filter(|(t, _)| topic_matches(t, &self.opts.topic))
                    .max_by(|a, b| key(a.0).cmp(&key(b.0)));
                match best {
                    Some((_, Literal::List(v))) => v.iter().filter_map(Literal::text).collect(),
                    Some((_, v)) => v.text().map(|s| split(&s)).unwrap_or_default(),
                    None => Vec::new(),
                }
            }
            Literal::List(v) => v.iter().filter_map(Literal::text).collect(),
            other => other.text().map(|s| split(&s)).unwrap_or_default(),
        }
    }

    /// A `title`, `format` or `priority` as a warren template; `None` (noted) when it is
    /// not one. Taken as written: mqttwarn does not unquote these.
    fn template(&mut self, s: &ini::Section, e: &ini::Entry) -> Option<String> {
        match convert(&e.value, &self.opts.topic) {
            Ok((t, fields)) => {
                self.fields.extend(fields);
                Some(t)
            }
            Err(why) => {
                self.note(
                    e.line,
                    format!(
                        "[{}] {} = {}: {why}; warren's default is used",
                        s.name, e.key, e.value
                    ),
                );
                None
            }
        }
    }

    fn render(&self, routes: &[Route]) -> String {
        let mut out = String::new();
        let source = format!(
            "Imported from {} by `hub import-mqttwarn`: add it to hub.toml.",
            self.opts.source
        );
        comment(&mut out, &source, "# ", "# ");
        if !self.notes.is_empty() {
            out.push_str("#\n# NOT IMPORTED: decide what each of these becomes.\n");
            let mut notes: Vec<&(usize, String)> = self.notes.iter().collect();
            // In file order; what concerns the whole file last.
            notes.sort_by_key(|(line, _)| if *line == 0 { usize::MAX } else { *line });
            for (line, text) in notes {
                let at = if *line == 0 {
                    String::new()
                } else {
                    format!("line {line}: ")
                };
                comment(&mut out, &format!("{at}{text}"), "#  - ", "#    ");
            }
        }
        let via: Vec<&str> = self
            .notifiers
            .iter()
            .filter(|n| n.keys.via_mqttwarn)
            .map(|n| n.name.as_str())
            .collect();
        if !via.is_empty() {
            out.push_str("#\n# Sent by mqttwarn's own service plugins, which warren has no notifier for: install\n# deploy/mqttwarn/warren-mqttwarn-service; the hub's user must be able to run mqttwarn\n# and read its ini.\n");
            comment(&mut out, &via.join(", "), "#   ", "#   ");
        }
        if !self.secrets.files.is_empty() {
            out.push_str("#\n# Secrets from the file are in files of their own (mode 0600), named below:\n# make them readable by the hub's user only.\n");
        }
        for n in &self.notifiers {
            let _ = writeln!(out, "\n[notifier.{}]", n.name);
            comment(&mut out, &n.origin, "# ", "# ");
            for c in &n.keys.caveats {
                comment(&mut out, c, "# ", "# ");
            }
            for (key, value) in &n.keys.keys {
                let _ = writeln!(out, "{key} = {value}");
            }
        }
        for r in routes {
            out.push_str("\n[[route]]\n");
            comment(&mut out, &r.origin, "# ", "# ");
            if !r.left_out.is_empty() {
                let left_out = format!("targets not imported: {}", r.left_out.join(", "));
                comment(&mut out, &left_out, "# ", "#   ");
            }
            out.push_str("match = { kind = \"login\" }\n");
            let names: Vec<Value> = r.notify.iter().map(|n| n.as_str().into()).collect();
            let _ = writeln!(out, "notify = {}", Value::from(names));
            for (key, value) in [
                ("title", &r.title),
                ("format", &r.format),
                ("priority", &r.priority),
            ] {
                if let Some(v) = value {
                    let _ = writeln!(out, "{key} = {}", Value::from(v.as_str()));
                }
            }
        }
        out
    }
}

/// A Python function by name, as mqttwarn tells one: `^\w+\(\)`.
fn is_function(value: &str) -> bool {
    let name = value.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
    name.len() < value.len() && name.starts_with("()")
}

/// `text` as a template's literal text.
fn literal_braces(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

/// A Python `str.format` template as a warren template, and the fields it uses. `{topic}`
/// becomes the topic itself; mqttwarn's `\n` a line break.
fn convert(text: &str, topic: &str) -> Result<(String, Vec<String>), String> {
    if is_function(text) {
        return Err("a Python function".into());
    }
    let text = text.replace("\\n", "\n");
    let mut out = String::new();
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push_str("{{");
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push_str("}}");
            }
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => inner.push(c),
                        None => return Err(format!("`{{{inner}` is not closed")),
                    }
                }
                match inner.as_str() {
                    "topic" => out.push_str(&literal_braces(topic)),
                    "payload" => {
                        return Err(
                            "`{payload}` is the message as it came; warren has no such field"
                                .into(),
                        );
                    }
                    f if !f.is_empty()
                        && !f.starts_with(|c: char| c.is_ascii_digit())
                        && f.chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '-') =>
                    {
                        out.push('{');
                        out.push_str(f);
                        out.push('}');
                        fields.push(f.to_owned());
                    }
                    f => {
                        return Err(format!(
                            "`{{{f}}}` is Python formatting that warren's `{{field}}` templates lack"
                        ));
                    }
                }
            }
            c => out.push(c),
        }
    }
    Template::parse(&out)?;
    Ok((out, fields))
}

/// Whether the MQTT topic filter `filter` matches `topic`.
fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        match (f, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// Writes `text` as comment lines of about 96 characters, the first starting with `first`,
/// the others with `rest`. Control characters (the line breaks of a value that went on over
/// several lines, or that a Python string put in a name) become spaces: nothing from the ini
/// can end a comment and become config.
fn comment(out: &mut String, text: &str, first: &str, rest: &str) {
    const WIDTH: usize = 96;
    let text = text.replace(char::is_control, " ");
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !empty && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests;
