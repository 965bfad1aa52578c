//! `stdout` output: JSON lines as they come, one event per line.
//!
//! Owns: a buffered handle on the process's stdout. `confirm` flushes it. Must not:
//! reframe or alter the lines.

use std::io::{BufWriter, Stdout, Write};

use super::{Sink, SinkStats};
use crate::error::{Error, Result};

/// Buffer of the stdout writer: big enough that a page is a handful of writes.
const STDOUT_BUFFER: usize = 64 * 1024;

pub struct StdoutSink {
    name: String,
    out: BufWriter<Stdout>,
    sent_total: u64,
}

impl StdoutSink {
    pub fn new(name: &str) -> Self {
        StdoutSink {
            name: name.to_owned(),
            out: BufWriter::with_capacity(STDOUT_BUFFER, std::io::stdout()),
            sent_total: 0,
        }
    }

    fn fail(&self, e: std::io::Error) -> Error {
        Error::Output {
            message: format!("output {}: cannot write to stdout: {e}", self.name),
            transient: false,
        }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn ensure_ready(&mut self) -> Result<()> {
        Ok(())
    }

    fn write_events(&mut self, json_lines: &[u8], count: u64) -> Result<()> {
        self.out.write_all(json_lines).map_err(|e| self.fail(e))?;
        self.sent_total = self.sent_total.saturating_add(count);
        Ok(())
    }

    fn confirm(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.fail(e))
    }

    fn generation(&self) -> u64 {
        0
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            sent_total: self.sent_total,
            connected: true,
            queued_bytes: self.out.buffer().len() as u64,
        }
    }
}
