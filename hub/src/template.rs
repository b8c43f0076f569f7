//! mqttwarn-style `{field}` templates for titles, messages and priorities.
//!
//! Fields are the event's own plus `site edge id remote tstamp` and mqttwarn's receive-time
//! built-ins `_dtepoch _dtiso _ltiso _dthhmm _dthhmmss`. A missing field renders as empty: a
//! template never fails at delivery time. `{{` and `}}` are literal braces.

use std::fmt::Write;

use chrono::{DateTime, Local, TimeZone, Utc};
use serde_json::Value;
use warren_proto::Envelope;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    /// An unclosed `{`, a stray `}`, or an empty or malformed field name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_alphanumeric() || c == '_' || c == '-' => name.push(c),
                            Some(c) => {
                                return Err(format!(
                                    "character {c:?} in field name (use {{{{ for a literal brace)"
                                ));
                            }
                            None => return Err(format!("unclosed `{{{name}`")),
                        }
                    }
                    if name.is_empty() {
                        return Err("empty field `{}`".into());
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(name));
                }
                '}' => return Err("stray `}` (use }} for a literal brace)".into()),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Self { parts })
    }

    /// Renders for `envelope`, received at `now`.
    pub fn render(&self, envelope: &Envelope, now: DateTime<Utc>) -> String {
        self.render_with(envelope, now, &[])
    }

    /// Renders with `extra` fields, which take precedence (e.g. a rendered `title`).
    pub fn render_with(
        &self,
        envelope: &Envelope,
        now: DateTime<Utc>,
        extra: &[(&str, &str)],
    ) -> String {
        self.render_escaped(envelope, now, extra, Escape::None)
    }

    /// Renders with `extra` fields, each inserted value escaped for `escape`: the template's
    /// own text is markup (or JSON), what an event brings is only ever text.
    pub fn render_escaped(
        &self,
        envelope: &Envelope,
        now: DateTime<Utc>,
        extra: &[(&str, &str)],
        escape: Escape,
    ) -> String {
        let mut out = String::new();
        let mut value = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(name) => {
                    value.clear();
                    match extra.iter().find(|(k, _)| k == name) {
                        Some((_, v)) => value.push_str(v),
                        None => field(&mut value, name, envelope, now),
                    }
                    escape.push(&value, &mut out);
                }
            }
        }
        out
    }
}

/// How inserted values are escaped for the format a template produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Escape {
    /// Plain text: as is.
    #[default]
    None,
    /// The inside of a JSON string.
    Json,
    /// HTML text and attribute values.
    Html,
    /// Markdown (CommonMark): every ASCII punctuation character that could start markup
    /// gets a backslash.
    Markdown,
    /// Telegram's MarkdownV2, whose list of characters to escape is its own.
    TelegramMarkdownV2,
}

impl Escape {
    /// Appends `s` to `out`, escaped.
    pub fn push(self, s: &str, out: &mut String) {
        match self {
            Self::None => out.push_str(s),
            Self::Json => {
                let quoted = serde_json::Value::from(s).to_string();
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
            Self::Html => {
                for c in s.chars() {
                    match c {
                        '&' => out.push_str("&amp;"),
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        '"' => out.push_str("&quot;"),
                        '\'' => out.push_str("&#39;"),
                        c => out.push(c),
                    }
                }
            }
            Self::Markdown => backslash(s, "\\`*_{}[]<>()#+-.!|~", out),
            // https://core.telegram.org/bots/api#markdownv2-style
            Self::TelegramMarkdownV2 => backslash(s, "\\_*[]()~`>#+-=|{}.!", out),
        }
    }

    /// `s` escaped.
    pub fn apply(self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        self.push(s, &mut out);
        out
    }
}

fn backslash(s: &str, special: &str, out: &mut String) {
    for c in s.chars() {
        if special.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The fields every template has besides the event's own, rendered by [`field`].
pub const BUILT_IN: [&str; 11] = [
    "site",
    "edge",
    "id",
    "remote",
    "kind",
    "tstamp",
    "_dtepoch",
    "_dtiso",
    "_ltiso",
    "_dthhmm",
    "_dthhmmss",
];

fn field(out: &mut String, name: &str, e: &Envelope, now: DateTime<Utc>) {
    let local = now.with_timezone(&Local);
    let _ = match name {
        "site" => write!(out, "{}", e.site),
        "edge" => write!(out, "{}", e.edge),
        "id" => write!(out, "{}", e.id),
        "remote" => write!(out, "{}", e.remote),
        "kind" => write!(out, "{}", e.event.kind()),
        "tstamp" => match Local.timestamp_opt(e.event.tst(), 0).single() {
            Some(t) => write!(out, "{}", t.format("%Y-%m-%d %H:%M:%S")),
            None => Ok(()),
        },
        "_dtepoch" => write!(out, "{}", now.timestamp()),
        "_dtiso" => write!(out, "{}", now.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
        "_ltiso" => write!(out, "{}", local.format("%Y-%m-%dT%H:%M:%S%.6f")),
        "_dthhmm" => write!(out, "{}", local.format("%H:%M")),
        "_dthhmmss" => write!(out, "{}", local.format("%H:%M:%S")),
        other => match e.event.get(other) {
            Some(Value::String(s)) => write!(out, "{s}"),
            Some(Value::Null) | None => Ok(()),
            Some(Value::Array(items)) => {
                let words: Vec<String> = items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect();
                write!(out, "{}", words.join(", "))
            }
            Some(v) => write!(out, "{v}"),
        },
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        let mut e = crate::testing::envelope("dan");
        e.event
            .set_str("tty", None)
            .set("tags", serde_json::json!(["a", "b"]))
            .set("priority", 2.into());
        e
    }

    fn render(t: &str) -> String {
        Template::parse(t)
            .unwrap()
            .render(&envelope(), Utc.timestamp_opt(1_795_708_600, 0).unwrap())
    }

    #[test]
    fn every_built_in_renders() {
        for name in BUILT_IN {
            assert!(!render(&format!("{{{name}}}")).is_empty(), "{name}");
        }
    }

    #[test]
    fn the_seed_format() {
        let tstamp = Local
            .timestamp_opt(1_795_708_571, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        assert_eq!(
            render("User {user} logged into {hostname} from {rhost} at {tstamp}"),
            format!("User dan logged into vm from 192.0.2.10 at {tstamp}")
        );
    }

    #[test]
    fn missing_null_numbers_lists_unicode_and_braces() {
        assert_eq!(render("[{nope}|{tty}]"), "[|]");
        assert_eq!(render("p={priority} t={tags}"), "p=2 t=a, b");
        assert_eq!(
            render("⚡ {site}/{edge} {{literal}} ☃"),
            "⚡ home/gw {literal} ☃"
        );
        assert_eq!(
            render("{_dtepoch} {_dtiso}"),
            "1795708600 2026-11-26T15:56:40.000000Z"
        );
        assert_eq!(render("{kind}"), "login");
    }

    #[test]
    fn inserted_values_are_escaped_the_template_is_not() {
        let mut e = envelope();
        e.event
            .set_str("user", Some("<b>\"x\"</b>_*[1].\\"))
            .set_str("hostname", Some("a&b"));
        let now = Utc.timestamp_opt(0, 0).unwrap();
        let render = |t: &str, esc| {
            Template::parse(t)
                .unwrap()
                .render_escaped(&e, now, &[], esc)
        };
        assert_eq!(
            render("<i>{user}</i> {hostname}", Escape::Html),
            "<i>&lt;b&gt;&quot;x&quot;&lt;/b&gt;_*[1].\\</i> a&amp;b"
        );
        let json = render("{{\"u\": \"{user}\"}}", Escape::Json);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["u"], "<b>\"x\"</b>_*[1].\\");
        assert_eq!(
            render("*{user}*", Escape::TelegramMarkdownV2),
            "*<b\\>\"x\"</b\\>\\_\\*\\[1\\]\\.\\\\*"
        );
        assert_eq!(
            render("**{hostname}** {user}", Escape::Markdown),
            "**a&b** \\<b\\>\"x\"\\</b\\>\\_\\*\\[1\\]\\.\\\\"
        );
        assert_eq!(render("{user}", Escape::None), "<b>\"x\"</b>_*[1].\\");
    }

    #[test]
    fn parse_errors() {
        for bad in ["{user", "user}", "{}", "{us er}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
