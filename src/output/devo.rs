//! `devo_platform` output: Devo's line format over one persistent TLS connection.
//!
//! Owns: framing each JSON line as
//! `<14>Mmm dd HH:MM:SS HOSTNAME cloud.office365.messagetracing: {JSON}\n` (priority 14 =
//! user.info, RFC 3164 stamp in UTC, day padded with a space), the format of Devo's own
//! SDK sender. Must not: connect or confirm by itself (`tls::Link` does), or flush per
//! event.

use super::tls::{host_name, Link};
use super::{Sink, SinkStats, Timeouts};
use crate::config::TlsOutput;
use crate::error::Result;

/// Devo table / tag of message trace events.
pub const DEVO_TAG: &str = "cloud.office365.messagetracing";

pub struct DevoSink {
    name: String,
    link: Link,
    tag: String,
    /// `<14>Mmm dd HH:MM:SS HOST TAG: ` for `prefix_secs`; rebuilt when the second changes.
    prefix: Vec<u8>,
    prefix_secs: i64,
    sent_total: u64,
}

impl DevoSink {
    pub fn open(name: &str, cfg: &TlsOutput, timeouts: Timeouts) -> Result<Self> {
        let tag = if cfg.tag.is_empty() {
            DEVO_TAG.to_owned()
        } else {
            cfg.tag.clone()
        };
        Ok(DevoSink {
            name: name.to_owned(),
            link: Link::new(name, cfg, timeouts)?,
            tag,
            prefix: Vec::new(),
            prefix_secs: i64::MIN,
            sent_total: 0,
        })
    }
}

/// Append one Devo line per JSON line of `json_lines` to `out`, all with `prefix`.
/// Empty lines are skipped; a missing final newline is supplied.
pub fn frame(prefix: &[u8], json_lines: &[u8], out: &mut Vec<u8>) {
    for line in json_lines.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        out.extend_from_slice(prefix);
        out.extend_from_slice(line);
        out.push(b'\n');
    }
}

/// `<14>{rfc3164(now)} {host} {tag}: `.
pub fn prefix(now: i64, host: &str, tag: &str) -> Vec<u8> {
    format!("<14>{} {host} {tag}: ", crate::time::rfc3164(now)).into_bytes()
}

impl Sink for DevoSink {
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
            self.prefix = prefix(now, host_name(), &self.tag);
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
            frame(&self.prefix, head, self.link.out());
            self.link.push_if_full()?;
            rest = tail;
        }
        self.sent_total = self.sent_total.saturating_add(count);
        Ok(())
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
        Some(i) => want + i + 1,
        None => buf.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devo_line_is_byte_exact() {
        let t = crate::time::parse_iso("2026-01-05T03:04:05Z").unwrap().secs;
        let p = prefix(t, "host1", DEVO_TAG);
        let mut out = Vec::new();
        frame(&p, b"{\"a\":1}\n{\"b\":\"x y\"}\n\n{\"c\":3}", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<14>Jan  5 03:04:05 host1 cloud.office365.messagetracing: {\"a\":1}\n\
             <14>Jan  5 03:04:05 host1 cloud.office365.messagetracing: {\"b\":\"x y\"}\n\
             <14>Jan  5 03:04:05 host1 cloud.office365.messagetracing: {\"c\":3}\n"
        );
    }

    #[test]
    fn chunks_end_on_line_boundaries() {
        let b = b"aaaa\nbbbb\ncccc\n";
        assert_eq!(chunk_end(b, 100), b.len());
        assert_eq!(chunk_end(b, 3), 5);
        assert_eq!(chunk_end(b, 5), 10);
        assert_eq!(chunk_end(b"aaaaaa", 2), 6);
    }
}
