//! `syslog` output: RFC 5424 messages, octet-counted (RFC 6587), over TLS (RFC 5425)
//! or plain TCP, to any receiver (rsyslog, syslog-ng).
//!
//! Owns: framing each JSON line as `LEN SP <14>1 TIMESTAMP HOSTNAME TAG - - - {JSON}`,
//! LEN counting the message bytes (no trailing newline), TIMESTAMP RFC 3339 UTC, TAG the
//! configured APP-NAME. Must not: connect or confirm by itself (`tls::Link` does).

use std::io::Write;

use super::framed::{FramedSink, Framing};
use super::tls::Link;
use super::{Timeouts, DEFAULT_TAG};
use crate::config::TlsOutput;
use crate::error::{Error, Result};

/// RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters.
const APP_NAME_MAX: usize = 48;

/// RFC 5424 with octet counting (the APP-NAMEs live in the sink).
pub struct Syslog;

impl Framing for Syslog {
    fn prefix(&self, now: i64, host: &str, tag: &str) -> Vec<u8> {
        prefix(now, host, tag)
    }
    fn frame(&self, prefix: &[u8], json_lines: &[u8], out: &mut Vec<u8>) {
        frame(prefix, json_lines, out);
    }
}

pub type SyslogSink = FramedSink<Syslog>;

impl FramedSink<Syslog> {
    pub fn open(name: &str, cfg: &TlsOutput, timeouts: Timeouts) -> Result<Self> {
        let tag = app_name(name, &cfg.tag)?;
        let detail_tag = detail_app_name(name, &cfg.detail_tag)?;
        Ok(FramedSink::new(
            name,
            Link::new(name, cfg, timeouts)?,
            Syslog,
            (tag, detail_tag),
        ))
    }
}

/// The configured tag (or the default) checked as an RFC 5424 APP-NAME; shared with
/// the `relp` output, which sends the same message.
pub fn app_name(name: &str, tag: &str) -> Result<String> {
    let tag = if tag.is_empty() { DEFAULT_TAG } else { tag };
    if tag.len() > APP_NAME_MAX || !tag.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Output {
            message: format!(
                "output {name}: tag {tag:?} is not a syslog APP-NAME — use 1 to \
                 {APP_NAME_MAX} printable ASCII characters without spaces"
            ),
            transient: false,
        });
    }
    Ok(tag.to_owned())
}

/// The configured `detail_tag` (or [`super::DEFAULT_DETAIL_TAG`]) checked as an APP-NAME.
pub fn detail_app_name(name: &str, tag: &str) -> Result<String> {
    app_name(
        name,
        if tag.is_empty() {
            super::DEFAULT_DETAIL_TAG
        } else {
            tag
        },
    )
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
        let len = prefix.len().saturating_add(line.len());
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{len} ");
        out.extend_from_slice(prefix);
        out.extend_from_slice(line);
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
