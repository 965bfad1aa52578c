//! Configuration: YAML-subset (or JSON) text → typed [`Config`].
//!
//! Owns: the entry points ([`load`], [`load_from`], [`parse_str`], [`resolve_path`]):
//! reading the config file (bounded by [`MAX_CONFIG_BYTES`], UTF-8), choosing the form by
//! the file name, and rendering every mistake of a file at once as
//! `file:line:col: InitVariablesError(<code>): <key path>: <what> — <fix>` (keys without
//! a code in SPEC §2 omit the `InitVariablesError(..)` part). The parts, one concern each:
//! - [`tree`]: the grammar of both forms, the value tree, the mistake type, `${ENV}`;
//! - [`yaml`]: the YAML-subset parser; [`json`]: the JSON form (depth checked first);
//! - [`keys`]: one row per key (type, range, default, API, codes, doc) and the README table;
//! - [`model`]: the typed [`Config`] the rest of the program reads;
//! - `validate`: tree → [`Config`], with `inputs`, `service` and `outputs` beside it.
//!
//! Must not: open sockets, create directories or print anything; never put a secret
//! (`tenant_id`, `client_id`, `client_secret`) into a message — only [`obfuscate`]d.

pub mod json;
pub mod keys;
pub mod model;
pub mod tree;
mod validate;
pub mod yaml;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use json::parse_json;
pub use keys::{
    reference_table_markdown, Key, DEFAULT_AUTH_URL, DEFAULT_BASE_URL, DEFAULT_GRAPH_URL,
    DEFAULT_MAX_REQUESTS_PER_5_MINUTES, DEFAULT_RESOURCE_URL, DEFAULT_WINDOW_IN_SECONDS,
    GRAPH_PATH, REPORTING_PATH, SAFE_DELAY_SECS, SERVICE_KEYS,
};
pub use model::{
    obfuscate, Api, Config, Credentials, Globals, InputConfig, OutputConfig, OutputKind, Secret,
    ServiceConfig, TlsOutput, DEFAULT_TAG,
};
pub use tree::{
    real_env, Diag, Entry, EnvFn, Node, Pos, Value, MAX_CONFIG_BYTES, MAX_DEPTH, MAX_DIAGS,
    MAX_KEY_LEN,
};
pub use validate::{sovereign_cloud, validate};
pub use yaml::parse_yaml;

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
        json::parse_json_partial(text, env)
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
    file.take(u64::try_from(MAX_CONFIG_BYTES).map_or(u64::MAX, |n| n.saturating_add(1)))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(label.clone(), e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let pos = json::offset_pos(
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
