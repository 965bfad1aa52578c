//! Configuration: YAML-subset (or JSON) text -> typed `Config`.
//!
//! CONTRACT SKELETON — the config helper replaces this header with the grammar
//! docs and implements `load`. The public types below are shared with the rest
//! of the crate: add fields if needed, do not rename or remove.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

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
}

#[derive(Debug, Clone)]
pub struct Globals {
    pub debug: bool,
    pub id: String,
    pub name: String,
    /// Persistence directory, resolved against the working directory.
    pub state_dir: PathBuf,
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
    Stdout,
    File { path: PathBuf },
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
    /// `cloud.office365.messagetracing` unless configured (syslog `tag`).
    pub tag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `office365_exchange_message_service`.
    Reporting,
    /// `office365_exchange_message_graph_service`.
    Graph,
}

impl Api {
    pub fn service_name(self) -> &'static str {
        match self {
            Api::Reporting => "office365_exchange_message_service",
            Api::Graph => "office365_exchange_message_graph_service",
        }
    }
}

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
    pub reset_persistence_auth: Option<String>,
    /// Full URL of the MessageTrace endpoint (base + path unless the value already ends with it).
    pub reporting_url: String,
    /// Scheme+host of the token endpoint (`https://login.microsoftonline.com`).
    pub auth_url: String,
    pub resource_url: String,
    /// Full URL of the Graph messageTraces endpoint.
    pub graph_url: String,
    pub ca_file: Option<PathBuf>,
    pub max_requests_per_5_minutes: u32,
}

/// Load and validate a config file; every mistake is reported at once in `Error::Config`.
pub fn load(path: &std::path::Path) -> Result<Config> {
    Err(Error::Usage(format!("config loading not built yet: {}", path.display())))
}
