//! The JSON form of the config (the vendor's cloud form): text → the same [`Node`] tree
//! as the YAML subset, via miniserde (grammar notes in [`super::tree`]).
//!
//! Owns: the nesting pre-scan (depth checked before miniserde allocates anything),
//! mapping miniserde's values onto the tree, `${NAME}` in strings, and best-effort key
//! positions within a bounded search budget.
//! Must not: read files, know any config key, or let a hostile file cost more than
//! linear time and memory in its size.

use super::tree::{substitute, to_u32, Diag, Entry, EnvFn, Node, Pos, Value, MAX_DEPTH, MAX_DIAGS};

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
pub(crate) fn parse_json_partial(
    text: &str,
    env: EnvFn<'_>,
) -> Result<(Node, Vec<Diag>), Vec<Diag>> {
    use miniserde::json::Value as J;
    check_depth(text).map_err(|d| vec![d])?;
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
            // Unreachable after `check_depth`; kept because `node` recurses per level.
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
                    let node = self.node(child, at, key_pos, depth.saturating_add(1));
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
        self.budget = self.budget.saturating_sub(cost);
        let needle = format!("\"{key}\"");
        match rest.find(&needle).and_then(|off| from.checked_add(off)) {
            Some(at) => (offset_pos(self.text, at), at),
            None => (Pos::default(), from),
        }
    }
}

/// The 1-based line and column (in characters) of byte offset `at` of `text`.
pub(crate) fn offset_pos(text: &str, at: usize) -> Pos {
    let before = text.get(..at).unwrap_or("");
    let line = before.matches('\n').count().saturating_add(1);
    let line_start = before.rfind('\n').map_or(0, |i| i.saturating_add(1));
    let col = before
        .get(line_start..)
        .map_or(0, |s| s.chars().count())
        .saturating_add(1);
    Pos {
        line: to_u32(line),
        col: to_u32(col),
    }
}

/// Reject nesting deeper than [`MAX_DEPTH`] before miniserde builds a tree: one pass
/// over the bytes counting `{` and `[` outside strings (a 170,000-level file would
/// otherwise be parsed into a tree of 170,000 maps before being refused). The error
/// points at the first bracket too deep.
fn check_depth(text: &str) -> Result<(), Diag> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, b) in text.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth = depth.saturating_add(1);
                if depth > MAX_DEPTH {
                    let pos = offset_pos(text, at);
                    return Err(Diag::syntax(
                        pos.line,
                        pos.col,
                        format!("nested deeper than {MAX_DEPTH} objects"),
                        "flatten the configuration",
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn json_tree_matches_yaml_tree_values() {
        let y =
            super::super::yaml::parse_yaml("a:\n  b: 1\n  c: x\nd: true\ne: 1.5\nf: ~\n", &no_env)
                .unwrap();
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

    /// `levels` objects nested, one per line: `{"k": {"k": ... 1 ... }}`.
    fn nested(levels: usize) -> String {
        let mut s = String::new();
        for _ in 0..levels {
            s.push_str("{\"k\":\n");
        }
        s.push('1');
        s.push_str(&"}".repeat(levels));
        s
    }

    #[test]
    fn depth_is_checked_before_the_tree_is_built_with_its_position() {
        assert!(parse_json(&nested(MAX_DEPTH), &no_env).is_ok());
        let d = parse_json(&nested(MAX_DEPTH + 1), &no_env).unwrap_err();
        assert_eq!(d.len(), 1, "{d:?}");
        let line = u32::try_from(MAX_DEPTH + 1).unwrap();
        assert_eq!((d[0].pos.line, d[0].pos.col), (line, 1), "{d:?}");
        assert!(d[0].what.contains("nested deeper than 16"), "{d:?}");
        // SPEC §2's hostile file: 170,000 levels are refused at the 17th bracket, fast.
        let t0 = std::time::Instant::now();
        let hostile = "{\"a\":".repeat(170_000);
        let d = parse_json(&hostile, &no_env).unwrap_err();
        assert_eq!((d[0].pos.line, d[0].pos.col), (1, 16 * 5 + 1), "{d:?}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(2));
        // Arrays count; brackets inside strings (escaped quotes too) do not.
        let arrays = format!("{{\"a\": {}1{}}}", "[".repeat(16), "]".repeat(16));
        assert!(parse_json(&arrays, &no_env).unwrap_err()[0]
            .what
            .contains("nested deeper"));
        let in_string = format!("{{\"a\": \"\\\"{}\"}}", "{[".repeat(40));
        let t = parse_json(&in_string, &no_env).unwrap();
        assert!(matches!(&t.get("a").unwrap().node.value, Value::Str(s) if s.len() == 81));
    }
}
