//! syslog-ng as a second real receiver of the `syslog` output: its `syslog()` source over
//! TLS with `peer-verify(required-trusted)`, octet-counted RFC 5424. syslog-ng runs from
//! a private unpacked copy (tests/support/install-receivers.sh), never as the system's
//! daemon; without it the tests print a skip note.

use std::collections::HashMap;
use std::time::Duration;

use msgtrace::config::{OutputConfig, OutputKind, TlsOutput};
use msgtrace::output::{self, Timeouts};
use msgtrace::Error;

use crate::receivers::{free_port, text_lines, Pki, SyslogNg, TempDir};

const WAIT: Duration = Duration::from_secs(20);
const TAG: &str = "cloud.office365.messagetracing";

fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        io: Duration::from_secs(5),
        drain: Duration::from_secs(5),
    }
}

fn syslog_cfg(pki: &Pki, port: u16) -> OutputConfig {
    OutputConfig {
        name: "syslog_ng".into(),
        kind: OutputKind::Syslog(TlsOutput {
            address: "127.0.0.1".into(),
            port,
            tls: true,
            chain: Some(pki.path("ca.pem")),
            cert: Some(pki.path("client.pem")),
            key: Some(pki.path("client.key")),
            tag: TAG.into(),
            detail_tag: String::new(),
        }),
    }
}

/// `n` JSON lines numbered from `from`: non-ASCII, escaped quotes, a backslash, and
/// sizes from 100 bytes to 20 KiB, so that framing and lengths are exercised.
fn events(from: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in from..from + n {
        let pad = "x".repeat((i * 7919) % (20 * 1024));
        out.extend_from_slice(
            format!(
                "{{\"MessageId\":\"<m{i}@contoso.com>\",\"Subject\":\"Grüße \\\"{i}\\\" a\\\\b {pad}\",\
                 \"Status\":\"Delivered\",\"MessageTraceId\":\"id-{i:08}\"}}\n"
            )
            .as_bytes(),
        );
    }
    out
}

#[test]
fn syslog_over_tls_to_syslog_ng_every_event_once_byte_exact() {
    let dir = TempDir::new("syslog-ng");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(ng) = SyslogNg::start(dir.path(), port) else {
        crate::skip!("syslog-ng is missing (tests/support/install-receivers.sh failed)")
    };
    let mut sink = output::open_with(&syslog_cfg(&pki, port), quick()).unwrap();
    sink.ensure_ready().unwrap();
    let t0 = msgtrace::time::now();
    let mut sent = Vec::new();
    for b in 0..4 {
        let batch = events(b * 250, 250);
        sink.write_events(&batch, 250).unwrap();
        sink.confirm().unwrap();
        sent.extend(text_lines(&batch));
    }
    let t1 = msgtrace::time::now();
    assert_eq!(sink.generation(), 1, "one connection");
    let got = ng.wait_lines(sent.len(), WAIT);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in &got {
        *counts.entry(g.as_str()).or_default() += 1;
    }
    for s in &sent {
        assert_eq!(
            counts.get(s.as_str()),
            Some(&1),
            "not exactly once: {s:.120}"
        );
    }
    assert_eq!(got, sent, "every event once, in order, byte-exact");
    // The whole message as syslog-ng received it: our RFC 5424 header, then the JSON.
    let raw = std::fs::read_to_string(dir.path().join("raw.log")).unwrap();
    let host = msgtrace::output::tls::host_name();
    let stamps: Vec<String> = (t0..=t1).map(msgtrace::time::rfc3339).collect();
    let raw: Vec<&str> = raw.lines().collect();
    assert_eq!(raw.len(), sent.len());
    for (r, json) in raw.iter().zip(&sent) {
        let ok = stamps
            .iter()
            .any(|s| *r == format!("<14>1 {s} {host} {TAG} - - - {json}"));
        assert!(ok, "not our RFC 5424 message: {r:.160}");
    }
}

#[test]
fn syslog_ng_requires_our_client_certificate() {
    let dir = TempDir::new("syslog-ng-nocert");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(ng) = SyslogNg::start(dir.path(), port) else {
        crate::skip!("syslog-ng is missing (tests/support/install-receivers.sh failed)")
    };
    let mut cfg = syslog_cfg(&pki, port);
    if let OutputKind::Syslog(t) = &mut cfg.kind {
        t.cert = None;
        t.key = None;
    }
    let mut sink = output::open_with(&cfg, quick()).unwrap();
    let e = sink
        .ensure_ready()
        .and_then(|()| sink.write_events(&events(0, 3), 3))
        .and_then(|()| sink.confirm())
        .unwrap_err();
    assert!(
        matches!(e.root(), Error::Tls(_)) && e.to_string().contains("client certificate"),
        "{e}"
    );
    assert!(ng.wait_lines(1, Duration::from_millis(300)).is_empty());
}
