//! The `relp` output against rsyslog's imrelp (TLS, our client certificate required, a
//! Direct-queue ruleset writing to a file, so `rsp 200` means "in the file"): every event
//! once; `kill -9` of rsyslogd mid-stream loses nothing (duplicates at most the window),
//! and the same kill with the plain `syslog` output for comparison; the config key; the
//! handshake `check` reports; throughput (ignored test).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use msgtrace::config::{OutputConfig, OutputKind, TlsOutput};
use msgtrace::output::relp::WINDOW;
use msgtrace::output::{self, Sink, Timeouts};
use msgtrace::Error;

use crate::receivers::{free_port, text_lines, Pki, RawOptions, RawReceiver, Rsyslog, TempDir};

const WAIT: Duration = Duration::from_secs(30);
const TAG: &str = "cloud.office365.messagetracing";

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        io: Duration::from_secs(5),
        drain: Duration::from_secs(20),
    }
}

fn tls(pki: &Pki, port: u16) -> TlsOutput {
    pki.client_output(port, TAG)
}

fn relp_cfg(pki: &Pki, port: u16) -> OutputConfig {
    OutputConfig {
        name: "relp_1".into(),
        kind: OutputKind::Relp(tls(pki, port)),
    }
}

/// `n` JSON lines of about 500 bytes numbered from `from`, with non-ASCII and escapes.
fn events(from: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let pad = "y".repeat(380);
    for i in from..from + n {
        out.extend_from_slice(
            format!(
                "{{\"MessageId\":\"<m{i}@contoso.com>\",\"Subject\":\"Grüße \\\"{i}\\\" {pad}\",\
                 \"Status\":\"Delivered\",\"MessageTraceId\":\"id-{i:08}\"}}\n"
            )
            .as_bytes(),
        );
    }
    out
}

/// (missing, duplicates) of `got` against `sent`.
fn tally(got: &[String], sent: &[String]) -> (usize, usize) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *counts.entry(g.as_str()).or_default() += 1;
    }
    let missing = sent
        .iter()
        .filter(|s| !counts.contains_key(s.as_str()))
        .count();
    let dups = counts.values().map(|c| c.saturating_sub(1)).sum();
    (missing, dups)
}

/// What the puller does with a page: write it, confirm, and when that fails or an output
/// reconnected in between, send the whole page again once the output is back.
/// Returns how many times the page was sent again.
fn deliver_page(sink: &mut dyn Sink, page: &[u8], chunk_at: Option<(usize, &dyn Fn())>) -> usize {
    let start = Instant::now();
    let mut resends = 0;
    let mut hook = chunk_at;
    loop {
        assert!(start.elapsed() < WAIT, "page not delivered within {WAIT:?}");
        if sink.ensure_ready().is_err() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let gen0 = sink.generation();
        // Written in slices of 50 lines, as the puller's batches; the hook fires after
        // the slice it names (frames are then in flight, unacknowledged).
        let all: Vec<&[u8]> = page.split_inclusive(|&b| b == b'\n').collect();
        let mut r = Ok(());
        for (i, part) in all.chunks(50).enumerate() {
            let bytes: Vec<u8> = part.concat();
            r = sink.write_events(&bytes, part.len() as u64);
            if r.is_err() {
                break;
            }
            if let Some((at, f)) = hook {
                if i == at {
                    f();
                    hook = None;
                }
            }
        }
        let r = r.and_then(|()| sink.confirm());
        if r.is_ok() && sink.generation() == gen0 {
            return resends;
        }
        resends += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn relp_to_rsyslog_imrelp_every_event_once() {
    let dir = TempDir::new("relp");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(rs) = Rsyslog::start_relp(dir.path(), port) else {
        crate::skip!("rsyslog imrelp is missing (tests/support/install-receivers.sh failed)")
    };
    let mut sink = output::open_with(&relp_cfg(&pki, port), timeouts()).unwrap();
    sink.ensure_ready().unwrap();
    assert!(sink.stats().connected);
    let mut sent = Vec::new();
    for p in 0..4 {
        let page = events(p * 300, 300);
        sink.write_events(&page, 300).unwrap();
        sink.confirm().unwrap();
        sent.extend(text_lines(&page));
        // Confirmed means "in the file": no waiting needed.
        let got = std::fs::read_to_string(rs.msg_log()).unwrap();
        assert_eq!(got.lines().count(), sent.len(), "confirmed before written");
    }
    assert_eq!(sink.stats().sent_total, 1200);
    assert_eq!(sink.stats().queued_bytes, 0);
    let got = rs.wait_lines(sent.len(), WAIT);
    assert_eq!(got, sent, "every event once, in order, byte-exact");
    let raw = std::fs::read_to_string(dir.path().join("raw.log")).unwrap();
    let host = msgtrace::output::tls::host_name();
    for (r, json) in raw.lines().zip(&sent) {
        assert!(r.starts_with("<14>1 20"), "{r:.100}");
        assert!(
            r.ends_with(&format!("Z {host} {TAG} - - - {json}")),
            "{r:.160}"
        );
    }
    drop(sink); // closes the session politely
                // No RELP-level complaint (bad frame, transaction number, offers). The start-up
                // probe (a bare TCP connect that never speaks TLS) makes the TLS layer complain.
    std::thread::sleep(Duration::from_millis(200));
    let err = std::fs::read_to_string(dir.path().join("rsyslogd.stderr")).unwrap();
    let probe = ["handshake", "in init", "unexpected eof"];
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("error") && !probe.iter().any(|p| l.contains(p)))
        .collect();
    assert!(complaints.is_empty(), "rsyslogd complained: {complaints:?}");
}

/// kill -9 of the receiver after a third of the events, with 100 events in flight —
/// right after writing them, or (`settle_first`) once the receiver wrote them to its
/// file (its answers may still be on the way) — restarted on the same port 300 ms later.
/// `make_sink`/`start` choose relp + imrelp or syslog + imtcp.
/// Returns (events, missing, duplicates, page resends).
fn kill9_run(
    tag: &str,
    settle_first: bool,
    make_sink: &dyn Fn(&Pki, u16) -> Box<dyn Sink>,
    start: &dyn Fn(&Path, u16) -> Option<Rsyslog>,
) -> Option<(usize, usize, usize, usize)> {
    let dir = TempDir::new(tag);
    let pki = Pki::create(dir.path());
    let port = free_port();
    let rs = Arc::new(Mutex::new(start(dir.path(), port)?));
    let msg_log = rs.lock().unwrap().msg_log();
    let mut sink = make_sink(&pki, port);
    const PAGES: usize = 9;
    const PAGE: usize = 300;
    let mut sent = Vec::new();
    let mut resends = 0;
    let restarter: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);
    for p in 0..PAGES {
        let page = events(p * PAGE, PAGE);
        sent.extend(text_lines(&page));
        let written = p * PAGE + 100;
        let kill = || {
            // Let the receiver process what is in flight (its answers may still be on
            // the way), then kill it.
            if settle_first {
                let _ =
                    crate::receivers::wait_file_lines(&msg_log, written, Duration::from_secs(2));
            }
            rs.lock().unwrap().kill9();
            let rs2 = rs.clone();
            *restarter.lock().unwrap() = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                rs2.lock().unwrap().restart();
            }));
        };
        // A third of the events: page 3, after its second slice of 50.
        let hook: Option<(usize, &dyn Fn())> = (p == PAGES / 3).then_some((1, &kill as &dyn Fn()));
        resends += deliver_page(sink.as_mut(), &page, hook);
    }
    if let Some(h) = restarter.lock().unwrap().take() {
        h.join().unwrap();
    }
    drop(sink);
    // The syslog receiver writes asynchronously: wait until the file stops growing.
    let mut got = crate::receivers::wait_file_lines(&msg_log, sent.len(), Duration::from_secs(5));
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(500));
        let now = crate::receivers::wait_file_lines(&msg_log, 0, Duration::ZERO);
        if now.len() == got.len() {
            break;
        }
        got = now;
    }
    let (missing, dups) = tally(&got, &sent);
    Some((sent.len(), missing, dups, resends))
}

#[test]
fn relp_kill9_of_rsyslogd_loses_nothing() {
    for settle_first in [false, true] {
        let relp = kill9_run(
            "relp-kill9",
            settle_first,
            &|pki, port| output::open_with(&relp_cfg(pki, port), timeouts()).unwrap(),
            &Rsyslog::start_relp,
        );
        let Some((n, missing, dups, resends)) = relp else {
            crate::skip!("rsyslog imrelp is missing (tests/support/install-receivers.sh failed)")
        };
        println!(
            "FIGURE kill -9 (settle_first={settle_first}) relp -> rsyslog imrelp: {n} events, \
             {missing} missing, {dups} duplicate(s), {resends} page resend(s)"
        );
        assert_eq!(missing, 0, "relp lost events");
        assert!(dups <= WINDOW, "{dups} duplicates > window {WINDOW}");
        assert_eq!(
            resends, 0,
            "the sink rode out the restart; no page was sent again"
        );
    }
}

/// The same kill -9 with the plain `syslog` output to imtcp (the everyday rsyslog setup):
/// a figure for the README, not an assertion of loss.
#[test]
fn syslog_kill9_of_rsyslogd_figure() {
    for settle_first in [false, true] {
        let syslog = kill9_run(
            "syslog-kill9",
            settle_first,
            &|pki, port| {
                let cfg = OutputConfig {
                    name: "syslog_1".into(),
                    kind: OutputKind::Syslog(tls(pki, port)),
                };
                output::open_with(&cfg, timeouts()).unwrap()
            },
            &|d, p| Rsyslog::start(d, p, true),
        );
        let Some((n, missing, dups, resends)) = syslog else {
            crate::skip!("rsyslogd is missing (tests/support/install-receivers.sh failed)")
        };
        println!(
            "FIGURE kill -9 (settle_first={settle_first}) syslog -> rsyslog imtcp: {n} events, \
             {missing} missing, {dups} duplicate(s), {resends} page resend(s)"
        );
        assert!(
            missing <= n && resends >= 1,
            "the connection failure went unnoticed"
        );
    }
}

#[test]
fn relp_config_type_and_check_handshake() {
    let dir = TempDir::new("relp-cfg");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let yaml = format!(
        "outputs:\n  relp_1:\n    type: relp\n    config:\n      address: 127.0.0.1\n      port: {port}\n      \
         type: SSL\n      chain: {d}/ca.pem\n      cert: {d}/client.pem\n      key: {d}/client.key\n      tag: my.tag\n\
         inputs:\n  office365_exchange_message:\n    id: 1\n    credentials:\n      tenant_id: t\n      \
         client_id: c\n      client_secret: s\n    services:\n      office365_exchange_message_graph_service:\n",
        d = dir.path().display()
    );
    let cfg = msgtrace::config::parse_str(&yaml, "config.yaml", dir.path()).unwrap();
    let OutputKind::Relp(t) = &cfg.outputs[0].kind else {
        panic!("not relp: {:?}", cfg.outputs[0].kind);
    };
    assert_eq!((t.port, t.tls, t.tag.as_str()), (port, true, "my.tag"));
    let bad = yaml.replace("tag: my.tag\n", "tag: my.tag\n      path: x\n");
    let e = msgtrace::config::parse_str(&bad, "config.yaml", dir.path()).unwrap_err();
    assert!(e.to_string().contains("path"), "{e}");

    // `check`'s output step is `ensure_ready`: for relp it is the open/rsp handshake.
    let Some(_rs) = Rsyslog::start_relp(dir.path(), port) else {
        crate::skip!("rsyslog imrelp is missing (tests/support/install-receivers.sh failed)")
    };
    let mut sink = output::open_with(&cfg.outputs[0], timeouts()).unwrap();
    // rsyslogd listens a moment before imrelp's TLS is ready under load: a reset handshake
    // is transient, and the collector (and this test) tries again.
    let mut ready = sink.ensure_ready();
    for _ in 0..10 {
        match &ready {
            Err(e) if e.is_transient() => {
                std::thread::sleep(Duration::from_millis(300));
                ready = sink.ensure_ready();
            }
            _ => break,
        }
    }
    ready.unwrap();
    assert!(sink.stats().connected);
    // A TLS receiver that is not RELP never answers the open: the message says so.
    let raw = RawReceiver::start(&pki, RawOptions::default());
    let mut quick = timeouts();
    quick.connect = Duration::from_millis(500);
    let e = output::open_with(&relp_cfg(&pki, raw.port), quick)
        .unwrap()
        .ensure_ready()
        .unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("RELP receiver"),
        "{e}"
    );
}

#[test]
fn relp_without_our_client_certificate_is_refused() {
    let dir = TempDir::new("relp-nocert");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(rs) = Rsyslog::start_relp(dir.path(), port) else {
        crate::skip!("rsyslog imrelp is missing (tests/support/install-receivers.sh failed)")
    };
    let mut cfg = tls(&pki, port);
    cfg.cert = Some(pki.path("wrong-client.pem"));
    cfg.key = Some(pki.path("wrong-client.key"));
    let mut sink = output::open_with(
        &OutputConfig {
            name: "relp_1".into(),
            kind: OutputKind::Relp(cfg),
        },
        timeouts(),
    )
    .unwrap();
    let r = sink
        .ensure_ready()
        .and_then(|()| sink.write_events(&events(0, 2), 2))
        .and_then(|()| sink.confirm());
    let e = r.unwrap_err();
    assert!(
        matches!(e.root(), Error::Tls(_))
            && e.to_string().contains("rejected our client certificate"),
        "{e:?}"
    );
    assert!(rs.wait_lines(1, Duration::from_millis(300)).is_empty());
}

/// Events/s of relp to the real rsyslog imrelp over loopback TLS (Direct queue, omfile:
/// the receiver's own cost included). The client-side figure next to devo_platform is
/// `examples/bench_relp.rs` (`make bench`). Run with
/// `cargo test --release --test it -- --ignored relp::throughput --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let dir = TempDir::new("relp-tput");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(_rs) = Rsyslog::start_relp(dir.path(), port) else {
        crate::skip!("rsyslog imrelp is missing (tests/support/install-receivers.sh failed)")
    };
    const PAGE: usize = 2000;
    const PAGES: usize = 25;
    let pages: Vec<Vec<u8>> = (0..5).map(|p| events(p * PAGE, PAGE)).collect();
    let mut sink = output::open_with(&relp_cfg(&pki, port), Timeouts::default()).unwrap();
    sink.ensure_ready().unwrap();
    let start = Instant::now();
    for i in 0..PAGES {
        sink.write_events(&pages[i % 5], PAGE as u64).unwrap();
        sink.confirm().unwrap();
    }
    let rate = (PAGE * PAGES) as f64 / start.elapsed().as_secs_f64();
    println!("FIGURE relp -> rsyslog imrelp over loopback TLS: {rate:.0} events/s");
    assert!(rate > 0.0);
}

/// `msgtrace check` through the real binary: the relp output's step is the handshake.
#[test]
fn check_through_the_binary_does_the_relp_handshake() {
    use crate::emulator::{EmuOptions, Emulator};
    use crate::harness::{Cfg, Workdir};
    let dir = TempDir::new("relp-check");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(_rs) = Rsyslog::start_relp(dir.path(), port) else {
        crate::skip!("rsyslog imrelp is missing (tests/support/install-receivers.sh failed)")
    };
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.outputs = format!(
        "  relp_1:\n    type: relp\n    config:\n      address: 127.0.0.1\n      port: {port}\n      \
         type: SSL\n      chain: {}\n      cert: {}\n      key: {}\n",
        pki.path("ca.pem").display(),
        pki.path("client.pem").display(),
        pki.path("client.key").display()
    );
    let w = Workdir::new("relp-check");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(
        &["check", "-c", "config/config.yaml"],
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "✓ output relp_1: RELP session opened with 127.0.0.1:{port} (TLS, client certificate included)"
        )),
        "{text}"
    );
}

/// `msgtrace run --once` through the real binary (emulator → relp → rsyslog imrelp, plus
/// a `file` output): rsyslog holds exactly the file's events, byte-exact, on one session.
#[test]
fn run_once_through_the_binary_relp_and_file_agree() {
    use crate::emulator::{EmuOptions, Emulator};
    use crate::harness::{file_output_yaml, tls_output_yaml, Cfg, Workdir};
    let dir = TempDir::new("relp-run");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(rs) = Rsyslog::start_relp(dir.path(), port) else {
        crate::skip!("rsyslog imrelp is missing (tests/support/install-receivers.sh failed)")
    };
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.outputs = tls_output_yaml(
        "relp_1",
        "relp",
        port,
        &pki.path("ca.pem"),
        &pki.path("client.pem"),
        &pki.path("client.key"),
    ) + &file_output_yaml("file_1", "events.jsonl");
    let w = Workdir::new("relp-run");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(
        &["run", "--once", "-c", "config/config.yaml"],
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let file_lines: Vec<String> = w.read("events.jsonl").lines().map(str::to_owned).collect();
    assert!(!file_lines.is_empty(), "{stderr}");
    // Confirmed pages are in rsyslog's file already: no waiting beyond a read.
    let got = rs.wait_lines(file_lines.len(), Duration::from_secs(2));
    assert_eq!(got, file_lines, "rsyslog (relp) vs file");
    assert!(!stderr.contains("will reconnect"), "{stderr}");
    let raw = std::fs::read_to_string(dir.path().join("raw.log")).unwrap();
    assert!(
        raw.lines()
            .all(|l| l.starts_with("<14>1 20") && l.contains(&format!(" {TAG} - - - {{"))),
        "RFC 5424 header with the tag"
    );
}

/// An event larger than the RELP frame limit is an error naming the limit — permanent,
/// so the collector stops with it rather than resending the page around it forever —
/// never a silent drop.
#[test]
fn an_event_over_the_frame_limit_stops_the_output_with_the_limit_named() {
    let dir = TempDir::new("relp-big");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(_rs) = Rsyslog::start_relp(dir.path(), port) else {
        crate::skip!("rsyslog imrelp is missing (tests/support/install-receivers.sh failed)")
    };
    let mut sink = output::open_with(&relp_cfg(&pki, port), timeouts()).unwrap();
    sink.ensure_ready().unwrap();
    let mut batch = events(0, 2);
    batch.extend_from_slice(format!("{{\"Subject\":\"{}\"}}\n", "z".repeat(130 * 1024)).as_bytes());
    let e = sink.write_events(&batch, 3).unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("relp frame limit of 131072 bytes"),
        "{e}"
    );
    let again = sink.ensure_ready().unwrap_err();
    assert!(
        !again.is_transient() && again.to_string().contains("131072"),
        "{again}"
    );
    // The page is not confirmed: its cursor does not move past the event.
    assert!(!sink.confirm().unwrap_err().is_transient());
}
