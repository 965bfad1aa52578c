//! The HTTP edge towards Microsoft: one ureq agent per tenant, timeouts, trust roots,
//! and the mapping of answers to `Error`.
//!
//! Owns: agent construction (`requests_timeout_in_seconds`, `ca_file`), the one query
//! request that `run` and `check` both make (`query`), reading error bodies with a
//! bound, `Retry-After`, and the limits of one page body (`PageBody`: a total deadline
//! of max(10 × `requests_timeout_in_seconds`, 10 min) and a byte cap — SPEC §3; a body
//! cut by them is `Error::Malformed`). Must not: interpret message trace data or
//! Microsoft's error texts (`source::Api` does) or log tokens.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::source::Api;

/// A response whose body is still to be read.
pub type Response = ureq::http::Response<ureq::Body>;

/// GET one message-trace page with the bearer `token`: the 200 answer, or the error
/// the API makes of any other answer (`Api::answer_error`), or a transport error.
pub fn query(agent: &ureq::Agent, api: Api, url: &str, token: &str) -> Result<Response> {
    let resp = agent
        .get(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Accept", api.accept())
        .call()
        .map_err(transport)?;
    let status = resp.status().as_u16();
    if status == 200 {
        return Ok(resp);
    }
    let retry_after = retry_after(&resp);
    if let Some(to) = redirect_target(&resp) {
        return Err(Error::Http {
            status,
            message: to,
            retry_after: None,
        });
    }
    let body = read_error_body(resp);
    Err(api.answer_error(status, &body, retry_after))
}

/// For a 3xx answer: where it points, in words (msgtrace follows no redirect: the
/// token would go along). `None` for any other status.
pub fn redirect_target(resp: &Response) -> Option<String> {
    let status = resp.status().as_u16();
    if !(300..400).contains(&status) {
        return None;
    }
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(crate::log::sanitize_remote);
    Some(match location {
        Some(l) if !l.is_empty() => format!(
            "redirect to {l}: msgtrace follows no redirects — configure the URL it points to if it is Microsoft's"
        ),
        _ => "redirect without a Location header: msgtrace follows no redirects".to_string(),
    })
}

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
            // The one PEM reader (`output::pem`), as the outputs and `check` use it.
            let certs: Vec<ureq::tls::Certificate<'static>> =
                crate::output::pem::load_certs(path, "ca_file")?
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
        .timeout_recv_body(Some(page_deadline(timeout)))
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
pub fn retry_after(resp: &Response) -> Option<u64> {
    resp.headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Read at most `MAX_ERROR_BODY` bytes of a body.
pub fn read_error_body(resp: Response) -> Vec<u8> {
    read_bounded(resp).0
}

/// Read at most `MAX_ERROR_BODY` bytes of a body; `true` when the body was longer
/// (one byte more is read to tell).
pub fn read_bounded(resp: Response) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(MAX_ERROR_BODY.saturating_add(1))
        .read_to_end(&mut out);
    let over = out.len() as u64 > MAX_ERROR_BODY;
    out.truncate(usize::try_from(MAX_ERROR_BODY).unwrap_or(usize::MAX));
    (out, over)
}

/// Shortest page deadline: a 10-MB page over a slow link must still fit.
pub const MIN_PAGE_DEADLINE: Duration = Duration::from_secs(600);
/// The page deadline is this many `requests_timeout_in_seconds` (or `MIN_PAGE_DEADLINE`).
pub const PAGE_DEADLINE_TIMEOUTS: u32 = 10;
/// Largest page body read: ten of Microsoft's largest pages (~10 MB each). A longer
/// (endless) body is cut here and the page is malformed.
pub const MAX_PAGE_BYTES: u64 = 128 << 20;
/// Documented override of the page deadline in seconds (tests and troubleshooting).
pub const PAGE_DEADLINE_ENV: &str = "MSGTRACE_PAGE_DEADLINE_SECS";
/// Documented override of the page byte cap.
pub const PAGE_BYTES_ENV: &str = "MSGTRACE_PAGE_MAX_BYTES";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|v| *v > 0)
}

/// The total time one page body may take: max(10 × `timeout`, 10 min), or
/// `MSGTRACE_PAGE_DEADLINE_SECS` when set.
pub fn page_deadline(timeout: Duration) -> Duration {
    if let Some(s) = env_u64(PAGE_DEADLINE_ENV) {
        return Duration::from_secs(s);
    }
    timeout
        .checked_mul(PAGE_DEADLINE_TIMEOUTS)
        .unwrap_or(MIN_PAGE_DEADLINE)
        .max(MIN_PAGE_DEADLINE)
}

/// The byte cap of one page body (`MAX_PAGE_BYTES`, or `MSGTRACE_PAGE_MAX_BYTES`).
pub fn page_max_bytes() -> u64 {
    env_u64(PAGE_BYTES_ENV).unwrap_or(MAX_PAGE_BYTES)
}

/// Why a page body was cut (carried inside an `io::Error` through the scanners).
#[derive(Debug)]
struct PageLimit(String);

impl std::fmt::Display for PageLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PageLimit {}

/// A page body read within its deadline and byte cap.
pub struct PageBody<R> {
    inner: R,
    deadline: Instant,
    allowed: Duration,
    read: u64,
    max_bytes: u64,
}

impl<R: Read> PageBody<R> {
    pub fn new(inner: R, deadline: Duration, max_bytes: u64) -> Self {
        PageBody {
            inner,
            deadline: Instant::now()
                .checked_add(deadline)
                .unwrap_or_else(Instant::now),
            allowed: deadline,
            read: 0,
            max_bytes,
        }
    }

    fn late(&self) -> std::io::Error {
        std::io::Error::other(PageLimit(format!(
            "the page was not complete within its deadline of {} s ({} bytes read)",
            self.allowed.as_secs(),
            self.read
        )))
    }
}

impl<R: Read> Read for PageBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(self.late());
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.read = self.read.saturating_add(n as u64);
                if self.read > self.max_bytes {
                    return Err(std::io::Error::other(PageLimit(format!(
                        "the page is larger than {} bytes",
                        self.max_bytes
                    ))));
                }
                Ok(n)
            }
            // ureq's own total body timeout ends the read at the deadline.
            Err(_) if Instant::now() >= self.deadline => Err(self.late()),
            Err(e) => Err(e),
        }
    }
}

/// A failed body read as our error: cut by a page limit → `Malformed` (the server's
/// fault), anything else → `Transport`.
pub fn body_error(e: std::io::Error) -> Error {
    if let Some(limit) = e.get_ref().and_then(|i| i.downcast_ref::<PageLimit>()) {
        return Error::Malformed(limit.0.clone());
    }
    Error::Transport(format!("reading the response body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_deadline_is_ten_timeouts_or_ten_minutes() {
        if std::env::var_os(PAGE_DEADLINE_ENV).is_some() {
            return;
        }
        assert_eq!(page_deadline(Duration::from_secs(10)), MIN_PAGE_DEADLINE);
        assert_eq!(
            page_deadline(Duration::from_secs(120)),
            Duration::from_secs(1200)
        );
    }

    #[test]
    fn a_body_over_the_cap_is_malformed() {
        let body = vec![b'x'; 1000];
        let mut r = PageBody::new(&body[..], Duration::from_secs(60), 100);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).map_err(body_error);
        assert!(
            matches!(&e, Err(Error::Malformed(m)) if m.contains("larger than 100 bytes")),
            "{e:?}"
        );
        let mut r = PageBody::new(&body[..], Duration::from_secs(60), 1000);
        assert_eq!(r.read_to_end(&mut out).map_err(body_error).ok(), Some(1000));
    }

    #[test]
    fn a_body_past_its_deadline_is_malformed() {
        let body = [b'x'; 10];
        let mut r = PageBody::new(&body[..], Duration::ZERO, 100);
        let mut buf = [0u8; 4];
        let e = r.read(&mut buf).map_err(body_error);
        assert!(
            matches!(&e, Err(Error::Malformed(m)) if m.contains("deadline")),
            "{e:?}"
        );
        let other = body_error(std::io::Error::other("reset"));
        assert!(matches!(other, Error::Transport(_)));
    }
}
