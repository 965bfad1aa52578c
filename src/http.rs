//! The HTTP edge towards Microsoft: one ureq agent per tenant, timeouts, trust roots,
//! and the mapping of answers to `Error`.
//!
//! Owns: agent construction (`requests_timeout_in_seconds`, `ca_file`), reading error
//! bodies with a bound, `Retry-After`. Must not: interpret message trace data (the
//! scanners in `source/` do) or log tokens.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// Error bodies are read up to this many bytes: enough for Microsoft's JSON/XML error
/// documents, small enough that a hostile answer cannot grow memory.
pub const MAX_ERROR_BODY: u64 = 16 * 1024;

/// Build an agent: `timeout` bounds connect, the wait for the response head, and each
/// read of the body (a 10-MB page streams for longer than one timeout; a stalled one
/// fails). `ca_file` replaces the built-in roots (webpki-roots) with the given PEM
/// anchors: TLS-inspecting proxies re-sign every host, and tests trust their own CA.
pub fn agent(timeout: Duration, ca_file: Option<&Path>) -> Result<ureq::Agent> {
    let roots = match ca_file {
        None => ureq::tls::RootCerts::WebPki,
        Some(path) => {
            // The one PEM reader (output/pem.rs), with its messages naming the fix.
            let certs: Vec<_> = crate::output::pem::load_certs(path, "ca_file")?
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            ureq::tls::RootCerts::Specific(Arc::new(certs))
        }
    };
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(roots)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .https_only(true)
        .timeout_connect(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_per_read(Some(timeout))
        .timeout_send_request(Some(timeout))
        .max_redirects(0)
        .max_idle_connections_per_host(2)
        .user_agent(concat!("msgtrace/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build();
    Ok(config.into())
}

/// A ureq failure as our error (always transient: connect, TLS, timeout, cut body).
pub fn transport(e: ureq::Error) -> Error {
    match e {
        ureq::Error::StatusCode(s) => Error::Http {
            status: s,
            message: String::new(),
            retry_after: None,
        },
        ureq::Error::Io(io) => Error::Transport(io.to_string()),
        other => Error::Transport(other.to_string()),
    }
}

/// Seconds of a `Retry-After` header given as delta-seconds (HTTP dates are rare from
/// Microsoft and fall back to our own backoff).
pub fn retry_after(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    resp.headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Read at most `MAX_ERROR_BODY` bytes of a body.
pub fn read_error_body(resp: ureq::http::Response<ureq::Body>) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(MAX_ERROR_BODY)
        .read_to_end(&mut out);
    out
}
