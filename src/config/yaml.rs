//! The YAML-subset parser: text → [`Node`] tree, every line's mistake reported with its
//! `line:col` (the grammar is documented in [`super::tree`]).
//!
//! Owns: tokenizing lines, scalars (plain, quoted, escapes), typing plain scalars per the
//! restricted core schema, and building nested mappings within [`MAX_DEPTH`].
//! Must not: read files, know any config key, or allocate beyond the text's size (every
//! loop is bounded by the text, every count saturates).

use super::tree::{
    substitute, to_u32, Diag, Entry, EnvFn, Node, Pos, Value, MAX_DEPTH, MAX_DIAGS, MAX_KEY_LEN,
};

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
        if b == b':'
            && matches!(
                bytes.get(j.saturating_add(1)),
                None | Some(b' ') | Some(b'\t')
            )
        {
            colon = Some(j);
            break;
        }
        if b == b' ' && bytes.get(j.saturating_add(1)) == Some(&b'#') {
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
    let after = rest.get(colon.saturating_add(1)..).unwrap_or("");
    let spaces = after.bytes().take_while(|&b| b == b' ').count();
    let value_text = after.get(spaces..).unwrap_or("");
    let value_col = to_u32(
        indent
            .saturating_add(colon)
            .saturating_add(spaces)
            .saturating_add(2),
    );
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
        (v, true, used.saturating_add(1))
    } else if let Some(body) = s.strip_prefix('\'') {
        let (v, used) = single_quoted(body, no, col)?;
        (v, true, used.saturating_add(1))
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
            '"' => return Ok((out, i.saturating_add(1))),
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
            return Ok((out, i.saturating_add(1)));
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
    let mut i: usize = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i = i.saturating_add(int_digits);
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i = i.saturating_add(1);
        frac_digits = b
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        i = i.saturating_add(frac_digits);
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e') | Some(b'E')) {
        i = i.saturating_add(1);
        if matches!(b.get(i), Some(b'-') | Some(b'+')) {
            i = i.saturating_add(1);
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
        i = i.saturating_add(exp);
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
                    indent.saturating_add(1)
                ),
            ));
            *idx = idx.saturating_add(1);
            skip_deeper(lines, idx, indent);
            continue;
        }
        let key = std::mem::take(&mut line.key);
        let value = line.value.take();
        *idx = idx.saturating_add(1);
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
                                to_u32(ci.saturating_add(1)),
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
                        value: Value::Map(build(lines, idx, ci, depth.saturating_add(1), diags)),
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
        *idx = idx.saturating_add(1);
    }
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
}
