//! End to end through the real binary against the Microsoft 365 emulator.

use std::collections::HashMap;
use std::time::Duration;

use crate::emulator::{EmuOptions, Emulator, Faults, TenantSpec};
use crate::harness::{final_cursor, json_lines, logged_start, s, Cfg, Workdir};

const RWS: &str = "office365_exchange_message_service";
const GRAPH: &str = "office365_exchange_message_graph_service";

fn setup(name: &str, emu: &Emulator, cfg: &Cfg) -> Workdir {
    let w = Workdir::new(name);
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    w
}

/// Every delivered event is one expected record, and every expected record was delivered
/// exactly once, byte-exact.
fn assert_exactly_once(
    emu: &Emulator,
    w: &Workdir,
    stderr: &str,
    graph: bool,
    tenant: &str,
    input: &str,
    id: &str,
) -> usize {
    let start = logged_start(stderr, input).expect("start logged");
    let service = if graph { GRAPH } else { RWS };
    let end = final_cursor(&w.file("state"), id, service).window_start;
    let now = crate::emulator::now_secs();
    let expected = if graph {
        emu.expected_graph(tenant, start, end, now)
    } else {
        emu.expected(tenant, start, end, now)
    };
    let events = json_lines(&w.read("events.jsonl"));
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for e in &events {
        let key = (
            s(e, "MessageTraceId").unwrap_or("").to_string(),
            s(e, "RecipientAddress").unwrap_or("").to_string(),
        );
        *seen.entry(key).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "duplicates: {:?}",
        dups.iter().take(5).collect::<Vec<_>>()
    );
    let by_key: HashMap<(String, String), &miniserde::json::Object> = events
        .iter()
        .map(|e| {
            (
                (
                    s(e, "MessageTraceId").unwrap_or("").to_string(),
                    s(e, "RecipientAddress").unwrap_or("").to_string(),
                ),
                e,
            )
        })
        .collect();
    let mut missing = Vec::new();
    for x in &expected {
        match by_key.get(&(x.message_trace_id.clone(), x.recipient.clone())) {
            None => missing.push(format!(
                "{} {} {}",
                x.received, x.message_trace_id, x.recipient
            )),
            Some(e) => {
                assert_eq!(
                    s(e, "Subject"),
                    Some(x.subject.as_str()),
                    "subject byte-exact"
                );
                assert_eq!(s(e, "SenderAddress"), Some(x.sender.as_str()));
                assert_eq!(s(e, "Status"), Some(x.status.as_str()));
                let received = s(e, "Received").unwrap_or("");
                if graph {
                    assert_eq!(received, x.received_graph);
                } else {
                    assert!(
                        received.starts_with(&x.received),
                        "{received} vs {}",
                        x.received
                    );
                    assert!(received.ends_with('Z'));
                }
                assert!(e.get("@devo_pulling_id").is_some());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} missing, e.g. {:?}",
        missing.len(),
        expected.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(events.len(), expected.len(), "extra events delivered");
    events.len()
}

#[test]
fn rws_pull_with_faults_delivers_every_record_exactly_once() {
    let emu = Emulator::start(EmuOptions {
        page_size: 40,
        token_lifetime_secs: 20,
        faults: Faults {
            rate_429: 0.05,
            rate_503: 0.1,
            rate_cut: 0.1,
            ..Faults::default()
        },
        ..EmuOptions::default()
    });
    let cfg = Cfg::new(&emu.base_url());
    let w = setup("rws-faults", &emu, &cfg);
    // Mid-run, every issued token is revoked: the collector must renew at once on the
    // 401 and retry, losing nothing.
    let out = std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            emu.revoke_tokens();
        });
        w.run(
            &["run", "--once", "-c", "config/config.yaml"],
            Duration::from_secs(240),
        )
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tokens = emu
        .request_log()
        .iter()
        .filter(|r| r.api == "token")
        .count();
    eprintln!("rws: {tokens} token request(s)");
    assert!(tokens >= 2, "the token was never renewed");
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    assert!(stderr.contains("Remote data is up to date!"), "{stderr}");
    assert!(stderr.contains("Pull Summary: "), "{stderr}");
    let n = assert_exactly_once(
        &emu,
        &w,
        &stderr,
        false,
        "tenant-1",
        "office365_exchange_message",
        "1000",
    );
    assert!(n > 2000, "two days of data expected, got {n}");
    // Faults happened and were survived.
    let log = emu.request_log();
    assert!(log.iter().any(|r| r.status == 503), "no 503 injected");
    assert!(log.iter().any(|r| r.status == 429), "no 429 injected");
    // No secret anywhere.
    for text in [stderr.to_string(), w.read("events.jsonl")] {
        assert!(!text.contains("secret-tenant-1"), "secret leaked");
    }
    // A second run finds nothing new and sends nothing twice.
    let again = w.run(
        &["run", "--once", "-c", "config/config.yaml"],
        Duration::from_secs(60),
    );
    assert!(again.status.success());
    let events = json_lines(&w.read("events.jsonl"));
    assert_eq!(events.len(), n);
}

#[test]
fn graph_pull_delivers_each_recipient_and_stays_within_budget() {
    let emu = Emulator::start(EmuOptions {
        graph_max_top: 5000,
        token_lifetime_secs: 20,
        records_per_hour: 240,
        faults: Faults {
            rate_503: 0.3,
            rate_cut: 0.3,
            ..Faults::default()
        },
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    cfg.cutoff_days = 3;
    let w = setup("graph", &emu, &cfg);
    let out = w.run(
        &["run", "--once", "-c", "config/config.yaml"],
        Duration::from_secs(240),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    assert_exactly_once(
        &emu,
        &w,
        &stderr,
        true,
        "tenant-1",
        "office365_exchange_message",
        "1000",
    );
    let known = emu.known_message("tenant-1").expect("known message");
    let events = json_lines(&w.read("events.jsonl"));
    let five: Vec<_> = events
        .iter()
        .filter(|e| s(e, "MessageTraceId") == Some(known.message_trace_id.as_str()))
        .collect();
    assert_eq!(five.len(), 5, "one event per recipient");
    assert!(emu.graph_requests_in_any_5min() <= 100);
    let log = emu.request_log();
    assert!(
        log.iter()
            .any(|r| r.api == "graph" && (r.status == 503 || r.cut)),
        "no Graph fault was injected"
    );
    let graph_requests = emu
        .request_log()
        .iter()
        .filter(|r| r.api == "graph")
        .count();
    // Three days of backfill in windows of up to 10 days: a handful of requests.
    eprintln!(
        "graph backfill: {} events, {graph_requests} Graph request(s) incl. retried faults",
        events.len()
    );
    assert!(
        graph_requests < 20,
        "{graph_requests} Graph requests for a 3-day backfill"
    );
}

#[test]
fn wrong_secret_is_setup_error_100_without_the_secret() {
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants[0].3 = "wrong-secret-value".into();
    let w = setup("wrong-secret", &emu, &cfg);
    let out = w.run(
        &["run", "--once", "-c", "config/config.yaml"],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SetupError(100)"), "{stderr}");
    assert!(stderr.contains("AADSTS7000215"), "{stderr}");
    assert!(
        stderr.contains("office365_exchange_message#1000"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-secret-value"));
}

#[test]
fn rws_retirement_points_to_graph() {
    let emu = Emulator::start(EmuOptions {
        faults: Faults {
            rws_unavailable: true,
            ..Faults::default()
        },
        ..EmuOptions::default()
    });
    let cfg = Cfg::new(&emu.base_url());
    let w = setup("retired", &emu, &cfg);
    let out = w.run(
        &["run", "--once", "-c", "config/config.yaml"],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("office365_exchange_message_graph_service"),
        "{stderr}"
    );
}

#[test]
fn graph_service_principal_missing_is_explained() {
    let mut t = TenantSpec::new("tenant-1");
    t.service_principal_missing = true;
    let emu = Emulator::start(EmuOptions {
        tenants: vec![t],
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    let w = setup("sp-missing", &emu, &cfg);
    let out = w.run(
        &["run", "--once", "-c", "config/config.yaml"],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("Service principal-less authentication failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_a_running_collector_within_five_seconds() {
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.period = 3600;
    let w = setup("sigterm", &emu, &cfg);
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    // Let it pull and settle into its wait between periods.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !w.read("stderr.log").contains("Remote data is up to date!") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            w.read("stderr.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = std::time::Instant::now();
    p.signal("TERM");
    let st = p.wait(Duration::from_secs(5)).expect("stopped within 5 s");
    assert!(st.success(), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // SIGHUP is ignored: a second collector keeps running through it.
    let mut p2 = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    std::thread::sleep(Duration::from_millis(500));
    p2.signal("HUP");
    assert!(
        p2.wait(Duration::from_millis(700)).is_none(),
        "SIGHUP must not stop msgtrace"
    );
    p2.signal("INT");
    assert!(p2
        .wait(Duration::from_secs(5))
        .expect("SIGINT stops")
        .success());
}

#[test]
fn statistics_lines_with_a_short_interval() {
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.period = 3600;
    let w = setup("stats", &emu, &cfg);
    let mut p = w.spawn(
        &["run", "-c", "config/config.yaml"],
        &[("MSGTRACE_STATS_INTERVAL_SECS", "1")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = w.read("stderr.log");
        if log.contains("[GC] process: RSS(") && log.contains("Total number of messages sent: ") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(5)).is_some());
}
