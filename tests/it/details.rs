//! Trace details through the binary (SPEC §3 "Trace details", §4 "Detail events"): the
//! rows whose status is listed get every detail event exactly once, no other row gets a
//! detail call, list and detail requests together stay within the tenant's budget, a
//! kill -9 loses and repeats nothing, and a full queue drops and counts.
//!
//! The 5-minute budget span is shortened to a few seconds on both sides
//! (`MSGTRACE_PACER_SPAN_SECS`, `EmuOptions::graph_window_secs`) so that a run that
//! needs several spans of detail requests takes seconds.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::emulator::{EmuOptions, Emulator, Faults};
use crate::harness::{json_lines, s, Cfg, Workdir};

/// Budget span in seconds for these tests (stands for 5 minutes).
const SPAN: u64 = 4;
/// The emulator's limit per span (stands for Microsoft's 100).
const LIMIT: usize = 30;

fn emulator(records_per_hour: u32, faults: Faults) -> Emulator {
    Emulator::start(EmuOptions {
        records_per_hour,
        graph_limit_per_5min: LIMIT,
        graph_window_secs: SPAN,
        data_days: 3,
        faults,
        ..EmuOptions::default()
    })
}

fn setup(name: &str, emu: &Emulator, service_extra: &str, window: u64) -> Workdir {
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    cfg.cutoff_days = 2;
    cfg.window = window;
    cfg.service_extra = service_extra.to_string();
    let w = Workdir::new(name);
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    w
}

type Row = (String, String);

/// The delivered trace rows whose status gets details, and the delivered detail events
/// per row as (Date, Event, Action, Detail, Data).
fn split(events: &[miniserde::json::Object]) -> (Vec<Row>, HashMap<Row, Vec<[String; 5]>>) {
    let mut rows = Vec::new();
    let mut details: HashMap<Row, Vec<[String; 5]>> = HashMap::new();
    for e in events {
        let key = (
            s(e, "MessageTraceId").unwrap_or("").to_string(),
            s(e, "RecipientAddress").unwrap_or("").to_string(),
        );
        if let Some(status) = s(e, "Status") {
            if status == "Failed" || status == "FilteredAsSpam" {
                rows.push(key);
            }
        } else {
            assert!(e.get("@devo_pulling_id").is_some(), "pulling id");
            let action = match e.get("Action") {
                Some(miniserde::json::Value::String(a)) => a.clone(),
                Some(miniserde::json::Value::Null) => "null".to_string(),
                other => panic!("Action {other:?}"),
            };
            details.entry(key).or_default().push([
                s(e, "Date").unwrap_or("").to_string(),
                s(e, "Event").unwrap_or("").to_string(),
                action,
                s(e, "Detail").unwrap_or("").to_string(),
                s(e, "Data").unwrap_or("").to_string(),
            ]);
        }
    }
    (rows, details)
}

/// Every row got exactly the emulator's detail events, each once; no other row got any.
fn assert_details_exactly_once(emu: &Emulator, events: &[miniserde::json::Object]) -> usize {
    let (rows, details) = split(events);
    assert!(!rows.is_empty(), "no Failed/FilteredAsSpam row delivered");
    let unique: HashSet<&Row> = rows.iter().collect();
    let mut total = 0;
    for row in &unique {
        let want = emu
            .expected_details("tenant-1", &row.0, &row.1)
            .unwrap_or_else(|| panic!("{row:?} was never served by the emulator"));
        let mut want: Vec<[String; 5]> = want
            .into_iter()
            .map(|d| {
                [
                    d.date,
                    d.event,
                    d.action.unwrap_or_else(|| "null".into()),
                    d.description,
                    d.data,
                ]
            })
            .collect();
        let mut got = details.get(*row).cloned().unwrap_or_default();
        want.sort();
        got.sort();
        assert!(
            (2..=6).contains(&want.len()),
            "{} events for {row:?}",
            want.len()
        );
        assert_eq!(got, want, "detail events of {row:?}");
        total += got.len();
    }
    let extra: Vec<_> = details.keys().filter(|k| !unique.contains(k)).collect();
    assert!(
        extra.is_empty(),
        "details for rows not asked for: {extra:?}"
    );
    total
}

/// (trace id, recipient) of every detail request the emulator saw, and the list count.
fn detail_calls(emu: &Emulator) -> (Vec<Row>, usize) {
    let mut calls = Vec::new();
    let mut list = 0;
    for r in emu.request_log().iter().filter(|r| r.api == "graph") {
        let Some(rest) = r
            .path
            .strip_prefix("/v1.0/admin/exchange/tracing/messageTraces/")
        else {
            list += 1;
            continue;
        };
        let (id, call) = rest.split_once('/').expect("id/function");
        let addr = call
            .strip_prefix("getDetailsByRecipient(recipientAddress='")
            .and_then(|a| a.strip_suffix("')"))
            .expect("function call");
        calls.push((id.to_string(), addr.replace("''", "'")));
    }
    (calls, list)
}

#[test]
fn failed_and_spam_rows_get_every_detail_once_within_the_budget() {
    let emu = emulator(
        6,
        Faults {
            rate_429: 0.1,
            rate_503: 0.1,
            rate_cut: 0.1,
            ..Faults::default()
        },
    );
    let w = setup(
        "details-once",
        &emu,
        "        trace_details_statuses: Failed, filteredasspam\n        max_requests_per_5_minutes: 28\n        max_detail_requests_per_5_minutes: 10\n",
        3600,
    );
    let span = SPAN.to_string();
    let out = w.run_env(
        &["run", "--once", "-c", "config/config.yaml"],
        &[("MSGTRACE_PACER_SPAN_SECS", span.as_str())],
        Duration::from_secs(85),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    for l in stderr.lines().filter(|l| l.contains("trace detail")) {
        eprintln!("{l}");
    }
    let events = json_lines(&w.read("events.jsonl"));
    let detail_events = assert_details_exactly_once(&emu, &events);
    let (rows, _) = split(&events);
    let wanted: HashSet<Row> = rows
        .iter()
        .map(|(i, r)| (i.clone(), r.to_lowercase()))
        .collect();
    let (calls, list) = detail_calls(&emu);
    for c in &calls {
        assert!(
            wanted.contains(&(c.0.clone(), c.1.to_lowercase())),
            "detail call for a row not asked for: {c:?}"
        );
    }
    assert!(
        calls.iter().any(|c| c.1.contains('\'')) || !rows.iter().any(|r| r.1.contains('\'')),
        "an address with ' was asked for as sent"
    );
    let faulted = emu
        .request_log()
        .iter()
        .filter(|r| r.path.contains("getDetailsByRecipient") && (r.status != 200 || r.cut))
        .count();
    assert!(faulted > 0, "no detail request was faulted");
    assert_eq!(emu.budget_429s(), 0, "the emulator answered 429 for budget");
    let peak = emu.graph_requests_in_any_5min();
    assert!(peak <= LIMIT, "{peak} requests in one budget span");
    eprintln!(
        "details: {} rows, {detail_events} detail events, {} detail requests ({faulted} faulted), {list} list requests, peak {peak} per {SPAN}s span",
        wanted.len(),
        calls.len()
    );
    let check = w.run(
        &["check", "-c", "config/config.yaml"],
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("trace details on for status failed,filteredasspam")
            && text.contains("28 requests, of which details use at most 10"),
        "{text}"
    );
    // Nothing is left in the queue.
    let show = w.run(
        &["state", "show", "-c", "config/config.yaml"],
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("trace details: 0 row(s) pending"), "{text}");
}

#[test]
fn kill_9_mid_way_resumes_pending_details_without_loss_or_repeat() {
    let emu = emulator(6, Faults::default());
    let w = setup(
        "details-kill",
        &emu,
        "        trace_details_statuses: Failed,FilteredAsSpam\n        max_requests_per_5_minutes: 28\n        max_detail_requests_per_5_minutes: 8\n",
        86_400,
    );
    let span = SPAN.to_string();
    let env = [("MSGTRACE_PACER_SPAN_SECS", span.as_str())];
    let mut p = w.spawn_log(&["run", "-c", "config/config.yaml"], &env, "first.log");
    // Wait until the first span's 8 detail requests are answered, then kill while the
    // details wait for the next span: not between an answer's delivery and its "done"
    // record, the one-fsync edge where a row's events may be sent again (documented).
    let limit = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let served = emu.details_served().len();
        if served >= 8 {
            std::thread::sleep(Duration::from_millis(400));
            break;
        }
        assert!(
            std::time::Instant::now() < limit,
            "no details within 40 s:\n{}",
            w.read("first.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p.kill9();
    let show = w.run(
        &["state", "show", "-c", "config/config.yaml"],
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&show.stdout);
    let pending: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("trace details: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pending count in {text}"));
    assert!(pending > 0, "all details done before the kill: {text}");
    let out = w.run_env(
        &["run", "--once", "-c", "config/config.yaml"],
        &env,
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    assert!(
        stderr.contains("awaiting trace details from the last run"),
        "{stderr}"
    );
    let events = json_lines(&w.read("events.jsonl"));
    let n = assert_details_exactly_once(&emu, &events);
    let served = emu.details_served();
    let unique: HashSet<_> = served.iter().collect();
    eprintln!(
        "kill -9: {pending} row(s) pending at the kill, {n} detail events, {} detail answers ({} rows)",
        served.len(),
        unique.len()
    );
    assert_eq!(emu.budget_429s(), 0);
}

#[test]
fn a_full_queue_drops_the_oldest_and_counts_them() {
    let emu = emulator(30, Faults::default());
    let w = setup(
        "details-full",
        &emu,
        "        trace_details_statuses: Failed,FilteredAsSpam\n        max_requests_per_5_minutes: 28\n        max_detail_requests_per_5_minutes: 1\n        max_pending_details: 100\n",
        86_400,
    );
    // A long span: one detail request, then the queue only fills.
    let env = [("MSGTRACE_PACER_SPAN_SECS", "120")];
    let mut p = w.spawn_log(&["run", "-c", "config/config.yaml"], &env, "run.log");
    let log = w.wait_log("run.log", "dropped (queue full)", Duration::from_secs(60));
    p.signal("TERM");
    let _ = p.wait(Duration::from_secs(10));
    let log = log + &w.read("run.log");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("trace detail queue full"))
        .collect();
    assert!(!warnings.is_empty(), "no drop warning:\n{log}");
    let first = warnings[0];
    assert!(
        log.lines()
            .filter(|l| l.contains("trace detail queue full"))
            .all(|l| l == first),
        "the warning is logged at most once an hour:\n{warnings:?}"
    );
    let events = json_lines(&w.read("events.jsonl"));
    let (rows, details) = split(&events);
    let asked: HashSet<&Row> = rows.iter().collect();
    let done = details.len();
    let show = w.run(
        &["state", "show", "-c", "config/config.yaml"],
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&show.stdout);
    let pending: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("trace details: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pending count in {text}"));
    assert!((90..=100).contains(&pending), "{text}");
    let dropped = asked.len() - pending - done;
    let logged: usize = log
        .lines()
        .rev()
        .find_map(|l| {
            l.split_once(" row(s) dropped (queue full)")
                .and_then(|(head, _)| head.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no details summary:\n{log}"));
    assert_eq!(logged, dropped, "dropped rows counted");
    eprintln!(
        "queue cap 100: {} matching rows, {done} detailed, {dropped} dropped; warning: {first}",
        asked.len()
    );
    assert!(dropped > 0);
    assert!(first.contains("dropped since the start"), "{first}");
}

#[test]
fn detail_events_go_out_under_each_outputs_detail_tag() {
    use crate::receivers::{Pki, RawOptions, RawReceiver, TempDir};
    let dir = TempDir::new("details-tags");
    let pki = Pki::create(dir.path());
    let plain = RawOptions {
        tls: false,
        require_client_cert: false,
        ..RawOptions::default()
    };
    let devo = RawReceiver::start(&pki, plain.clone());
    let syslog = RawReceiver::start(&pki, plain);
    let emu = emulator(4, Faults::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    cfg.cutoff_days = 1;
    cfg.window = 86_400;
    cfg.service_extra = "        trace_details_statuses: FilteredAsSpam\n".to_string();
    cfg.outputs = format!(
        "  devo_1:\n    type: devo_platform\n    config:\n      address: 127.0.0.1\n      port: {}\n      type: TCP\n      detail_tag: my.app.o365.detail\n  syslog_1:\n    type: syslog\n    config:\n      address: 127.0.0.1\n      port: {}\n      type: TCP\n      tag: rows\n",
        devo.port, syslog.port
    );
    let w = Workdir::new("details-tags");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(
        &["run", "--once", "-c", "config/config.yaml"],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    let devo_text = String::from_utf8(devo.connections().concat()).unwrap();
    let (mut rows, mut details) = (0, 0);
    for line in devo_text.lines() {
        if line.contains("\"Event\":") {
            details += 1;
            assert!(line.contains(" my.app.o365.detail: {"), "{line}");
        } else {
            rows += 1;
            assert!(
                line.contains(" cloud.office365.messagetracing: {"),
                "{line}"
            );
        }
    }
    assert!(rows > 0 && details > 0, "{rows} rows, {details} details");
    let syslog_text = String::from_utf8(syslog.connections().concat()).unwrap();
    let msgs: Vec<&str> = syslog_text.split("<14>1 ").skip(1).collect();
    assert_eq!(msgs.len(), rows + details);
    for m in msgs {
        let detail = m.contains("\"Event\":");
        let tag = if detail {
            " my.app.office365.messagetracedetail - - - {"
        } else {
            " rows - - - {"
        };
        assert!(m.contains(tag), "{m}");
    }
}
