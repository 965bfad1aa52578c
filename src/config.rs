//! Configuration: YAML-subset (or JSON) text -> typed [`Config`].
//!
//! Owns: reading the config file (bounded by [`MAX_CONFIG_BYTES`]), the hand-written
//! parser of the YAML subset below, the JSON form, `${ENV}` substitution, `<secret>_file`
//! indirection, path resolution, and the typed validation that reports every mistake of a
//! file at once as `file:line:col: InitVariablesError(<code>): <key path>: <what> — <fix>`
//! (keys without a code in SPEC §2 omit the `InitVariablesError(..)` part).
//! Must not: open sockets, create directories or print anything; never put a secret
//! (`tenant_id`, `client_id`, `client_secret`) into a message — only [`obfuscate`]d.
//!
//! # Grammar (the YAML subset)
//!
//! ```text
//! file      = [BOM] { line } ;               at most MAX_CONFIG_BYTES bytes, UTF-8
//! line      = blank | comment | entry ;      lines end in "\n" or "\r\n"
//! blank     = { " " } ;
//! comment   = { " " } "#" { any } ;          a comment line may start in any column
//! entry     = indent key ":" ( opener | " " { " " } value ) ;
//! indent    = { " " } ;                      spaces only; a tab in indentation is rejected
//! key       = keychar { keychar } ;          keychar = A-Z a-z 0-9 "_" "-" "." "/"
//!                                            (not starting with "-", at most MAX_KEY_LEN);
//!                                            keys are never quoted; the key ends at the
//!                                            first ":" followed by a space or end of line
//! opener    = [ " " { " " } [ "#" { any } ] ] ;   opens a nested block mapping
//! value     = ( plain | dquoted | squoted ) [ " " { " " } "#" { any } ] ;
//! plain     = text up to " #" or end of line, trailing spaces trimmed; it must not
//!             contain ": " nor end in ":"; it must not start with an indicator
//!             (& * ! { } [ ] | > @ ` , "? " "- ")
//! dquoted   = '"' { char | escape } '"' ;    on one line; escapes \\ \" \/ \0 \a \b \t
//!             \n \v \f \r \e \<space> \xHH \uHHHH \UHHHHHHHH
//! squoted   = "'" { char | "''" } "'" ;      on one line; '' is one quote
//! ```
//!
//! Structure: an entry whose value is an `opener` owns the following lines that are
//! indented deeper than its key (all at the same column: that column is the child
//! mapping's indentation); if no deeper line follows, its value is null. Lines indented
//! less close mappings; a line that matches no open mapping's column is an error. The
//! top-level mapping starts in column 1. Keys of one mapping are unique. Nesting is at
//! most [`MAX_DEPTH`] mappings deep. A single `---` may open the file (as first content
//! line); any later `---` or `...` (multi-document) is rejected, as are `%` directives.
//!
//! Plain scalars resolve (YAML 1.2 core schema, restricted): empty, `~`, `null`, `Null`,
//! `NULL` → null; `true`/`True`/`TRUE`/`false`/`False`/`FALSE` → boolean;
//! `[-+]?[0-9]+` → integer (beyond i64 → float); `[-+]?(digits[.[digits]]|.digits)([eE][-+]?digits)?`
//! → float; anything else (including `yes`/`no`, `.inf`, `0x10`) → string. Quoted scalars
//! are always strings.
//!
//! Rejected, each with `file:line:col` and what was expected: tabs in indentation or
//! after `:`, anchors `&`, aliases `*`, tags `!`, flow collections `{}` `[]`, block
//! sequences `- `, block scalars `|` `>`, complex keys `?`, quoted keys, multi-line
//! quoted strings, multi-document files, directives, duplicate keys, bad indentation.
//!
//! `${NAME}` (NAME = `[A-Za-z_][A-Za-z0-9_]*`) inside any scalar is replaced by the
//! environment variable; in a plain scalar the result is then resolved as above (so
//! `port: ${PORT}` is an integer). An unset variable is an error at the scalar. There is
//! no escape for a literal `${`: a secret containing it goes in `<key>_file`, whose
//! contents are taken as they are.
//!
//! # JSON form
//!
//! A file whose name ends in `.json` is parsed with miniserde into the same tree:
//! objects → mappings, strings → strings (with `${NAME}` substitution, never re-typed),
//! numbers → integer or float, `true`/`false`/`null`; arrays are rejected. miniserde gives
//! no positions and sorts keys, so positions are best effort: each key is located by
//! searching its quoted name in the text after its parent's position; a JSON syntax
//! error is reported at `1:1`. Key search is bounded (`JSON_LOCATE_BUDGET` bytes in
//! total); past it keys are reported at `0:0`. Per-value mistakes (arrays, `${..}`) do not
//! stop validation, so they are listed together with the typed mistakes.
//!
//! # Validation
//!
//! The tree is checked against SPEC §2/§5 (see [`SERVICE_KEYS`] for the service keys).
//! Optional keys given as null take their default. Relative paths resolve against the
//! base directory (the working directory for [`load`]); a certificate name (`chain`,
//! `cert`, `key`) without `/` is looked up in `certs/` under it. Every mistake is listed
//! (up to [`MAX_DIAGS`]), sorted by position: unknown keys (with the nearest known key by
//! edit distance), wrong types (a number written as a word is a string, not a number),
//! out-of-range values, missing files, duplicate input ids, two inputs pulling the same
//! tenant with the same service. Disabled inputs are validated too. Values of secrets are
//! never echoed; other values are echoed clipped to 40 characters. Findings that are not
//! errors (a delay below 86400 s, a key the chosen service ignores) are returned in
//! [`Config::warnings`].

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Largest config file read (1 MiB): the vendor file is under 2 KiB, 100 tenants ~100 KiB.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Deepest nesting of mappings (the vendor layout uses 5).
pub const MAX_DEPTH: usize = 16;
/// At most this many mistakes are collected and listed (bounds memory on a garbage file).
pub const MAX_DIAGS: usize = 200;
/// Longest value echoed back in a message (characters), so a pasted blob stays readable.
const MAX_ECHO: usize = 40;
/// Longest key (characters): every real key is under 50; keys are echoed in messages.
pub const MAX_KEY_LEN: usize = 128;
/// A secret given as `<key>_file` must be smaller than this (64 KiB).
const MAX_SECRET_FILE: u64 = 64 * 1024;

// ---------------------------------------------------------------------------
// Value tree
// ---------------------------------------------------------------------------

/// 1-based line and column (0:0 when unknown, e.g. JSON without a locatable key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// One node of the parsed tree, with where it starts. A block mapping's position is the
/// position of the key that owns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Entries in file order (JSON: sorted by key).
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub node: Node,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number with a fraction",
            Value::Str(_) => "a string",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The entry `key` of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }
}

/// One mistake, rendered by [`Diag::render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub pos: Pos,
    /// `InitVariablesError` code of SPEC §2, when the key has one.
    pub code: Option<u8>,
    /// Dotted key path (empty for syntax errors).
    pub key: String,
    pub what: String,
    pub fix: String,
}

impl Diag {
    fn syntax(line: u32, col: u32, what: impl Into<String>, fix: impl Into<String>) -> Diag {
        Diag {
            pos: Pos { line, col },
            code: None,
            key: String::new(),
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// `file:line:col: [InitVariablesError(code): ][key: ]what — fix`.
    pub fn render(&self, file: &str) -> String {
        let mut s = format!("{file}:{}:{}: ", self.pos.line, self.pos.col);
        if let Some(code) = self.code {
            s.push_str(&format!("InitVariablesError({code}): "));
        }
        if !self.key.is_empty() {
            s.push_str(&self.key);
            s.push_str(": ");
        }
        s.push_str(&self.what);
        if !self.fix.is_empty() {
            s.push_str(" — ");
            s.push_str(&self.fix);
        }
        s
    }
}

/// An environment lookup: the real one is [`real_env`]; tests pass their own.
pub type EnvFn<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `std::env::var` as an [`EnvFn`].
pub fn real_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn echo(s: &str) -> String {
    clip(s, MAX_ECHO)
}

/// At most `n` characters of `s`, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().nth(n).is_some() {
        out.push('…');
    }
    out
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------
// YAML-subset parser
// ---------------------------------------------------------------------------

/// One content line, tokenized.
struct Line {
    no: u32,
    indent: usize,
    key: String,
    key_col: u32,
    /// `None`: the line opens a nested mapping (or is null).
    value: Option<Node>,
}

/// Parse YAML-subset text into a tree; every line's mistake is reported.
pub fn parse_yaml(text: &str, env: EnvFn<'_>) -> Result<Node, Vec<Diag>> {
    let mut diags = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut seen_content = false;
    for (i, raw) in text.split('\n').enumerate() {
        let no = to_u32(i.saturating_add(1));
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        match tokenize_line(raw, no, seen_content, env) {
            Ok(Some(line)) => {
                seen_content = true;
                lines.push(line);
            }
            Ok(None) => {}
            Err(d) => {
                seen_content = true;
                diags.push(d);
                if diags.len() >= MAX_DIAGS {
                    break;
                }
            }
        }
    }
    let mut idx = 0;
    let entries = build(&mut lines, &mut idx, 0, 1, &mut diags);
    if diags.is_empty() {
        Ok(Node {
            pos: Pos { line: 1, col: 1 },
            value: Value::Map(entries),
        })
    } else {
        diags.sort_by_key(|d| (d.pos.line, d.pos.col));
        Err(diags)
    }
}

/// Tokenize one line: `Ok(None)` for blank/comment/document-start lines.
fn tokenize_line(
    raw: &str,
    no: u32,
    seen_content: bool,
    env: EnvFn<'_>,
) -> Result<Option<Line>, Diag> {
    let indent = raw.bytes().take_while(|&b| b == b' ').count();
    let rest = raw.get(indent..).unwrap_or("");
    let col = to_u32(indent.saturating_add(1));
    if rest.starts_with('\t') {
        return Err(Diag::syntax(
            no,
            col,
            "tab in indentation",
            "indent with spaces only",
        ));
    }
    let trimmed = rest.trim_end_matches([' ', '\t']);
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    if indent == 0 && is_marker(trimmed, "---") {
        if !seen_content {
            return Ok(None);
        }
        return Err(Diag::syntax(
            no,
            1,
            "a second document (`---`) is not supported",
            "keep one document per file",
        ));
    }
    if indent == 0 && is_marker(trimmed, "...") {
        return Err(Diag::syntax(
            no,
            1,
            "document end marker (`...`) is not supported",
            "remove it",
        ));
    }
    if indent == 0 && trimmed.starts_with('%') {
        return Err(Diag::syntax(
            no,
            1,
            "YAML directives (`%`) are not supported",
            "remove the directive",
        ));
    }
    if let Some(d) = indicator(trimmed, no, col, true) {
        return Err(d);
    }
    // The key ends at the first ": " (or ":" at end of line).
    let bytes = rest.as_bytes();
    let mut colon = None;
    for (j, &b) in bytes.iter().enumerate() {
        if b == b':' && matches!(bytes.get(j + 1), None | Some(b' ') | Some(b'\t')) {
            colon = Some(j);
            break;
        }
        if b == b' ' && bytes.get(j + 1) == Some(&b'#') {
            break;
        }
    }
    let Some(colon) = colon else {
        return Err(Diag::syntax(
            no,
            col,
            "expected `key: value` or `key:`",
            "write a key, a colon and a space, then the value",
        ));
    };
    let key = rest.get(..colon).unwrap_or("");
    if key.len() > MAX_KEY_LEN {
        return Err(Diag::syntax(
            no,
            col,
            format!("a key longer than {MAX_KEY_LEN} characters"),
            "keys are short names such as `window_in_seconds`",
        ));
    }
    if key.is_empty() || key.starts_with('-') {
        return Err(Diag::syntax(
            no,
            col,
            if key.is_empty() {
                "an empty key"
            } else {
                "a key starting with `-`"
            },
            "start the key with a letter, e.g. `window_in_seconds: 900`",
        ));
    }
    if let Some((off, c)) = key
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
    {
        return Err(Diag::syntax(
            no,
            to_u32(indent.saturating_add(off).saturating_add(1)),
            format!("unexpected character `{}` in a key", c.escape_default()),
            "keys are letters, digits, `_`, `-`, `.` and `/`, unquoted",
        ));
    }
    let after = rest.get(colon + 1..).unwrap_or("");
    let spaces = after.bytes().take_while(|&b| b == b' ').count();
    let value_text = after.get(spaces..).unwrap_or("");
    let value_col = to_u32(indent + colon + 1 + spaces + 1);
    if value_text.starts_with('\t') {
        return Err(Diag::syntax(
            no,
            value_col,
            "tab after `:`",
            "separate the value with spaces",
        ));
    }
    let value = if value_text.trim_end().is_empty() || value_text.starts_with('#') {
        None
    } else {
        Some(parse_scalar(value_text, no, value_col, env)?)
    };
    Ok(Some(Line {
        no,
        indent,
        key: key.to_string(),
        key_col: col,
        value,
    }))
}

fn is_marker(s: &str, marker: &str) -> bool {
    match s.strip_prefix(marker) {
        Some(r) => r.is_empty() || r.starts_with(' ') || r.starts_with('\t'),
        None => false,
    }
}

/// A construct outside the subset, recognised by its first character.
fn indicator(s: &str, no: u32, col: u32, is_key: bool) -> Option<Diag> {
    let first = s.chars().next()?;
    let second = s.chars().nth(1);
    let (what, fix) = match first {
        '&' => ("anchors (`&`) are not supported", "write the value out"),
        '*' => ("aliases (`*`) are not supported", "write the value out"),
        '!' => ("tags (`!`) are not supported", "remove the tag"),
        '{' | '}' => (
            "flow mappings (`{}`) are not supported",
            "write one `key: value` per line, indented",
        ),
        '[' | ']' => (
            "flow sequences (`[]`) are not supported",
            "lists are not used by this config; write a mapping",
        ),
        '|' | '>' => (
            "block scalars (`|`, `>`) are not supported",
            "write the value on one line, quoted if needed",
        ),
        '@' | '`' => ("reserved character", "quote the value"),
        '-' if matches!(second, None | Some(' ') | Some('\t')) => (
            "block sequences (`- `) are not supported",
            "write a mapping `key: value`",
        ),
        '?' if matches!(second, None | Some(' ') | Some('\t')) => {
            ("complex keys (`?`) are not supported", "write `key: value`")
        }
        '"' | '\'' if is_key => ("quoted keys are not supported", "write the key unquoted"),
        ',' if !is_key => ("unexpected `,`", "quote the value"),
        _ => return None,
    };
    Some(Diag::syntax(no, col, what, fix))
}

/// A scalar value after `key: `; `col` is its 1-based column.
fn parse_scalar(s: &str, no: u32, col: u32, env: EnvFn<'_>) -> Result<Node, Diag> {
    let pos = Pos { line: no, col };
    let (text, quoted, consumed) = if let Some(body) = s.strip_prefix('"') {
        let (v, used) = double_quoted(body, no, col)?;
        (v, true, used + 1)
    } else if let Some(body) = s.strip_prefix('\'') {
        let (v, used) = single_quoted(body, no, col)?;
        (v, true, used + 1)
    } else {
        if let Some(d) = indicator(s, no, col, false) {
            return Err(d);
        }
        let end = s.find(" #").unwrap_or(s.len());
        let v = s.get(..end).unwrap_or("").trim_end_matches([' ', '\t']);
        if let Some(off) = v.find(": ") {
            return Err(Diag::syntax(
                no,
                col.saturating_add(to_u32(off)),
                "`: ` inside a plain value (a nested mapping needs its own line)",
                "quote the value, or put the nested key on the next line, indented",
            ));
        }
        if v.ends_with(':') {
            return Err(Diag::syntax(
                no,
                col.saturating_add(to_u32(v.len())).saturating_sub(1),
                "a value ending in `:`",
                "quote the value",
            ));
        }
        (v.to_string(), false, s.len())
    };
    if quoted {
        let tail = s.get(consumed..).unwrap_or("");
        let t = tail.trim_start_matches(' ');
        if !(t.trim_end().is_empty() || (t.starts_with('#') && t.len() < tail.len())) {
            return Err(Diag::syntax(
                no,
                col.saturating_add(to_u32(consumed)),
                "unexpected text after the closing quote",
                "quote the whole value, or start a comment with ` #`",
            ));
        }
    }
    let text = if text.contains("${") {
        substitute(&text, env).map_err(|(what, fix)| Diag::syntax(no, col, what, fix))?
    } else {
        text
    };
    let value = if quoted {
        Value::Str(text)
    } else {
        resolve_plain(text)
    };
    Ok(Node { pos, value })
}

/// Body after the opening `"`: (decoded text, bytes used including the closing quote).
fn double_quoted(body: &str, no: u32, col: u32) -> Result<(String, usize), Diag> {
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\\' => {
                let esc_col = col.saturating_add(to_u32(i)).saturating_add(1);
                let bad = |what: String| {
                    Diag::syntax(
                        no,
                        esc_col,
                        what,
                        "use \\\\ \\\" \\n \\t \\r \\0 \\xHH \\uHHHH or \\UHHHHHHHH",
                    )
                };
                let Some((_, e)) = chars.next() else {
                    return Err(bad("`\\` at end of line".into()));
                };
                let hex_len = match e {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => 0,
                };
                if hex_len > 0 {
                    let mut v: u32 = 0;
                    for _ in 0..hex_len {
                        let d = chars
                            .next()
                            .and_then(|(_, h)| h.to_digit(16))
                            .ok_or_else(|| bad(format!("bad `\\{e}` escape")))?;
                        v = v.wrapping_mul(16).wrapping_add(d);
                    }
                    let ch = char::from_u32(v)
                        .ok_or_else(|| bad(format!("`\\{e}` escape is not a character")))?;
                    out.push(ch);
                    continue;
                }
                out.push(match e {
                    '\\' => '\\',
                    '"' => '"',
                    '/' => '/',
                    '0' => '\0',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    't' | '\t' => '\t',
                    'n' => '\n',
                    'v' => '\u{b}',
                    'f' => '\u{c}',
                    'r' => '\r',
                    'e' => '\u{1b}',
                    ' ' => ' ',
                    other => {
                        return Err(bad(format!(
                            "unknown escape `\\{}`",
                            other.escape_default()
                        )))
                    }
                });
            }
            c => out.push(c),
        }
    }
    Err(Diag::syntax(
        no,
        col,
        "unterminated double-quoted string",
        "close it with `\"` on the same line (multi-line strings are not supported)",
    ))
}

fn single_quoted(body: &str, no: u32, col: u32) -> Result<(String, usize), Diag> {
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().map(|&(_, n)| n) == Some('\'') {
                chars.next();
                out.push('\'');
                continue;
            }
            return Ok((out, i + 1));
        }
        out.push(c);
    }
    Err(Diag::syntax(
        no,
        col,
        "unterminated single-quoted string",
        "close it with `'` on the same line (multi-line strings are not supported)",
    ))
}

/// Replace every `${NAME}`; errors are (what, fix).
fn substitute(s: &str, env: EnvFn<'_>) -> Result<String, (String, String)> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(rest.get(..start).unwrap_or(""));
        let after = rest.get(start + 2..).unwrap_or("");
        let Some(end) = after.find('}') else {
            return Err((
                "`${` without a closing `}`".into(),
                "write `${NAME}`".into(),
            ));
        };
        let name = after.get(..end).unwrap_or("");
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err((
                // The name is not echoed: it may be part of a secret that contains `${`.
                "`${` starts an invalid variable name".to_string(),
                "write `${NAME}` with letters, digits and `_`; a secret containing `${` goes in `<key>_file`".into(),
            ));
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err((
                    format!("environment variable `{name}` is not set"),
                    format!("export {name} before starting, or write the value here"),
                ))
            }
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

/// Type a plain scalar per the core schema subset (see the module docs).
fn resolve_plain(s: String) -> Value {
    match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(&s);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => s.parse::<f64>().map_or(Value::Str(s), Value::Float),
        };
    }
    if is_float_syntax(unsigned) {
        if let Ok(f) = s.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(s)
}

/// `(digits [. digits*] | . digits) ([eE] [-+]? digits)?`
fn is_float_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e') | Some(b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-') | Some(b'+')) {
            i += 1;
        }
        let exp = b
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// Build the mapping at `indent` from `lines[*idx..]`.
fn build(
    lines: &mut [Line],
    idx: &mut usize,
    indent: usize,
    depth: usize,
    diags: &mut Vec<Diag>,
) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    // key -> line of its first occurrence (a HashMap: a flat mapping may be huge).
    let mut seen: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    while let Some(line) = lines.get_mut(*idx) {
        if line.indent < indent {
            break;
        }
        let (no, key_col) = (line.no, line.key_col);
        if line.indent > indent {
            diags.push(Diag::syntax(
                no,
                key_col,
                "unexpected indentation",
                format!(
                    "align this key with the keys above it at column {}",
                    indent + 1
                ),
            ));
            *idx += 1;
            skip_deeper(lines, idx, indent);
            continue;
        }
        let key = std::mem::take(&mut line.key);
        let value = line.value.take();
        *idx += 1;
        let key_pos = Pos {
            line: no,
            col: key_col,
        };
        if let Some(first) = seen.get(&key) {
            diags.push(Diag::syntax(
                no,
                key_col,
                format!("duplicate key `{key}` (first at line {first})"),
                "keep only one of them",
            ));
        } else {
            seen.insert(key.clone(), no);
        }
        let node = match value {
            Some(n) => n,
            None => {
                let child_indent = lines.get(*idx).map(|l| l.indent).filter(|&i| i > indent);
                match child_indent {
                    Some(ci) if depth >= MAX_DEPTH => {
                        if let Some(l) = lines.get(*idx) {
                            diags.push(Diag::syntax(
                                l.no,
                                to_u32(ci + 1),
                                format!("nested deeper than {MAX_DEPTH} mappings"),
                                "flatten the configuration",
                            ));
                        }
                        skip_deeper(lines, idx, indent);
                        Node {
                            pos: key_pos,
                            value: Value::Null,
                        }
                    }
                    Some(ci) => Node {
                        pos: key_pos,
                        value: Value::Map(build(lines, idx, ci, depth + 1, diags)),
                    },
                    None => Node {
                        pos: key_pos,
                        value: Value::Null,
                    },
                }
            }
        };
        entries.push(Entry { key, key_pos, node });
    }
    entries
}

fn skip_deeper(lines: &[Line], idx: &mut usize, indent: usize) {
    while lines.get(*idx).is_some_and(|l| l.indent > indent) {
        *idx += 1;
    }
}

// ---------------------------------------------------------------------------
// JSON form
// ---------------------------------------------------------------------------

/// Parse the JSON form into the same tree (positions best effort, see module docs).
pub fn parse_json(text: &str, env: EnvFn<'_>) -> Result<Node, Vec<Diag>> {
    let (root, diags) = parse_json_partial(text, env)?;
    if diags.is_empty() {
        Ok(root)
    } else {
        Err(diags)
    }
}

/// The JSON tree plus per-value mistakes (arrays, `${..}`), which leave a null in the
/// tree so that validation can still report the rest; `Err` for a syntax error.
fn parse_json_partial(text: &str, env: EnvFn<'_>) -> Result<(Node, Vec<Diag>), Vec<Diag>> {
    use miniserde::json::Value as J;
    let parsed: J = miniserde::json::from_str(text).map_err(|_| {
        vec![Diag::syntax(
            1,
            1,
            "not valid JSON",
            "check brackets, commas and quotes (files ending in .json are read as JSON)",
        )]
    })?;
    if !matches!(parsed, J::Object(_)) {
        return Err(vec![Diag::syntax(
            1,
            1,
            "the top level is not an object",
            "write `{\"globals\": …, \"outputs\": …, \"inputs\": …}`",
        )]);
    }
    let mut ctx = JsonCtx {
        text,
        env,
        diags: Vec::new(),
        budget: JSON_LOCATE_BUDGET,
    };
    let root = ctx.node(&parsed, 0, Pos { line: 1, col: 1 }, 0);
    Ok((root, ctx.diags))
}

/// Bytes of text scanned in total to locate JSON keys (positions are best effort; past
/// this budget keys get 0:0, so a huge flat object cannot make loading quadratic).
const JSON_LOCATE_BUDGET: usize = 16 << 20;

struct JsonCtx<'t, 'e> {
    text: &'t str,
    env: EnvFn<'e>,
    diags: Vec<Diag>,
    budget: usize,
}

impl JsonCtx<'_, '_> {
    fn diag(&mut self, d: Diag) {
        if self.diags.len() < MAX_DIAGS {
            self.diags.push(d);
        }
    }

    fn node(&mut self, v: &miniserde::json::Value, from: usize, pos: Pos, depth: usize) -> Node {
        use miniserde::json::{Number, Value as J};
        let value = match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(Number::U64(u)) => {
                i64::try_from(*u).map_or(Value::Float(*u as f64), Value::Int)
            }
            J::Number(Number::I64(i)) => Value::Int(*i),
            J::Number(Number::F64(f)) => Value::Float(*f),
            J::String(s) if s.contains("${") => match substitute(s, self.env) {
                Ok(s) => Value::Str(s),
                Err((what, fix)) => {
                    self.diag(Diag::syntax(pos.line, pos.col, what, fix));
                    Value::Null
                }
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(_) => {
                self.diag(Diag::syntax(
                    pos.line,
                    pos.col,
                    "arrays are not supported",
                    "write an object",
                ));
                Value::Null
            }
            J::Object(_) if depth >= MAX_DEPTH => {
                self.diag(Diag::syntax(
                    pos.line,
                    pos.col,
                    format!("nested deeper than {MAX_DEPTH} objects"),
                    "flatten the configuration",
                ));
                Value::Null
            }
            J::Object(obj) => {
                let mut entries = Vec::new();
                for (k, child) in obj.iter() {
                    let (key_pos, at) = self.locate_key(from, k);
                    let node = self.node(child, at, key_pos, depth + 1);
                    entries.push(Entry {
                        key: k.clone(),
                        key_pos,
                        node,
                    });
                }
                Value::Map(entries)
            }
        };
        Node { pos, value }
    }

    /// Best effort: where `"key"` first occurs at or after byte `from`.
    fn locate_key(&mut self, from: usize, key: &str) -> (Pos, usize) {
        let rest = self.text.get(from..).unwrap_or("");
        // Searching and counting lines each scan at most the whole text.
        let cost = rest.len().saturating_add(from);
        if cost > self.budget {
            return (Pos::default(), from);
        }
        self.budget -= cost;
        let needle = format!("\"{key}\"");
        match rest.find(&needle).and_then(|off| from.checked_add(off)) {
            Some(at) => (offset_pos(self.text, at), at),
            None => (Pos::default(), from),
        }
    }
}

fn offset_pos(text: &str, at: usize) -> Pos {
    let before = text.get(..at).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    Pos {
        line: to_u32(line),
        col: to_u32(col),
    }
}

// ---------------------------------------------------------------------------
// Typed configuration (shared contract)
// ---------------------------------------------------------------------------

/// A secret string: never printed. `Display`/`Debug` show the first 4 characters then `****`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The real value, for the token request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// First 4 characters then `****`.
    pub fn obfuscated(&self) -> String {
        obfuscate(&self.0)
    }
}

/// First 4 characters (not bytes) then `****`.
pub fn obfuscate(s: &str) -> String {
    let head: String = s.chars().take(4).collect();
    format!("{head}****")
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.obfuscated())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.obfuscated())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file the config was read from.
    pub path: PathBuf,
    pub globals: Globals,
    pub outputs: Vec<OutputConfig>,
    /// Enabled and disabled inputs, in file order.
    pub inputs: Vec<InputConfig>,
    /// Non-fatal findings (e.g. a delay below 86400 s), rendered `file:line:col: key: what — fix`;
    /// the caller logs each as a WARNING line.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Globals {
    pub debug: bool,
    pub id: String,
    pub name: String,
    /// Persistence directory, resolved against the working directory.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct OutputConfig {
    /// The key under `outputs` (e.g. `devo_1`).
    pub name: String,
    pub kind: OutputKind,
}

#[derive(Debug, Clone)]
pub enum OutputKind {
    Devo(TlsOutput),
    Syslog(TlsOutput),
    /// RELP (rsyslog imrelp): the keys of `syslog`.
    Relp(TlsOutput),
    Stdout,
    File {
        path: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct TlsOutput {
    pub address: String,
    pub port: u16,
    /// `type: SSL` (true) or `TCP` (false).
    pub tls: bool,
    /// Resolved paths: a bare name is looked up under `certs/`.
    pub chain: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `cloud.office365.messagetracing` unless configured (syslog `tag`).
    pub tag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `office365_exchange_message_service`.
    Reporting,
    /// `office365_exchange_message_graph_service`.
    Graph,
}

impl Api {
    pub fn service_name(self) -> &'static str {
        match self {
            Api::Reporting => "office365_exchange_message_service",
            Api::Graph => "office365_exchange_message_graph_service",
        }
    }
}

#[derive(Debug, Clone)]
pub struct InputConfig {
    /// The key under `inputs` (e.g. `office365_exchange_message_contoso`).
    pub name: String,
    /// `id` as text (the vendor writes a number).
    pub id: String,
    pub enabled: bool,
    pub cutoff_days: u64,
    pub margin_secs: u64,
    pub credentials: Credentials,
    pub service: ServiceConfig,
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub tenant_id: Secret,
    pub client_id: Secret,
    pub client_secret: Secret,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub api: Api,
    pub timeout_secs: f64,
    pub retries: u32,
    pub retry_wait_secs: u64,
    pub period_secs: u64,
    pub window_secs: u64,
    pub delay_secs: u64,
    pub reset_persistence_auth: Option<String>,
    /// Full URL of the MessageTrace endpoint (base + path unless the value already ends with it).
    pub reporting_url: String,
    /// Scheme+host of the token endpoint (`https://login.microsoftonline.com`).
    pub auth_url: String,
    pub resource_url: String,
    /// Full URL of the Graph messageTraces endpoint.
    pub graph_url: String,
    pub ca_file: Option<PathBuf>,
    pub max_requests_per_5_minutes: u32,
}

// ---------------------------------------------------------------------------
// Key reference
// ---------------------------------------------------------------------------

/// One row of the service-key reference (README "Configuration reference").
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    pub name: &'static str,
    pub ty: &'static str,
    pub range: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Service keys (all optional), in the order of SPEC §2.
pub const SERVICE_KEYS: &[KeyDoc] = &[
    KeyDoc { name: "requests_timeout_in_seconds", ty: "float", range: "1–86400", default: "60", meaning: "timeout of one HTTP request (connect + read)" },
    KeyDoc { name: "requests_retries_before_error_in_units", ty: "int", range: "0–100", default: "5", meaning: "retries of a failed request before the pull is abandoned until the next period" },
    KeyDoc { name: "requests_wait_time_between_retries_in_seconds", ty: "int", range: "0–3600", default: "5", meaning: "base wait between retries (exponential with jitter; `Retry-After` wins when given)" },
    KeyDoc { name: "request_period_in_seconds", ty: "int", range: "1–86400", default: "60", meaning: "how often a pull starts" },
    KeyDoc { name: "window_in_seconds", ty: "int", range: "60–86400", default: "900", meaning: "length of one query window" },
    KeyDoc { name: "override_time_delay_in_seconds", ty: "int", range: "1–172800", default: "90000", meaning: "how far behind now the pulled data ends (records appear in the API up to 24 h late); below 86400 warns that records may be missed" },
    KeyDoc { name: "reset_persistence_auth", ty: "str", range: "YYYY-MM-DD", default: "–", meaning: "when this value differs from the persisted one, the state is cleared and pulling restarts" },
    KeyDoc { name: "override_base_url", ty: "URL", range: "https", default: "https://reports.office365.com", meaning: "Reporting Web Service scheme+host; `/ecp/reportingwebservice/reporting.svc/MessageTrace` is added unless present (sovereign clouds, tests)" },
    KeyDoc { name: "override_base_auth_url", ty: "URL", range: "https", default: "https://login.microsoftonline.com", meaning: "token endpoint scheme+host; `/{tenant_id}/oauth2/token` is added (sovereign clouds such as `login.microsoftonline.us`, tests)" },
    KeyDoc { name: "override_base_resource_url", ty: "URL", range: "https", default: "https://outlook.office365.com", meaning: "`resource` of the Reporting Web Service token (sovereign clouds, tests)" },
    KeyDoc { name: "override_graph_url", ty: "URL", range: "https", default: "https://graph.microsoft.com", meaning: "Graph scheme+host; `/v1.0/admin/exchange/tracing/messageTraces` is added unless present (tests)" },
    KeyDoc { name: "ca_file", ty: "path", range: "–", default: "–", meaning: "trust anchors (PEM) for Microsoft endpoints, used instead of the built-in roots: TLS-inspecting proxies, tests" },
    KeyDoc { name: "max_requests_per_5_minutes", ty: "int", range: "1–100", default: "100", meaning: "Graph only: this collector's share of the tenant's 100 requests per 5 minutes" },
];

/// [`SERVICE_KEYS`] as the Markdown table the README carries verbatim.
pub fn reference_table_markdown() -> String {
    let mut s = String::from("| key | type | range | default | meaning |\n|---|---|---|---|---|\n");
    for k in SERVICE_KEYS {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            k.name, k.ty, k.range, k.default, k.meaning
        ));
    }
    s
}

pub const DEFAULT_BASE_URL: &str = "https://reports.office365.com";
pub const DEFAULT_AUTH_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_RESOURCE_URL: &str = "https://outlook.office365.com";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";
pub const REPORTING_PATH: &str = "/ecp/reportingwebservice/reporting.svc/MessageTrace";
pub const GRAPH_PATH: &str = "/v1.0/admin/exchange/tracing/messageTraces";
pub use crate::output::DEFAULT_TAG;
/// Below this delay records that settle late may be missed (they appear up to 24 h late).
pub const SAFE_DELAY_SECS: i64 = 86_400;
/// Longest input id (it is part of the state file's name).
const MAX_ID_LEN: usize = 64;

const INPUT_BASE: &str = "office365_exchange_message";
const TOP_KEYS: &[&str] = &["globals", "outputs", "inputs"];
const GLOBAL_KEYS: &[&str] = &["debug", "id", "name", "persistence"];
const PERSISTENCE_KEYS: &[&str] = &["type", "config"];
const PERSISTENCE_CONFIG_KEYS: &[&str] = &["directory_name"];
const OUTPUT_KEYS: &[&str] = &["type", "config"];
const OUTPUT_TYPES: &[&str] = &["devo_platform", "syslog", "relp", "stdout", "file"];
const DEVO_KEYS: &[&str] = &["address", "port", "type", "chain", "cert", "key"];
const SYSLOG_KEYS: &[&str] = &["address", "port", "type", "chain", "cert", "key", "tag"];
const FILE_KEYS: &[&str] = &["path"];
const INPUT_KEYS: &[&str] = &[
    "id",
    "enabled",
    "max_historic_date_cutoff_days_back",
    "max_historic_date_margin_seconds",
    "credentials",
    "services",
];
const CREDENTIAL_KEYS: &[&str] = &[
    "tenant_id",
    "client_id",
    "client_secret",
    "tenant_id_file",
    "client_id_file",
    "client_secret_file",
];
const SERVICE_NAMES: &[&str] = &[
    "office365_exchange_message_service",
    "office365_exchange_message_graph_service",
];

/// Levenshtein distance (small inputs only: keys).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// "did you mean `x`?" when a known key is close, else the list of known keys.
fn suggest(key: &str, known: &[&str]) -> String {
    if key.len() > MAX_KEY_LEN {
        return format!("remove it; known keys: {}", known.join(", "));
    }
    let best = known
        .iter()
        .map(|k| (distance(key, k), *k))
        .min_by_key(|&(d, _)| d);
    match best {
        Some((d, k)) if d <= (k.chars().count() / 3).max(2) => format!("did you mean `{k}`?"),
        _ if known.is_empty() => "remove it: this section takes no keys".to_string(),
        _ => format!("remove it; known keys: {}", known.join(", ")),
    }
}

/// Collects mistakes while walking the tree.
struct Checker<'a> {
    diags: Vec<Diag>,
    warnings: Vec<String>,
    base: &'a Path,
    label: &'a str,
}

/// A key lookup in a mapping that already reported its unknown keys.
struct Fields<'n> {
    entries: &'n [Entry],
    pos: Pos,
    path: String,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
    /// The entry unless absent or null (optional keys given as null take their default).
    fn opt(&self, key: &str) -> Option<&'n Entry> {
        self.get(key).filter(|e| e.node.value != Value::Null)
    }
    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Checker<'a> {
    fn err(
        &mut self,
        pos: Pos,
        code: Option<u8>,
        key: &str,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) {
        if self.diags.len() >= MAX_DIAGS {
            return;
        }
        self.diags.push(Diag {
            pos,
            code,
            key: key.to_string(),
            what: what.into(),
            fix: fix.into(),
        });
    }

    /// View a mapping node, reporting unknown keys. `None` (after an error) if not a mapping.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
        code: Option<u8>,
    ) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => {
                for e in entries {
                    if !known.contains(&e.key.as_str()) {
                        self.err(
                            e.key_pos,
                            None,
                            &join(path, &clip(&e.key, MAX_KEY_LEN)),
                            "unknown key",
                            suggest(&e.key, known),
                        );
                    }
                }
                Some(Fields {
                    entries,
                    pos: node.pos,
                    path: path.to_string(),
                })
            }
            other => {
                self.err(
                    node.pos,
                    code,
                    path,
                    format!("expected a mapping, found {}", other.kind()),
                    "indent its keys on the following lines",
                );
                None
            }
        }
    }

    /// An integer in `min..=max`; `codes` = (not an int, out of range).
    fn int(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        min: i64,
        max: i64,
        default: i64,
        codes: (Option<u8>, Option<u8>),
    ) -> i64 {
        let Some(e) = f.opt(key) else { return default };
        let path = f.path(key);
        let fix =
            format!("write a whole number from {min} to {max} in digits, e.g. `{key}: {default}`");
        match &e.node.value {
            Value::Int(i) if (min..=max).contains(i) => *i,
            Value::Int(i) => {
                self.err(
                    e.node.pos,
                    codes.1,
                    &path,
                    format!("{i} is out of range"),
                    fix,
                );
                default
            }
            Value::Str(s) => {
                self.err(
                    e.node.pos,
                    codes.0,
                    &path,
                    format!("`{}` is not a number", echo(s)),
                    fix,
                );
                default
            }
            other => {
                self.err(
                    e.node.pos,
                    codes.0,
                    &path,
                    format!("expected an integer, found {}", other.kind()),
                    fix,
                );
                default
            }
        }
    }

    fn boolean(&mut self, f: &Fields<'_>, key: &str, default: bool) -> bool {
        let Some(e) = f.opt(key) else { return default };
        match &e.node.value {
            Value::Bool(b) => *b,
            other => {
                let found = match other {
                    Value::Str(s) => format!("`{}`", echo(s)),
                    o => o.kind().to_string(),
                };
                self.err(
                    e.node.pos,
                    None,
                    &f.path(key),
                    format!("expected true or false, found {found}"),
                    format!("write `{key}: true` or `{key}: false`"),
                );
                default
            }
        }
    }

    /// A string (integers are accepted as their digits when `allow_int`).
    fn string(&mut self, f: &Fields<'_>, key: &str, allow_int: bool) -> Option<String> {
        let e = f.opt(key)?;
        match &e.node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) if allow_int => Some(i.to_string()),
            other => {
                self.err(
                    e.node.pos,
                    None,
                    &f.path(key),
                    format!("expected a string, found {}", other.kind()),
                    "write text, quoted if needed",
                );
                None
            }
        }
    }

    /// `relative` resolved against the base directory.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// A certificate name without `/` is looked up in `certs/`.
    fn resolve_cert(&self, name: &str) -> PathBuf {
        if name.contains('/') {
            self.resolve(name)
        } else {
            self.base.join("certs").join(name)
        }
    }

    fn shown(&self, p: &Path) -> String {
        p.display().to_string()
    }

    /// A file that must exist and be a regular file.
    fn existing_file(
        &mut self,
        e: &Entry,
        path: &str,
        resolved: PathBuf,
        code: Option<u8>,
        fix: &str,
    ) -> Option<PathBuf> {
        match std::fs::metadata(&resolved) {
            Ok(m) if m.is_file() => match std::fs::File::open(&resolved) {
                Ok(_) => Some(resolved),
                Err(err) => {
                    let what = format!("cannot read `{}`: {err}", self.shown(&resolved));
                    self.err(
                        e.node.pos,
                        code,
                        path,
                        what,
                        "make it readable by the collector's user",
                    );
                    None
                }
            },
            Ok(_) => {
                let what = format!("`{}` is not a file", self.shown(&resolved));
                self.err(e.node.pos, code, path, what, fix);
                None
            }
            Err(_) => {
                let what = format!("file `{}` not found", self.shown(&resolved));
                self.err(e.node.pos, code, path, what, fix);
                None
            }
        }
    }
}

/// Check that `s` is `https://host[:port][/path]`; returns the message of what is wrong.
fn check_https(s: &str) -> std::result::Result<(), String> {
    let lower = s.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("https://") else {
        return Err("is not an https:// URL".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if rest.contains(['?', '#']) {
        return Err("has a query or fragment".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace".into());
    }
    if authority.contains('@') {
        return Err("carries user information".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err("has an unclosed `[` in its host".into());
        };
        if h.is_empty()
            || !h
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("has a bad IPv6 host".into());
        }
        (h, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err("has a bad host name".into());
    }
    if let Some(p) = port {
        if !p.parse::<u16>().is_ok_and(|n| n > 0) {
            return Err("has a bad port".into());
        }
    }
    Ok(())
}

/// `value` (without trailing `/`) + `path` unless it already ends with `path` (ASCII case-insensitive).
fn with_path(value: &str, path: &str) -> String {
    let v = value.trim_end_matches('/');
    if v.to_ascii_lowercase().ends_with(&path.to_ascii_lowercase()) {
        v.to_string()
    } else {
        format!("{v}{path}")
    }
}

/// Validate a parsed tree into a [`Config`]; `Err` holds every mistake.
pub fn validate(
    root: &Node,
    label: &str,
    base: &Path,
) -> std::result::Result<Config, (Vec<Diag>, Vec<String>)> {
    let mut c = Checker {
        diags: Vec::new(),
        warnings: Vec::new(),
        base,
        label,
    };
    let Some(top) = c.fields(root, "", TOP_KEYS, None) else {
        return Err((c.diags, c.warnings));
    };
    let globals = check_globals(&mut c, &top);
    let outputs = check_outputs(&mut c, &top);
    let inputs = check_inputs(&mut c, &top);
    if c.diags.is_empty() {
        Ok(Config {
            path: PathBuf::from(label),
            globals,
            outputs,
            inputs,
            warnings: c.warnings,
        })
    } else {
        c.diags.sort_by_key(|d| (d.pos.line, d.pos.col));
        Err((c.diags, c.warnings))
    }
}

fn check_globals(c: &mut Checker<'_>, top: &Fields<'_>) -> Globals {
    let mut g = Globals {
        debug: false,
        id: "not_used".into(),
        name: "msgtrace".into(),
        state_dir: c.base.join("state"),
    };
    let Some(e) = top.opt("globals") else {
        return g;
    };
    let Some(f) = c.fields(&e.node, "globals", GLOBAL_KEYS, None) else {
        return g;
    };
    g.debug = c.boolean(&f, "debug", false);
    if let Some(id) = c.string(&f, "id", true) {
        g.id = id;
    }
    if let Some(name) = c.string(&f, "name", false) {
        g.name = name;
    }
    let Some(pe) = f.opt("persistence") else {
        return g;
    };
    let Some(p) = c.fields(&pe.node, "globals.persistence", PERSISTENCE_KEYS, None) else {
        return g;
    };
    if let Some(t) = c.string(&p, "type", false) {
        if t != "filesystem" {
            let pos = p.get("type").map_or(p.pos, |e| e.node.pos);
            c.err(
                pos,
                None,
                "globals.persistence.type",
                format!("`{}` is not supported", echo(&t)),
                "write `type: filesystem`",
            );
        }
    }
    let Some(ce) = p.opt("config") else { return g };
    let Some(pc) = c.fields(
        &ce.node,
        "globals.persistence.config",
        PERSISTENCE_CONFIG_KEYS,
        None,
    ) else {
        return g;
    };
    if let Some(dir) = c.string(&pc, "directory_name", false) {
        if dir.is_empty() {
            let pos = pc.get("directory_name").map_or(pc.pos, |e| e.node.pos);
            c.err(
                pos,
                None,
                "globals.persistence.config.directory_name",
                "is empty",
                "name a directory, e.g. `state`",
            );
        } else {
            g.state_dir = c.resolve(&dir);
        }
    }
    g
}

fn check_outputs(c: &mut Checker<'_>, top: &Fields<'_>) -> Vec<OutputConfig> {
    let mut out = Vec::new();
    let Some(e) = top.opt("outputs") else {
        c.err(
            top.pos,
            None,
            "outputs",
            "missing",
            "add an `outputs:` section with at least one output (e.g. `type: stdout`)",
        );
        return out;
    };
    let Value::Map(entries) = &e.node.value else {
        c.err(
            e.node.pos,
            None,
            "outputs",
            format!("expected a mapping, found {}", e.node.value.kind()),
            "indent one output per key under `outputs:`",
        );
        return out;
    };
    if entries.is_empty() {
        c.err(
            e.node.pos,
            None,
            "outputs",
            "no output configured",
            "add one, e.g. `devo_1:` with `type: devo_platform`",
        );
    }
    for oe in entries {
        let path = format!("outputs.{}", oe.key);
        let Some(f) = c.fields(&oe.node, &path, OUTPUT_KEYS, None) else {
            continue;
        };
        let Some(kind) = c.string(&f, "type", false) else {
            if f.opt("type").is_none() {
                c.err(
                    f.pos,
                    None,
                    &f.path("type"),
                    "missing",
                    "add `type: devo_platform` (or syslog, stdout, file)",
                );
            }
            continue;
        };
        let type_pos = f.get("type").map_or(f.pos, |e| e.node.pos);
        let known: &[&str] = match kind.as_str() {
            "devo_platform" => DEVO_KEYS,
            "syslog" | "relp" => SYSLOG_KEYS,
            "file" => FILE_KEYS,
            "stdout" => &[],
            other => {
                c.err(
                    type_pos,
                    None,
                    &f.path("type"),
                    format!("unknown output type `{}`", echo(other)),
                    format!(
                        "{} (one of {})",
                        suggest(other, OUTPUT_TYPES)
                            .replace("remove it; known keys: ", "use one of: "),
                        OUTPUT_TYPES.join(", ")
                    ),
                );
                continue;
            }
        };
        let cfg_path = f.path("config");
        let empty = Node {
            pos: f.pos,
            value: Value::Map(Vec::new()),
        };
        let cfg_node = f.opt("config").map_or(&empty, |e| &e.node);
        let Some(cf) = c.fields(cfg_node, &cfg_path, known, None) else {
            continue;
        };
        let kind = match kind.as_str() {
            "stdout" => Some(OutputKind::Stdout),
            "file" => check_file_output(c, &cf),
            "devo_platform" => check_tls_output(c, &cf, true).map(OutputKind::Devo),
            "relp" => check_tls_output(c, &cf, false).map(OutputKind::Relp),
            _ => check_tls_output(c, &cf, false).map(OutputKind::Syslog),
        };
        if let Some(kind) = kind {
            out.push(OutputConfig {
                name: oe.key.clone(),
                kind,
            });
        }
    }
    out
}

fn check_file_output(c: &mut Checker<'_>, f: &Fields<'_>) -> Option<OutputKind> {
    match c.string(f, "path", false) {
        Some(p) if !p.is_empty() => Some(OutputKind::File {
            path: c.resolve(&p),
        }),
        Some(_) => {
            let pos = f.get("path").map_or(f.pos, |e| e.node.pos);
            c.err(
                pos,
                None,
                &f.path("path"),
                "is empty",
                "give the file to append events to",
            );
            None
        }
        None => {
            if f.opt("path").is_none() {
                c.err(
                    f.pos,
                    None,
                    &f.path("path"),
                    "missing",
                    "add `path: events.jsonl`",
                );
            }
            None
        }
    }
}

fn check_tls_output(c: &mut Checker<'_>, f: &Fields<'_>, devo: bool) -> Option<TlsOutput> {
    let before = c.diags.len();
    let address = c.string(f, "address", false);
    match &address {
        None if f.opt("address").is_none() => {
            c.err(
                f.pos,
                None,
                &f.path("address"),
                "missing",
                "add `address: collector-us.devo.io` (your receiver's host)",
            );
        }
        Some(a) if a.is_empty() || a.contains([' ', '/', '\t']) => {
            let pos = f.get("address").map_or(f.pos, |e| e.node.pos);
            c.err(
                pos,
                None,
                &f.path("address"),
                format!("`{}` is not a host name", echo(a)),
                "write a host name or IP address, without scheme or path",
            );
        }
        _ => {}
    }
    let port = if f.opt("port").is_none() {
        c.err(
            f.pos,
            None,
            &f.path("port"),
            "missing",
            "add `port: 443` (Devo) or your receiver's port",
        );
        0
    } else {
        c.int(f, "port", 1, 65_535, 443, (None, None))
    };
    let tls = match c.string(f, "type", false) {
        None => true,
        Some(t) if t.eq_ignore_ascii_case("ssl") || t.eq_ignore_ascii_case("tls") => true,
        Some(t) if t.eq_ignore_ascii_case("tcp") => false,
        Some(t) => {
            let pos = f.get("type").map_or(f.pos, |e| e.node.pos);
            c.err(
                pos,
                None,
                &f.path("type"),
                format!("`{}` is not a connection type", echo(&t)),
                "write `type: SSL` or `type: TCP`",
            );
            true
        }
    };
    let mut files = [None, None, None];
    for (slot, key) in files.iter_mut().zip(["chain", "cert", "key"]) {
        let Some(name) = c.string(f, key, false) else {
            if tls && devo && f.opt(key).is_none() {
                c.err(f.pos, None, &f.path(key), "missing", format!("add `{key}:` naming the file in certs/ (Devo → Administration → Credentials → X.509)"));
            }
            continue;
        };
        let Some(e) = f.get(key) else { continue };
        let resolved = c.resolve_cert(&name);
        *slot = c.existing_file(
            e,
            &f.path(key),
            resolved,
            None,
            "put the file in certs/ or give its path",
        );
    }
    let [chain, cert, key] = files;
    if !devo && tls && (f.opt("cert").is_some() != f.opt("key").is_some()) {
        c.err(
            f.pos,
            None,
            &f.path("cert"),
            "`cert` and `key` go together",
            "give both (client certificate) or neither",
        );
    }
    let tag = c
        .string(f, "tag", false)
        .unwrap_or_else(|| DEFAULT_TAG.to_string());
    if c.diags.len() > before {
        return None;
    }
    Some(TlsOutput {
        address: address.unwrap_or_default(),
        port: u16::try_from(port).unwrap_or(0),
        tls,
        chain,
        cert,
        key,
        tag,
    })
}

fn check_inputs(c: &mut Checker<'_>, top: &Fields<'_>) -> Vec<InputConfig> {
    let mut out: Vec<InputConfig> = Vec::new();
    let Some(e) = top.opt("inputs") else {
        c.err(
            top.pos,
            None,
            "inputs",
            "missing",
            format!("add an `inputs:` section with `{INPUT_BASE}:`"),
        );
        return out;
    };
    let Value::Map(entries) = &e.node.value else {
        c.err(
            e.node.pos,
            None,
            "inputs",
            format!("expected a mapping, found {}", e.node.value.kind()),
            format!("indent `{INPUT_BASE}:` under `inputs:`"),
        );
        return out;
    };
    // (id, line) and (tenant, api, name, line) seen so far, for duplicate checks.
    let mut ids: Vec<(String, u32, String)> = Vec::new();
    for ie in entries {
        let name = ie.key.as_str();
        let named_ok = name == INPUT_BASE
            || name
                .strip_prefix(INPUT_BASE)
                .and_then(|r| r.strip_prefix('_'))
                .is_some_and(|r| !r.is_empty());
        if !named_ok {
            c.err(ie.key_pos, None, &format!("inputs.{name}"), "unknown input", format!("name it `{INPUT_BASE}` or `{INPUT_BASE}_<tenant>` (e.g. `{INPUT_BASE}_contoso`)"));
            continue;
        }
        let path = format!("inputs.{name}");
        if let Some(input) = check_input(c, ie, &path) {
            if let Some((_, line, other)) = ids.iter().find(|(id, _, _)| *id == input.id) {
                let what = format!(
                    "id `{}` is also used by input `{other}` (line {line})",
                    echo(&input.id)
                );
                let pos = ie.node.get("id").map_or(ie.key_pos, |e| e.node.pos);
                c.err(
                    pos,
                    None,
                    &join(&path, "id"),
                    what,
                    "give every input its own id (it names the state file: never reuse one)",
                );
            }
            ids.push((input.id.clone(), ie.key_pos.line, name.to_string()));
            // The same tenant twice sends every record twice — also when one input
            // runs the Reporting Web Service and the other Graph (both enabled).
            let dup = out.iter().find(|o| {
                (o.service.api == input.service.api || (o.enabled && input.enabled))
                    && o.credentials
                        .tenant_id
                        .expose()
                        .eq_ignore_ascii_case(input.credentials.tenant_id.expose())
            });
            if let Some(o) = dup {
                let what = format!(
                    "tenant `{}` already runs {} in input `{}`",
                    input.credentials.tenant_id.obfuscated(),
                    o.service.api.service_name(),
                    o.name
                );
                c.err(
                    ie.key_pos,
                    None,
                    &path,
                    what,
                    "remove one of the two inputs: both would send the same records",
                );
            }
            out.push(input);
        }
    }
    out
}

fn check_input(c: &mut Checker<'_>, ie: &Entry, path: &str) -> Option<InputConfig> {
    let before = c.diags.len();
    let f = c.fields(&ie.node, path, INPUT_KEYS, None)?;
    let id = match c.string(&f, "id", true) {
        None => {
            if f.opt("id").is_none() {
                c.err(
                    f.pos,
                    None,
                    &f.path("id"),
                    "missing",
                    "add `id: 12345` (a short unique id; it names the state file)",
                );
            }
            None
        }
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
                && !id.starts_with('.');
            if !ok {
                let pos = f.get("id").map_or(f.pos, |e| e.node.pos);
                c.err(
                    pos,
                    None,
                    &f.path("id"),
                    format!("`{}` cannot name a state file", echo(&id)),
                    format!("use up to {MAX_ID_LEN} letters, digits, `_`, `-`, `.`"),
                );
            }
            Some(id)
        }
    };
    let enabled = c.boolean(&f, "enabled", true);
    let cutoff = c.int(
        &f,
        "max_historic_date_cutoff_days_back",
        1,
        1_000_000,
        10,
        (Some(11), Some(11)),
    );
    let margin = c.int(
        &f,
        "max_historic_date_margin_seconds",
        1,
        86_400_000_000,
        60,
        (Some(13), Some(13)),
    );
    let credentials = check_credentials(c, &f);
    let service = check_services(c, &f);
    if c.diags.len() > before {
        return None;
    }
    Some(InputConfig {
        name: ie.key.clone(),
        id: id?,
        enabled,
        cutoff_days: u64::try_from(cutoff).ok()?,
        margin_secs: u64::try_from(margin).ok()?,
        credentials: credentials?,
        service: service?,
    })
}

fn check_credentials(c: &mut Checker<'_>, f: &Fields<'_>) -> Option<Credentials> {
    let Some(e) = f.opt("credentials") else {
        c.err(
            f.pos,
            Some(0),
            &f.path("credentials"),
            "missing",
            "add `credentials:` with tenant_id, client_id and client_secret",
        );
        return None;
    };
    let cf = c.fields(&e.node, &f.path("credentials"), CREDENTIAL_KEYS, Some(1))?;
    let mut tenant = secret(c, &cf, "tenant_id", 2);
    // The tenant goes into the token URL's path: only a GUID or a domain name may.
    if let Some(t) = &tenant {
        if !t
            .expose()
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
        {
            let e = cf.get("tenant_id").or_else(|| cf.get("tenant_id_file"));
            let pos = e.map_or(cf.pos, |e| e.node.pos);
            let what = format!("`{}` is not a tenant id", t.obfuscated());
            c.err(
                pos,
                None,
                &cf.path("tenant_id"),
                what,
                "give the Directory (tenant) ID GUID or the tenant's domain name",
            );
            tenant = None;
        }
    }
    let client = secret(c, &cf, "client_id", 4);
    let secret_v = secret(c, &cf, "client_secret", 6);
    Some(Credentials {
        tenant_id: tenant?,
        client_id: client?,
        client_secret: secret_v?,
    })
}

/// `key` or `key_file`; codes: `missing` and `missing + 1` (not a string). Never echoes the value.
fn secret(c: &mut Checker<'_>, f: &Fields<'_>, key: &str, missing: u8) -> Option<Secret> {
    let file_key = format!("{key}_file");
    let direct = f.opt(key);
    let via_file = f.opt(&file_key);
    match (direct, via_file) {
        (Some(_), Some(fe)) => {
            c.err(
                fe.key_pos,
                None,
                &f.path(&file_key),
                format!("both `{key}` and `{file_key}` are given"),
                "keep only one",
            );
            None
        }
        (Some(e), None) => match &e.node.value {
            Value::Str(s) if !s.is_empty() => Some(Secret::new(s.clone())),
            Value::Str(_) => {
                c.err(
                    e.node.pos,
                    Some(missing),
                    &f.path(key),
                    "is empty",
                    format!("give the {key} from the Azure app registration"),
                );
                None
            }
            other => {
                c.err(
                    e.node.pos,
                    Some(missing + 1),
                    &f.path(key),
                    format!("expected a string, found {}", other.kind()),
                    "quote the value",
                );
                None
            }
        },
        (None, Some(fe)) => {
            let Value::Str(p) = &fe.node.value else {
                c.err(
                    fe.node.pos,
                    Some(missing + 1),
                    &f.path(&file_key),
                    format!("expected a path, found {}", fe.node.value.kind()),
                    "write the path of the file holding the secret",
                );
                return None;
            };
            let resolved = c.resolve(p);
            let shown = c.shown(&resolved);
            let read = std::fs::File::open(&resolved).and_then(|file| {
                use std::io::Read;
                let mut s = String::new();
                file.take(MAX_SECRET_FILE).read_to_string(&mut s).map(|_| s)
            });
            match read {
                Ok(s) => {
                    let v = s.trim_end_matches(['\n', '\r']);
                    if v.is_empty() {
                        c.err(
                            fe.node.pos,
                            Some(missing),
                            &f.path(&file_key),
                            format!("`{shown}` is empty"),
                            format!("put the {key} in it"),
                        );
                        None
                    } else {
                        Some(Secret::new(v))
                    }
                }
                Err(err) => {
                    c.err(
                        fe.node.pos,
                        Some(missing),
                        &f.path(&file_key),
                        format!("cannot read `{shown}`: {err}"),
                        "check the path and its permissions",
                    );
                    None
                }
            }
        }
        (None, None) => {
            let pos = f.get(key).map_or(f.pos, |e| e.node.pos);
            c.err(
                pos,
                Some(missing),
                &f.path(key),
                "missing",
                format!("add `{key}:` (or `{file_key}: PATH`)"),
            );
            None
        }
    }
}

fn check_services(c: &mut Checker<'_>, f: &Fields<'_>) -> Option<ServiceConfig> {
    let Some(e) = f.opt("services") else {
        c.err(
            f.pos,
            None,
            &f.path("services"),
            "missing",
            format!(
                "add `services:` with `{}:` (or `{}:` for Microsoft Graph)",
                SERVICE_NAMES[0], SERVICE_NAMES[1]
            ),
        );
        return None;
    };
    let sf = c.fields(&e.node, &f.path("services"), SERVICE_NAMES, None)?;
    let rep = sf.get(SERVICE_NAMES[0]);
    let graph = sf.get(SERVICE_NAMES[1]);
    let (se, api) = match (rep, graph) {
        (Some(_), Some(g)) => {
            c.err(
                g.key_pos,
                None,
                &sf.path(SERVICE_NAMES[1]),
                "both services are configured: they would send the same records",
                "keep one service per input (Graph replaces the Reporting Web Service)",
            );
            return None;
        }
        (Some(r), None) => (r, Api::Reporting),
        (None, Some(g)) => (g, Api::Graph),
        (None, None) => {
            if sf.entries.is_empty() {
                c.err(
                    sf.pos,
                    None,
                    &sf.path,
                    "no service configured",
                    format!("add `{}:` (or `{}:`)", SERVICE_NAMES[0], SERVICE_NAMES[1]),
                );
            }
            return None;
        }
    };
    let path = sf.path(&se.key);
    let names: Vec<&str> = SERVICE_KEYS.iter().map(|k| k.name).collect();
    let empty = Node {
        pos: se.key_pos,
        value: Value::Map(Vec::new()),
    };
    let node = if se.node.value == Value::Null {
        &empty
    } else {
        &se.node
    };
    let s = c.fields(node, &path, &names, None)?;
    let timeout = match s.opt("requests_timeout_in_seconds") {
        None => 60.0,
        Some(e) => {
            let fix =
                "write a number of seconds from 1 to 86400, e.g. `requests_timeout_in_seconds: 60`";
            let p = s.path("requests_timeout_in_seconds");
            let v = match &e.node.value {
                Value::Int(i) => Some(*i as f64),
                Value::Float(x) => Some(*x),
                _ => None,
            };
            match v {
                Some(x) if (1.0..=86_400.0).contains(&x) => x,
                Some(x) => {
                    c.err(
                        e.node.pos,
                        Some(12),
                        &p,
                        format!("{x} is out of range"),
                        fix,
                    );
                    60.0
                }
                None => {
                    let what = match &e.node.value {
                        Value::Str(t) => format!("`{}` is not a number", echo(t)),
                        o => format!("expected a number, found {}", o.kind()),
                    };
                    c.err(e.node.pos, Some(12), &p, what, fix);
                    60.0
                }
            }
        }
    };
    let retries = c.int(
        &s,
        "requests_retries_before_error_in_units",
        0,
        100,
        5,
        (Some(14), Some(15)),
    );
    let wait = c.int(
        &s,
        "requests_wait_time_between_retries_in_seconds",
        0,
        3600,
        5,
        (Some(16), Some(17)),
    );
    let period = c.int(&s, "request_period_in_seconds", 1, 86_400, 60, (None, None));
    let window = c.int(&s, "window_in_seconds", 60, 86_400, 900, (None, None));
    let delay = c.int(
        &s,
        "override_time_delay_in_seconds",
        1,
        172_800,
        90_000,
        (Some(19), Some(20)),
    );
    if delay < SAFE_DELAY_SECS {
        if let Some(e) = s.opt("override_time_delay_in_seconds") {
            c.warnings.push(Diag {
                pos: e.node.pos,
                code: None,
                key: s.path("override_time_delay_in_seconds"),
                what: format!("{delay} s is below {SAFE_DELAY_SECS} s: records that reach the API up to 24 h late may be missed"),
                fix: format!("use {SAFE_DELAY_SECS} or more (default 90000)"),
            }.render(c.label));
        }
    }
    let reset = match s.opt("reset_persistence_auth") {
        None => None,
        Some(e) => match &e.node.value {
            Value::Str(d) if crate::time::parse_date(d).is_some() => Some(d.clone()),
            other => {
                let what = match other {
                    Value::Str(d) => format!("`{}` is not a date", echo(d)),
                    o => format!("expected a date, found {}", o.kind()),
                };
                c.err(
                    e.node.pos,
                    Some(18),
                    &s.path("reset_persistence_auth"),
                    what,
                    "write a date as YYYY-MM-DD, e.g. `reset_persistence_auth: 2026-01-31`",
                );
                None
            }
        },
    };
    let base = url(c, &s, "override_base_url", DEFAULT_BASE_URL, Some(8));
    let auth = url(c, &s, "override_base_auth_url", DEFAULT_AUTH_URL, Some(9));
    let resource = url(
        c,
        &s,
        "override_base_resource_url",
        DEFAULT_RESOURCE_URL,
        Some(10),
    );
    let graph_url = url(c, &s, "override_graph_url", DEFAULT_GRAPH_URL, None);
    let ca_file = match c.string(&s, "ca_file", false) {
        None => None,
        Some(p) => {
            let resolved = c.resolve(&p);
            s.get("ca_file").and_then(|e| {
                c.existing_file(
                    e,
                    &s.path("ca_file"),
                    resolved,
                    None,
                    "give the path of a PEM file of CA certificates",
                )
            })
        }
    };
    let max_req = c.int(&s, "max_requests_per_5_minutes", 1, 100, 100, (None, None));
    // Graph message trace exists in the worldwide cloud only: a sovereign-cloud token or
    // Graph endpoint can never serve it, so say so now rather than fail every pull.
    if api == Api::Graph {
        for key in ["override_base_auth_url", "override_graph_url"] {
            if let Some(e) = s.opt(key) {
                if let Value::Str(v) = &e.node.value {
                    if let Some(cloud) = sovereign_cloud(v) {
                        c.err(
                            e.node.pos,
                            if key == "override_base_auth_url" { Some(9) } else { None },
                            &s.path(key),
                            format!("{cloud} is a sovereign cloud, and Microsoft Graph message trace exists in the worldwide cloud only"),
                            "use office365_exchange_message_service (Reporting Web Service) for this tenant, or remove the override",
                        );
                    }
                }
            }
        }
    }
    let only = |key: &str, needs: Api| (s.opt(key), needs);
    for (entry, needs) in [
        only("max_requests_per_5_minutes", Api::Graph),
        only("override_graph_url", Api::Graph),
        only("override_base_url", Api::Reporting),
        only("override_base_resource_url", Api::Reporting),
    ] {
        if let Some(e) = entry {
            if needs != api {
                c.warnings.push(format!(
                    "{}:{}:{}: {}: is used only by {}; ignored",
                    c.label,
                    e.key_pos.line,
                    e.key_pos.col,
                    s.path(&e.key),
                    needs.service_name()
                ));
            }
        }
    }
    Some(ServiceConfig {
        api,
        timeout_secs: timeout,
        retries: u32::try_from(retries).unwrap_or(5),
        retry_wait_secs: u64::try_from(wait).unwrap_or(5),
        period_secs: u64::try_from(period).unwrap_or(60),
        window_secs: u64::try_from(window).unwrap_or(900),
        delay_secs: u64::try_from(delay).unwrap_or(90_000),
        reset_persistence_auth: reset,
        reporting_url: with_path(&base, REPORTING_PATH),
        auth_url: auth.trim_end_matches('/').to_string(),
        resource_url: resource.trim_end_matches('/').to_string(),
        graph_url: with_path(&graph_url, GRAPH_PATH),
        ca_file,
        max_requests_per_5_minutes: u32::try_from(max_req).unwrap_or(100),
    })
}

/// The sovereign cloud a Microsoft endpoint URL belongs to, if any.
pub fn sovereign_cloud(url: &str) -> Option<&'static str> {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    const CLOUDS: [(&str, &str); 6] = [
        ("login.microsoftonline.us", "US Government (GCC High/DoD)"),
        ("graph.microsoft.us", "US Government (GCC High)"),
        ("dod-graph.microsoft.us", "US Government (DoD)"),
        (
            "login.chinacloudapi.cn",
            "Microsoft Azure operated by 21Vianet",
        ),
        (
            "login.partner.microsoftonline.cn",
            "Microsoft Azure operated by 21Vianet",
        ),
        (
            "microsoftgraph.chinacloudapi.cn",
            "Microsoft Azure operated by 21Vianet",
        ),
    ];
    CLOUDS
        .iter()
        .find(|(h, _)| host == *h)
        .map(|(_, name)| *name)
}

fn url(c: &mut Checker<'_>, s: &Fields<'_>, key: &str, default: &str, code: Option<u8>) -> String {
    let Some(e) = s.opt(key) else {
        return default.to_string();
    };
    let fix = format!("write an https URL with a host, e.g. `{key}: {default}`");
    match &e.node.value {
        Value::Str(u) => match check_https(u) {
            Ok(()) => u.clone(),
            Err(what) => {
                c.err(
                    e.node.pos,
                    code,
                    &s.path(key),
                    format!("`{}` {what}", echo(u)),
                    fix,
                );
                default.to_string()
            }
        },
        other => {
            c.err(
                e.node.pos,
                code,
                &s.path(key),
                format!("expected a URL, found {}", other.kind()),
                fix,
            );
            default.to_string()
        }
    }
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// The config file to read: `-c FILE`, else `$CONFIG_FILE` under `./config/`, else `./config.yaml`.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    resolve_path_with(flag, std::env::var_os("CONFIG_FILE"))
}

/// [`resolve_path`] with the value of `$CONFIG_FILE` passed in (pure, for tests).
pub fn resolve_path_with(flag: Option<&Path>, config_file: Option<std::ffi::OsString>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match config_file {
        Some(name) if !name.is_empty() => Path::new("config").join(name),
        _ => PathBuf::from("config.yaml"),
    }
}

fn is_json(label: &str) -> bool {
    Path::new(label)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

fn rendered(diags: &[Diag], label: &str) -> Vec<String> {
    let mut out: Vec<String> = diags
        .iter()
        .take(MAX_DIAGS)
        .map(|d| d.render(label))
        .collect();
    if diags.len() >= MAX_DIAGS {
        out.push(format!(
            "{label}: stopped after {MAX_DIAGS} mistakes — fix these and run again"
        ));
    }
    out
}

/// Parse (YAML subset, or JSON when `file_label` ends in `.json`) and validate `text`.
/// Relative paths resolve against `base_dir`; `${NAME}` comes from the real environment.
pub fn parse_str(text: &str, file_label: &str, base_dir: &Path) -> Result<Config> {
    parse_str_with_env(text, file_label, base_dir, &real_env)
}

/// [`parse_str`] with an explicit environment (tests).
pub fn parse_str_with_env(
    text: &str,
    file_label: &str,
    base_dir: &Path,
    env: EnvFn<'_>,
) -> Result<Config> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(Error::Config(vec![format!(
            "{file_label}:1:1: the file is larger than {MAX_CONFIG_BYTES} bytes — this is not a msgtrace config"
        )]));
    }
    let (tree, mut early) = if is_json(file_label) {
        parse_json_partial(text, env)
    } else {
        parse_yaml(text, env).map(|t| (t, Vec::new()))
    }
    .map_err(|d| Error::Config(rendered(&d, file_label)))?;
    match validate(&tree, file_label, base_dir) {
        Ok(cfg) if early.is_empty() => Ok(cfg),
        Ok(_) => Err(Error::Config(rendered(&early, file_label))),
        Err((d, _)) => {
            early.extend(d);
            early.sort_by_key(|d| (d.pos.line, d.pos.col));
            Err(Error::Config(rendered(&early, file_label)))
        }
    }
}

/// Load and validate a config file; every mistake is reported at once in `Error::Config`.
/// Relative paths resolve against the working directory.
pub fn load(path: &Path) -> Result<Config> {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    load_from(path, &base)
}

/// [`load`] with an explicit base directory for relative paths (tests, `check`).
pub fn load_from(path: &Path, base_dir: &Path) -> Result<Config> {
    use std::io::Read;
    let label = path.display().to_string();
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    };
    let file = std::fs::File::open(&full).map_err(|e| {
        Error::Config(vec![format!("{label}:0:0: cannot read the config file: {e} — give its path with -c FILE or set CONFIG_FILE")])
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(label.clone(), e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let pos = offset_pos(
            std::str::from_utf8(
                e.as_bytes()
                    .get(..e.utf8_error().valid_up_to())
                    .unwrap_or(&[]),
            )
            .unwrap_or(""),
            e.utf8_error().valid_up_to(),
        );
        Error::Config(vec![format!(
            "{label}:{}:{}: not UTF-8 text — save the file as UTF-8",
            pos.line, pos.col
        )])
    })?;
    let mut cfg = parse_str(&text, &label, base_dir)?;
    cfg.path = path.to_path_buf();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("6514".into()),
            "WORD" => Some("hello world".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn tree(text: &str) -> Node {
        parse_yaml(text, &env).unwrap_or_else(|d| panic!("{d:#?}"))
    }

    fn value_at<'a>(n: &'a Node, path: &[&str]) -> &'a Node {
        path.iter()
            .fold(n, |n, k| &n.get(k).unwrap_or_else(|| panic!("no {k}")).node)
    }

    #[test]
    fn scalars_resolve_per_the_documented_schema() {
        let t = tree(concat!(
            "a: plain text\n",
            "b: ~\n",
            "c: null\n",
            "d: NULL\n",
            "e:\n",
            "f: true\n",
            "g: False\n",
            "h: -42\n",
            "i: +7\n",
            "j: 1.5\n",
            "k: .5\n",
            "l: -2.5E-2\n",
            "m: 1e3\n",
            "n: yes\n",
            "o: .inf\n",
            "p: 0x10\n",
            "q: 99999999999999999999\n",
            "r: \"quoted 1\"\n",
            "s: '2'\n",
            "t: a#b\n",
            "u: https://host:8443/x\n",
            "v: 1.\n",
        ));
        let v = |k: &str| value_at(&t, &[k]).value.clone();
        assert_eq!(v("a"), Value::Str("plain text".into()));
        for k in ["b", "c", "d", "e"] {
            assert_eq!(v(k), Value::Null, "{k}");
        }
        assert_eq!(v("f"), Value::Bool(true));
        assert_eq!(v("g"), Value::Bool(false));
        assert_eq!(v("h"), Value::Int(-42));
        assert_eq!(v("i"), Value::Int(7));
        assert_eq!(v("j"), Value::Float(1.5));
        assert_eq!(v("k"), Value::Float(0.5));
        assert_eq!(v("l"), Value::Float(-0.025));
        assert_eq!(v("m"), Value::Float(1000.0));
        assert_eq!(v("n"), Value::Str("yes".into()));
        assert_eq!(v("o"), Value::Str(".inf".into()));
        assert_eq!(v("p"), Value::Str("0x10".into()));
        assert_eq!(v("q"), Value::Float(1e20));
        assert_eq!(v("r"), Value::Str("quoted 1".into()));
        assert_eq!(v("s"), Value::Str("2".into()));
        assert_eq!(v("t"), Value::Str("a#b".into()));
        assert_eq!(v("u"), Value::Str("https://host:8443/x".into()));
        assert_eq!(v("v"), Value::Float(1.0));
    }

    #[test]
    fn quoted_scalars_and_escapes() {
        let t = tree(concat!(
            "a: \"tab\\there \\\"q\\\" \\\\ \\/ \\x41 \\u00e9 \\U0001F600 \\0\"\n",
            "b: 'it''s # not a comment'   # but this is\n",
            "c: \"\"\n",
            "d: ''\n",
            "e: \"x\" # comment\n",
        ));
        let v = |k: &str| value_at(&t, &[k]).value.clone();
        assert_eq!(v("a"), Value::Str("tab\there \"q\" \\ / A é 😀 \0".into()));
        assert_eq!(v("b"), Value::Str("it's # not a comment".into()));
        assert_eq!(v("c"), Value::Str(String::new()));
        assert_eq!(v("d"), Value::Str(String::new()));
        assert_eq!(v("e"), Value::Str("x".into()));
    }

    #[test]
    fn nested_mappings_comments_and_positions() {
        let text = "\u{feff}--- # start\r\n# comment\r\na:\r\n  b:\r\n      c: 1   # trailing\r\n#x: at column 1 inside\r\n      d: two\r\n  e: 3\r\nf: ~\r\n";
        let t = tree(text);
        let c = value_at(&t, &["a", "b", "c"]);
        assert_eq!(c.value, Value::Int(1));
        assert_eq!(c.pos, Pos { line: 5, col: 10 });
        assert_eq!(
            value_at(&t, &["a", "b", "d"]).value,
            Value::Str("two".into())
        );
        assert_eq!(value_at(&t, &["a", "e"]).value, Value::Int(3));
        let b = t.get("a").and_then(|a| a.node.get("b")).unwrap();
        assert_eq!(b.key_pos, Pos { line: 4, col: 3 });
        assert_eq!(b.node.pos, b.key_pos, "a block mapping sits at its key");
        assert_eq!(value_at(&t, &["f"]).value, Value::Null);
        // Key order is file order.
        let Value::Map(entries) = &t.value else {
            panic!()
        };
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "f"]);
    }

    #[test]
    fn empty_and_comment_only_documents_are_empty_mappings() {
        assert_eq!(tree("").value, Value::Map(Vec::new()));
        assert_eq!(tree("# nothing\n\n   \n").value, Value::Map(Vec::new()));
    }

    #[test]
    fn env_substitution() {
        let t = tree("a: ${PORT}\nb: \"${WORD}!\"\nc: x${EMPTY}y\nd: '${PORT}'\ne: ${EMPTY}\n");
        assert_eq!(
            value_at(&t, &["a"]).value,
            Value::Int(6514),
            "plain is re-typed"
        );
        assert_eq!(
            value_at(&t, &["b"]).value,
            Value::Str("hello world!".into())
        );
        assert_eq!(value_at(&t, &["c"]).value, Value::Str("xy".into()));
        assert_eq!(
            value_at(&t, &["d"]).value,
            Value::Str("6514".into()),
            "quoted stays text"
        );
        assert_eq!(value_at(&t, &["e"]).value, Value::Null);
        assert!(substitute("${NOPE}", &no_env).is_err());
        assert!(substitute("${1X}", &env).is_err());
        assert!(substitute("${PORT", &env).is_err());
        assert_eq!(
            substitute("$PORT $ {} ${PORT}", &env).unwrap(),
            "$PORT $ {} 6514"
        );
    }

    /// (input, line, col, part of the message)
    const REJECTED: &[(&str, u32, u32, &str)] = &[
        ("a:\n\tb: 1\n", 2, 1, "tab in indentation"),
        ("a:\n  \tb: 1\n", 2, 3, "tab in indentation"),
        ("a:\tb\n", 1, 3, "tab after"),
        ("a: &x 1\n", 1, 4, "anchors"),
        ("a: *x\n", 1, 4, "aliases"),
        ("a: !!str 1\n", 1, 4, "tags"),
        ("&x a: 1\n", 1, 1, "anchors"),
        ("a: {b: 1}\n", 1, 4, "flow mappings"),
        ("a: [1, 2]\n", 1, 4, "flow sequences"),
        ("a:\n  - 1\n", 2, 3, "block sequences"),
        ("- a\n", 1, 1, "block sequences"),
        ("a: |\n  x\n", 1, 4, "block scalars"),
        ("a: >-\n", 1, 4, "block scalars"),
        ("? a\n", 1, 1, "complex keys"),
        ("a: 1\n---\nb: 2\n", 2, 1, "second document"),
        ("a: 1\n...\n", 2, 1, "document end"),
        ("%YAML 1.2\na: 1\n", 1, 1, "directives"),
        ("\"a\": 1\n", 1, 1, "quoted keys"),
        ("a b: 1\n", 1, 2, "in a key"),
        ("a\n", 1, 1, "expected `key: value`"),
        ("a:b\n", 1, 1, "expected `key: value`"),
        ("a: b: c\n", 1, 5, "`: ` inside a plain value"),
        ("a: b:\n", 1, 5, "ending in `:`"),
        ("a: \"x\n", 1, 4, "unterminated double-quoted"),
        ("a: 'x\n", 1, 4, "unterminated single-quoted"),
        ("a: \"x\" y\n", 1, 7, "after the closing quote"),
        ("a: \"\\q\"\n", 1, 5, "unknown escape"),
        ("a: \"\\x4\"\n", 1, 5, "bad `\\x` escape"),
        ("a: \"\\uD800\"\n", 1, 5, "not a character"),
        ("a: @x\n", 1, 4, "reserved"),
        ("a: ,\n", 1, 4, "unexpected `,`"),
        ("a: 1\na: 2\n", 2, 1, "duplicate key"),
        ("a:\n  b: 1\n c: 2\n", 3, 2, "unexpected indentation"),
        ("  a: 1\n", 1, 3, "unexpected indentation"),
        ("a: 1\n  b: 2\n", 2, 3, "unexpected indentation"),
        ("a: ${NOPE}\n", 1, 4, "`NOPE` is not set"),
        (": 1\n", 1, 1, "an empty key"),
        ("a:\n  -b: 1\n", 2, 3, "starting with `-`"),
    ];

    #[test]
    fn rejected_constructs_carry_their_position() {
        for (text, line, col, what) in REJECTED {
            let diags = parse_yaml(text, &env).expect_err(text);
            let first = &diags[0];
            assert_eq!(
                (first.pos.line, first.pos.col),
                (*line, *col),
                "{text:?}: {first:?}"
            );
            assert!(first.what.contains(what), "{text:?}: {first:?}");
            assert!(!first.fix.is_empty(), "{text:?}: a fix is offered");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let ok: String = (0..MAX_DEPTH)
            .map(|d| format!("{}k:\n", " ".repeat(d)))
            .collect();
        assert!(parse_yaml(&ok, &no_env).is_ok());
        let deep: String = (0..=MAX_DEPTH)
            .map(|d| format!("{}k:\n", " ".repeat(d)))
            .collect();
        let d = parse_yaml(&deep, &no_env).unwrap_err();
        assert!(d[0].what.contains("nested deeper"), "{d:?}");
    }

    #[test]
    fn json_tree_matches_yaml_tree_values() {
        let y = tree("a:\n  b: 1\n  c: x\nd: true\ne: 1.5\nf: ~\n");
        let j = parse_json(
            r#"{"a": {"b": 1, "c": "x"}, "d": true, "e": 1.5, "f": null}"#,
            &no_env,
        )
        .unwrap();
        fn strip(n: &Node) -> Value {
            match &n.value {
                Value::Map(es) => {
                    let mut es: Vec<Entry> = es
                        .iter()
                        .map(|e| Entry {
                            key: e.key.clone(),
                            key_pos: Pos::default(),
                            node: Node {
                                pos: Pos::default(),
                                value: strip(&e.node),
                            },
                        })
                        .collect();
                    es.sort_by(|a, b| a.key.cmp(&b.key));
                    Value::Map(es)
                }
                v => v.clone(),
            }
        }
        assert_eq!(strip(&y), strip(&j));
        // Best-effort positions: the key's quoted name.
        let b = j.get("a").and_then(|a| a.node.get("b")).unwrap();
        assert_eq!(b.key_pos, Pos { line: 1, col: 8 });
    }

    #[test]
    fn obfuscation_shows_four_characters() {
        assert_eq!(obfuscate("abcdefgh"), "abcd****");
        assert_eq!(obfuscate("ab"), "ab****");
        assert_eq!(obfuscate("éèêëxyz"), "éèêë****");
        let s = Secret::new("supersecret");
        assert_eq!(s.to_string(), "supe****");
        assert_eq!(format!("{s:?}"), "Secret(supe****)");
        assert_eq!(s.expose(), "supersecret");
    }

    #[test]
    fn config_path_resolution() {
        let flag = Path::new("/etc/m.yaml");
        assert_eq!(resolve_path_with(Some(flag), Some("x.yaml".into())), flag);
        assert_eq!(
            resolve_path_with(None, Some("prod.yaml".into())),
            Path::new("config/prod.yaml")
        );
        assert_eq!(
            resolve_path_with(None, Some("".into())),
            Path::new("config.yaml")
        );
        assert_eq!(resolve_path_with(None, None), Path::new("config.yaml"));
    }

    #[test]
    fn urls() {
        for ok in [
            "https://a",
            "https://reports.office365.com",
            "HTTPS://Host.Example:443/p/",
            "https://127.0.0.1:8443",
            "https://[::1]:9443/x",
        ] {
            assert_eq!(check_https(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://127.0.0.1",
            "https://",
            "https://:443",
            "https://a b",
            "https://u@h",
            "https://h:0",
            "https://h:99999",
            "https://h?x=1",
            "https://[zz]",
            "https://h_x",
            "ftp://h",
            "",
        ] {
            assert!(check_https(bad).is_err(), "{bad}");
        }
        assert_eq!(
            with_path("https://h/", REPORTING_PATH),
            "https://h/ecp/reportingwebservice/reporting.svc/MessageTrace"
        );
        assert_eq!(
            with_path(
                "https://h/ECP/ReportingWebService/Reporting.svc/MessageTrace/",
                REPORTING_PATH
            ),
            "https://h/ECP/ReportingWebService/Reporting.svc/MessageTrace"
        );
        assert_eq!(
            with_path("https://h:1", GRAPH_PATH),
            "https://h:1/v1.0/admin/exchange/tracing/messageTraces"
        );
    }

    #[test]
    fn suggestions_use_edit_distance() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(suggest("debgu", GLOBAL_KEYS), "did you mean `debug`?");
        assert!(suggest("zzzzzz", GLOBAL_KEYS).starts_with("remove it; known keys: debug"));
    }

    const CREDS: &str = "outputs:\n  o:\n    type: stdout\ninputs:\n  office365_exchange_message:\n    id: 1\n    credentials:\n";

    #[test]
    fn secrets_from_files_are_trimmed_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("msgtrace-cfg-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t"), "tenant-from-file\r\n\n").unwrap();
        std::fs::write(dir.join("s"), "secret from file\n").unwrap();
        let text = format!(
            "{CREDS}      tenant_id_file: t\n      client_id: cid-12345\n      client_secret_file: {}\n    services:\n      office365_exchange_message_service:\n",
            dir.join("s").display()
        );
        let cfg = parse_str_with_env(&text, "c.yaml", &dir, &no_env).unwrap();
        let c = &cfg.inputs[0].credentials;
        assert_eq!(c.tenant_id.expose(), "tenant-from-file");
        assert_eq!(c.client_secret.expose(), "secret from file");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("tenant-from-file") && !shown.contains("secret from file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn messages_never_echo_secrets() {
        let text = format!(
            "{CREDS}      tenant_id: \"\"\n      client_id: 5\n      client_secret: 'p@ss: word'\n      clent_secret: leaked?\n    services:\n"
        );
        let Err(Error::Config(lines)) =
            parse_str_with_env(&text, "c.yaml", Path::new("/"), &no_env)
        else {
            panic!("expected errors")
        };
        let all = lines.join("\n");
        assert!(!all.contains("p@ss"), "{all}");
        assert!(all.contains("InitVariablesError(2)"), "{all}");
    }

    fn with_service_key(line: &str) -> Result<Config> {
        let text = format!(
            "{CREDS}      tenant_id: t-1\n      client_id: c-1\n      client_secret: s-1\n    services:\n      office365_exchange_message_graph_service:\n        {line}\n"
        );
        parse_str_with_env(&text, "c.yaml", Path::new("/"), &no_env)
    }

    #[test]
    fn reference_table_matches_validation() {
        let cfg = with_service_key("# defaults").unwrap();
        let svc = &cfg.inputs[0].service;
        let actual = |name: &str| -> Option<String> {
            Some(match name {
                "requests_timeout_in_seconds" => svc.timeout_secs.to_string(),
                "requests_retries_before_error_in_units" => svc.retries.to_string(),
                "requests_wait_time_between_retries_in_seconds" => svc.retry_wait_secs.to_string(),
                "request_period_in_seconds" => svc.period_secs.to_string(),
                "window_in_seconds" => svc.window_secs.to_string(),
                "override_time_delay_in_seconds" => svc.delay_secs.to_string(),
                "max_requests_per_5_minutes" => svc.max_requests_per_5_minutes.to_string(),
                "override_base_auth_url" => svc.auth_url.clone(),
                "override_base_resource_url" => svc.resource_url.clone(),
                "override_base_url" => format!("{}{REPORTING_PATH}", k_default(name)),
                "override_graph_url" => format!("{}{GRAPH_PATH}", k_default(name)),
                _ => return None,
            })
        };
        fn k_default(name: &str) -> &'static str {
            SERVICE_KEYS
                .iter()
                .find(|k| k.name == name)
                .map_or("", |k| k.default)
        }
        for k in SERVICE_KEYS {
            if let Some(v) = actual(k.name) {
                let want = match k.name {
                    "override_base_url" => svc.reporting_url.clone(),
                    "override_graph_url" => svc.graph_url.clone(),
                    _ => k.default.to_string(),
                };
                assert_eq!(v, want, "{}", k.name);
            }
            let Some((lo, hi)) = k.range.split_once('–') else {
                continue;
            };
            let (Ok(lo), Ok(hi)) = (lo.parse::<i64>(), hi.parse::<i64>()) else {
                continue;
            };
            for ok in [lo, hi] {
                assert!(
                    with_service_key(&format!("{}: {ok}", k.name)).is_ok(),
                    "{} {ok}",
                    k.name
                );
            }
            for bad in [lo - 1, hi + 1] {
                let Err(Error::Config(lines)) = with_service_key(&format!("{}: {bad}", k.name))
                else {
                    panic!("{} accepts {bad}", k.name)
                };
                assert!(
                    lines[0].contains(k.name) && lines[0].contains("out of range"),
                    "{lines:?}"
                );
            }
        }
    }

    #[test]
    fn oversized_input_is_refused() {
        let big = "#".repeat(MAX_CONFIG_BYTES + 1);
        let Err(Error::Config(lines)) =
            parse_str_with_env(&big, "big.yaml", Path::new("/"), &no_env)
        else {
            panic!()
        };
        assert!(lines[0].starts_with("big.yaml:1:1: the file is larger"));
    }
}
