//! Outputs: where events go.
//!
//! CONTRACT SKELETON — the outputs helper implements the sinks. The `Sink` trait is
//! shared with the puller: extend it if needed, keep its meaning.

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

/// Open the sink an output config describes.
pub fn open(cfg: &crate::config::OutputConfig) -> Result<Box<dyn Sink>> {
    let _ = cfg;
    unimplemented!()
}
