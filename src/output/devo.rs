//! `devo_platform` output: Devo's line format over one persistent TLS connection.
//!
//! Owns: framing each JSON line as
//! `<14>Mmm dd HH:MM:SS HOSTNAME cloud.office365.messagetracing: {JSON}\n` (priority 14 =
//! user.info, RFC 3164 stamp in UTC, day padded with a space), the format of Devo's own
//! SDK sender. Must not: connect or confirm by itself (`tls::Link` does), or flush per
//! event.

use super::framed::{FramedSink, Framing};
use super::tls::Link;
use super::{Timeouts, DEFAULT_DETAIL_TAG, DEFAULT_TAG};
use crate::config::TlsOutput;
use crate::error::Result;

/// Devo's line format (the tags live in the sink).
pub struct Devo;

impl Framing for Devo {
    fn prefix(&self, now: i64, host: &str, tag: &str) -> Vec<u8> {
        prefix(now, host, tag)
    }
    fn frame(&self, prefix: &[u8], json_lines: &[u8], out: &mut Vec<u8>) {
        frame(prefix, json_lines, out);
    }
}

pub type DevoSink = FramedSink<Devo>;

impl FramedSink<Devo> {
    pub fn open(name: &str, cfg: &TlsOutput, timeouts: Timeouts) -> Result<Self> {
        let tag = if cfg.tag.is_empty() {
            DEFAULT_TAG.to_owned()
        } else {
            cfg.tag.clone()
        };
        let detail_tag = if cfg.detail_tag.is_empty() {
            DEFAULT_DETAIL_TAG.to_owned()
        } else {
            cfg.detail_tag.clone()
        };
        Ok(FramedSink::new(
            name,
            Link::new(name, cfg, timeouts)?,
            Devo,
            (tag, detail_tag),
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devo_line_is_byte_exact() {
        let t = crate::time::parse_iso("2026-01-05T03:04:05Z").unwrap().secs;
        let p = prefix(t, "host1", DEFAULT_TAG);
        let mut out = Vec::new();
        frame(&p, b"{\"a\":1}\n{\"b\":\"x y\"}\n\n{\"c\":3}", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<14>Jan  5 03:04:05 host1 cloud.office365.messagetracing: {\"a\":1}\n\
             <14>Jan  5 03:04:05 host1 cloud.office365.messagetracing: {\"b\":\"x y\"}\n\
             <14>Jan  5 03:04:05 host1 cloud.office365.messagetracing: {\"c\":3}\n"
        );
    }
}
