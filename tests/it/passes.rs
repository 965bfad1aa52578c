//! Issue 13 through the binary: the delivery ledger, the first pass and the settle pass.
//! Restarts mid-window, cut pages, a burst on a window's edge second, moves between the
//! APIs and a version 1 state file deliver every record once; the first pass delivers
//! within `first_pass_delay + period` of a record becoming visible, the settle pass what
//! was late or changed its Status — each (MessageTraceId, RecipientAddress, Status) once.
//! Every test runs against the emulator on 127.0.0.1 and is bounded (< 60 s).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::emulator::{now_secs, EmuOptions, Emulator, ExpectedRecord, Faults, TenantSpec};
use crate::harness::{final_cursor, json_lines, logged_start, s, Cfg, Workdir};

const RUN_ONCE: &[&str] = &["run", "--once", "-c", "config/config.yaml"];
const RUN: &[&str] = &["run", "-c", "config/config.yaml"];
const RWS: &str = "office365_exchange_message_service";
const GRAPH: &str = "office365_exchange_message_graph_service";
const INPUT: &str = "office365_exchange_message";

type Key = (String, String);

fn setup(name: &str, emu: &Emulator, cfg: &Cfg) -> Workdir {
    let w = Workdir::new(name);
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    w
}

/// Deliveries per (id, recipient) and per (id, recipient, status).
fn deliveries(w: &Workdir) -> (HashMap<Key, usize>, HashMap<(Key, String), usize>) {
    let (mut by_key, mut by_status) = (HashMap::new(), HashMap::new());
    let text = std::fs::read_to_string(w.file("events.jsonl")).unwrap_or_default();
    for e in json_lines(&text) {
        let k = (
            s(&e, "MessageTraceId").unwrap_or("").to_string(),
            s(&e, "RecipientAddress").unwrap_or("").to_string(),
        );
        let st = s(&e, "Status").unwrap_or("").to_ascii_lowercase();
        *by_status.entry((k.clone(), st)).or_insert(0) += 1;
        *by_key.entry(k).or_insert(0) += 1;
    }
    (by_key, by_status)
}

/// (missing of `expected`, deliveries beyond the first per (id, recipient)).
fn missing_and_dups(w: &Workdir, expected: &[ExpectedRecord]) -> (usize, usize) {
    let (by_key, _) = deliveries(w);
    let missing = expected
        .iter()
        .filter(|r| !by_key.contains_key(&r.key()))
        .count();
    let dups = by_key.values().map(|n| n - 1).sum();
    (missing, dups)
}

/// A restart in the middle of a window (pages newest first, stopped by SIGTERM after
/// some pages) resumes at the saved page; the ledger filters what the window delivered
/// before the stop, so nothing comes twice — before the ledger, the end-edge keys of
/// the window were forgotten (5 duplicates per restart).
#[test]
fn restart_mid_window_delivers_nothing_twice() {
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 600,
        page_size: 100,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.window = 6 * 3600;
    let w = setup("passes-restart", &emu, &cfg);
    let mut restarts = 0;
    let delivered = || {
        std::fs::read_to_string(w.file("events.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    for i in 0..3 {
        let base = delivered();
        let log = format!("run{i}.log");
        let mut p = w.spawn_log(RUN, &[], &log);
        // SIGTERM only once the process handles it (its workers started): a signal
        // during start-up would end it by the default action, not a clean stop.
        w.wait_log(&log, "worker thread(s)", Duration::from_secs(30));
        let t = Instant::now();
        // Stop after a few pages of this run, part-way into a window.
        while t.elapsed() < Duration::from_secs(20) {
            if delivered() >= base + 250 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        p.signal("TERM");
        assert!(p.wait(Duration::from_secs(30)).is_some_and(|s| s.success()));
        restarts += 1;
    }
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    let c = final_cursor(&w.file("state"), "1000", RWS);
    let start = logged_start(&w.read("run0.log"), INPUT).expect("start logged");
    let expected = emu.expected("tenant-1", start, c.window_start, now_secs());
    let (missing, dups) = missing_and_dups(&w, &expected);
    eprintln!(
        "[passes] {restarts} restarts mid-window (RWS, pages of 100 newest first): {} records, {missing} missing, {dups} delivered twice",
        expected.len()
    );
    assert_eq!(missing, 0);
    assert_eq!(dups, 0);
}

/// Cut bodies: each page cut mid-entry is retried, its delivered head filtered by the
/// ledger — however many records the window holds (no in-memory key cap any more).
#[test]
fn retried_cut_pages_deliver_nothing_twice() {
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 600,
        page_size: 200,
        faults: Faults {
            rate_cut: 0.3,
            ..Faults::default()
        },
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.window = 86_400;
    let w = setup("passes-cut", &emu, &cfg);
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    let c = final_cursor(&w.file("state"), "1000", RWS);
    let cuts = emu.request_log().iter().filter(|r| r.cut).count();
    let start = logged_start(&log, INPUT).expect("start logged");
    let expected = emu.expected("tenant-1", start, c.window_start, now_secs());
    let (missing, dups) = missing_and_dups(&w, &expected);
    eprintln!(
        "[passes] cut pages: {cuts} cut bodies retried, {} records, {missing} missing, {dups} delivered twice",
        expected.len()
    );
    assert!(cuts > 0);
    assert_eq!(missing, 0);
    assert_eq!(dups, 0);
}

/// 120,000 recipients of one message in the very second a Graph window ends (bounds
/// inclusive: both windows return them): exit 0, none missing, none twice, and the
/// checkpoint does not fail (before: "cannot checkpoint: 100002 edge keys", exit 3).
#[test]
fn burst_on_a_graph_window_edge_second() {
    let now = now_secs();
    let x = now - 3 * 3600;
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 60,
        burst: Some((x, 120_000)),
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    cfg.cutoff_days = 1;
    let w = setup("passes-burst", &emu, &cfg);
    // A cursor whose window ends exactly on the burst's second.
    std::fs::create_dir_all(w.file("state")).unwrap();
    {
        let path = msgtrace::state::state_path(&w.file("state"), "1000", GRAPH);
        let (mut st, _) = msgtrace::state::StateFile::open(&path).unwrap();
        st.checkpoint(&msgtrace::state::Cursor {
            window_start: x - 3600,
            settle_start: x - 3600,
            window_len: 3600,
            delay_secs: 3600,
            service: GRAPH.to_string(),
            ..Default::default()
        })
        .unwrap();
    }
    let t = Instant::now();
    // ~10 s on an idle host (debug build); the deadline allows a loaded 2-core one.
    let m = w.run_measured(RUN_ONCE, Duration::from_secs(120));
    let log = m.stderr.clone();
    assert!(
        m.status.success(),
        "{}",
        &log[log.len().saturating_sub(3000)..]
    );
    // The window's set stays bounded: the window is cut before the burst's second.
    assert!(
        log.contains("holds more than 100000 records"),
        "{}",
        &log[log.len().saturating_sub(3000)..]
    );
    assert!(
        log.contains(&format!("- {})", msgtrace::time::rfc3339(x))),
        "a window ends on the burst's second"
    );
    let c = final_cursor(&w.file("state"), "1000", GRAPH);
    let expected = emu.expected_graph("tenant-1", x - 3600, c.window_start - 1, now_secs());
    let (missing, dups) = missing_and_dups(&w, &expected);
    let ledger = std::fs::metadata(w.file("state/1000.ledger"))
        .unwrap()
        .len();
    eprintln!(
        "[passes] burst of 120,000 on a window's end second (Graph): {} records in {:.1} s, {missing} missing, {dups} delivered twice; peak RSS {:?} KiB (debug build); ledger {ledger} bytes after pruning (one pass: the settle cursor rode along)",
        expected.len(),
        t.elapsed().as_secs_f64(),
        m.peak_rss_kib,
    );
    assert!(expected.len() > 120_000);
    assert_eq!(missing, 0);
    assert_eq!(dups, 0);
}

/// Moves between the APIs in the middle of a window, with `reset_persistence_auth`
/// set only in the old block (absent in the new: the cursor is kept) and in both:
/// nothing missing, nothing twice (before: 100 duplicates mid-window, and 1,801 of
/// 1,802 when the Graph block lacked the RWS block's reset_persistence_auth).
#[test]
fn moves_mid_window_both_ways_keep_cursor_and_ledger() {
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 600,
        page_size: 100,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.window = 6 * 3600;
    cfg.service_extra = "        reset_persistence_auth: 2026-01-01\n".into();
    let w = setup("passes-move", &emu, &cfg);
    // RWS, stopped part-way into a window.
    let mut p = w.spawn_log(RUN, &[], "rws.log");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let n = std::fs::read_to_string(w.file("events.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 300 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(30)).is_some_and(|s| s.success()));
    let rws = final_cursor(&w.file("state"), "1000", RWS);
    assert!(rws.window_end != 0, "stopped mid-window: {rws:?}");
    // To Graph, whose block has no reset_persistence_auth: the cursor is kept.
    cfg.graph = true;
    cfg.service_extra = String::new();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let glog = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{glog}");
    assert!(
        glog.contains(&format!("took over the cursor of {RWS}")),
        "{glog}"
    );
    assert!(!glog.contains("state cleared"), "{glog}");
    assert!(!glog.contains("no saved state found"), "{glog}");
    let g = final_cursor(&w.file("state"), "1000", GRAPH);
    std::thread::sleep(Duration::from_millis(1100));
    // And back to RWS, both blocks with the same reset_persistence_auth.
    cfg.graph = false;
    cfg.service_extra = "        reset_persistence_auth: 2026-01-01\n".into();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("took over the cursor of {GRAPH}")),
        "{log}"
    );
    let end = final_cursor(&w.file("state"), "1000", RWS).window_start;
    assert!(end >= g.window_start);
    let start = logged_start(&w.read("rws.log"), INPUT).expect("start logged");
    let expected = emu.expected("tenant-1", start, end, now_secs());
    let (missing, dups) = missing_and_dups(&w, &expected);
    eprintln!(
        "[passes] RWS stopped mid-window -> Graph (no reset_persistence_auth) -> RWS: {} records, {missing} missing, {dups} delivered twice",
        expected.len()
    );
    assert_eq!(missing, 0);
    assert_eq!(dups, 0);
}

/// A version 1 state file (0.1.0) with edge keys: loaded, migrated to version 2, its
/// edge keys moved into the ledger — the records they name are not sent again, the
/// window after them is read from the v1 cursor on, nothing skipped.
#[test]
fn version_1_state_is_migrated_without_repeat_or_gap() {
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 600,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    cfg.cutoff_days = 1;
    let w = setup("passes-v1", &emu, &cfg);
    // The v1 cursor: the last window ended at a whole second that holds records
    // (Graph bounds are inclusive: the next window returns them again).
    let now = now_secs();
    let edge = emu
        .expected_graph("tenant-1", now - 20 * 3600, now - 10 * 3600, now)
        .into_iter()
        .find(|r| r.received_nanos == 0)
        .expect("a record on a whole second")
        .received_secs;
    let at_edge: Vec<ExpectedRecord> = emu.expected_graph("tenant-1", edge, edge, now);
    let keys: Vec<u64> = at_edge
        .iter()
        .map(|r| msgtrace::record::record_key(&r.message_trace_id, &r.recipient))
        .collect();
    std::fs::create_dir_all(w.file("state")).unwrap();
    let path = msgtrace::state::state_path(&w.file("state"), "1000", GRAPH);
    let v1 = msgtrace::state::encode_record_v1(&msgtrace::state::Cursor {
        window_start: edge,
        edge_keys: keys.clone(),
        delay_secs: 3600,
        service: GRAPH.into(),
        ..Default::default()
    });
    std::fs::write(&path, v1).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "state format 1 migrated: {} edge key(s) moved into the delivery ledger",
            keys.len()
        )),
        "{log}"
    );
    let (by_key, _) = deliveries(&w);
    for r in &at_edge {
        assert!(
            !by_key.contains_key(&r.key()),
            "edge record sent again: {r:?}"
        );
    }
    let c = final_cursor(&w.file("state"), "1000", GRAPH);
    assert_eq!(c.edge_keys, Vec::<u64>::new());
    // The log (append-only) now ends in a version 2 record.
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.ends_with(&msgtrace::state::encode_record(&c)));
    let expected: Vec<ExpectedRecord> = emu
        .expected_graph("tenant-1", edge, c.window_start, now_secs())
        .into_iter()
        .filter(|r| r.received_secs != edge)
        .collect();
    let (missing, dups) = missing_and_dups(&w, &expected);
    eprintln!(
        "[passes] v1 state with {} edge keys migrated: {} records after it, {missing} missing, {dups} twice",
        keys.len(),
        expected.len()
    );
    assert_eq!(missing, 0);
    assert_eq!(dups, 0);
}

/// The two passes, running: records visible at once go out by the first pass within
/// `first_pass_delay + period` of becoming visible; records visible later than that
/// (after the first pass read their window) go out by the settle pass; records whose
/// Status changed between the passes go out again with the new Status. Each (id,
/// recipient, status) once. Delays are the shortest allowed: first pass 60 s, settle 70 s.
#[test]
fn first_pass_and_settle_pass() {
    const FIRST: i64 = 60;
    const DELAY: i64 = 70;
    const PERIOD: i64 = 1;
    const LATE: u32 = 66;
    let t0 = now_secs();
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 36_000,
        data_days: 0,
        origin: Some(t0 - 100),
        // 20 % of the records appear 66 s after Received: after the first pass read them.
        lateness: Some((20, LATE)),
        // Pending/GettingStatus turn Delivered 64 s after they appear: between the passes.
        settle_secs: Some(64),
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.delay = DELAY as u64;
    cfg.first_pass = Some(FIRST as u64);
    cfg.period = PERIOD as u64;
    cfg.window = 3600;
    let w = setup("passes-two", &emu, &cfg);
    let mut p = w.spawn_log(RUN, &[], "run.log");
    // Watch the output: when each (id, recipient, status) first appeared.
    let mut seen_at: HashMap<(Key, String), f64> = HashMap::new();
    let started = Instant::now();
    let base = now_secs() as f64 - started.elapsed().as_secs_f64();
    let mut offset = 0usize;
    while started.elapsed() < Duration::from_secs(32) {
        let text = std::fs::read_to_string(w.file("events.jsonl")).unwrap_or_default();
        let at = base + started.elapsed().as_secs_f64();
        if let Some(new) = text.get(offset..) {
            let whole = new.rfind('\n').map_or(0, |i| i + 1);
            for e in json_lines(&new[..whole]) {
                let k = (
                    s(&e, "MessageTraceId").unwrap_or("").to_string(),
                    s(&e, "RecipientAddress").unwrap_or("").to_string(),
                );
                let st = s(&e, "Status").unwrap_or("").to_ascii_lowercase();
                seen_at.entry((k, st)).or_insert(at);
            }
            offset += whole;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(30)).is_some_and(|s| s.success()));
    let log = w.read("run.log");
    assert!(log.contains("first pass, "), "{log}");
    assert!(log.contains("settle pass, "), "{log}");
    let c = final_cursor(&w.file("state"), "1000", RWS);
    let (by_key, by_status) = deliveries(&w);
    let twice: Vec<_> = by_status.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} sent twice, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    // Everything up to the settle cursor is delivered; records whose Status settled
    // before the settle pass read them also carry the settled Status.
    let settled = emu.expected("tenant-1", t0 - 100, c.settle_start, now_secs());
    assert!(settled.len() > 100, "{}", settled.len());
    let missing: Vec<_> = settled
        .iter()
        .filter(|r| !by_key.contains_key(&r.key()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} missing: {:?}",
        missing.len(),
        settled.len(),
        missing.first()
    );
    let late: Vec<_> = settled
        .iter()
        .filter(|r| r.visible_at > r.received_secs)
        .collect();
    assert!(!late.is_empty());
    let changed = by_key.iter().filter(|(_, n)| **n > 1).count();
    // Latency from visible to delivered, for records received after the first pass's
    // target when the collector started (those it was not behind on).
    let mut first_lat = Vec::new();
    let mut late_lat = Vec::new();
    let all = emu.expected("tenant-1", t0 - 100, c.window_start, now_secs());
    for r in &all {
        let vis = r.visible_at as f64;
        if (r.received_secs as f64) < base - FIRST as f64 + 2.0 {
            continue;
        }
        let Some(at) = seen_at
            .iter()
            .filter(|((k, _), _)| *k == r.key())
            .map(|(_, at)| *at)
            .reduce(f64::min)
        else {
            continue;
        };
        let lat = at - vis;
        if r.visible_at > r.received_secs {
            late_lat.push(lat);
        } else {
            first_lat.push(lat);
        }
    }
    let pct = |v: &mut Vec<f64>, q: f64| -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    eprintln!(
        "[passes] first pass {FIRST} s / settle pass {DELAY} s / period {PERIOD} s: {} records settled, {} late, {changed} status change(s) sent again; \
         latency visible -> delivered: first pass median {:.1} s p95 {:.1} s ({} records), late (settle pass) median {:.1} s p95 {:.1} s ({} records); \
         late_events {} status_changes {}",
        settled.len(),
        late.len(),
        pct(&mut first_lat.clone(), 0.5),
        pct(&mut first_lat.clone(), 0.95),
        first_lat.len(),
        pct(&mut late_lat.clone(), 0.5),
        pct(&mut late_lat.clone(), 0.95),
        late_lat.len(),
        c.late_events,
        c.status_changes
    );
    // The ledger's disk cost: what it keeps between the settle cursor and now.
    let mut ledger =
        msgtrace::ledger::Ledger::open(&msgtrace::ledger::ledger_path(&w.file("state"), "1000"))
            .unwrap();
    let entries = ledger.window(i64::MIN, i64::MAX).unwrap().len();
    eprintln!(
        "[passes] ledger: {} bytes for {entries} entries ({:.1} bytes a record, pages of ~{:.0} records)",
        ledger.len(),
        ledger.len() as f64 / entries.max(1) as f64,
        entries as f64 / (c.requests.max(1) as f64)
    );
    assert!(ledger.len() as f64 / entries.max(1) as f64 <= 16.0);
    assert!(c.late_events > 0, "{c:?}");
    assert!(c.status_changes > 0, "{c:?}");
    assert_eq!(changed as u64, c.status_changes);
    // Within first_pass_delay + one period of becoming visible (+ 3 s of polling and
    // scheduling slack on a loaded 2-core test host).
    let bound = (FIRST + PERIOD + 3) as f64;
    let slow: Vec<_> = first_lat
        .iter()
        .chain(&late_lat)
        .filter(|l| **l > bound)
        .collect();
    assert!(
        slow.is_empty(),
        "{} above {bound} s: {:?}",
        slow.len(),
        slow.first()
    );
    assert!(!first_lat.is_empty() && !late_lat.is_empty());
}

/// One pass (first pass delay ≥ override delay): the vendor's behaviour, a single read
/// at the full delay, the settle cursor riding along; `state show` shows both cursors.
#[test]
fn one_pass_when_the_first_pass_delay_reaches_the_delay() {
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 60,
        tenants: vec![TenantSpec::new("tenant-1")],
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.first_pass = Some(7200);
    let w = setup("passes-one", &emu, &cfg);
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("settle pass, "), "one pass only: {log}");
    let c = final_cursor(&w.file("state"), "1000", RWS);
    assert_eq!(
        c.settle_start, c.window_start,
        "the settle cursor rode along"
    );
    let show = w.run(
        &["state", "-c", "config/config.yaml", "show"],
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&show.stdout).to_string();
    assert!(text.contains("settle pass: next one starts at"), "{text}");
}
