//! Outputs against real receivers: rsyslogd (syslog output, RFC 5425/6587) and an
//! in-process raw TLS receiver (Devo line format, byte-exact), plus failure cases with
//! the message a user sees.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use msgtrace::config::{OutputConfig, OutputKind, TlsOutput};
use msgtrace::output::devo::DevoSink;
use msgtrace::output::syslog::SyslogSink;
use msgtrace::output::{self, Sink, Timeouts};
use msgtrace::Error;

use crate::receivers::{free_port, Pki, RawOptions, RawReceiver, Rsyslog, TempDir};

const WAIT: Duration = Duration::from_secs(20);

fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        io: Duration::from_secs(5),
        drain: Duration::from_secs(5),
    }
}

fn tls_cfg(pki: &Pki, port: u16) -> TlsOutput {
    pki.client_output(port, "cloud.office365.messagetracing")
}

/// `n` JSON lines of about 600 bytes, numbered from `from`, with non-ASCII and escapes.
fn events(from: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in from..from + n {
        let pad = "x".repeat(400);
        out.extend_from_slice(
            format!(
                "{{\"Organization\":\"contoso.onmicrosoft.com\",\"MessageId\":\"<m{i}@contoso.com>\",\
                 \"Received\":\"2026-11-24T10:00:00.1234567Z\",\"SenderAddress\":\"a@contoso.com\",\
                 \"RecipientAddress\":\"b{i}@fabrikam.com\",\"Subject\":\"Grüße \\\"{i}\\\" {pad}\",\
                 \"Status\":\"Delivered\",\"Size\":{i},\"MessageTraceId\":\"id-{i:08}\"}}\n"
            )
            .as_bytes(),
        );
    }
    out
}

fn json_lines(b: &[u8]) -> Vec<String> {
    String::from_utf8(b.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn expect_tls_err(e: Error, needle: &str) {
    let s = e.to_string();
    assert!(s.contains(needle), "expected {needle:?} in: {s}");
    assert!(
        matches!(e.root(), Error::Tls(_)),
        "expected a permanent Error::Tls: {e:?}"
    );
}

#[test]
fn devo_lines_arrive_byte_exact_over_one_connection() {
    let dir = TempDir::new("devo");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let mut sink = DevoSink::open("devo_1", &tls_cfg(&pki, rx.port), quick()).unwrap();
    sink.ensure_ready().unwrap();
    assert_eq!(sink.generation(), 1);
    let t0 = msgtrace::time::now();
    let mut sent = Vec::new();
    for b in 0..5 {
        let batch = events(b * 300, 300);
        sink.write_events(&batch, 300).unwrap();
        sent.extend(json_lines(&batch));
    }
    sink.confirm().unwrap();
    let t1 = msgtrace::time::now();
    assert_eq!(sink.stats().sent_total, 1500);
    assert!(sink.stats().connected);
    let total: usize = sent.iter().map(|l| l.len() + 80).sum();
    let conns = rx.wait_bytes(total.saturating_sub(1500 * 30), WAIT);
    std::thread::sleep(Duration::from_millis(100));
    let conns = if conns.len() == 1 {
        rx.connections()
    } else {
        conns
    };
    assert_eq!(conns.len(), 1, "one persistent connection");
    let got = String::from_utf8(conns[0].clone()).unwrap();
    assert!(got.ends_with('\n'));
    let host = msgtrace::output::tls::host_name();
    let stamps: Vec<String> = (t0..=t1).map(msgtrace::time::rfc3164).collect();
    let lines: Vec<&str> = got.split_terminator('\n').collect();
    assert_eq!(lines.len(), sent.len());
    for (line, json) in lines.iter().zip(&sent) {
        let ok = stamps
            .iter()
            .any(|s| *line == format!("<14>{s} {host} cloud.office365.messagetracing: {json}"));
        assert!(ok, "line not in Devo format: {line}");
    }
}

#[test]
fn syslog_over_tls_to_rsyslog_every_event_once() {
    let dir = TempDir::new("rsys-tls");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(rs) = Rsyslog::start(dir.path(), port, true) else {
        crate::skip!("rsyslogd is missing (tests/support/install-receivers.sh failed)")
    };
    let mut sink = SyslogSink::open("sys", &tls_cfg(&pki, port), quick()).unwrap();
    sink.ensure_ready().unwrap();
    let mut sent = Vec::new();
    for b in 0..4 {
        let batch = events(b * 250, 250);
        sink.write_events(&batch, 250).unwrap();
        sent.extend(json_lines(&batch));
    }
    sink.confirm().unwrap();
    let got = rs.wait_lines(sent.len(), WAIT);
    assert_eq!(sink.generation(), 1);
    assert_exactly_once(&got, &sent);
    // The raw form is RFC 5424 with our header.
    let raw = std::fs::read_to_string(dir.path().join("raw.log")).unwrap();
    let first = raw.lines().next().unwrap();
    assert!(first.starts_with("<14>1 20"), "{first}");
    let host = msgtrace::output::tls::host_name();
    assert!(
        first.contains(&format!(
            "Z {host} cloud.office365.messagetracing - - - {{\"Organization\""
        )),
        "{first}"
    );
}

#[test]
fn syslog_over_plain_tcp_to_rsyslog() {
    let dir = TempDir::new("rsys-tcp");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(rs) = Rsyslog::start(dir.path(), port, false) else {
        crate::skip!("rsyslogd is missing (tests/support/install-receivers.sh failed)")
    };
    let mut cfg = tls_cfg(&pki, port);
    cfg.tls = false;
    let cfg = OutputConfig {
        name: "sys_tcp".into(),
        kind: OutputKind::Syslog(cfg),
    };
    let mut sink = output::open_with(&cfg, quick()).unwrap();
    sink.ensure_ready().unwrap();
    let batch = events(0, 500);
    sink.write_events(&batch, 500).unwrap();
    sink.confirm().unwrap();
    let sent = json_lines(&batch);
    assert_exactly_once(&rs.wait_lines(sent.len(), WAIT), &sent);
}

fn assert_exactly_once(got: &[String], sent: &[String]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *counts.entry(g.as_str()).or_default() += 1;
    }
    for s in sent {
        assert_eq!(
            counts.get(s.as_str()).copied(),
            Some(1),
            "not exactly once: {s}"
        );
    }
    assert_eq!(got.len(), sent.len());
}

#[test]
fn rsyslog_restart_mid_stream_loses_nothing() {
    let dir = TempDir::new("rsys-restart");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(mut rs) = Rsyslog::start(dir.path(), port, true) else {
        crate::skip!("rsyslogd is missing (tests/support/install-receivers.sh failed)")
    };
    let mut sink = SyslogSink::open("sys", &tls_cfg(&pki, port), quick()).unwrap();
    sink.ensure_ready().unwrap();
    let a = events(0, 200);
    sink.write_events(&a, 200).unwrap();
    sink.confirm().unwrap();
    assert_eq!(rs.wait_lines(200, WAIT).len(), 200);
    let gen = sink.generation();

    rs.stop();
    // Page B (about 30 KB, below the write buffer) is written while the receiver is
    // gone: the write is buffered, and confirm must notice the receiver has closed.
    let b = events(200, 50);
    sink.write_events(&b, 50).unwrap();
    let e = sink
        .confirm()
        .expect_err("a page sent to a stopped receiver must not be confirmed");
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("closed"), "{e}");
    assert!(!sink.stats().connected);
    let e = sink.ensure_ready().unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("cannot connect"),
        "{e}"
    );

    rs.restart();
    let start = Instant::now();
    while let Err(e) = sink.ensure_ready() {
        assert!(start.elapsed() < WAIT, "no reconnect: {e}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sink.generation(), gen + 1);
    // Resend since the last confirm.
    sink.write_events(&b, 50).unwrap();
    sink.confirm().unwrap();
    let mut sent = json_lines(&a);
    sent.extend(json_lines(&b));
    let got = rs.wait_lines(250, WAIT);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in &got {
        *counts.entry(g.as_str()).or_default() += 1;
    }
    for (i, s) in sent.iter().enumerate() {
        let c = counts.get(s.as_str()).copied().unwrap_or(0);
        if i < 200 {
            // Page A was the last confirmed delivery: the new connection resends it
            // (the old receiver may have acknowledged it unwritten), so once or twice.
            assert!((1..=2).contains(&c), "confirmed page A: {c} copies of {s}");
        } else {
            assert!(c >= 1, "page B lost: {s}");
        }
    }
}

#[test]
fn receiver_closing_mid_batch_fails_and_resend_arrives_on_new_connection() {
    let dir = TempDir::new("drop");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(
        &pki,
        RawOptions {
            drop_after: Some(100_000),
            ..RawOptions::default()
        },
    );
    let mut sink = DevoSink::open("devo_1", &tls_cfg(&pki, rx.port), quick()).unwrap();
    sink.ensure_ready().unwrap();
    let batch = events(0, 1000); // ~600 KB, the receiver hangs up after 100 KB
    let r = sink
        .write_events(&batch, 1000)
        .and_then(|()| sink.confirm());
    let e = r.expect_err("the receiver hung up mid-batch");
    assert!(e.is_transient(), "{e}");
    let s = e.to_string();
    assert!(s.contains("closed") || s.contains("reset"), "{s}");
    // Reconnect and resend: the second connection gets everything.
    sink.ensure_ready().unwrap();
    assert_eq!(sink.generation(), 2);
    let small = events(0, 100);
    // This receiver hangs up after 100 KB per connection: resend a page below that.
    sink.write_events(&small, 100).unwrap();
    sink.confirm().unwrap();
    let conns = rx.wait_bytes(100_000 + 60_000, WAIT);
    assert_eq!(conns.len(), 2);
    let second = String::from_utf8(conns[1].clone()).unwrap();
    assert_eq!(second.lines().count(), 100);
}

#[test]
fn confirm_waits_for_the_send_queue_to_drain_and_times_out() {
    let dir = TempDir::new("noread");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(
        &pki,
        RawOptions {
            tls: false,
            no_read: true,
            ..RawOptions::default()
        },
    );
    let mut cfg = tls_cfg(&pki, rx.port);
    cfg.tls = false;
    let t = Timeouts {
        drain: Duration::from_millis(700),
        ..quick()
    };
    let mut sink = SyslogSink::open("sys", &cfg, t).unwrap();
    sink.ensure_ready().unwrap();
    sink.write_events(&events(0, 14), 14).unwrap(); // ~8 KB: more than the peer's window
    let start = Instant::now();
    let e = sink.confirm().unwrap_err();
    let waited = start.elapsed();
    let s = e.to_string();
    assert!(s.contains("did not acknowledge"), "{s}");
    assert!(e.is_transient());
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(!sink.stats().connected);
}

#[test]
fn no_client_certificate_configured() {
    let dir = TempDir::new("nocert");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let mut cfg = tls_cfg(&pki, rx.port);
    cfg.cert = None;
    cfg.key = None;
    let mut sink = DevoSink::open("devo_1", &cfg, quick()).unwrap();
    expect_tls_err(
        sink.ensure_ready().unwrap_err(),
        "configure `cert` and `key`",
    );

    let port = free_port();
    let Some(_rs) = Rsyslog::start(dir.path(), port, true) else {
        crate::skip!("rsyslogd is missing (tests/support/install-receivers.sh failed)")
    };
    cfg.port = port;
    let mut sink = SyslogSink::open("sys", &cfg, quick()).unwrap();
    expect_tls_err(
        sink.ensure_ready().unwrap_err(),
        "configure `cert` and `key`",
    );
}

#[test]
fn receiver_rejects_our_certificate() {
    let dir = TempDir::new("rejcert");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let mut cfg = tls_cfg(&pki, rx.port);
    cfg.cert = Some(pki.path("wrong-client.pem"));
    cfg.key = Some(pki.path("wrong-client.key"));
    let mut sink = DevoSink::open("devo_1", &cfg, quick()).unwrap();
    expect_tls_err(
        sink.ensure_ready().unwrap_err(),
        "rejected our client certificate",
    );

    let port = free_port();
    let Some(_rs) = Rsyslog::start(dir.path(), port, true) else {
        crate::skip!("rsyslogd is missing (tests/support/install-receivers.sh failed)")
    };
    cfg.port = port;
    let mut sink = SyslogSink::open("sys", &cfg, quick()).unwrap();
    let e = sink.ensure_ready().unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("rejected our client certificate") || s.contains("check `cert`"),
        "{s}"
    );
}

#[test]
fn wrong_chain_is_named() {
    let dir = TempDir::new("chain");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let mut cfg = tls_cfg(&pki, rx.port);
    cfg.chain = Some(pki.path("wrong-ca.pem"));
    let mut sink = DevoSink::open("devo_1", &cfg, quick()).unwrap();
    let e = sink.ensure_ready().unwrap_err();
    expect_tls_err(e, "is not signed by chain");
    let e = sink.ensure_ready().unwrap_err();
    assert!(
        e.to_string().contains("wrong-ca.pem — check `chain`"),
        "{e}"
    );
}

#[test]
fn host_name_mismatch_is_named() {
    let dir = TempDir::new("host");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(
        &pki,
        RawOptions {
            wrong_host_cert: true,
            ..RawOptions::default()
        },
    );
    let mut sink = DevoSink::open("devo_1", &tls_cfg(&pki, rx.port), quick()).unwrap();
    expect_tls_err(
        sink.ensure_ready().unwrap_err(),
        "is not valid for 127.0.0.1",
    );
}

#[test]
fn key_not_matching_certificate_fails_at_open() {
    let dir = TempDir::new("keymis");
    let pki = Pki::create(dir.path());
    let mut cfg = tls_cfg(&pki, 1);
    cfg.key = Some(pki.path("server.key"));
    let e = DevoSink::open("devo_1", &cfg, quick()).err().unwrap();
    expect_tls_err(e, "does not match certificate");
    cfg.key = Some(pki.path("client.key"));
    cfg.cert = Some(dir.path().join("missing.crt"));
    let e = DevoSink::open("devo_1", &cfg, quick()).err().unwrap();
    expect_tls_err(e, "missing.crt");
    cfg.cert = Some(pki.path("client.key"));
    let e = DevoSink::open("devo_1", &cfg, quick()).err().unwrap();
    expect_tls_err(e, "BEGIN CERTIFICATE");
}

#[test]
fn refused_connection_is_transient() {
    let dir = TempDir::new("refused");
    let pki = Pki::create(dir.path());
    let mut sink = DevoSink::open("devo_1", &tls_cfg(&pki, free_port()), quick()).unwrap();
    let e = sink.ensure_ready().unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    assert_eq!(sink.generation(), 0);
    let e = sink.write_events(b"{}\n", 1).unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("not connected"),
        "{e}"
    );
}

#[test]
fn file_output_cuts_torn_tail_fixtures() {
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/output");
    let dir = TempDir::new("file");
    let mut n = 0;
    for entry in std::fs::read_dir(&fx).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        n += 1;
        let target = dir.path().join(p.file_name().unwrap());
        std::fs::copy(&p, &target).unwrap();
        let cfg = OutputConfig {
            name: "f".into(),
            kind: OutputKind::File {
                path: target.clone(),
                follow_symlinks: false,
            },
        };
        let mut sink = output::open(&cfg).unwrap();
        sink.ensure_ready().unwrap();
        sink.write_events(b"{\"appended\":true}\n", 1).unwrap();
        sink.confirm().unwrap();
        let expected = std::fs::read(p.with_extension("expected")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&std::fs::read(&target).unwrap()),
            String::from_utf8_lossy(&expected),
            "{}",
            p.display()
        );
    }
    assert!(n >= 3);
}

/// Throughput of the devo sink over loopback TLS (run with
/// `cargo test --release --test it -- --ignored tls_throughput --nocapture`).
#[test]
#[ignore]
fn tls_throughput() {
    let dir = TempDir::new("tput");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let mut sink = DevoSink::open("devo_1", &tls_cfg(&pki, rx.port), Timeouts::default()).unwrap();
    sink.ensure_ready().unwrap();
    const PAGE: usize = 2000;
    const PAGES: usize = 100;
    let pages: Vec<Vec<u8>> = (0..10).map(|p| events(p * PAGE, PAGE)).collect();
    let bytes: usize = (0..PAGES).map(|i| pages[i % 10].len()).sum();
    let start = Instant::now();
    for i in 0..PAGES {
        sink.write_events(&pages[i % 10], PAGE as u64).unwrap();
        sink.confirm().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (PAGE * PAGES) as f64;
    println!(
        "devo over loopback TLS: {n} events of ~{} bytes in {secs:.2}s = {:.0} events/s, {:.1} MB/s of JSON",
        bytes / (PAGE * PAGES),
        n / secs,
        bytes as f64 / secs / 1e6
    );
}

/// Run openssl with `args` in `dir`; false when openssl is missing.
fn openssl(dir: &std::path::Path, args: &[&str]) -> bool {
    match std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => true,
        Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => false,
    }
}

#[test]
fn rsa_and_ecdsa_keys_in_pkcs1_pkcs8_and_sec1_forms() {
    let dir = TempDir::new("keyforms");
    let d = dir.path();
    let pki = Pki::create(d);
    std::fs::write(
        d.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    let steps: &[&[&str]] = &[
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.key",
        ],
        &[
            "req",
            "-new",
            "-key",
            "rsa.key",
            "-subj",
            "/CN=msgtrace-rsa",
            "-out",
            "rsa.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "rsa.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "rsa.pem",
        ],
        &[
            "rsa",
            "-in",
            "rsa.key",
            "-traditional",
            "-out",
            "rsa.pkcs1.key",
        ],
        &["ec", "-in", "client.key", "-out", "client.sec1.key"],
    ];
    for s in steps {
        if !openssl(d, s) {
            crate::skip!("openssl is not installed (apt-get install openssl)");
        }
    }
    let cases = [
        ("rsa.pem", "rsa.key", "BEGIN PRIVATE KEY"),
        ("rsa.pem", "rsa.pkcs1.key", "BEGIN RSA PRIVATE KEY"),
        ("client.pem", "client.key", "BEGIN PRIVATE KEY"),
        ("client.pem", "client.sec1.key", "BEGIN EC PRIVATE KEY"),
    ];
    for (cert, key, header) in cases {
        let text = std::fs::read_to_string(d.join(key)).unwrap();
        assert!(text.contains(header), "{key}: {text}");
        let rx = RawReceiver::start(&pki, RawOptions::default());
        let mut cfg = tls_cfg(&pki, rx.port);
        cfg.cert = Some(d.join(cert));
        cfg.key = Some(d.join(key));
        let mut sink = DevoSink::open("devo_1", &cfg, quick()).unwrap();
        sink.ensure_ready()
            .unwrap_or_else(|e| panic!("{cert} + {key}: {e}"));
        sink.write_events(b"{\"k\":1}\n", 1).unwrap();
        sink.confirm().unwrap();
        let got = rx.wait_bytes(20, WAIT);
        assert!(String::from_utf8_lossy(&got[0]).ends_with(": {\"k\":1}\n"));
    }
    // An RSA key with the ECDSA certificate: mismatch.
    let mut cfg = tls_cfg(&pki, 1);
    cfg.key = Some(d.join("rsa.pkcs1.key"));
    let e = DevoSink::open("devo_1", &cfg, quick()).err().unwrap();
    expect_tls_err(e, "does not match certificate");
}

#[test]
fn without_client_certificate_a_hang_up_stays_transient() {
    let dir = TempDir::new("nocert-ok");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(
        &pki,
        RawOptions {
            require_client_cert: false,
            drop_after: Some(100),
            ..RawOptions::default()
        },
    );
    let mut cfg = tls_cfg(&pki, rx.port);
    cfg.cert = None;
    cfg.key = None;
    let mut sink = DevoSink::open("devo_1", &cfg, quick()).unwrap();
    sink.ensure_ready().unwrap();
    // The receiver hangs up after 100 bytes. The first page may still be acknowledged
    // by its TCP before the hang-up; the next one must fail, transiently.
    let first = sink
        .write_events(&events(0, 1), 1)
        .and_then(|()| sink.confirm());
    rx.wait_bytes(100, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let r = first.and_then(|()| {
        sink.write_events(&events(1, 5), 5)
            .and_then(|()| sink.confirm())
    });
    let e = r.expect_err("receiver hung up");
    assert!(e.is_transient(), "{e}");
    assert!(!e.to_string().contains("configure `cert`"), "{e}");
}

#[test]
fn tls12_receiver() {
    let dir = TempDir::new("tls12");
    let pki = Pki::create(dir.path());
    let o = RawOptions {
        tls12_only: true,
        ..RawOptions::default()
    };
    let rx = RawReceiver::start(&pki, o.clone());
    let mut sink = DevoSink::open("devo_1", &tls_cfg(&pki, rx.port), quick()).unwrap();
    sink.ensure_ready().unwrap();
    let batch = events(0, 100);
    sink.write_events(&batch, 100).unwrap();
    sink.confirm().unwrap();
    let got = rx.wait_bytes(batch.len(), WAIT);
    assert_eq!(String::from_utf8_lossy(&got[0]).lines().count(), 100);

    let rx = RawReceiver::start(&pki, o);
    let mut cfg = tls_cfg(&pki, rx.port);
    cfg.cert = None;
    cfg.key = None;
    let mut sink = DevoSink::open("devo_1", &cfg, quick()).unwrap();
    expect_tls_err(
        sink.ensure_ready().unwrap_err(),
        "configure `cert` and `key`",
    );
}

/// An answering receiver for `Link::read_available`: it answers `ack N\n` to each of
/// the first `lines` lines, then closes (TLS: close_notify) on the next line.
fn answering_receiver(pki: &Pki, tls: bool, lines: usize) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = tls.then(|| {
        crate::receivers::server_config(
            pki,
            &RawOptions {
                require_client_cert: false,
                ..RawOptions::default()
            },
        )
    });
    let h = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = cfg.map(|c| rustls::ServerConnection::new(c).unwrap());
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        let mut answered = 0;
        while got.iter().filter(|&&b| b == b'\n').count() <= lines {
            let n = match conn.as_mut() {
                Some(c) => rustls::Stream::new(c, &mut sock).read(&mut buf).unwrap(),
                None => sock.read(&mut buf).unwrap(),
            };
            assert!(n > 0, "the link closed early");
            got.extend_from_slice(&buf[..n]);
            while answered < lines.min(got.iter().filter(|&&b| b == b'\n').count()) {
                answered += 1;
                let a = format!("ack {answered}\n");
                match conn.as_mut() {
                    Some(c) => rustls::Stream::new(c, &mut sock)
                        .write_all(a.as_bytes())
                        .unwrap(),
                    None => sock.write_all(a.as_bytes()).unwrap(),
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            c.send_close_notify();
            while c.wants_write() {
                c.write_tls(&mut sock).unwrap();
            }
        }
    });
    (port, h)
}

/// Read from the link until `want` arrived (bounded).
fn read_until(link: &mut msgtrace::output::tls::Link, want: &[u8]) -> Vec<u8> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 3]; // small: answers arrive over several calls
    while !got.ends_with(want) {
        assert!(start.elapsed() < WAIT, "no {want:?}, got {got:?}");
        let n = link
            .read_available(&mut buf, Instant::now() + Duration::from_millis(200))
            .unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn link_reads_what_the_receiver_answers_over_tls_and_tcp() {
    use msgtrace::output::tls::Link;
    let dir = TempDir::new("answers");
    let pki = Pki::create(dir.path());
    for tls in [false, true] {
        let (port, server) = answering_receiver(&pki, tls, 2);
        let cfg = TlsOutput {
            tls,
            ..tls_cfg(&pki, port)
        };
        let mut link = Link::new("relp", &cfg, quick()).unwrap().keep_received();
        let e = link
            .read_available(&mut [0u8; 8], Instant::now())
            .unwrap_err();
        assert!(
            e.is_transient() && e.to_string().contains("not connected"),
            "{e}"
        );
        link.ensure_ready().unwrap();
        // Nothing was sent yet: nothing to read, and the wait is bounded.
        let t = Instant::now();
        let n = link
            .read_available(&mut [0u8; 8], Instant::now() + Duration::from_millis(100))
            .unwrap();
        assert_eq!(n, 0);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        link.out().extend_from_slice(b"one\n");
        link.push().unwrap();
        assert_eq!(read_until(&mut link, b"ack 1\n"), b"ack 1\n");
        // `confirm` looks at the socket too: the answer it sees is kept, not discarded.
        link.out().extend_from_slice(b"two\n");
        link.push().unwrap();
        std::thread::sleep(Duration::from_millis(300)); // `ack 2` is in our socket now
        link.confirm().unwrap();
        assert_eq!(read_until(&mut link, b"ack 2\n"), b"ack 2\n");
        // The receiver closes: the link goes down with a transient error.
        link.out().extend_from_slice(b"bye\n");
        link.push().unwrap();
        server.join().unwrap();
        let start = Instant::now();
        let e = loop {
            assert!(start.elapsed() < WAIT, "the close was not seen (tls {tls})");
            match link.read_available(&mut [0u8; 8], Instant::now() + Duration::from_millis(200)) {
                Ok(n) => assert_eq!(n, 0),
                Err(e) => break e,
            }
        };
        assert!(e.is_transient(), "{e}");
        assert!(!link.connected(), "tls {tls}");
        assert_eq!(link.generation(), 1);
    }
}
