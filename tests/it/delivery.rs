//! TLS delivery through the real binary to real receivers: rsyslogd (syslog output,
//! RFC 5425 with our client certificate) and the raw TLS receiver (devo_platform's line
//! format, byte-exact), both at once, a receiver outage mid-run, rejected certificates,
//! `msgtrace check`, and a throughput figure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use miniserde::json::Object;

use crate::emulator::{EmuOptions, Emulator};
use crate::harness::{file_output_yaml, json_lines, tally, tls_output_yaml, Cfg, Tally, Workdir};
use crate::receivers::{free_port, Pki, RawOptions, RawReceiver, Rsyslog, TempDir};

const INPUT: &str = "office365_exchange_message";
const ID: &str = "1000";
const TENANT: &str = "tenant-1";
const RUN_ONCE: &[&str] = &["run", "--once", "-c", "config/config.yaml"];
const TAG: &str = "cloud.office365.messagetracing";
const WAIT: Duration = Duration::from_secs(30);

fn setup(name: &str, emu: &Emulator, cfg: &Cfg) -> Workdir {
    let w = Workdir::new(name);
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    w
}

/// A devo_platform / syslog output with our client certificate, trusting the test CA.
fn out_yaml(name: &str, kind: &str, port: u16, pki: &Pki) -> String {
    tls_output_yaml(
        name,
        kind,
        port,
        &pki.path("ca.pem"),
        &pki.path("client.pem"),
        &pki.path("client.key"),
    )
}

fn assert_complete(t: &Tally, what: &str) {
    assert!(
        t.missing_count == 0,
        "{what}: {} of {} missing, e.g. {:?}",
        t.missing_count,
        t.expected,
        t.missing
    );
    assert_eq!(t.unexpected, 0, "{what}: events outside the covered range");
}

fn assert_exactly_once(t: &Tally, what: &str) {
    assert_complete(t, what);
    assert_eq!(t.duplicates, 0, "{what}: duplicates");
    assert_eq!(t.delivered, t.expected, "{what}");
}

/// Parse JSON payload lines (rsyslog's msg.log, or Devo lines' tails) into objects.
fn objects(lines: &[String]) -> Vec<Object> {
    json_lines(&lines.join("\n"))
}

/// Same lines, same number of times each (byte-exact multiset equality).
fn assert_same_lines(a: &[String], b: &[String], what: &str) {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for l in a {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    for l in b {
        *counts.entry(l.as_str()).or_default() -= 1;
    }
    let diff: Vec<_> = counts.iter().filter(|(_, n)| **n != 0).take(3).collect();
    assert!(diff.is_empty(), "{what}: lines differ, e.g. {diff:?}");
    assert_eq!(a.len(), b.len(), "{what}");
}

fn lines_of(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Check one Devo line by hand, exactly
/// `<14>Mmm dd HH:MM:SS HOSTNAME cloud.office365.messagetracing: {JSON}`, its stamp
/// one of `stamps`; returns the JSON.
fn devo_json<'a>(line: &'a str, host: &str, stamps: &[String]) -> &'a str {
    let bad = |why: &str| -> ! { panic!("not a Devo line ({why}): {line}") };
    let rest = line.strip_prefix("<14>").unwrap_or_else(|| bad("priority"));
    let stamp = rest.get(..15).unwrap_or_else(|| bad("short"));
    let b = stamp.as_bytes();
    if !MONTHS.contains(&&stamp[..3]) {
        bad("month");
    }
    let day_ok = b[3] == b' '
        && ((b[4] == b' ' && b[5].is_ascii_digit() && b[5] != b'0')
            || (matches!(b[4], b'1'..=b'3') && b[5].is_ascii_digit()));
    if !day_ok || b[6] != b' ' {
        bad("day padded with a space");
    }
    for (i, c) in b[7..].iter().enumerate() {
        let want_colon = i == 2 || i == 5;
        if want_colon != (*c == b':') || (!want_colon && !c.is_ascii_digit()) {
            bad("HH:MM:SS");
        }
    }
    if !stamps.iter().any(|s| s == stamp) {
        bad("stamp outside the run");
    }
    let json = rest
        .get(15..)
        .and_then(|r| r.strip_prefix(' '))
        .and_then(|r| r.strip_prefix(host))
        .and_then(|r| r.strip_prefix(' '))
        .and_then(|r| r.strip_prefix(TAG))
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or_else(|| bad("host and tag"));
    if !(json.starts_with('{') && json.ends_with('}')) {
        bad("JSON");
    }
    json
}

/// Devo lines of one connection: every line checked, the JSON payloads returned.
fn devo_payloads(bytes: &[u8], t0: i64, t1: i64) -> Vec<String> {
    let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "last line unterminated"
    );
    let host = msgtrace::output::tls::host_name();
    let stamps: Vec<String> = (t0..=t1).map(msgtrace::time::rfc3164).collect();
    text.split_terminator('\n')
        .map(|l| devo_json(l, host, &stamps).to_owned())
        .collect()
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn syslog_to_rsyslog_with_client_certificate_every_event_once_byte_exact() {
    let dir = TempDir::new("dl-rsys");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(rs) = Rsyslog::start(dir.path(), port, true) else {
        crate::skip!("rsyslogd is missing (tests/support/install-receivers.sh failed)")
    };
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.outputs =
        out_yaml("sys_1", "syslog", port, &pki) + &file_output_yaml("file_1", "events.jsonl");
    let w = setup("dl-rsys", &emu, &cfg);
    let out = w.run(RUN_ONCE, WAIT * 4);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let file_lines = lines_of(&w.read("events.jsonl"));
    let t = tally(&emu, &w, &stderr, &objects(&file_lines), TENANT, INPUT, ID);
    assert_exactly_once(&t, "file");
    let got = rs.wait_lines(file_lines.len(), WAIT);
    // Byte-exact: rsyslog's payloads are exactly the JSON lines the file holds.
    assert_same_lines(&got, &file_lines, "rsyslog vs file");
    let t = tally(&emu, &w, &stderr, &objects(&got), TENANT, INPUT, ID);
    assert_exactly_once(&t, "rsyslog");
    // One connection, never lost.
    assert_eq!(count(&stderr, "output sys_1 (127.0.0.1"), 1, "{stderr}");
    assert!(stderr.contains("connected (TLSv1_3"), "{stderr}");
    assert!(!stderr.contains("will reconnect"), "{stderr}");
    let raw = std::fs::read_to_string(dir.path().join("raw.log")).unwrap();
    assert!(
        raw.lines()
            .all(|l| l.starts_with("<14>1 20") && l.contains(&format!(" {TAG} - - - {{"))),
        "RFC 5424 header"
    );
    eprintln!(
        "delivery: rsyslog received {} events exactly once",
        got.len()
    );
}

#[test]
fn devo_lines_are_exact_and_every_event_arrives_once() {
    let dir = TempDir::new("dl-devo");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.outputs = out_yaml("devo_1", "devo_platform", rx.port, &pki)
        + &file_output_yaml("file_1", "events.jsonl");
    let w = setup("dl-devo", &emu, &cfg);
    let t0 = msgtrace::time::now();
    let out = w.run(RUN_ONCE, WAIT * 4);
    let t1 = msgtrace::time::now();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let file_lines = lines_of(&w.read("events.jsonl"));
    // The run confirmed every page: all bytes are in by now (the receiver thread may
    // still be copying the last read).
    let expected_bytes: usize = file_lines.iter().map(|l| l.len() + 1).sum();
    let conns = rx.wait_bytes(expected_bytes, WAIT);
    assert_eq!(conns.len(), 1, "one persistent connection");
    let payloads = devo_payloads(&conns[0], t0, t1);
    assert_same_lines(&payloads, &file_lines, "devo vs file");
    let t = tally(&emu, &w, &stderr, &objects(&payloads), TENANT, INPUT, ID);
    assert_exactly_once(&t, "devo");
    eprintln!("delivery: devo receiver got {} exact lines", payloads.len());
}

#[test]
fn devo_and_syslog_at_once_both_receive_every_event() {
    let dir = TempDir::new("dl-both");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(rs) = Rsyslog::start(dir.path(), port, true) else {
        crate::skip!("rsyslogd is missing (tests/support/install-receivers.sh failed)")
    };
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.outputs = out_yaml("devo_1", "devo_platform", rx.port, &pki)
        + &out_yaml("sys_1", "syslog", port, &pki);
    let w = setup("dl-both", &emu, &cfg);
    let t0 = msgtrace::time::now();
    let out = w.run(RUN_ONCE, WAIT * 4);
    let t1 = msgtrace::time::now();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let end = crate::harness::final_cursor(&w.file("state"), ID, crate::harness::RWS_SERVICE);
    let start = crate::harness::logged_start(&stderr, INPUT).unwrap();
    let n = emu
        .expected(TENANT, start, end.window_start, crate::emulator::now_secs())
        .len();
    assert!(n > 1000, "{n}");
    let got = rs.wait_lines(n, WAIT);
    let t = tally(&emu, &w, &stderr, &objects(&got), TENANT, INPUT, ID);
    assert_exactly_once(&t, "rsyslog");
    // Devo lines are longer than the JSON: wait for at least the JSON bytes.
    let json_bytes: usize = got.iter().map(|l| l.len() + 1).sum();
    let conns = rx.wait_bytes(json_bytes, WAIT);
    assert_eq!(conns.len(), 1);
    let payloads = devo_payloads(&conns[0], t0, t1);
    assert_same_lines(&payloads, &got, "devo vs rsyslog");
}

#[test]
fn rsyslog_outage_mid_run_pauses_pulling_and_loses_nothing() {
    const PAGE: usize = 100;
    let dir = TempDir::new("dl-outage");
    let pki = Pki::create(dir.path());
    let port = free_port();
    let Some(mut rs) = Rsyslog::start(dir.path(), port, true) else {
        crate::skip!("rsyslogd is missing (tests/support/install-receivers.sh failed)")
    };
    // About 29 000 events in pages of 100: the pull takes a few seconds.
    let emu = Emulator::start(EmuOptions {
        page_size: PAGE,
        records_per_hour: 600,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.outputs = out_yaml("sys_1", "syslog", port, &pki);
    cfg.period = 3600;
    let w = setup("dl-outage", &emu, &cfg);
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    // Mid-run: some events are in.
    let first = rs.wait_lines(300, WAIT);
    assert!(first.len() >= 300, "{}", w.read("stderr.log"));
    let stopped_at = Instant::now();
    rs.stop();
    w.wait_log("stderr.log", "pulling paused", WAIT);
    let log = w.read("stderr.log");
    assert!(
        !log.contains("Remote data is up to date!"),
        "the pull finished before the outage; make it bigger"
    );
    // Memory stays flat while the receiver is down: nothing queues.
    let mut rss = Vec::new();
    for _ in 0..6 {
        rss.push(p.rss_kib().expect("VmRSS"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let grew = rss.iter().max().unwrap() - rss.first().unwrap();
    let outage = stopped_at.elapsed();
    rs.restart();
    let log = w.wait_log(
        "stderr.log",
        "Remote data is up to date!",
        Duration::from_secs(120),
    );
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(5)).is_some(), "stops on SIGTERM");
    eprintln!(
        "delivery: receiver down {:.1}s; collector VmRSS during the outage {rss:?} KiB (grew {grew} KiB)",
        outage.as_secs_f64()
    );
    assert!(
        grew <= 1024,
        "RSS grew {grew} KiB while the receiver was down: {rss:?}"
    );
    // Connection state logged once, not per retry.
    assert_eq!(count(&log, "pulling paused"), 1, "{log}");
    assert_eq!(count(&log, "pulling resumes"), 1, "{log}");
    assert!(count(&log, "cannot connect") <= 1, "{log}");
    let end = crate::harness::final_cursor(&w.file("state"), ID, crate::harness::RWS_SERVICE);
    let start = crate::harness::logged_start(&log, INPUT).unwrap();
    let n = emu
        .expected(TENANT, start, end.window_start, crate::emulator::now_secs())
        .len();
    let got = rs.wait_lines(n, WAIT);
    let t = tally(&emu, &w, &log, &objects(&got), TENANT, INPUT, ID);
    eprintln!(
        "delivery: outage: {} events expected, {} received, {} duplicates",
        t.expected, t.delivered, t.duplicates
    );
    assert_complete(&t, "rsyslog after an outage");
    // The page in flight is pulled again, and the last confirmed delivery is resent
    // (rsyslog may have acknowledged it without writing it): at most two pages.
    assert!(t.duplicates <= 2 * PAGE, "{} duplicates", t.duplicates);
}

#[test]
fn rejected_client_certificate_and_wrong_chain_fail_clearly() {
    let dir = TempDir::new("dl-reject");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.outputs = tls_output_yaml(
        "devo_1",
        "devo_platform",
        rx.port,
        &pki.path("ca.pem"),
        &pki.path("wrong-client.pem"),
        &pki.path("wrong-client.key"),
    );
    let w = setup("dl-reject", &emu, &cfg);
    let out = w.run(RUN_ONCE, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("fatal:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("output permanently refused"), "{line}");
    assert!(
        line.contains("rejected our client certificate") && line.contains("wrong-client.pem"),
        "{line}"
    );
    assert!(!w.read("events.jsonl").contains('{'));
    eprintln!("delivery: rejected certificate: {line}");

    cfg.outputs = tls_output_yaml(
        "devo_1",
        "devo_platform",
        rx.port,
        &pki.path("wrong-ca.pem"),
        &pki.path("client.pem"),
        &pki.path("client.key"),
    );
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("fatal:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("is not signed by chain") && line.contains("wrong-ca.pem — check `chain`"),
        "{line}"
    );
    eprintln!("delivery: wrong chain: {line}");
}

#[test]
fn check_proves_the_tls_handshake_with_client_certificate() {
    let dir = TempDir::new("dl-check");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.outputs = out_yaml("devo_1", "devo_platform", rx.port, &pki);
    let w = setup("dl-check", &emu, &cfg);
    let out = w.run(&["check", "-c", "config/config.yaml"], WAIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.lines().all(|l| l.starts_with('✓')),
        "every step passes: {stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("output devo_1") && l.contains("TLS"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.starts_with('✓')
            && line.contains("TLS handshake")
            && line.contains("client certificate"),
        "{line}"
    );

    cfg.outputs = tls_output_yaml(
        "devo_1",
        "devo_platform",
        rx.port,
        &pki.path("wrong-ca.pem"),
        &pki.path("client.pem"),
        &pki.path("client.key"),
    );
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(&["check", "-c", "config/config.yaml"], WAIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with('✗'))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("output devo_1"), "{line}");
    assert!(
        line.contains("check `chain`") && line.contains(" — "),
        "{line}"
    );
    // The input steps still pass.
    assert!(
        stdout
            .lines()
            .filter(|l| l.contains(INPUT))
            .all(|l| l.starts_with('✓')),
        "{stdout}"
    );
    eprintln!("delivery: check with a wrong chain: {line}");
}

#[test]
fn throughput_over_loopback_tls_is_measured() {
    let dir = TempDir::new("dl-tput");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let emu = Emulator::start(EmuOptions {
        page_size: 2000,
        records_per_hour: 3000,
        log_served: false,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.outputs = out_yaml("devo_1", "devo_platform", rx.port, &pki);
    let w = setup("dl-tput", &emu, &cfg);
    // Through `sh` so that its `times` reports the collector's own CPU time (on a busy
    // machine, events per CPU second say more than the wall clock).
    let child = std::process::Command::new("sh")
        .args([
            "-c",
            "\"$0\" run --once -c config/config.yaml; rc=$?; times >&2; exit $rc",
        ])
        .arg(crate::harness::bin())
        .current_dir(&w.path)
        .env_remove("CONFIG_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let out = crate::harness::wait_with_deadline(child, Duration::from_secs(150));
    let elapsed = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Last line of `times`: the children's user and system time, `0m1.234s 0m0.056s`.
    let cpu: f64 = stderr
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|t| {
            let (m, s) = t.strip_suffix('s')?.split_once('m')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
        })
        .sum();
    let sent: u64 = stderr
        .lines()
        .filter_map(|l| l.split(" event(s) filtered, ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse::<u64>().ok())
        .sum();
    std::thread::sleep(Duration::from_millis(200));
    let bytes: usize = rx.connections().iter().map(Vec::len).sum();
    eprintln!(
        "delivery: throughput (debug build, emulator in the test process, loopback TLS): \
         {sent} events, {:.1} MB in {elapsed:.2}s = {:.0} events/s, {:.2} MB/s; \
         collector CPU {cpu:.2}s = {:.0} events per CPU second",
        bytes as f64 / 1e6,
        sent as f64 / elapsed,
        bytes as f64 / 1e6 / elapsed,
        sent as f64 / cpu.max(0.001)
    );
    assert!(sent > 50_000, "{sent}");
}

/// A receiver that hangs up hard after every 150 KB. Delivery is confirmed when the
/// peer's TCP has acknowledged every byte (SPEC §5): this receiver also throws away what
/// it had acknowledged but not processed when it hangs up (the rest of its last read and
/// its kernel receive buffer), which no sender can see. The test proves: every
/// unconfirmed page is pulled and sent again, the last confirmed delivery is resent on
/// the next connection, duplicates stay bounded, and no record is lost.
#[test]
fn devo_receiver_hanging_up_again_and_again() {
    const PAGE: usize = 50;
    let dir = TempDir::new("dl-hangup");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(
        &pki,
        RawOptions {
            drop_after: Some(150_000),
            ..RawOptions::default()
        },
    );
    let emu = Emulator::start(EmuOptions {
        page_size: PAGE,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.outputs = out_yaml("devo_1", "devo_platform", rx.port, &pki);
    let w = setup("dl-hangup", &emu, &cfg);
    let t0 = msgtrace::time::now();
    let out = w.run(RUN_ONCE, Duration::from_secs(120));
    let t1 = msgtrace::time::now();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    std::thread::sleep(Duration::from_millis(200));
    let conns = rx.connections();
    let mut payloads = Vec::new();
    for c in &conns {
        // The cut leaves a torn last line: it was never confirmed, it comes again.
        let end = c.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        payloads.extend(devo_payloads(&c[..end], t0, t1));
    }
    let objs = objects(&payloads);
    let t = tally(&emu, &w, &stderr, &objs, TENANT, INPUT, ID);
    let reconnects = conns.len().saturating_sub(1);
    eprintln!(
        "delivery: receiver hung up {reconnects} times; {} events for {} records, {} duplicates \
         ({:.1} per reconnect, bound {}); {} records lost in flight at the hang-ups (acknowledged \
         by the receiver's TCP, then dropped by it)",
        t.delivered,
        t.expected,
        t.duplicates,
        t.duplicates as f64 / reconnects.max(1) as f64,
        2 * PAGE,
        t.missing_count
    );
    assert!(reconnects >= 3, "{reconnects}");
    assert_eq!(t.unexpected, 0);
    // Per reconnect: the page in flight is pulled again, and the last confirmed delivery
    // (at most one page here) is resent because the receiver may have dropped it.
    assert!(
        t.duplicates <= reconnects * 2 * PAGE,
        "{} duplicates",
        t.duplicates
    );
    // What the receiver acknowledged and then dropped at a hang-up is resent on the next
    // connection (the last confirmed delivery): nothing is lost.
    assert_eq!(t.missing_count, 0, "lost: {:?}", t.missing);
}

/// Through the library: two outputs, a file and a devo_platform output to a receiver
/// that accepts but never reads. The hung receiver holds up only the page waiting for
/// it: the file output gets and confirms every batch, the statistics and the readiness
/// check answer at once, and the page fails (to be pulled again) after the drain limit.
#[test]
fn a_hung_receiver_blocks_neither_statistics_nor_the_file_output() {
    use msgtrace::config::{OutputConfig, OutputKind, TlsOutput};
    use msgtrace::output::{self, delivery::Delivery, Timeouts};

    let dir = TempDir::new("dl-hung");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(
        &pki,
        RawOptions {
            tls: false,
            no_read: true,
            ..RawOptions::default()
        },
    );
    let path = dir.path().join("events.jsonl");
    let outs = [
        OutputConfig {
            name: "file_1".into(),
            kind: OutputKind::File {
                path: path.clone(),
                follow_symlinks: false,
            },
        },
        OutputConfig {
            name: "hung".into(),
            kind: OutputKind::Devo(TlsOutput {
                address: "127.0.0.1".into(),
                port: rx.port,
                tls: false,
                chain: None,
                cert: None,
                key: None,
                tag: String::new(),
                detail_tag: String::new(),
            }),
        },
    ];
    let limit = Duration::from_secs(4);
    let timeouts = Timeouts {
        connect: limit,
        io: limit,
        drain: limit,
    };
    let sinks = outs
        .iter()
        .map(|o| output::open_with(o, timeouts).unwrap())
        .collect();
    let d = Delivery::start(sinks).unwrap();
    d.ensure_ready().unwrap();
    // 4 batches of 100 KB: more than the receiver's window, less than our send buffer.
    const BATCHES: u64 = 4;
    const LINES: u64 = 200;
    let batch: Vec<u8> = (0..LINES)
        .flat_map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(480)).into_bytes())
        .collect();
    std::thread::scope(|sc| {
        let started = Instant::now();
        let page = sc.spawn(|| {
            let mut p = d.page();
            for _ in 0..BATCHES {
                p.write(&batch, LINES).unwrap();
            }
            p.confirm()
        });
        // The file output took and confirmed every batch while the other one hangs.
        let want = batch.len() * BATCHES as usize;
        while std::fs::metadata(&path).map_or(0, |m| m.len() as usize) < want {
            assert!(started.elapsed() < limit, "the file output was held up");
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = Instant::now();
        let stats = d.stats();
        let took = t.elapsed();
        assert!(took < Duration::from_millis(50), "stats took {took:?}");
        assert_eq!(stats[0].1.sent_total, BATCHES * LINES, "{stats:?}");
        let t = Instant::now();
        d.ensure_ready().unwrap();
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        assert!(!page.is_finished(), "the page waits for the hung receiver");
        eprintln!(
            "delivery: file output confirmed {want} bytes after {:?} while the other receiver \
             hangs; stats answered in {took:?}: {stats:?}",
            started.elapsed()
        );
        let e = page.join().unwrap().unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("did not acknowledge"), "{e}");
        assert!(started.elapsed() < limit * 3, "{:?}", started.elapsed());
    });
    // The page is not confirmed; readiness reports the output down (quickly), and asks
    // its writer to reconnect.
    let t = Instant::now();
    let _ = d.ensure_ready();
    assert!(t.elapsed() < msgtrace::output::delivery::READY_WAIT + Duration::from_secs(1));
}
