//! Outputs: where events go.
//!
//! Owns: the `Sink` trait (what one output does with a batch of JSON lines and what
//! "confirm" promises), `open` (config -> boxed sink), the sinks' timeouts and the tag
//! constant. Each sink lives in its own file (stdout, file, devo, syslog); the persistent
//! TLS/TCP connection the network sinks share lives in `tls.rs`. Must not: pull, parse,
//! checkpoint, sleep or retry by itself — the caller (`delivery`, with run.rs's backoff)
//! decides when to reconnect and what to resend.

pub mod delivery;
pub mod devo;
pub mod file;
pub mod framed;
mod link_io;
pub mod pem;
pub mod relp;
pub mod relp_sink;
pub mod stdout;
pub mod syslog;
pub mod tls;

use std::time::Duration;

use crate::config::{OutputConfig, OutputKind};
use crate::error::Result;

/// Tag of message trace events: the Devo table, the syslog APP-NAME, unless configured.
pub const DEFAULT_TAG: &str = "cloud.office365.messagetracing";

/// Tag of trace detail events (SPEC §4), unless an output sets `detail_tag`.
pub const DEFAULT_DETAIL_TAG: &str = "my.app.office365.messagetracedetail";

/// Which events a batch carries: each goes out under its own tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stream {
    /// Message trace rows (`tag`).
    #[default]
    Trace,
    /// Trace detail events (`detail_tag`).
    Detail,
}

/// Counters for the sender statistics line (SPEC §7).
#[derive(Debug, Clone, Default)]
pub struct SinkStats {
    pub sent_total: u64,
    pub connected: bool,
    pub queued_bytes: u64,
}

/// One output. Events arrive as JSON lines (`{...}\n` each, no raw newline inside);
/// the sink frames each line in its wire format. A sink is driven by one writer thread
/// (`delivery`), so it may block in any call up to its own timeouts. An acknowledging
/// protocol (RELP) fits as is: `write_events` sends (and may read acknowledgements to
/// keep its window bounded), `confirm` waits for the acknowledgement of everything sent.
pub trait Sink: Send {
    fn name(&self) -> &str;
    /// Connect if not connected. A transient error means: retry later, pulling pauses.
    fn ensure_ready(&mut self) -> Result<()>;
    /// Write a batch of JSON lines. May buffer. On error the connection is dropped and
    /// `generation()` will differ after the next `ensure_ready`.
    fn write_events(&mut self, json_lines: &[u8], count: u64) -> Result<()>;
    /// The events of the following `write_events` calls are of `stream` (a tagging
    /// sink switches its tag; the others ignore it).
    fn set_stream(&mut self, _stream: Stream) {}
    /// Ok only when the receiver has taken every event written so far: durable (file:
    /// fsync), flushed (stdout), acknowledged by the peer's TCP (devo_platform, syslog:
    /// send queue drained) or by the protocol (RELP: `rsp 200` for every transaction).
    fn confirm(&mut self) -> Result<()>;
    /// Increments each time a (re)connection happens: a page written under an older
    /// generation may be lost and must be sent again. A sink that resends by itself
    /// everything its receiver did not acknowledge (RELP) loses nothing at a reconnect
    /// and may keep its generation.
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
        OutputKind::File {
            path,
            follow_symlinks,
        } => Box::new(file::FileSink::open(&cfg.name, path, *follow_symlinks)?),
        OutputKind::Devo(t) => Box::new(devo::DevoSink::open(&cfg.name, t, timeouts)?),
        OutputKind::Syslog(t) => Box::new(syslog::SyslogSink::open(&cfg.name, t, timeouts)?),
        OutputKind::Relp(t) => Box::new(relp_sink::RelpSink::open(&cfg.name, t, timeouts)?),
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
