//! Outputs: where events go.
//!
//! Owns: the `Sink` trait shared with the puller, `open` (config -> boxed sink), the
//! reconnect `backoff` curve, timeouts, and the one place where sinks log connection
//! state. Each sink lives in its own file (stdout, file, devo, syslog); the persistent
//! TLS/TCP connection both network sinks share lives in `tls.rs`. Must not: pull, parse,
//! checkpoint or retry by itself — the caller decides when to reconnect and resend.

pub mod devo;
pub mod file;
pub mod framed;
pub mod pem;
pub mod relp;
pub mod stdout;
pub mod syslog;
pub mod tls;

use std::time::Duration;

use crate::config::{OutputConfig, OutputKind};
use crate::error::Result;

/// Counters for the sender statistics line (SPEC §7).
#[derive(Debug, Clone, Default)]
pub struct SinkStats {
    pub sent_total: u64,
    pub connected: bool,
    pub queued_bytes: u64,
}

/// One output. Events arrive as JSON lines (`{...}\n` each, no raw newline inside);
/// the sink frames each line in its wire format.
pub trait Sink: Send {
    fn name(&self) -> &str;
    /// Connect if not connected. A transient error means: retry later, pulling pauses.
    fn ensure_ready(&mut self) -> Result<()>;
    /// Write a batch of JSON lines. May buffer. On error the connection is dropped and
    /// `generation()` will differ after the next `ensure_ready`.
    fn write_events(&mut self, json_lines: &[u8], count: u64) -> Result<()>;
    /// Flush and confirm everything written so far is durable (file: fsync) or
    /// acknowledged by the peer's TCP (TLS outputs: send queue drained).
    fn confirm(&mut self) -> Result<()>;
    /// Increments each time a (re)connection happens: a page written under an older
    /// generation may be lost and must be sent again.
    fn generation(&self) -> u64;
    fn stats(&self) -> SinkStats;
}

/// Open the sink a config entry describes. Local problems (certificate or key file
/// missing, not PEM, key not matching the certificate) fail here with `Error::Tls`;
/// nothing connects yet — the first `ensure_ready` does.
pub fn open(cfg: &OutputConfig) -> Result<Box<dyn Sink>> {
    open_with(cfg, Timeouts::default())
}

/// `open` with explicit timeouts (tests, `check`).
pub fn open_with(cfg: &OutputConfig, timeouts: Timeouts) -> Result<Box<dyn Sink>> {
    Ok(match &cfg.kind {
        OutputKind::Stdout => Box::new(stdout::StdoutSink::new(&cfg.name)),
        OutputKind::File { path } => Box::new(file::FileSink::open(&cfg.name, path)?),
        OutputKind::Devo(t) => Box::new(devo::DevoSink::open(&cfg.name, t, timeouts)?),
        OutputKind::Syslog(t) => Box::new(syslog::SyslogSink::open(&cfg.name, t, timeouts)?),
    })
}

/// Time limits of a network sink.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// One blocked socket write (receiver not reading, window full).
    pub io: Duration,
    /// `confirm`: how long the peer may take to acknowledge every byte written.
    pub drain: Duration,
}

/// Connect + handshake limit: a receiver that does not answer in this long is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A single write blocked this long means the receiver stopped reading.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait in `confirm` for the peer's TCP to acknowledge everything sent.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            io: IO_TIMEOUT,
            drain: DRAIN_TIMEOUT,
        }
    }
}

/// Ceiling of the reconnect backoff: a receiver back after an outage is found within this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// First reconnect wait.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);

/// Wait before reconnect attempt `attempt` (0 = first retry): exponential from
/// `BACKOFF_BASE`, capped at `BACKOFF_MAX`, with "equal jitter" (half fixed, half
/// random) so that many collectors restarted together do not reconnect in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(BACKOFF_MAX);
    let half = exp / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    let r = if jitter_ms == 0 {
        0
    } else {
        random_u64() % (jitter_ms + 1)
    };
    half + Duration::from_millis(r)
}

/// Cheap randomness for jitter only (no crypto need): clock nanos through splitmix64.
fn random_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64 ^ d.as_secs());
    let mut z = nanos.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Level of a connection-state log line.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    Info,
    Warning,
}

/// The one place sinks log (connection state changes, once each). Swap for the
/// crate logger when it lands.
pub fn log(level: Level, msg: &str) {
    let l = match level {
        Level::Info => crate::log::Level::Info,
        Level::Warning => crate::log::Level::Warning,
    };
    crate::log::write(l, "OutputProcess::OutputSender", format_args!("{msg}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for a in 0..100 {
            let d = backoff(a);
            assert!(d <= BACKOFF_MAX, "{a}: {d:?}");
            let exp = BACKOFF_BASE
                .saturating_mul(1u32.checked_shl(a.min(20)).unwrap_or(u32::MAX))
                .min(BACKOFF_MAX);
            assert!(d >= exp / 2, "{a}: {d:?}");
        }
        assert!(backoff(0) <= BACKOFF_BASE);
        assert!(backoff(30) >= BACKOFF_MAX / 2);
    }
}
