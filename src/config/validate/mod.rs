//! Validation: the parsed tree → a typed [`Config`], every mistake listed at once with
//! its position, key path, `InitVariablesError` code (SPEC §2) and fix.
//!
//! Owns: the [`Checker`] that collects mistakes and warnings, typed field access
//! ([`Fields`]), unknown-key suggestions, path resolution against the base directory, and
//! the top level and `globals`; inputs ([`inputs`]), their services ([`service`], driven
//! by the key rows) and outputs ([`outputs`], one function per output type) have their
//! own files. Optional keys given as null take their default; disabled inputs are
//! validated too; values of secrets are never echoed, other values clipped.
//! Must not: open sockets, create directories, print, or read a file other than the
//! certificate, CA and `<secret>_file` files the config names.

mod inputs;
mod outputs;
mod rows;
mod service;

use std::path::{Path, PathBuf};

use super::model::{Config, Globals};
use super::tree::{clip, echo, Diag, Entry, Node, Pos, Value, MAX_DIAGS, MAX_KEY_LEN};

pub use service::sovereign_cloud;

const TOP_KEYS: &[&str] = &["globals", "outputs", "inputs"];
const GLOBAL_KEYS: &[&str] = &[
    "debug",
    "id",
    "name",
    "persistence",
    "credentials",
    "metrics_listen",
];
const PERSISTENCE_KEYS: &[&str] = &["type", "config"];
const PERSISTENCE_CONFIG_KEYS: &[&str] = &["directory_name"];

/// Levenshtein distance (small inputs only: keys).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i.saturating_add(1)];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev
                .get(j)
                .copied()
                .unwrap_or(0)
                .saturating_add(usize::from(ca != *cb));
            let del = prev
                .get(j.saturating_add(1))
                .copied()
                .unwrap_or(0)
                .saturating_add(1);
            let ins = cur.get(j).copied().unwrap_or(0).saturating_add(1);
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
    let (globals, inherited) = check_globals(&mut c, &top);
    let outputs = outputs::check_outputs(&mut c, &top);
    let inputs = inputs::check_inputs(&mut c, &top, &inherited);
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

/// `globals`, and the credentials it gives every input (`globals.credentials`).
fn check_globals(c: &mut Checker<'_>, top: &Fields<'_>) -> (Globals, inputs::Inherited) {
    let g = Globals {
        debug: false,
        id: "not_used".into(),
        name: "msgtrace".into(),
        state_dir: c.base.join("state"),
        metrics_listen: None,
    };
    let Some(e) = top.opt("globals") else {
        return (g, inputs::Inherited::default());
    };
    let Some(f) = c.fields(&e.node, "globals", GLOBAL_KEYS, None) else {
        return (g, inputs::Inherited::default());
    };
    let inherited = inputs::global_credentials(c, &f);
    (check_global_keys(c, &f, g), inherited)
}

/// The plain keys of `globals` and its persistence section.
fn check_global_keys(c: &mut Checker<'_>, f: &Fields<'_>, mut g: Globals) -> Globals {
    g.debug = c.boolean(f, "debug", false);
    if let Some(id) = c.string(f, "id", true) {
        g.id = id;
    }
    if let Some(name) = c.string(f, "name", false) {
        g.name = name;
    }
    if let Some(listen) = c.string(f, "metrics_listen", false) {
        match crate::metrics::http::check_listen(&listen) {
            Ok(()) => g.metrics_listen = Some(listen),
            Err(what) => {
                let pos = f.get("metrics_listen").map_or(f.pos, |e| e.node.pos);
                let fix =
                    "write host:port, e.g. `127.0.0.1:9464` (or `0.0.0.0:9464` in a container)";
                c.err(pos, None, "globals.metrics_listen", what, fix);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        use super::service::with_path;
        use crate::config::keys::{GRAPH_PATH, REPORTING_PATH};
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
}
