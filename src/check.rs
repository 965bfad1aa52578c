//! `msgtrace check`: the setup steps, one line each, offline then online.
//!
//! Owns: proving that the config is valid, that every certificate, key and CA file it
//! names is readable and well-formed PEM (and that a client certificate matches its
//! key), that the persistence directory can be created and written (offline); then,
//! per enabled input, that a token is obtained, holds the API's role and that the
//! message-trace service answers one small query, and that each output accepts a
//! connection (online). Must not: re-implement what `run` does — the token, the query
//! request, its retry curve, the reading of Microsoft's errors and their fixes are
//! the same functions (`auth`, `http::query`, `backoff`, `source::Api`) — print (the
//! caller prints the steps), or show a secret.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::config::{self, Config, OutputKind};
use crate::error::Error;
use crate::source::api::Query;

/// One checked step: rendered `✓ what` or `✗ what — fix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub ok: bool,
    pub what: String,
    pub fix: Option<String>,
}

impl Step {
    fn pass(what: impl Into<String>) -> Step {
        Step {
            ok: true,
            what: what.into(),
            fix: None,
        }
    }
    fn fail(what: impl Into<String>, fix: impl Into<String>) -> Step {
        Step {
            ok: false,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { '✓' } else { '✗' };
        write!(f, "{mark} {}", self.what)?;
        if let Some(fix) = &self.fix {
            write!(f, " — {fix}")?;
        }
        Ok(())
    }
}

/// Run the offline steps for the config at `cfg_path` (relative paths against the
/// working directory). The config is returned when it is valid, for the online steps.
pub fn offline_steps(cfg_path: &Path) -> (Option<Config>, Vec<Step>) {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    offline_steps_in(cfg_path, &base)
}

/// [`offline_steps`] with an explicit base directory (tests).
pub fn offline_steps_in(cfg_path: &Path, base: &Path) -> (Option<Config>, Vec<Step>) {
    let mut steps = Vec::new();
    let cfg = match config::load_from(cfg_path, base) {
        Ok(cfg) => {
            let warned = match cfg.warnings.len() {
                0 => String::new(),
                n => format!(", {n} warning(s) logged"),
            };
            steps.push(Step::pass(format!(
                "config {} is valid ({} output(s), {} input(s){warned})",
                cfg_path.display(),
                cfg.outputs.len(),
                cfg.inputs.len()
            )));
            for i in cfg.inputs.iter().filter(|i| i.enabled) {
                if let Some(line) = crate::details::describe(i) {
                    steps.push(Step::pass(line));
                }
            }
            cfg
        }
        Err(Error::Config(lines)) => {
            for line in lines {
                // Each line already carries `— fix`.
                steps.push(Step {
                    ok: false,
                    what: line,
                    fix: None,
                });
            }
            return (None, steps);
        }
        Err(e) => {
            steps.push(Step::fail(
                format!("config {}: {e}", cfg_path.display()),
                "give the config path with -c FILE",
            ));
            return (None, steps);
        }
    };
    let mut seen: Vec<PathBuf> = Vec::new();
    for out in &cfg.outputs {
        let (OutputKind::Devo(t) | OutputKind::Syslog(t) | OutputKind::Relp(t)) = &out.kind else {
            continue;
        };
        let name = &out.name;
        if let Some(chain) = &t.chain {
            if !seen.contains(chain) {
                seen.push(chain.clone());
                steps.push(cert_step(&format!("output {name}"), "chain", chain));
            }
        }
        if let Some(cert) = &t.cert {
            if !seen.contains(cert) {
                seen.push(cert.clone());
                steps.push(cert_step(&format!("output {name}"), "cert", cert));
            }
        }
        if let Some(key) = &t.key {
            if !seen.contains(key) {
                seen.push(key.clone());
                steps.push(key_step(&format!("output {name}"), key));
            }
        }
        if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
            if let Some(step) = pair_step(name, cert, key) {
                steps.push(step);
            }
        }
    }
    for input in &cfg.inputs {
        if let Some(ca) = &input.service.ca_file {
            if !seen.contains(ca) {
                seen.push(ca.clone());
                steps.push(cert_step(&format!("input {}", input.name), "ca_file", ca));
            }
        }
    }
    steps.push(state_dir_step(&cfg.globals.state_dir));
    (Some(cfg), steps)
}

/// Fix of a certificate file that is not X.509.
const PEM_FIX: &str = "save the PEM file again (Devo → Administration → Credentials → X.509)";

/// Prove each certificate (already read from PEM) to be X.509; `Err` names the first
/// that is not.
fn prove_x509(certs: &[CertificateDer<'static>]) -> Result<(), String> {
    let mut store = rustls::RootCertStore::empty();
    for (n, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "certificate #{} is not valid X.509: {e}",
                n.saturating_add(1)
            )
        })?;
    }
    Ok(())
}

/// A failed PEM step. The reader's errors (`output::pem`) name the file and, within
/// their text, the key to check; a typed fix is shown in the fix column.
fn pem_failed(owner: &str, e: &Error) -> Step {
    let what = format!("{owner}: {}", e.headline());
    match e.fix() {
        Some(fix) => Step::fail(what, fix),
        None => Step {
            ok: false,
            what,
            fix: None,
        },
    }
}

/// A certificate file, read as the outputs read it (`output::pem`), then proven X.509.
/// `owner` is `output NAME` or `input NAME`; `what` the key naming the file.
fn cert_step(owner: &str, what: &str, path: &Path) -> Step {
    let certs = match crate::output::pem::load_certs(path, what) {
        Ok(certs) => certs,
        Err(e) => return pem_failed(owner, &e),
    };
    match prove_x509(&certs) {
        Ok(()) => Step::pass(format!(
            "{owner}: {what} {} holds {} certificate(s)",
            path.display(),
            certs.len()
        )),
        Err(why) => Step::fail(
            format!("{owner}: {what} {}: {why}", path.display()),
            PEM_FIX,
        ),
    }
}

/// A private key file, read as the outputs read it (`output::pem`).
fn key_step(owner: &str, path: &Path) -> Step {
    match crate::output::pem::load_key(path) {
        Ok(_) => Step::pass(format!("{owner}: key {} is a private key", path.display())),
        Err(e) => pem_failed(owner, &e),
    }
}

/// Whether the client certificate belongs to the key; `None` if either is unreadable
/// (already reported) or the key type cannot be compared.
fn pair_step(name: &str, cert: &Path, key: &Path) -> Option<Step> {
    let certs = crate::output::pem::load_certs(cert, "cert").ok()?;
    let der = crate::output::pem::load_key(key).ok()?;
    let signer = match rustls::crypto::ring::sign::any_supported_type(&der) {
        Ok(s) => s,
        Err(e) => {
            return Some(Step::fail(
                format!("output {name}: key {}: unusable: {e}", key.display()),
                "use an RSA, ECDSA (P-256/P-384) or Ed25519 key",
            ))
        }
    };
    let ck = rustls::sign::CertifiedKey::new(certs, signer);
    Some(match ck.keys_match() {
        Ok(()) => Step::pass(format!("output {name}: cert and key belong together")),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Step::pass(
            format!("output {name}: cert and key read (pairing not checked)"),
        ),
        Err(e) => Step::fail(
            format!(
                "output {name}: cert {} does not match key {}: {e}",
                cert.display(),
                key.display()
            ),
            "download the certificate and key as one pair",
        ),
    })
}

/// Create the persistence directory and write + remove a probe file.
fn state_dir_step(dir: &Path) -> Step {
    match crate::preflight::probe_state_dir(dir) {
        Ok(()) => Step::pass(format!("state directory {} is writable", dir.display())),
        Err(p) => Step::fail(p.what, p.fix),
    }
}

/// Retries of the one small query in `check` (bounded further by the service's own
/// `requests_retries_before_error_in_units`).
pub const CHECK_RETRIES: u32 = 3;

/// The live steps of `msgtrace check`, per enabled input then per output: token
/// obtained, the token's `roles` hold the needed permission, the message-trace service
/// answers one small query; each output accepts a handshake (or, for `file`, its path
/// is writable).
pub fn online_steps(cfg: &Config) -> Vec<Step> {
    let mut steps = Vec::new();
    let now = crate::time::now();
    for input in cfg.inputs.iter().filter(|i| i.enabled) {
        let svc = &input.service;
        let who = format!("{}#{} ({})", input.name, input.id, svc.api.service_name());
        let agent = match crate::http::agent(
            Duration::from_secs_f64(svc.timeout_secs),
            svc.ca_file.as_deref(),
        ) {
            Ok(a) => a,
            Err(e) => {
                steps.push(Step::fail(format!("{who}: HTTP client"), format!("{e}")));
                continue;
            }
        };
        let mut tokens = crate::auth::TokenClient::new(
            svc.api,
            &svc.auth_url,
            &svc.resource_url,
            input.credentials.clone(),
        );
        let token = match tokens.token(&agent, now) {
            Ok((t, _)) => {
                steps.push(Step::pass(format!(
                    "{who}: token obtained from {}",
                    tokens.display_url()
                )));
                t
            }
            Err(e) => {
                steps.push(Step::fail(
                    format!("{who}: token from {}: {}", tokens.display_url(), e.headline()),
                    e.fix().unwrap_or(
                        "check the network path to Microsoft (proxy, firewall), ca_file and override_base_auth_url",
                    ),
                ));
                continue;
            }
        };
        let api = svc.api;
        let role = api.required_role();
        let roles = crate::auth::token_roles(&token);
        if roles.iter().any(|r| r == role) {
            steps.push(Step::pass(format!("{who}: token's roles hold {role}")));
        } else {
            steps.push(Step::fail(
                format!("{who}: token's roles [{}] lack {role}", roles.join(", ")),
                format!(
                    "in the app registration add the permission {role} ({}) and click \"Grant admin consent\"",
                    api.permission_path()
                ),
            ));
            continue;
        }
        // One small query: the last minute before the delay, first page only.
        let end = crate::window::target(now, svc.delay_secs);
        let base = api.pick(&svc.reporting_url, &svc.graph_url);
        let url = api.query_url(base, end.saturating_sub(60), end, Query::Probe);
        // Transient answers (429, 5xx, network) are retried on the puller's curve, so
        // a passing hiccup does not fail the check.
        let (base_wait, cap) = (
            Duration::from_secs(svc.retry_wait_secs),
            Duration::from_secs(2),
        );
        let mut attempt = 0;
        let answer = loop {
            let a = crate::http::query(&agent, api, &url, &token);
            match a {
                Err(e) if e.is_transient() && attempt < svc.retries.min(CHECK_RETRIES) => {
                    attempt = attempt.saturating_add(1);
                    std::thread::sleep(crate::backoff::jittered(base_wait, attempt, cap));
                }
                a => break a,
            }
        };
        match answer {
            Ok(_) => steps.push(Step::pass(format!("{who}: message trace service answers"))),
            Err(e) if e.is_transport() => steps.push(Step::fail(
                format!("{who}: message trace service unreachable: {}", e.headline()),
                api.query_fix(&e),
            )),
            Err(e) => steps.push(Step::fail(
                format!("{who}: message trace service answered {}", e.headline()),
                api.query_fix(&e),
            )),
        }
    }
    for o in &cfg.outputs {
        let res = crate::output::open(o).and_then(|mut s| s.ensure_ready());
        match res {
            Ok(()) => steps.push(Step::pass(format!(
                "output {}: {}",
                o.name,
                output_ok_text(o)
            ))),
            Err(e) => steps.push(output_failed(o, &e)),
        }
    }
    steps
}

/// The failed step of an output: its own fix when the error names one; a TLS or
/// certificate error (`Error::Tls`) carries its fix in its text, so it is shown as is;
/// any other error gets the generic fix of the output kind.
fn output_failed(o: &crate::config::OutputConfig, e: &Error) -> Step {
    let what = format!("output {}: {}", o.name, e.headline());
    match (e.fix(), e.root()) {
        (Some(fix), _) => Step::fail(what, fix),
        (None, Error::Tls(_)) => Step {
            ok: false,
            what,
            fix: None,
        },
        (None, _) => Step::fail(what, output_fix_text(o)),
    }
}

fn output_ok_text(o: &crate::config::OutputConfig) -> String {
    use crate::config::OutputKind;
    match &o.kind {
        OutputKind::Devo(t) | OutputKind::Syslog(t) if t.tls => format!(
            "TLS handshake with {}:{}{} accepted",
            t.address,
            t.port,
            if t.cert.is_some() {
                " (client certificate included)"
            } else {
                ""
            }
        ),
        OutputKind::Devo(t) | OutputKind::Syslog(t) => {
            format!("TCP connection to {}:{} accepted", t.address, t.port)
        }
        // The sink's `ensure_ready` did the RELP handshake (open, rsp 200, offers).
        OutputKind::Relp(t) => format!(
            "RELP session opened with {}:{} ({}{})",
            t.address,
            t.port,
            if t.tls { "TLS" } else { "TCP" },
            if t.cert.is_some() {
                ", client certificate included"
            } else {
                ""
            }
        ),
        OutputKind::File { path, .. } => format!("{} is writable", path.display()),
        OutputKind::Stdout => "standard output is open".to_string(),
    }
}

fn output_fix_text(o: &crate::config::OutputConfig) -> String {
    use crate::config::OutputKind;
    match &o.kind {
        OutputKind::Devo(_) | OutputKind::Syslog(_) | OutputKind::Relp(_) => {
            "check address, port, chain, cert and key (the receiver must trust our certificate)"
                .to_string()
        }
        OutputKind::File { .. } => "make the directory exist and writable by this user".to_string(),
        OutputKind::Stdout => "run with standard output open".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_renders_one_line() {
        assert_eq!(Step::pass("config ok").to_string(), "✓ config ok");
        assert_eq!(
            Step::fail("state dir", "create it").to_string(),
            "✗ state dir — create it"
        );
    }

    #[test]
    fn state_dir_that_is_a_file_fails_and_a_fresh_one_passes() {
        let tmp = std::env::temp_dir().join(format!("msgtrace-check-unit-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let file = tmp.join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let step = state_dir_step(&file.join("state"));
        assert!(
            !step.ok && step.to_string().contains("cannot be created"),
            "{step}"
        );
        let step = state_dir_step(&tmp.join("a/b/state"));
        assert!(step.ok, "{step}");
        assert!(
            !std::fs::read_dir(tmp.join("a/b/state")).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".msgtrace-write-probe")),
            "the write probe is left behind"
        );
        let step = cert_step("output o", "chain", &tmp.join("missing.crt"));
        assert!(!step.ok && step.what.contains("cannot read"), "{step}");
        let step = key_step("output o", &file);
        assert!(
            !step.ok && step.what.contains("BEGIN PRIVATE KEY"),
            "{step}"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn missing_config_fails_without_panicking() {
        let (cfg, steps) =
            offline_steps_in(Path::new("does-not-exist.yaml"), Path::new("/nonexistent"));
        assert!(cfg.is_none());
        assert!(steps.iter().all(|s| !s.ok));
        assert!(!steps.is_empty());
    }
}
