//! An `mqttwarn.ini` read as Python's `RawConfigParser` reads it, keeping the line of every
//! section and key so that what cannot be imported can be pointed at.
//!
//! Written by hand: INI crates differ from Python's parser in exactly the places mqttwarn
//! configs use (values continued on indented lines, `:` as a delimiter, lower-cased keys,
//! no inline comments) and none reports line numbers.

/// A section: `[name]` and its keys, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets.
    pub name: String,
    /// Its line (1-based).
    pub line: usize,
    /// Its keys.
    pub entries: Vec<Entry>,
}

/// `key = value`, the value's continuation lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lower-cased, as `RawConfigParser` does.
    pub key: String,
    /// Stripped; continuation lines joined with newlines.
    pub value: String,
    /// The key's line (1-based).
    pub line: usize,
}

impl Section {
    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// The sections of `text`.
///
/// # Errors
/// `(line, reason)`: a key outside any section, a line that is neither a section, a key nor
/// a continuation, a section or key given twice (Python refuses both too).
pub fn parse(text: &str) -> Result<Vec<Section>, (usize, String)> {
    let mut sections: Vec<Section> = Vec::new();
    // Whether the last key may take continuation lines (not after a section header), and
    // its line's indentation: only a line indented further continues it.
    let mut in_value = false;
    let mut key_indent = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue; // Comment lines are skipped, inside a value too.
        }
        if trimmed.is_empty() {
            if in_value && let Some(e) = last_entry(&mut sections) {
                e.value.push('\n');
            }
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if in_value && indent > key_indent {
            if let Some(e) = last_entry(&mut sections) {
                e.value.push('\n');
                e.value.push_str(trimmed);
            }
            continue;
        }
        // As Python's `\[(?P<header>.+)\]`: up to the last `]`, anything after it ignored.
        let header = trimmed
            .strip_prefix('[')
            .and_then(|r| r.rfind(']').map(|end| &r[..end]))
            .filter(|name| !name.is_empty());
        if let Some(name) = header {
            if let Some(s) = sections.iter().find(|s| s.name == name) {
                return Err((
                    line,
                    format!("section [{name}] again (first on line {})", s.line),
                ));
            }
            finish(&mut sections);
            sections.push(Section {
                name: name.to_owned(),
                line,
                entries: Vec::new(),
            });
            in_value = false;
            continue;
        }
        let Some(at) = trimmed.find(['=', ':']) else {
            return Err((
                line,
                format!("not a section, a key or a value: {trimmed:?}"),
            ));
        };
        let Some(section) = sections.last_mut() else {
            return Err((line, "a key before the first [section]".into()));
        };
        let key = trimmed[..at].trim().to_lowercase();
        if let Some(e) = section.get(&key) {
            return Err((
                line,
                format!("key `{key}` again (first on line {})", e.line),
            ));
        }
        finish(&mut sections);
        if let Some(section) = sections.last_mut() {
            section.entries.push(Entry {
                key,
                value: trimmed[at + 1..].trim().to_owned(),
                line,
            });
        }
        in_value = true;
        key_indent = indent;
    }
    finish(&mut sections);
    Ok(sections)
}

fn last_entry(sections: &mut [Section]) -> Option<&mut Entry> {
    sections.last_mut()?.entries.last_mut()
}

/// Empty lines kept inside a value are trailing ones once it ends: drop them, as Python does.
fn finish(sections: &mut [Section]) {
    if let Some(e) = last_entry(sections) {
        let kept = e.value.trim_end_matches('\n').len();
        e.value.truncate(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_configparser_reads() {
        let text = "; a comment\n[defaults]\nhostname = 'localhost'\nLaunch: file, log\n\n\
                    [config:file]\ntargets = {\n    'a' : ['/x'],\n\n    # inside\n    }\n\n\n\
                    [logging/hare]\ntargets = file:a\nformat = {user}: at {tstamp} # not a comment\n";
        let s = parse(text).unwrap();
        assert_eq!(
            s.iter()
                .map(|s| (s.name.as_str(), s.line))
                .collect::<Vec<_>>(),
            [("defaults", 2), ("config:file", 6), ("logging/hare", 14)]
        );
        assert_eq!(s[0].get("launch").unwrap().value, "file, log");
        let targets = s[1].get("targets").unwrap();
        assert_eq!(
            (targets.value.as_str(), targets.line),
            ("{\n'a' : ['/x'],\n\n}", 7)
        );
        // The first `=` or `:` delimits; the rest is the value, comment-like text included.
        let format = s[2].get("format").unwrap();
        assert_eq!(format.value, "{user}: at {tstamp} # not a comment");
        assert_eq!(s[2].get("targets").unwrap().value, "file:a");
    }

    #[test]
    fn only_a_deeper_indent_continues_a_value() {
        let s = parse("[a] ; a note\n  k = 1\n  t = 2\n    more\n").unwrap();
        assert_eq!(s[0].name, "a");
        let values: Vec<(&str, &str)> = s[0]
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(values, [("k", "1"), ("t", "2\nmore")]);
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, what) in [
            ("key = 1\n", 1, "before the first"),
            ("[a]\nwhat\n", 2, "not a section"),
            ("[a]\n[b]\n[a]\n", 3, "again (first on line 1)"),
            ("[a]\nk = 1\nK = 2\n", 3, "key `k` again"),
        ] {
            let (l, why) = parse(text).unwrap_err();
            assert!(l == line && why.contains(what), "{text:?}: {l} {why}");
        }
    }
}
