//! The sink both line protocols share: a cached per-second prefix, each JSON line
//! framed into the one `tls::Link` buffer in slices near `FLUSH_AT`, counters.
//!
//! Owns: the `Sink` behaviour of `devo_platform` and `syslog`, which differ only in
//! their prefix and framing (`Framing`). Must not: connect, confirm or retry by itself
//! (`tls::Link` does), or flush per event.

use super::tls::{host_name, Link};
use super::{Sink, SinkStats};
use crate::error::Result;

/// How one protocol frames a JSON line.
pub trait Framing: Send {
    /// The bytes before each event tagged `tag`, for the second `now`.
    fn prefix(&self, now: i64, host: &str, tag: &str) -> Vec<u8>;
    /// Append one framed message per JSON line of `json_lines` to `out`.
    fn frame(&self, prefix: &[u8], json_lines: &[u8], out: &mut Vec<u8>);
}

/// A line-protocol sink over one persistent connection.
pub struct FramedSink<F: Framing> {
    pub(crate) name: String,
    pub(crate) link: Link,
    pub(crate) framing: F,
    /// Tags of trace rows and of detail events.
    tags: (String, String),
    stream: super::Stream,
    /// The prefix for `prefix_secs`; rebuilt when the second changes.
    prefix: Vec<u8>,
    prefix_secs: i64,
    sent_total: u64,
}

impl<F: Framing> FramedSink<F> {
    pub(crate) fn new(name: &str, link: Link, framing: F, tags: (String, String)) -> Self {
        FramedSink {
            name: name.to_owned(),
            link,
            framing,
            tags,
            stream: super::Stream::Trace,
            prefix: Vec::new(),
            prefix_secs: i64::MIN,
            sent_total: 0,
        }
    }
}

impl<F: Framing> Sink for FramedSink<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn ensure_ready(&mut self) -> Result<()> {
        self.link.ensure_ready()
    }

    fn write_events(&mut self, json_lines: &[u8], count: u64) -> Result<()> {
        self.link.require_connected()?;
        let now = crate::time::now();
        if now != self.prefix_secs {
            let tag = match self.stream {
                super::Stream::Trace => &self.tags.0,
                super::Stream::Detail => &self.tags.1,
            };
            self.prefix = self.framing.prefix(now, host_name(), tag);
            self.prefix_secs = now;
        }
        // Frame in slices so the buffer stays near FLUSH_AT whatever the batch size.
        let mut rest = json_lines;
        while !rest.is_empty() {
            let room = super::tls::FLUSH_AT
                .saturating_sub(self.link.out().len())
                .max(1);
            let cut = chunk_end(rest, room);
            let (head, tail) = rest.split_at(cut);
            self.framing.frame(&self.prefix, head, self.link.out());
            self.link.push_if_full()?;
            rest = tail;
        }
        self.sent_total = self.sent_total.saturating_add(count);
        Ok(())
    }

    fn set_stream(&mut self, stream: super::Stream) {
        if stream != self.stream {
            self.stream = stream;
            self.prefix_secs = i64::MIN;
        }
    }

    fn confirm(&mut self) -> Result<()> {
        self.link.confirm()
    }

    fn generation(&self) -> u64 {
        self.link.generation()
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            sent_total: self.sent_total,
            connected: self.link.connected(),
            queued_bytes: self.link.queued_bytes(),
        }
    }
}

/// End of the first run of whole lines holding at least `want` bytes (or all of `buf`).
pub(crate) fn chunk_end(buf: &[u8], want: usize) -> usize {
    if buf.len() <= want {
        return buf.len();
    }
    match buf
        .get(want..)
        .and_then(|t| t.iter().position(|&b| b == b'\n'))
    {
        Some(i) => want.saturating_add(i).saturating_add(1).min(buf.len()),
        None => buf.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_on_line_boundaries() {
        let b = b"aaaa\nbbbb\ncccc\n";
        assert_eq!(chunk_end(b, 100), b.len());
        assert_eq!(chunk_end(b, 3), 5);
        assert_eq!(chunk_end(b, 5), 10);
        assert_eq!(chunk_end(b"aaaaaa", 2), 6);
    }
}
