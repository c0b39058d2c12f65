//! The `.env` parser used by `cred migrate` and by the plaintext-secret scan.
//!
//! It follows the rules most dotenv loaders share and reports every line it
//! changes or cannot read, with its number, so nothing is dropped silently.
//! Notes name keys and lines, never values. The rules, in order:
//!
//! - A UTF-8 byte order mark at the start is skipped. CRLF line ends count as LF.
//! - Blank lines and lines starting with `#` (after spaces) are comments.
//! - `export` followed by spaces or tabs before the key is ignored.
//! - A key is an environment variable name: letters, digits and `_`, not
//!   starting with a digit. Anything else, such as `SERVICE-NAME`, is rejected.
//! - The value is everything after the first `=`, later `=` signs included.
//! - Double quotes may span lines. `\n`, `\r`, `\t`, `\\`, `\"`, `\'` and `\$`
//!   are escapes, any other backslash is kept with a note.
//! - Single quotes may span lines, and the text is kept literally, backslashes included.
//! - Unquoted values are trimmed. `#` starts a comment only after a space or
//!   tab, so `A=p#1` keeps the `#`. A quote character without a partner is
//!   rejected, and balanced ones are kept with a note.
//! - After a closing quote, only spaces and a `#` comment may follow.
//! - `${VAR}` is never expanded (noted as ambiguous). A repeated key keeps its
//!   last value, with a note.

use std::collections::HashMap;

use serde::Serialize;
use zeroize::Zeroizing;

use super::is_env_name;

/// One `KEY=value` read from the file.
pub struct EnvEntry {
    pub key: String,
    pub value: Zeroizing<String>,
    /// Line where the entry starts, counted from 1.
    pub line: usize,
}

impl std::fmt::Debug for EnvEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvEntry")
            .field("key", &self.key)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// What a note reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// Text was removed: whitespace or an inline comment.
    Trimmed,
    /// The line was read, but other loaders may read it differently.
    Ambiguous,
    /// The line was not imported.
    Rejected,
}

/// A remark about one line, which never contains a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub line: usize,
    pub kind: NoteKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub message: String,
}

/// The result of parsing a `.env` file.
#[derive(Debug, Default)]
pub struct ParsedEnv {
    /// Entries in file order. A repeated key appears once, with its last value.
    pub entries: Vec<EnvEntry>,
    pub notes: Vec<Note>,
}

impl ParsedEnv {
    /// Returns whether any line was rejected.
    pub fn has_rejections(&self) -> bool {
        self.notes
            .iter()
            .any(|note| note.kind == NoteKind::Rejected)
    }
}

/// Parses the bytes of a `.env` file.
pub fn parse(bytes: &[u8]) -> ParsedEnv {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut parsed = ParsedEnv::default();
    let mut lines: Vec<Option<String>> = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match std::str::from_utf8(raw) {
            Ok(text) => lines.push(Some(text.to_owned())),
            Err(_) => {
                parsed.notes.push(note(
                    index + 1,
                    NoteKind::Rejected,
                    None,
                    "the line is not valid UTF-8",
                ));
                lines.push(None);
            }
        }
    }

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut index = 0;
    while index < lines.len() {
        let number = index + 1;
        let Some(line) = lines[index].as_deref() else {
            index += 1;
            continue;
        };
        let consumed = match parse_line(&lines, index, line, &mut parsed.notes) {
            LineResult::Skip => 1,
            LineResult::Entry {
                key,
                value,
                lines_used,
            } => {
                if let Some(earlier) = seen.insert(key.clone(), number) {
                    parsed.entries.retain(|entry| entry.key != key);
                    parsed.notes.push(note(number, NoteKind::Ambiguous, Some(&key), &format!("the key is also set on line {earlier}; the value of line {number} is kept")));
                }
                parsed.entries.push(EnvEntry {
                    key,
                    value,
                    line: number,
                });
                lines_used
            }
        };
        index += consumed;
    }
    parsed
}

enum LineResult {
    Skip,
    Entry {
        key: String,
        value: Zeroizing<String>,
        lines_used: usize,
    },
}

fn note(line: usize, kind: NoteKind, key: Option<&str>, message: &str) -> Note {
    Note {
        line,
        kind,
        key: key.map(str::to_owned),
        message: message.to_owned(),
    }
}

fn parse_line(
    lines: &[Option<String>],
    index: usize,
    line: &str,
    notes: &mut Vec<Note>,
) -> LineResult {
    let number = index + 1;
    let content = line.trim_start();
    if content.is_empty() || content.starts_with('#') {
        return LineResult::Skip;
    }
    let content = strip_export(content);

    let Some((raw_key, rest)) = content.split_once('=') else {
        notes.push(note(
            number,
            NoteKind::Rejected,
            None,
            "no '=' on the line; expected KEY=value",
        ));
        return LineResult::Skip;
    };
    let key = raw_key.trim();
    if !is_env_name(key) {
        notes.push(note(
            number,
            NoteKind::Rejected,
            None,
            &format!(
                "invalid key name {key:?}: use letters, digits and '_', not starting with a digit"
            ),
        ));
        return LineResult::Skip;
    }

    let value = rest.trim_start_matches([' ', '\t']);
    let result = match value.chars().next() {
        Some(quote @ ('"' | '\'')) => parse_quoted(lines, index, key, &value[1..], quote, notes),
        _ => parse_unquoted(number, key, value, notes).map(|value| (value, 1)),
    };
    match result {
        Some((value, lines_used)) => LineResult::Entry {
            key: key.to_owned(),
            value,
            lines_used,
        },
        None => LineResult::Skip,
    }
}

fn strip_export(content: &str) -> &str {
    match content.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start_matches([' ', '\t']),
        _ => content,
    }
}

fn parse_unquoted(
    number: usize,
    key: &str,
    value: &str,
    notes: &mut Vec<Note>,
) -> Option<Zeroizing<String>> {
    let mut end = value.len();
    let mut previous_blank = false;
    for (position, c) in value.char_indices() {
        if c == '#' && previous_blank {
            end = position;
            break;
        }
        previous_blank = c == ' ' || c == '\t';
    }
    let kept = value[..end].trim_end_matches([' ', '\t']);
    if end < value.len() {
        notes.push(note(
            number,
            NoteKind::Trimmed,
            Some(key),
            "an inline comment (' #' and what follows) was removed; quote the value to keep it",
        ));
    } else if kept.len() < value.len() {
        notes.push(note(
            number,
            NoteKind::Trimmed,
            Some(key),
            "trailing whitespace was removed; quote the value to keep it",
        ));
    }

    let single = kept.matches('\'').count();
    let double = kept.matches('"').count();
    if single % 2 == 1 || double % 2 == 1 {
        notes.push(note(
            number,
            NoteKind::Rejected,
            Some(key),
            "unbalanced quote in an unquoted value; wrap the whole value in single quotes",
        ));
        return None;
    }
    if single + double > 0 {
        notes.push(note(
            number,
            NoteKind::Ambiguous,
            Some(key),
            "quote characters inside an unquoted value are kept as written",
        ));
    }
    if kept.starts_with('#') {
        notes.push(note(
            number,
            NoteKind::Ambiguous,
            Some(key),
            "the value starts with '#'; some loaders read it as an empty value and a comment",
        ));
    }
    if kept.contains("${") {
        notes.push(note(
            number,
            NoteKind::Ambiguous,
            Some(key),
            "'${' is kept as written; safe-exec does not expand variables",
        ));
    }
    Some(Zeroizing::new(kept.to_owned()))
}

/// Parses a quoted value that starts after the opening quote in `first` and
/// may continue on the following lines. Returns the value and the number of lines used.
fn parse_quoted(
    lines: &[Option<String>],
    index: usize,
    key: &str,
    first: &str,
    quote: char,
    notes: &mut Vec<Note>,
) -> Option<(Zeroizing<String>, usize)> {
    let number = index + 1;
    let mut value = Zeroizing::new(String::new());
    let mut unknown_escape = false;
    let mut current = first.to_owned();
    let mut line_index = index;

    loop {
        let mut chars = current.char_indices();
        while let Some((position, c)) = chars.next() {
            if c == quote {
                let rest = current[position + 1..].trim_start_matches([' ', '\t']);
                if !(rest.is_empty() || rest.starts_with('#')) {
                    notes.push(note(
                        line_index + 1,
                        NoteKind::Rejected,
                        Some(key),
                        "text after the closing quote; only a '#' comment may follow it",
                    ));
                    return None;
                }
                if quote == '"' && value.contains("${") {
                    notes.push(note(
                        number,
                        NoteKind::Ambiguous,
                        Some(key),
                        "'${' is kept as written; safe-exec does not expand variables",
                    ));
                }
                if unknown_escape {
                    notes.push(note(number, NoteKind::Ambiguous, Some(key), "a backslash before a character other than n, r, t, \\, \", ' or $ is kept as written"));
                }
                return Some((value, line_index - index + 1));
            }
            if c == '\\' && quote == '"' {
                match chars.next().map(|(_, escaped)| escaped) {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some(escaped @ ('\\' | '"' | '\'' | '$')) => value.push(escaped),
                    Some(other) => {
                        unknown_escape = true;
                        value.push('\\');
                        value.push(other);
                    }
                    // A backslash at the end of a line escapes nothing, so it is kept.
                    None => value.push('\\'),
                }
                continue;
            }
            value.push(c);
        }

        line_index += 1;
        match lines.get(line_index) {
            Some(Some(next)) => {
                value.push('\n');
                current = next.clone();
            }
            _ => {
                notes.push(note(number, NoteKind::Rejected, Some(key), &format!(
                    "the {} quote opened here is never closed; the following lines are read as separate entries",
                    if quote == '"' { "double" } else { "single" }
                )));
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(parsed: &'a ParsedEnv, key: &str) -> Option<&'a str> {
        parsed
            .entries
            .iter()
            .find(|entry| entry.key == key)
            .map(|entry| entry.value.as_str())
    }

    fn notes_for(parsed: &ParsedEnv, line: usize) -> Vec<NoteKind> {
        parsed
            .notes
            .iter()
            .filter(|note| note.line == line)
            .map(|note| note.kind)
            .collect()
    }

    #[test]
    fn hash_in_values() {
        let text = "A=foo#bar\nB=foo #bar\nC=\"x # y\"\nD='{\"k\":\"v#w\"}'\nE=p@ss#word\nF=6U+c'UD\"l#w\n";
        let parsed = parse(text.as_bytes());
        assert_eq!(value(&parsed, "A"), Some("foo#bar"));
        assert_eq!(value(&parsed, "B"), Some("foo"));
        assert_eq!(notes_for(&parsed, 2), vec![NoteKind::Trimmed]);
        assert_eq!(value(&parsed, "C"), Some("x # y"));
        assert_eq!(value(&parsed, "D"), Some("{\"k\":\"v#w\"}"));
        assert_eq!(value(&parsed, "E"), Some("p@ss#word"));
        assert_eq!(value(&parsed, "F"), None);
        assert_eq!(notes_for(&parsed, 6), vec![NoteKind::Rejected]);
    }

    #[test]
    fn bom_and_crlf() {
        let parsed = parse(b"\xEF\xBB\xBFFIRST=1\r\nSECOND=two\r\nTHIRD=\"3\"\r\n");
        assert_eq!(value(&parsed, "FIRST"), Some("1"));
        assert_eq!(value(&parsed, "SECOND"), Some("two"));
        assert_eq!(value(&parsed, "THIRD"), Some("3"));
        assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
    }

    #[test]
    fn equals_export_and_escapes() {
        let text = "KEY_B64=ZGV2X2tleQ==\nDB_URL=mysql://app:p=ss@127.0.0.1:3306/db\nexport A=1\nexport\tLONG_NAME=2\nSERVICE-NAME=x\nN=\"a\\nb\"\nS='a\\nb'\nW=\"c:\\\\dir\"\n";
        let parsed = parse(text.as_bytes());
        assert_eq!(value(&parsed, "KEY_B64"), Some("ZGV2X2tleQ=="));
        assert_eq!(
            value(&parsed, "DB_URL"),
            Some("mysql://app:p=ss@127.0.0.1:3306/db")
        );
        assert_eq!(value(&parsed, "A"), Some("1"));
        assert_eq!(value(&parsed, "LONG_NAME"), Some("2"));
        assert_eq!(notes_for(&parsed, 5), vec![NoteKind::Rejected]);
        assert_eq!(value(&parsed, "N"), Some("a\nb"));
        assert_eq!(value(&parsed, "S"), Some("a\\nb"));
        assert_eq!(value(&parsed, "W"), Some("c:\\dir"));
    }

    #[test]
    fn multi_line_pem() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEA\nq7BFUpkGp3+8TZ/3Yw==\n-----END PRIVATE KEY-----";
        let text = format!("BEFORE=1\nPEM=\"{pem}\"\nAFTER=2\n");
        let parsed = parse(text.as_bytes());
        assert_eq!(value(&parsed, "PEM"), Some(pem));
        assert_eq!(value(&parsed, "AFTER"), Some("2"));
        assert_eq!(
            parsed
                .entries
                .iter()
                .find(|entry| entry.key == "AFTER")
                .map(|entry| entry.line),
            Some(6)
        );
    }

    #[test]
    fn unclosed_quote_rejects_one_line() {
        let parsed = parse(b"A=\"open\nB=2\n");
        assert_eq!(value(&parsed, "A"), None);
        assert_eq!(value(&parsed, "B"), Some("2"));
        assert_eq!(notes_for(&parsed, 1), vec![NoteKind::Rejected]);
    }

    #[test]
    fn lines_without_equals_are_reported() {
        let parsed = parse(b"just text\n");
        assert_eq!(notes_for(&parsed, 1), vec![NoteKind::Rejected]);
    }

    #[test]
    fn repeated_key_keeps_last() {
        let parsed = parse(b"A=1\nA=2\n");
        assert_eq!(value(&parsed, "A"), Some("2"));
        assert_eq!(parsed.entries.len(), 1);
        assert_eq!(notes_for(&parsed, 2), vec![NoteKind::Ambiguous]);
    }

    #[test]
    fn notes_never_hold_values() {
        let parsed = parse(b"B=sentinel-value #comment\nF=sentinel'x\n");
        for note in &parsed.notes {
            assert!(!note.message.contains("sentinel"), "{note:?}");
        }
    }
}
