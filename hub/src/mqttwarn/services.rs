//! One mqttwarn service target as a warren notifier: the keys of its `[notifier.NAME]`.
//!
//! Each function reads what mqttwarn 0.36's service of that name reads (`[config:SERVICE]`
//! keys and the target's address list) and says what it leaves behind. Secrets never go into
//! the keys: they become files, named by `*_file` keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Value;

use super::literal::Literal;

/// The `[config:SERVICE]` keys other than `targets` and `module`, as mqttwarn reads them.
pub type ServiceConfig = BTreeMap<String, Literal>;

/// A notifier's keys in the order they are printed, and what the reader should know.
#[derive(Debug, Default)]
pub struct Keys {
    /// `key = value` lines, `type` first.
    pub keys: Vec<(&'static str, Value)>,
    /// Differences from what mqttwarn did, printed above the keys.
    pub caveats: Vec<String>,
    /// Whether it runs mqttwarn's own plugin.
    pub via_mqttwarn: bool,
}

impl Keys {
    fn of(kind: &str) -> Self {
        let mut k = Self::default();
        k.set("type", kind);
        k
    }

    /// An `exec` notifier running `command`, mqttwarn's own plugin, because warren has no
    /// notifier of its own for the target (`why`).
    pub fn through_mqttwarn(command: Vec<&str>, why: String) -> Self {
        let mut k = Self::of("exec");
        k.set("command", command);
        k.caveat(format!(
            "through mqttwarn's own service (warren-mqttwarn-service): {why}"
        ));
        k.via_mqttwarn = true;
        k
    }

    fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.keys.push((key, value.into()));
    }

    fn caveat(&mut self, text: impl Into<String>) {
        self.caveats.push(text.into());
    }
}

/// Where secrets go: one file each, under a directory the output names.
#[derive(Debug)]
pub struct Secrets {
    dir: PathBuf,
    /// The ini's directory, which mqttwarn reads a relative `$FILE:` from.
    ini_dir: PathBuf,
    /// Files to write: path and content.
    pub files: Vec<(PathBuf, String)>,
}

impl Secrets {
    /// Secrets to be written under `dir`, for an ini in `ini_dir`.
    pub fn new(dir: PathBuf, ini_dir: PathBuf) -> Self {
        Self {
            dir,
            ini_dir,
            files: Vec::new(),
        }
    }

    /// The path of a file that will hold `secret`, for a `*_file` key.
    fn file(&mut self, name: String, secret: &str) -> String {
        let path = self.dir.join(name);
        let shown = path.display().to_string();
        self.files.push((path, format!("{secret}\n")));
        shown
    }

    /// A secret as mqttwarn reads it: the text, `$FILE:path` (already a file: named as it
    /// is) or `$ENV:NAME` (not importable: warren reads secrets from files).
    fn key(
        &mut self,
        keys: &mut Keys,
        key: &'static str,
        file: String,
        value: &str,
    ) -> Result<(), String> {
        if let Some(file) = expansion(value, "FILE") {
            keys.set(key, self.ini_dir.join(file).display().to_string());
        } else if let Some(var) = expansion(value, "ENV") {
            return Err(format!(
                "reads the secret from ${{ENV:{var}}}: put it in a file and name that file in `{key}`"
            ));
        } else {
            let path = self.file(file, value);
            keys.set(key, path);
        }
        Ok(())
    }
}

/// `KEY` of a value that is exactly `$TYPE:KEY` or `${TYPE:KEY}`.
fn expansion<'a>(value: &'a str, kind: &str) -> Option<&'a str> {
    let rest = value.strip_prefix('$')?;
    let inner = rest
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(rest);
    inner.strip_prefix(kind)?.strip_prefix(':')
}

/// The address list of a target: mqttwarn takes a string as a one-element list.
fn addrs(addrs: &Literal) -> Vec<&Literal> {
    match addrs {
        Literal::List(v) => v.iter().collect(),
        other => vec![other],
    }
}

/// The `n`th address as text, if present and not `None`.
fn nth(addrs: &[&Literal], n: usize) -> Option<String> {
    addrs.get(n).and_then(|a| a.text())
}

/// The notifier `name` for one target (its address `address`) of a service implemented by
/// mqttwarn's module `module`.
///
/// # Errors
/// Why it cannot be imported (printed as a comment, with its line).
pub fn notifier(
    name: &str,
    module: &str,
    address: &Literal,
    config: &ServiceConfig,
    secrets: &mut Secrets,
) -> Result<Keys, String> {
    let a = addrs(address);
    match module {
        "file" => file(address, &a, config),
        "log" => log(&a),
        "pushover" => pushover(name, &a, config, secrets),
        "ntfy" => ntfy(address),
        "telegram" => telegram(name, &a, config, secrets),
        "smtp" => smtp(name, &a, config, secrets),
        "http" | "http_urllib" => http(name, &a, secrets),
        "mqttpub" => mqttpub(&a),
        "mqtt" => mqtt(name, &a, config, secrets),
        "execute" => execute(&a, config),
        _ => Err(format!(
            "warren has no `{module}` notifier (an `exec` notifier with Apprise reaches most services: docs/notifiers.md)"
        )),
    }
}

fn file(address: &Literal, a: &[&Literal], config: &ServiceConfig) -> Result<Keys, String> {
    let path = match address {
        Literal::Dict(_) => address.get("path").and_then(Literal::text),
        _ => nth(a, 0),
    }
    .ok_or("no file name")?;
    if path.contains('{') || path.contains("$TMPDIR") {
        return Err(format!(
            "the file name {path:?} is made per message; warren's file notifier writes one file"
        ));
    }
    let flag = |key: &str| {
        address
            .get(key)
            .or_else(|| config.get(key))
            .is_some_and(Literal::truthy)
    };
    if flag("overwrite") {
        return Err("overwrites its file with each message; warren's file notifier appends".into());
    }
    let mut k = Keys::of("file");
    k.set("path", path);
    if !flag("append_newline") {
        k.caveat("mqttwarn wrote without a newline (append_newline unset); warren writes one line per notification");
    }
    Ok(k)
}

fn log(a: &[&Literal]) -> Result<Keys, String> {
    let level = nth(a, 0).unwrap_or_else(|| "info".into());
    // mqttwarn's own levels (its plugin fails on any other).
    let level = match level.as_str() {
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        "error" | "crit" => "error",
        other => return Err(format!("log level {other:?} is not one mqttwarn knows")),
    };
    let mut k = Keys::of("log");
    if level != "info" {
        k.set("level", level);
    }
    if level == "debug" {
        k.caveat("the hub logs at info and above unless RUST_LOG says otherwise (RUST_LOG=debug)");
    }
    Ok(k)
}

fn pushover(
    name: &str,
    a: &[&Literal],
    config: &ServiceConfig,
    secrets: &mut Secrets,
) -> Result<Keys, String> {
    let (Some(user), Some(token)) = (nth(a, 0), nth(a, 1)) else {
        return Err("the user key or the app token is not in the address (PUSHOVER_USER / PUSHOVER_TOKEN from the environment): put each in a file and name it in `user_file` and `token_file`".into());
    };
    let mut k = Keys::of("pushover");
    secrets.key(&mut k, "token_file", format!("{name}.token"), &token)?;
    secrets.key(&mut k, "user_file", format!("{name}.user"), &user)?;
    if let Some(sound) = nth(a, 2).filter(|s| !s.is_empty()) {
        k.set("sound", sound);
    }
    if let Some(devices) = nth(a, 3) {
        k.set("device", devices);
    }
    // Pushover's own bounds, as mqttwarn enforced them.
    for (from, to, min, max) in [
        ("api_retry", "retry", 30, 10_800),
        ("api_expire", "expire", 0, 10_800),
    ] {
        if let Some(Literal::Int(v)) = config.get(from) {
            k.set(to, (*v).clamp(min, max));
        }
    }
    if config.contains_key("callback") {
        k.caveat("`callback` (an emergency message's acknowledgement URL) is not sent by warren");
    }
    k.caveat("mqttwarn sent `retry` and `expire` with every message; warren sends them with priority 2 only, the one priority Pushover reads them for");
    Ok(k)
}

fn ntfy(address: &Literal) -> Result<Keys, String> {
    let url = match address {
        Literal::Dict(_) => address.get("url").and_then(Literal::text),
        other => other.text(),
    }
    .ok_or("no `url`")?;
    let (base, topic) = url
        .trim_end_matches('/')
        .rsplit_once('/')
        .filter(|(base, _)| base.contains("://"))
        .ok_or("the URL is not a topic's (https://SERVER/TOPIC)")?;
    if base.contains('@') || topic.contains('?') {
        return Err(
            "the URL carries credentials: use warren's `token_file` (an access token)".into(),
        );
    }
    let mut k = Keys::of("ntfy");
    if base != "https://ntfy.sh" {
        k.set("server", base);
    }
    k.set("topic", topic);
    if let Some(Literal::Int(p)) = address.get("priority") {
        k.set("priority", (*p).clamp(1, 5));
    }
    if let Some(tags) = address.get("tags").and_then(Literal::text) {
        let tags: Vec<Value> = tags.split(',').map(|t| t.trim().into()).collect();
        k.set("tags", tags);
    }
    if let Some(click) = address.get("click").and_then(Literal::text) {
        k.set("click", click);
    }
    for key in [
        "file",
        "attach",
        "attachment",
        "email",
        "delay",
        "icon",
        "actions",
    ] {
        if address.get(key).is_some() {
            k.caveat(format!("`{key}` is not sent by warren"));
        }
    }
    Ok(k)
}

fn telegram(
    name: &str,
    a: &[&Literal],
    config: &ServiceConfig,
    secrets: &mut Secrets,
) -> Result<Keys, String> {
    let contact = nth(a, 0).ok_or("no contact")?;
    let by_id = config.get("use_chat_id").is_some_and(Literal::truthy);
    let chat_id: Value = match contact.strip_prefix('#') {
        Some(id) => id.parse::<i64>().map_or_else(|_| id.into(), Value::from),
        None if by_id => contact
            .parse::<i64>()
            .map_or_else(|_| contact.clone().into(), Value::from),
        None => {
            return Err(format!(
                "{contact:?} is a name mqttwarn looked up in the bot's updates; warren needs the chat id (getUpdates shows it once the user has written to the bot)"
            ));
        }
    };
    let token = config
        .get("token")
        .and_then(Literal::text)
        .ok_or("no `token` in [config:telegram]")?;
    let mut k = Keys::of("telegram");
    secrets.key(&mut k, "token_file", format!("{name}.token"), &token)?;
    k.set("chat_id", chat_id);
    match config.get("parse_mode").and_then(Literal::text).as_deref() {
        None => {}
        Some("HTML") => k.set("parse_mode", "HTML"),
        Some("MarkdownV2") => k.set("parse_mode", "MarkdownV2"),
        Some(other) => k.caveat(format!(
            "parse_mode {other:?} is not offered by warren (HTML or MarkdownV2); sent as plain text"
        )),
    }
    Ok(k)
}

fn smtp(
    name: &str,
    a: &[&Literal],
    config: &ServiceConfig,
    secrets: &mut Secrets,
) -> Result<Keys, String> {
    let server = config
        .get("server")
        .and_then(Literal::text)
        .ok_or("no `server` in [config:smtp]")?;
    let (host, port) = match server.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse::<i64>().ok()),
        None => (server.clone(), None),
    };
    let to: Vec<Value> = a.iter().filter_map(|l| l.text()).map(Value::from).collect();
    if to.is_empty() {
        return Err("no recipients".into());
    }
    // smtplib.SMTP(server): port 25 unless the server names one.
    let port = port.unwrap_or(25);
    let mut k = Keys::of("smtp");
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let starttls = config.get("starttls").is_some_and(Literal::truthy);
    let security = if starttls || !local {
        "starttls"
    } else {
        "none"
    };
    k.set("server", host);
    k.set("security", security);
    k.set("port", port);
    if !starttls && !local {
        k.caveat("mqttwarn sent this mail in clear text; warren requires STARTTLS to a server that is not local");
    }
    login(&mut k, name, config, secrets)?;
    k.set(
        "from",
        config
            .get("sender")
            .and_then(Literal::text)
            .ok_or("no `sender` in [config:smtp]")?,
    );
    k.set("to", to);
    if config.get("htmlmsg").is_some_and(Literal::truthy) {
        k.caveat("mqttwarn sent HTML mail (htmlmsg); warren sends plain text");
    }
    Ok(k)
}

fn http(name: &str, a: &[&Literal], secrets: &mut Secrets) -> Result<Keys, String> {
    let method = nth(a, 0).unwrap_or_default().to_uppercase();
    let url = nth(a, 1).ok_or("no URL")?;
    if method != "POST" {
        return Err(format!(
            "an HTTP {method}: warren's webhook POSTs (a `GET` with the message in the query has no equivalent)"
        ));
    }
    if a.get(3)
        .is_some_and(|auth| matches!(auth, Literal::List(v) if !v.is_empty()))
    {
        return Err("basic authentication: put `Authorization: Basic …` in a file and name it in the webhook's `secret_headers`".into());
    }
    if url.contains('{') {
        return Err("the URL is made per message; a webhook's URL is fixed".into());
    }
    let mut k = Keys::of("webhook");
    // Many services carry the token in the URL's path (Slack, Discord): a secret.
    secrets.key(&mut k, "url_file", format!("{name}.url"), &url)?;
    k.caveat("mqttwarn POSTed its `params` form-encoded; warren's webhook POSTs JSON {title, message, priority, event} (or a `body` template)");
    Ok(k)
}

fn mqttpub(a: &[&Literal]) -> Result<Keys, String> {
    let topic = nth(a, 0).ok_or("no topic")?;
    let mut k = Keys::of("mqtt");
    k.set("broker", "hub");
    publish_keys(&mut k, topic, a)?;
    k.caveat("mqttwarn published on its own broker; this publishes on the hub's");
    Ok(k)
}

fn mqtt(
    name: &str,
    a: &[&Literal],
    config: &ServiceConfig,
    secrets: &mut Secrets,
) -> Result<Keys, String> {
    if a.len() > 1 {
        return Err(
            "the target names an INI file of connection settings; give them in the notifier's keys"
                .into(),
        );
    }
    let topic = nth(a, 0).ok_or("no topic")?;
    let host = config
        .get("hostname")
        .and_then(Literal::text)
        .unwrap_or_else(|| "localhost".into());
    let port = config
        .get("port")
        .and_then(Literal::text)
        .unwrap_or_else(|| "1883".into());
    let mut k = Keys::of("mqtt");
    k.set("address", format!("{host}:{port}"));
    k.set("tls", false);
    k.caveat("mqttwarn connected without TLS: to use it, set `tls = true` and `ca_file`");
    login(&mut k, name, config, secrets)?;
    let qos = [config.get("qos"), config.get("retain")];
    let with = |i: usize| qos[i].cloned().unwrap_or(Literal::Int(0));
    publish_keys(&mut k, topic, &[a[0], &with(0), &with(1)])?;
    Ok(k)
}

/// `username` and `password_file` from the service's `username` and `password`, if any.
fn login(
    k: &mut Keys,
    name: &str,
    config: &ServiceConfig,
    secrets: &mut Secrets,
) -> Result<(), String> {
    if let Some(user) = config.get("username").and_then(Literal::text) {
        k.set("username", user);
        let password = config
            .get("password")
            .and_then(Literal::text)
            .unwrap_or_default();
        secrets.key(k, "password_file", format!("{name}.password"), &password)?;
    }
    Ok(())
}

/// `topic`, `qos` and `retain` of an `mqtt` notifier from mqttwarn's `[topic, qos, retain]`.
fn publish_keys(k: &mut Keys, topic: String, a: &[&Literal]) -> Result<(), String> {
    if topic.starts_with("warren/") || topic.contains(['+', '#']) {
        return Err(format!("topic {topic:?} is warren's own or a wildcard"));
    }
    k.set("topic", topic);
    let qos = match a.get(1) {
        Some(Literal::Int(q)) => *q,
        _ => 0,
    };
    if qos >= 2 {
        k.caveat("QoS 2 is published at QoS 1 (at least once)");
    }
    k.set("qos", qos.clamp(0, 1));
    if a.get(2).is_some_and(|r| r.truthy()) {
        k.set("retain", true);
    }
    k.set("payload", "{message}");
    Ok(())
}

fn execute(a: &[&Literal], config: &ServiceConfig) -> Result<Keys, String> {
    let command: Vec<String> = a.iter().filter_map(|l| l.text()).collect();
    let placeholder = config
        .get("text_replace")
        .and_then(Literal::text)
        .unwrap_or_else(|| "[TEXT]".into());
    if command.iter().any(|c| c.contains(&placeholder)) {
        return Err(format!(
            "the command takes the message as an argument ({placeholder}); warren's exec notifier gives it as JSON on stdin, so the program must change"
        ));
    }
    if !command.first().is_some_and(|c| c.starts_with('/')) {
        return Err("the program is not an absolute path".into());
    }
    let mut k = Keys::of("exec");
    k.set(
        "command",
        command.into_iter().map(Value::from).collect::<Vec<_>>(),
    );
    k.caveat("the program also gets the notification as JSON on stdin; mqttwarn gave it nothing");
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqttwarn::literal::parse;

    fn keys(module: &str, address: &str, config: &[(&str, &str)]) -> Result<Keys, String> {
        let config = config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), crate::mqttwarn::literal::value(v)))
            .collect();
        let mut secrets = Secrets::new("/s".into(), "/etc/mqttwarn".into());
        let name = format!("{module}_t");
        notifier(
            &name,
            module,
            &parse(address).unwrap(),
            &config,
            &mut secrets,
        )
    }

    fn shown(k: &Keys) -> String {
        k.keys
            .iter()
            .map(|(key, v)| format!("{key} = {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn each_service_becomes_its_notifier() {
        for (module, address, config, expected) in [
            (
                "file",
                "['/var/log/x.log']",
                &[("append_newline", "True")][..],
                "type = \"file\"\npath = \"/var/log/x.log\"",
            ),
            (
                "log",
                "['crit']",
                &[][..],
                "type = \"log\"\nlevel = \"error\"",
            ),
            (
                "ntfy",
                "{'url': 'https://ntfy.example.org/p/alerts', 'priority': 4, 'tags': 'a, b'}",
                &[][..],
                "type = \"ntfy\"\nserver = \"https://ntfy.example.org/p\"\ntopic = \"alerts\"\npriority = 4\ntags = [\"a\", \"b\"]",
            ),
            (
                "telegram",
                "['#-100123']",
                &[("token", "'1:abc'"), ("parse_mode", "'HTML'")][..],
                "type = \"telegram\"\ntoken_file = \"/s/telegram_t.token\"\nchat_id = -100123\nparse_mode = \"HTML\"",
            ),
            (
                "smtp",
                "['a@example.org', 'b@example.org']",
                &[("server", "'localhost:25'"), ("sender", "'w@localhost'")][..],
                "type = \"smtp\"\nserver = \"localhost\"\nsecurity = \"none\"\nport = 25\nfrom = \"w@localhost\"\nto = [\"a@example.org\", \"b@example.org\"]",
            ),
            (
                "smtp",
                "['a@example.org']",
                &[
                    ("server", "'mail.example.org'"),
                    ("sender", "'w@example.org'"),
                ][..],
                "type = \"smtp\"\nserver = \"mail.example.org\"\nsecurity = \"starttls\"\nport = 25\nfrom = \"w@example.org\"\nto = [\"a@example.org\"]",
            ),
            (
                "http",
                "['post', 'https://hooks.example.org/services/T0/B0/XYZ', None, None]",
                &[][..],
                "type = \"webhook\"\nurl_file = \"/s/http_t.url\"",
            ),
            (
                "mqttpub",
                "['alerts/x', 2, True]",
                &[][..],
                "type = \"mqtt\"\nbroker = \"hub\"\ntopic = \"alerts/x\"\nqos = 1\nretain = true\npayload = \"{message}\"",
            ),
            (
                "execute",
                "['/usr/local/bin/page', '--now']",
                &[][..],
                "type = \"exec\"\ncommand = [\"/usr/local/bin/page\", \"--now\"]",
            ),
        ] {
            let k = keys(module, address, config).unwrap_or_else(|e| panic!("{module}: {e}"));
            assert_eq!(shown(&k), expected, "{module}");
        }
    }

    #[test]
    fn secrets_go_to_files() {
        let config = ServiceConfig::new();
        let mut secrets = Secrets::new("/s".into(), "/etc/mqttwarn".into());
        let address = parse("['ukey', '$FILE:po.token', 'siren']").unwrap();
        let k = notifier("pushover_pam", "pushover", &address, &config, &mut secrets).unwrap();
        let text = shown(&k);
        assert!(!text.contains("ukey"), "{text}");
        // A relative `$FILE:` is the ini's directory's, as mqttwarn reads it.
        assert!(
            text.contains("token_file = \"/etc/mqttwarn/po.token\""),
            "{text}"
        );
        assert!(
            text.contains("user_file = \"/s/pushover_pam.user\""),
            "{text}"
        );
        assert!(text.contains("sound = \"siren\""), "{text}");
        assert_eq!(
            secrets.files,
            [(PathBuf::from("/s/pushover_pam.user"), "ukey\n".to_owned())]
        );
        let env = parse("['$ENV:PO_USER', 't']").unwrap();
        let err = notifier("pushover_pam", "pushover", &env, &config, &mut secrets).unwrap_err();
        assert!(err.contains("PO_USER"), "{err}");
    }

    #[test]
    fn what_warren_cannot_do_is_said() {
        for (module, address, config, why) in [
            ("file", "['/tmp/{user}.log']", &[][..], "per message"),
            ("file", "['/x']", &[("overwrite", "True")][..], "overwrites"),
            ("telegram", "['@dan']", &[("token", "'1:a'")][..], "chat id"),
            ("http", "['get', 'http://x/']", &[][..], "GET"),
            ("execute", "['/bin/page', '[TEXT]']", &[][..], "stdin"),
            ("slack", "['#ops']", &[][..], "no `slack` notifier"),
        ] {
            let err = keys(module, address, config)
                .map(|k| shown(&k))
                .unwrap_err();
            assert!(err.contains(why), "{module}: {err}");
        }
    }
}
