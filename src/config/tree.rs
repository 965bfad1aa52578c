//! The config's value tree and its grammar: what both parsers ([`super::yaml`],
//! [`super::json`]) produce and what validation ([`super::validate`]) walks.
//!
//! Owns: the documented grammar of the YAML subset and of the JSON form, the tree types
//! ([`Node`], [`Value`], [`Entry`], [`Pos`]), the mistake type [`Diag`] and its rendering,
//! `${ENV}` substitution (shared by both forms) and the bounds every parser honours.
//! Must not: read files, know any config key, or echo a value unclipped.
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
//! numbers → integer or float, `true`/`false`/`null`; arrays are rejected. Before
//! miniserde sees the text, a pre-scan counts brackets outside strings and rejects a file
//! nested deeper than [`MAX_DEPTH`] at the offending bracket's `line:col`, so a hostile
//! file cannot make the parser build a huge tree first. miniserde gives
//! no positions and sorts keys, so positions are best effort: each key is located by
//! searching its quoted name in the text after its parent's position; a JSON syntax
//! error is reported at `1:1`. Key search is bounded (`JSON_LOCATE_BUDGET` bytes in
//! total); past it keys are reported at `0:0`. Per-value mistakes (arrays, `${..}`) do not
//! stop validation, so they are listed together with the typed mistakes.

use std::fmt::Write as _;

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
    /// What the value is, for messages (`expected a string, found an integer`).
    pub fn kind(&self) -> &'static str {
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
    /// A mistake of the text itself (no key path, no code).
    pub fn syntax(line: u32, col: u32, what: impl Into<String>, fix: impl Into<String>) -> Diag {
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
            let _ = write!(s, "InitVariablesError({code}): ");
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

/// `s` clipped to [`MAX_ECHO`] characters, for echoing a value in a message.
pub(crate) fn echo(s: &str) -> String {
    clip(s, MAX_ECHO)
}

/// At most `n` characters of `s`, with `…` when cut.
pub(crate) fn clip(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().nth(n).is_some() {
        out.push('…');
    }
    out
}

/// A count as a line or column number (saturating).
pub(crate) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Replace every `${NAME}`; errors are (what, fix).
pub(crate) fn substitute(s: &str, env: EnvFn<'_>) -> Result<String, (String, String)> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(rest.get(..start).unwrap_or(""));
        let after = rest.get(start.saturating_add(2)..).unwrap_or("");
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
        rest = after.get(end.saturating_add(1)..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "6514".to_string())
    }

    #[test]
    fn substitution_replaces_set_variables_only() {
        assert!(substitute("${NOPE}", &env).is_err());
        assert!(substitute("${1X}", &env).is_err());
        assert!(substitute("${PORT", &env).is_err());
        assert_eq!(
            substitute("$PORT $ {} ${PORT}", &env).unwrap(),
            "$PORT $ {} 6514"
        );
    }

    #[test]
    fn diag_renders_code_key_and_fix() {
        let mut d = Diag::syntax(3, 7, "bad", "fix it");
        assert_eq!(d.render("c.yaml"), "c.yaml:3:7: bad — fix it");
        d.code = Some(4);
        d.key = "a.b".into();
        assert_eq!(
            d.render("c.yaml"),
            "c.yaml:3:7: InitVariablesError(4): a.b: bad — fix it"
        );
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
