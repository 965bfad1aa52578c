//! Checking a mapping against rows of the key table ([`crate::config::keys`]): each
//! row's kind decides the check (int/float range, date, https URL, existing file), its
//! codes and its fix text; the result is one [`Values`] the typed config reads.
//!
//! Owns: the per-kind checks and the lookup of a checked value by row.
//! Must not: know any particular key (rules that involve a named key, such as the Graph
//! sovereign-cloud refusal, live with their section) or echo a value unclipped.

use std::path::PathBuf;

use super::{check_https, Checker, Fields};
use crate::config::keys::{Key, Kind};
use crate::config::tree::{echo, Value};

/// The checked value of one row: absent or invalid keys hold the row's default.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Int(i64),
    Float(f64),
    Text(String),
    Path(PathBuf),
    Unset,
}

/// Every row of one mapping, checked; read back by row.
#[derive(Debug)]
pub(super) struct Values {
    got: Vec<(&'static str, Got)>,
}

impl Values {
    /// Check every row of `rows` in `f` (which already reported its unknown keys).
    pub(super) fn check(c: &mut Checker<'_>, f: &Fields<'_>, rows: &[Key]) -> Values {
        let got = rows.iter().map(|k| (k.name, check_row(c, f, k))).collect();
        Values { got }
    }

    fn got(&self, key: &Key) -> Option<&Got> {
        self.got
            .iter()
            .find(|(n, _)| *n == key.name)
            .map(|(_, g)| g)
    }

    /// An `Int` row's value (its default when absent).
    pub(super) fn int(&self, key: &Key) -> i64 {
        match self.got(key) {
            Some(Got::Int(i)) => *i,
            _ => key.int_default().unwrap_or_default(),
        }
    }

    /// An `Int` row whose range starts at 0 or above, as `u64`.
    pub(super) fn u64(&self, key: &Key) -> u64 {
        u64::try_from(self.int(key)).unwrap_or_default()
    }

    /// An `Int` row whose range fits `u32`.
    pub(super) fn u32(&self, key: &Key) -> u32 {
        u32::try_from(self.int(key)).unwrap_or_default()
    }

    /// A `Float` row's value (its default when absent).
    pub(super) fn float(&self, key: &Key) -> f64 {
        match (self.got(key), key.kind) {
            (Some(Got::Float(x)), _) => *x,
            (_, Kind::Float { default, .. }) => default,
            _ => 0.0,
        }
    }

    /// A `Url` row's value (its default when absent), or a `Date`/`List` row's text if set.
    pub(super) fn text(&self, key: &Key) -> Option<String> {
        match (self.got(key), key.kind) {
            (Some(Got::Text(s)), _) => Some(s.clone()),
            (_, Kind::Url { default }) => Some(default.to_string()),
            _ => None,
        }
    }

    /// A `File` row's resolved path, if set and readable.
    pub(super) fn path(&self, key: &Key) -> Option<PathBuf> {
        match self.got(key) {
            Some(Got::Path(p)) => Some(p.clone()),
            _ => None,
        }
    }
}

/// One row checked: the value, or the row's default after reporting the mistake.
fn check_row(c: &mut Checker<'_>, f: &Fields<'_>, k: &Key) -> Got {
    let codes = (k.codes.wrong_type, k.codes.bad_value);
    match k.kind {
        Kind::Int { min, max, default } => Got::Int(c.int(f, k.name, min, max, default, codes)),
        Kind::Float {
            min,
            max,
            default,
            unit,
        } => Got::Float(float(c, f, k, (min, max, default, unit))),
        Kind::Date => date(c, f, k),
        Kind::Url { default } => Got::Text(url(c, f, k, default)),
        Kind::File { what } => file(c, f, k, what),
        Kind::List { what } => list(c, f, k, what),
    }
}

/// A comma-separated list of words (letters only), e.g. `Failed,FilteredAsSpam`.
fn list(c: &mut Checker<'_>, f: &Fields<'_>, k: &Key, what: &str) -> Got {
    let Some(e) = f.opt(k.name) else {
        return Got::Unset;
    };
    let fix = format!(
        "write {what} separated by commas, e.g. `{}: Failed,FilteredAsSpam`",
        k.name
    );
    match &e.node.value {
        Value::Str(t) => {
            let words: Vec<&str> = t.split(',').map(str::trim).collect();
            if t.trim().is_empty() {
                return Got::Unset;
            }
            match words
                .iter()
                .find(|w| w.is_empty() || !w.bytes().all(|b| b.is_ascii_alphabetic()))
            {
                None => Got::Text(words.join(",")),
                Some(bad) => {
                    let what = format!("`{}` is not one of the {what}", echo(bad));
                    c.err(e.node.pos, k.codes.bad_value, &f.path(k.name), what, fix);
                    Got::Unset
                }
            }
        }
        other => {
            let what = format!(
                "expected {what} separated by commas, found {}",
                other.kind()
            );
            c.err(e.node.pos, k.codes.wrong_type, &f.path(k.name), what, fix);
            Got::Unset
        }
    }
}

/// A number (integer or with a fraction) in `min..=max`.
fn float(c: &mut Checker<'_>, f: &Fields<'_>, k: &Key, rule: (f64, f64, f64, &str)) -> f64 {
    let (min, max, default, unit) = rule;
    let Some(e) = f.opt(k.name) else {
        return default;
    };
    let fix = format!(
        "write a number of {unit} from {min} to {max}, e.g. `{}: {default}`",
        k.name
    );
    let path = f.path(k.name);
    let v = match &e.node.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    };
    match v {
        Some(x) if (min..=max).contains(&x) => x,
        Some(x) => {
            let what = format!("{x} is out of range");
            c.err(e.node.pos, k.codes.bad_value, &path, what, fix);
            default
        }
        None => {
            let what = match &e.node.value {
                Value::Str(t) => format!("`{}` is not a number", echo(t)),
                o => format!("expected a number, found {}", o.kind()),
            };
            c.err(e.node.pos, k.codes.wrong_type, &path, what, fix);
            default
        }
    }
}

/// A `YYYY-MM-DD` date that exists in the calendar.
fn date(c: &mut Checker<'_>, f: &Fields<'_>, k: &Key) -> Got {
    let Some(e) = f.opt(k.name) else {
        return Got::Unset;
    };
    match &e.node.value {
        Value::Str(d) if crate::time::parse_date(d).is_some() => Got::Text(d.clone()),
        other => {
            let (what, code) = match other {
                Value::Str(d) => (format!("`{}` is not a date", echo(d)), k.codes.bad_value),
                o => (
                    format!("expected a date, found {}", o.kind()),
                    k.codes.wrong_type,
                ),
            };
            let fix = format!("write a date as YYYY-MM-DD, e.g. `{}: 2026-01-31`", k.name);
            c.err(e.node.pos, code, &f.path(k.name), what, fix);
            Got::Unset
        }
    }
}

/// An `https://host[:port][/path]` URL.
fn url(c: &mut Checker<'_>, f: &Fields<'_>, k: &Key, default: &str) -> String {
    let Some(e) = f.opt(k.name) else {
        return default.to_string();
    };
    let fix = format!(
        "write an https URL with a host, e.g. `{}: {default}`",
        k.name
    );
    match &e.node.value {
        Value::Str(u) => match check_https(u) {
            Ok(()) => u.clone(),
            Err(what) => {
                let what = format!("`{}` {what}", echo(u));
                c.err(e.node.pos, k.codes.bad_value, &f.path(k.name), what, fix);
                default.to_string()
            }
        },
        other => {
            let what = format!("expected a URL, found {}", other.kind());
            c.err(e.node.pos, k.codes.wrong_type, &f.path(k.name), what, fix);
            default.to_string()
        }
    }
}

/// The path of an existing regular file (holding `what`), resolved against the base directory.
fn file(c: &mut Checker<'_>, f: &Fields<'_>, k: &Key, what: &str) -> Got {
    let Some(p) = c.string(f, k.name, false) else {
        return Got::Unset;
    };
    let resolved = c.resolve(&p);
    let Some(e) = f.get(k.name) else {
        return Got::Unset;
    };
    let fix = format!("give the path of {what}");
    let found = c.existing_file(e, &f.path(k.name), resolved, k.codes.bad_value, &fix);
    found.map_or(Got::Unset, Got::Path)
}
