//! Checks made once when `run` starts, before any tenant or output is opened (SPEC §10).
//!
//! Owns: the start-up warnings about this host's own files and settings — persistence
//! directory group/world-writable, config file world-readable while it holds an inline
//! client secret, a private key readable by others, an output with `type: TCP` (events
//! in clear text) — and the one refusal: a persistence directory that cannot be written
//! is found here (exit 2 with the fix), not at the first compaction days later. Must
//! not: change any file mode or content (it warns; the operator decides), print a secret
//! (it says *that* a secret is inline, never which), or touch the network.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::config::{Config, OutputKind, MAX_CONFIG_BYTES};
use crate::error::{Error, Result};
use crate::warning;

/// The file written and removed to prove the persistence directory is writable (the
/// same name `check` uses, so either leaves nothing unknown behind).
pub const PROBE_NAME: &str = ".msgtrace-write-probe";

/// Run the checks: log each warning once, or refuse to start (exit 2).
pub fn run(cfg: &Config) -> Result<()> {
    for w in findings(cfg)? {
        warning!("MainProcess::MainThread", "{w}");
    }
    Ok(())
}

/// The warnings for `cfg` (in words, each naming the file and the fix), or the error
/// that stops the start.
pub fn findings(cfg: &Config) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let dir = &cfg.globals.state_dir;
    probe_state_dir(dir).map_err(|why| Error::Config(vec![why.to_string()]))?;
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            out.push(format!(
                "persistence directory {} is writable by group or others (mode {mode:o}): \
                 another user could plant or replace the collector's files there — chmod 700 it",
                dir.display()
            ));
        }
    }
    if let Some(w) = config_warning(cfg) {
        out.push(w);
    }
    for o in &cfg.outputs {
        let tls = match &o.kind {
            OutputKind::Devo(t) | OutputKind::Syslog(t) | OutputKind::Relp(t) => t,
            OutputKind::Stdout | OutputKind::File { .. } => continue,
        };
        if !tls.tls {
            out.push(format!(
                "output {} has `type: TCP`: events (personal data) go to {}:{} in clear \
                 text — use `type: SSL` unless the link is protected otherwise",
                o.name, tls.address, tls.port
            ));
        }
        if let Some(w) = tls.key.as_deref().and_then(key_warning) {
            out.push(format!("output {}: {w}", o.name));
        }
    }
    Ok(out)
}

/// Why the persistence directory cannot be used: what is wrong, and the fix.
#[derive(Debug)]
pub struct DirProblem {
    pub what: String,
    pub fix: &'static str,
}

impl std::fmt::Display for DirProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} — {}", self.what, self.fix)
    }
}

/// Create the persistence directory when missing (0700, as the state files would), then
/// write and remove a probe file in it (named with our pid: replicas sharing the
/// directory must not remove each other's probe). `run` and `check` both use it.
pub fn probe_state_dir(dir: &Path) -> std::result::Result<(), DirProblem> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| DirProblem {
                what: format!("persistence directory {} cannot be created: {e}", dir.display()),
                fix: "create it writable by the collector's user, or fix globals.persistence.config.directory_name",
            })?;
    }
    let probe = dir.join(format!("{PROBE_NAME}.{}", std::process::id()));
    std::fs::write(&probe, b"probe\n")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| DirProblem {
            what: format!("persistence directory {} is not writable: {e}", dir.display()),
            fix: "give the collector's user write access to it (state files are rewritten there while running), or fix globals.persistence.config.directory_name",
        })
}

/// A warning when the config file can be read by others and holds a client secret
/// inline (not through `${ENV}` or `client_secret_file`): the secret's value appears in
/// the file's own text.
fn config_warning(cfg: &Config) -> Option<String> {
    let meta = std::fs::metadata(&cfg.path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 == 0 {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(&cfg.path)
        .ok()?
        .take(MAX_CONFIG_BYTES as u64)
        .read_to_string(&mut text)
        .ok()?;
    let inline = cfg.inputs.iter().any(|i| {
        let s = i.credentials.client_secret.expose();
        s.len() >= crate::log::MIN_SECRET_LEN && text.contains(s)
    });
    inline.then(|| {
        format!(
            "config file {} is readable by every user (mode {mode:o}) and holds a client \
             secret inline — chmod 600 it, or move the secret to `client_secret_file` or \
             `${{ENV}}`",
            cfg.path.display()
        )
    })
}

/// A warning when the private key at `path` can be read by group or others.
pub fn key_warning(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "private key {} is accessible by group or others (mode {mode:o}) — chmod 600 it",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("msgtrace-preflight-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn key_modes() {
        let d = tmp("key");
        let k = d.join("k.pem");
        std::fs::write(&k, "x").unwrap();
        for (mode, warns) in [(0o600, false), (0o400, false), (0o640, true), (0o644, true)] {
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(mode)).unwrap();
            let w = key_warning(&k);
            assert_eq!(w.is_some(), warns, "{mode:o}");
            if let Some(w) = w {
                assert!(
                    w.contains(&format!("mode {mode:o}")) && w.contains("chmod 600"),
                    "{w}"
                );
            }
        }
        assert_eq!(key_warning(&d.join("missing")), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn state_dir_is_created_0700_and_probed() {
        let d = tmp("dir");
        let s = d.join("a/state");
        probe_state_dir(&s).unwrap();
        assert_eq!(
            std::fs::metadata(&s).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(std::fs::read_dir(&s).unwrap().count(), 0);
        let file = d.join("f");
        std::fs::write(&file, "x").unwrap();
        let why = probe_state_dir(&file.join("state"))
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("cannot be created") && why.contains("directory_name"),
            "{why}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
