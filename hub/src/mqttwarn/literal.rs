//! Python literals, as mqttwarn reads its values with `ast.literal_eval`: `targets` dicts,
//! address lists, quoted strings, numbers, `True`/`False`/`None`.

/// A Python literal. Tuples read as lists.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'`, `"text"`.
    Str(String),
    /// `42`, `-1`.
    Int(i64),
    /// `1.5`.
    Float(f64),
    /// `True`, `False`.
    Bool(bool),
    /// `None`.
    None,
    /// `[…]` or `(…)`.
    List(Vec<Literal>),
    /// `{key: value, …}`, in source order.
    Dict(Vec<(Literal, Literal)>),
}

impl Literal {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Python's `str()` of a scalar (mqttwarn formats addresses that way).
    pub fn text(&self) -> Option<String> {
        Some(match self {
            Self::Str(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            Self::None | Self::List(_) | Self::Dict(_) => return None,
        })
    }

    /// Truthiness, for flags such as `append_newline = True`.
    pub fn truthy(&self) -> bool {
        match self {
            Self::Str(s) => !s.is_empty(),
            Self::Int(i) => *i != 0,
            Self::Float(f) => *f != 0.0,
            Self::Bool(b) => *b,
            Self::None => false,
            Self::List(v) => !v.is_empty(),
            Self::Dict(v) => !v.is_empty(),
        }
    }

    /// The value at string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&Literal> {
        match self {
            Self::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Reads `text` as one literal, as `ast.literal_eval` does.
///
/// # Errors
/// Where and why it is not one (a name, a call, an operator, unbalanced brackets).
pub fn parse(text: &str) -> Result<Literal, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        at: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.blank();
    if p.at < p.s.len() {
        return Err(p.error("trailing text"));
    }
    Ok(v)
}

/// mqttwarn's `cf.g()`: the literal if the value is one, else the raw text (an unquoted
/// title, a `svc:target, …` list); `true`/`false`/`none` in any case are the constants.
pub fn value(text: &str) -> Literal {
    match text.to_uppercase().as_str() {
        "TRUE" => return Literal::Bool(true),
        "FALSE" => return Literal::Bool(false),
        "NONE" => return Literal::None,
        _ => {}
    }
    parse(text).unwrap_or_else(|_| Literal::Str(text.to_owned()))
}

/// Deeper nesting than any mqttwarn config has is refused, not followed down the stack.
const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        let near: String = self.text[self.at.min(self.text.len())..]
            .chars()
            .take(20)
            .collect();
        format!("{what} at {near:?}")
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    /// Skips white space and `#` comments.
    fn blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() {
                self.at += 1;
            } else if c == b'#' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.at += 1;
                }
            } else {
                break;
            }
        }
    }

    fn value(&mut self) -> Result<Literal, String> {
        self.blank();
        if matches!(self.peek(), Some(b'[' | b'(' | b'{')) {
            if self.depth == MAX_DEPTH {
                return Err(self.error("nested too deep"));
            }
            self.depth += 1;
            let v = match self.peek() {
                Some(b'[') => self.items(b']').map(Literal::List),
                Some(b'(') => self.items(b')').map(Literal::List),
                _ => self.dict(),
            };
            self.depth -= 1;
            return v;
        }
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                // Adjacent strings concatenate, as in Python.
                let mut s = self.string(q)?;
                loop {
                    self.blank();
                    match self.peek() {
                        Some(q @ (b'\'' | b'"')) => s.push_str(&self.string(q)?),
                        _ => return Ok(Literal::Str(s)),
                    }
                }
            }
            Some(c) if c == b'-' || c == b'+' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.at += 1;
                }
                match &self.text[start..self.at] {
                    "True" => Ok(Literal::Bool(true)),
                    "False" => Ok(Literal::Bool(false)),
                    "None" => Ok(Literal::None),
                    _ => {
                        self.at = start;
                        Err(self.error("a name (not a literal)"))
                    }
                }
            }
            _ => Err(self.error("no value")),
        }
    }

    /// `[a, b,]` or `(a, b)` after its opening bracket.
    fn items(&mut self, close: u8) -> Result<Vec<Literal>, String> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            self.blank();
            if self.peek() == Some(close) {
                self.at += 1;
                return Ok(out);
            }
            out.push(self.value()?);
            self.blank();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(c) if c == close => {}
                _ => return Err(self.error("expected `,` or a closing bracket")),
            }
        }
    }

    fn dict(&mut self) -> Result<Literal, String> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            self.blank();
            if self.peek() == Some(b'}') {
                self.at += 1;
                return Ok(Literal::Dict(out));
            }
            let key = self.value()?;
            self.blank();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:` in a dict"));
            }
            self.at += 1;
            let value = self.value()?;
            // As Python: a key given twice keeps its first place and its last value.
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => out.push((key, value)),
            }
            self.blank();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {}
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        let mut chars = self.text[self.at..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c as u32 == u32::from(quote) => {
                    self.at += i + 1;
                    return Ok(out);
                }
                '\n' => break,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('0') => out.push('\0'),
                    Some(c @ ('\\' | '\'' | '"')) => out.push(c),
                    Some('\n') => {}
                    // Python keeps an unknown escape as written.
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.error("an unterminated string"))
    }

    fn number(&mut self) -> Result<Literal, String> {
        let start = self.at;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.at += 1;
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'e' | b'E'))
        {
            self.at += 1;
        }
        let digits = self.text[start..self.at].replace('_', "");
        if let Ok(i) = digits.parse() {
            return Ok(Literal::Int(i));
        }
        digits.parse().map(Literal::Float).map_err(|_| {
            self.at = start;
            self.error("not a number")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mqttwarn_targets() {
        let v = parse(
            "{\n  'sshd_log' : ['/tmp/ssh.log'],   # the file\n  \"pam\": ('u', \"t\", None),\n  'n': {'url': 'https://ntfy.sh/x', 'priority': -1, 'x': 1.5, 'y': True},\n}",
        )
        .unwrap();
        assert_eq!(
            v.get("sshd_log"),
            Some(&Literal::List(vec![Literal::Str("/tmp/ssh.log".into())]))
        );
        assert_eq!(
            v.get("pam"),
            Some(&Literal::List(vec![
                Literal::Str("u".into()),
                Literal::Str("t".into()),
                Literal::None
            ]))
        );
        let n = v.get("n").unwrap();
        assert_eq!(n.get("priority"), Some(&Literal::Int(-1)));
        assert_eq!(n.get("x"), Some(&Literal::Float(1.5)));
        assert_eq!(n.get("y"), Some(&Literal::Bool(true)));
    }

    #[test]
    fn python_dict_and_nesting_rules() {
        let v = parse("{'a': 1, 'b': 2, 'a': 3}").unwrap();
        assert_eq!(
            v,
            Literal::Dict(vec![
                (Literal::Str("a".into()), Literal::Int(3)),
                (Literal::Str("b".into()), Literal::Int(2))
            ])
        );
        assert!(
            parse(&"[".repeat(100_000))
                .unwrap_err()
                .contains("too deep")
        );
        assert!(parse(&format!("{}{}", "[".repeat(32), "]".repeat(32))).is_ok());
    }

    #[test]
    fn strings_escapes_and_concatenation() {
        assert_eq!(
            parse(r#"'it\'s' "a\n" 'b\d'"#).unwrap(),
            Literal::Str("it'sa\nb\\d".into())
        );
    }

    #[test]
    fn anything_else_is_text_to_mqttwarn() {
        for text in [
            "file:sshd_log, pushover:pam",
            "SSH login on {hostname}",
            "moredata()",
            "{user}",
            "'open",
        ] {
            assert!(parse(text).is_err(), "{text}");
            assert_eq!(value(text), Literal::Str(text.into()));
        }
        assert_eq!(value("true"), Literal::Bool(true));
        assert_eq!(value("'localhost'"), Literal::Str("localhost".into()));
        assert_eq!(value("1883"), Literal::Int(1883));
    }
}
