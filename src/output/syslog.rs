//! `syslog` output: RFC 5424 messages, octet-counted (RFC 6587), over TLS (RFC 5425)
//! or plain TCP, to any receiver (rsyslog, syslog-ng).
//!
//! Owns: framing each JSON line as `LEN SP <14>1 TIMESTAMP HOSTNAME TAG - - - {JSON}`,
//! LEN counting the message bytes (no trailing newline), TIMESTAMP RFC 3339 UTC, TAG the
//! configured APP-NAME. Must not: connect or confirm by itself (`tls::Link` does).

use std::io::Write;

use super::tls::{host_name, Link};
use super::{Sink, SinkStats, Timeouts};
use crate::config::TlsOutput;
use crate::error::{Error, Result};

/// RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters.
const APP_NAME_MAX: usize = 48;
/// Tag used when none is configured.
pub const DEFAULT_TAG: &str = "cloud.office365.messagetracing";

pub struct SyslogSink {
    name: String,
    link: Link,
    tag: String,
    /// `<14>1 TIMESTAMP HOST TAG - - - ` for `prefix_secs`.
    prefix: Vec<u8>,
    prefix_secs: i64,
    sent_total: u64,
}

impl SyslogSink {
    pub fn open(name: &str, cfg: &TlsOutput, timeouts: Timeouts) -> Result<Self> {
        let tag = if cfg.tag.is_empty() {
            DEFAULT_TAG
        } else {
            &cfg.tag
        };
        if tag.len() > APP_NAME_MAX || !tag.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Output {
                message: format!(
                    "output {name}: tag {tag:?} is not a syslog APP-NAME — use 1 to \
                     {APP_NAME_MAX} printable ASCII characters without spaces"
                ),
                transient: false,
            });
        }
        Ok(SyslogSink {
            name: name.to_owned(),
            link: Link::new(name, cfg, timeouts)?,
            tag: tag.to_owned(),
            prefix: Vec::new(),
            prefix_secs: i64::MIN,
            sent_total: 0,
        })
    }
}

/// `<14>1 {rfc3339(now)} {host} {tag} - - - `.
pub fn prefix(now: i64, host: &str, tag: &str) -> Vec<u8> {
    format!("<14>1 {} {host} {tag} - - - ", crate::time::rfc3339(now)).into_bytes()
}

/// Append one octet-counted message per JSON line to `out`. Empty lines are skipped.
pub fn frame(prefix: &[u8], json_lines: &[u8], out: &mut Vec<u8>) {
    for line in json_lines.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let len = prefix.len() + line.len();
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{len} ");
        out.extend_from_slice(prefix);
        out.extend_from_slice(line);
    }
}

impl Sink for SyslogSink {
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
        let mut rest = json_lines;
        while !rest.is_empty() {
            let room = super::tls::FLUSH_AT
                .saturating_sub(self.link.out().len())
                .max(1);
            let cut = super::devo::chunk_end(rest, room);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_counted_rfc5424() {
        let t = crate::time::parse_iso("2026-11-24T10:00:00Z").unwrap().secs;
        let p = prefix(t, "h", DEFAULT_TAG);
        let mut out = Vec::new();
        frame(&p, "{\"s\":\"é\"}\n{}\n".as_bytes(), &mut out);
        let m1 = "<14>1 2026-11-24T10:00:00Z h cloud.office365.messagetracing - - - {\"s\":\"é\"}";
        let m2 = "<14>1 2026-11-24T10:00:00Z h cloud.office365.messagetracing - - - {}";
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{} {m1}{} {m2}", m1.len(), m2.len())
        );
        assert!(DEFAULT_TAG.len() <= APP_NAME_MAX);
    }
}
