//! `msgtrace check --offline`: the setup steps that need no network.
//!
//! Owns: proving, one line per step, that the config is valid, that every certificate,
//! key and CA file it names is readable and well-formed PEM (and that a client
//! certificate matches its key), and that the persistence directory can be created and
//! written. Must not: open sockets or talk to Microsoft or a receiver (the online steps
//! live with the lead's `check`), print (the caller prints the steps), or show a secret.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{self, Config, OutputKind};
use crate::error::Error;

/// Name of the probe file written (then removed) in the state directory.
const PROBE_NAME: &str = ".msgtrace-write-probe";

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
                steps.push(cert_step(&format!("output {name}: chain"), chain));
            }
        }
        if let Some(cert) = &t.cert {
            if !seen.contains(cert) {
                seen.push(cert.clone());
                steps.push(cert_step(&format!("output {name}: cert"), cert));
            }
        }
        if let Some(key) = &t.key {
            if !seen.contains(key) {
                seen.push(key.clone());
                steps.push(key_step(&format!("output {name}: key"), key));
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
                steps.push(cert_step(&format!("input {}: ca_file", input.name), ca));
            }
        }
    }
    steps.push(state_dir_step(&cfg.globals.state_dir));
    (Some(cfg), steps)
}

/// Read the certificates of a PEM file: `Err` says what is wrong.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        certs.push(item.map_err(|e| format!("bad PEM: {e}"))?);
    }
    if certs.is_empty() {
        return Err("no `-----BEGIN CERTIFICATE-----` block".into());
    }
    // The base64 decoded; now prove each body is an X.509 certificate.
    let mut store = rustls::RootCertStore::empty();
    for (n, cert) in certs.iter().enumerate() {
        store
            .add(cert.clone())
            .map_err(|e| format!("certificate #{} is not valid X.509: {e}", n + 1))?;
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no `-----BEGIN PRIVATE KEY-----` (or RSA/EC PRIVATE KEY) block".to_string()
        }
        other => format!("bad PEM: {other}"),
    })
}

fn cert_step(label: &str, path: &Path) -> Step {
    match read_certs(path) {
        Ok(certs) => Step::pass(format!(
            "{label} {} holds {} certificate(s)",
            path.display(),
            certs.len()
        )),
        Err(why) => Step::fail(
            format!("{label} {}: {why}", path.display()),
            "save the PEM file again (Devo → Administration → Credentials → X.509)",
        ),
    }
}

fn key_step(label: &str, path: &Path) -> Step {
    match read_key(path) {
        Ok(_) => Step::pass(format!("{label} {} is a private key", path.display())),
        Err(why) => Step::fail(
            format!("{label} {}: {why}", path.display()),
            "save the private key PEM file again",
        ),
    }
}

/// Whether the client certificate belongs to the key; `None` if either is unreadable
/// (already reported) or the key type cannot be compared.
fn pair_step(name: &str, cert: &Path, key: &Path) -> Option<Step> {
    let certs = read_certs(cert).ok()?;
    let der = read_key(key).ok()?;
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
    let shown = dir.display();
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Step::fail(
            format!("state directory {shown} cannot be created: {e}"),
            "create it, or fix globals.persistence.config.directory_name",
        );
    }
    let probe = dir.join(PROBE_NAME);
    let written = std::fs::write(&probe, b"probe\n").and_then(|()| std::fs::remove_file(&probe));
    match written {
        Ok(()) => Step::pass(format!("state directory {shown} is writable")),
        Err(e) => Step::fail(
            format!("state directory {shown} is not writable: {e}"),
            "give the collector's user write access to it",
        ),
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
            std::time::Duration::from_secs_f64(svc.timeout_secs),
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
                    format!("{who}: token from {}", tokens.display_url()),
                    format!("{e}"),
                ));
                continue;
            }
        };
        let role = crate::auth::required_role(svc.api);
        let roles = crate::auth::token_roles(&token);
        if roles.iter().any(|r| r == role) {
            steps.push(Step::pass(format!("{who}: token's roles hold {role}")));
        } else {
            let app = match svc.api {
                crate::config::Api::Reporting => {
                    "Office 365 Exchange Online → Application permissions → ReportingWebService"
                }
                crate::config::Api::Graph => {
                    "Microsoft Graph → Application permissions → ExchangeMessageTrace"
                }
            };
            steps.push(Step::fail(
                format!("{who}: token's roles [{}] lack {role}", roles.join(", ")),
                format!("in the app registration add the permission {role} ({app}) and click \"Grant admin consent\""),
            ));
            continue;
        }
        // One small query: the last minute before the delay, first page only.
        let end = crate::window::target(now, svc.delay_secs);
        let start = end - 60;
        let url = match svc.api {
            crate::config::Api::Reporting => {
                crate::source::reporting::query_url(&svc.reporting_url, start, end)
            }
            crate::config::Api::Graph => {
                crate::source::graph::query_url(&svc.graph_url, start, end, 1)
            }
        };
        // Transient answers (429, 5xx, network) are retried like the puller does, so a
        // passing hiccup does not fail the check.
        let mut attempt = 0;
        let answer = loop {
            let a = agent
                .get(&url)
                .header("Authorization", format!("Bearer {token}"))
                .call();
            let transient = match &a {
                Ok(r) => matches!(r.status().as_u16(), 429 | 500..=599),
                Err(_) => true,
            };
            if !transient || attempt >= svc.retries.min(CHECK_RETRIES) {
                break a;
            }
            attempt += 1;
            std::thread::sleep(std::time::Duration::from_secs(svc.retry_wait_secs.min(2)));
        };
        match answer {
            Ok(resp) if resp.status().as_u16() == 200 => {
                steps.push(Step::pass(format!("{who}: message trace service answers")));
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = crate::http::read_error_body(resp);
                let msg = match svc.api {
                    crate::config::Api::Reporting => crate::source::reporting::error_message(&body),
                    crate::config::Api::Graph => crate::source::graph::error_message(&body),
                }
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
                let fix = if msg.contains("Service principal-less authentication failed") {
                    "provision the service principal of app 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373 (New-MgServicePrincipal -AppId 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373)".to_string()
                } else if status == 403 || msg.contains("No permission") {
                    "assign the app the Global Reader role (Entra ID → Roles and administrators)"
                        .to_string()
                } else {
                    "check override_base_url / override_graph_url and the service's health"
                        .to_string()
                };
                steps.push(Step::fail(
                    format!("{who}: message trace service answered {status}: {msg}"),
                    fix,
                ));
            }
            Err(e) => steps.push(Step::fail(
                format!(
                    "{who}: message trace service unreachable: {}",
                    crate::http::transport(e)
                ),
                "check the network path to Microsoft (proxy, firewall) and ca_file".to_string(),
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
            Err(e) => {
                // Most output errors already end with their fix (`… — check chain`):
                // show it once, not followed by the generic one.
                let text = format!("output {}: {e}", o.name);
                match text.split_once(" — ") {
                    Some((what, fix)) => steps.push(Step::fail(what.to_string(), fix.to_string())),
                    None => steps.push(Step::fail(text, output_fix_text(o))),
                }
            }
        }
    }
    steps
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
        OutputKind::File { path } => format!("{} is writable", path.display()),
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
        assert!(!tmp.join("a/b/state").join(PROBE_NAME).exists());
        let step = cert_step("chain", &tmp.join("missing.crt"));
        assert!(!step.ok && step.what.contains("cannot read"), "{step}");
        let step = key_step("key", &file);
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
