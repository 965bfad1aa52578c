//! The typed configuration: what the rest of the program reads once validation passed.
//!
//! Owns: [`Config`] and its parts, the [`Secret`] wrapper that never prints a secret, and
//! the [`Api`] choice of an input. Every field is already checked and defaulted: the
//! defaults come from the key rows in [`super::keys`], the checks from [`super::validate`].
//! Must not: parse, validate, read files, or show a secret unobfuscated in `Display`/`Debug`.

use std::fmt;
use std::path::PathBuf;

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
    /// `metrics_listen`: `host:port` of the Prometheus/health listener (SPEC §7); off when absent.
    pub metrics_listen: Option<String>,
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
    /// `follow_symlinks`: write through a symlink at `path` (refused by default).
    File {
        path: PathBuf,
        follow_symlinks: bool,
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
    /// [`DEFAULT_TAG`] unless configured (syslog `tag`).
    pub tag: String,
    /// Tag of trace detail events; empty: `crate::output::DEFAULT_DETAIL_TAG`.
    pub detail_tag: String,
}

/// The syslog tag (APP-NAME) when an output does not set `tag`: defined once, by the outputs.
pub use crate::output::DEFAULT_TAG;

/// Which Microsoft API an input pulls: the seam lives in `source/api.rs`.
pub use crate::source::Api;

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
    /// `first_pass_delay_in_seconds`: the first pass ends this far behind now.
    pub first_pass_delay_secs: u64,
    pub reset_persistence_auth: Option<String>,
    /// Full URL of the MessageTrace endpoint (base + path unless the value already ends with it).
    pub reporting_url: String,
    /// Scheme+host of the token endpoint (`https://login.microsoftonline.com`).
    pub auth_url: String,
    pub resource_url: String,
    /// Full URL of the Graph messageTraces endpoint.
    pub graph_url: String,
    pub ca_file: Option<PathBuf>,
    /// Graph requests allowed per 5 minutes; default [`super::keys::DEFAULT_MAX_REQUESTS_PER_5_MINUTES`].
    pub max_requests_per_5_minutes: u32,
    /// Statuses (lower-cased) whose rows get trace details; empty: details are off.
    pub trace_details_statuses: Vec<String>,
    /// The detail calls' share of `max_requests_per_5_minutes`.
    pub max_detail_requests_per_5_minutes: u32,
    /// Bound of the durable detail queue.
    pub max_pending_details: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
