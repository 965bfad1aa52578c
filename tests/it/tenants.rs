//! Many tenants in one process, isolation and fairness between them, and the gap-free
//! move of a tenant from the Reporting Web Service to Graph — all through the real binary
//! against the Microsoft 365 emulator (loopback only, every wait bounded).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::emulator::{EmuOptions, Emulator, ExpectedRecord, Faults, TenantSpec};
use crate::harness::{
    final_cursor, input_name, json_lines, logged_start, many_tenants, s, set_input_key, Cfg,
    Workdir,
};

const RWS: &str = "office365_exchange_message_service";
const GRAPH: &str = "office365_exchange_message_graph_service";
const RUN_ONCE: &[&str] = &["run", "--once", "-c", "config/config.yaml"];

fn setup(name: &str, emu: &Emulator, yaml: &str) -> Workdir {
    let w = Workdir::new(name);
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", yaml);
    w
}

/// Modest data: 12 records an hour, so 100 tenants' day of backfill stays quick.
fn small_data(tenants: Vec<TenantSpec>) -> EmuOptions {
    EmuOptions {
        tenants,
        records_per_hour: 12,
        data_days: 11,
        ..EmuOptions::default()
    }
}

type Key = (String, String);

fn event_key(e: &miniserde::json::Object) -> Key {
    (
        s(e, "MessageTraceId").unwrap_or("").to_string(),
        s(e, "RecipientAddress").unwrap_or("").to_string(),
    )
}

/// Every delivered event belongs to exactly one expected record of exactly one tenant
/// (its Organization is that tenant's), and every expected record was delivered once.
/// `expected` maps tenant id → its records. Returns the events per tenant.
fn assert_each_tenant_exactly_once(
    w: &Workdir,
    expected: &HashMap<String, Vec<ExpectedRecord>>,
) -> HashMap<String, usize> {
    let mut owner: HashMap<Key, &ExpectedRecord> = HashMap::new();
    for recs in expected.values() {
        for r in recs {
            assert!(
                owner.insert(r.key(), r).is_none(),
                "the emulator gave two tenants the key {:?}",
                r.key()
            );
        }
    }
    let events = json_lines(&w.read("events.jsonl"));
    let mut seen: HashMap<Key, usize> = HashMap::new();
    let mut per_tenant: HashMap<String, usize> = HashMap::new();
    for e in &events {
        let k = event_key(e);
        let Some(x) = owner.get(&k) else {
            panic!("event of no tenant's expected range: {k:?}");
        };
        assert_eq!(
            s(e, "Organization"),
            Some(x.organization.as_str()),
            "{k:?}: organization of tenant {}",
            x.tenant
        );
        *seen.entry(k).or_default() += 1;
        *per_tenant.entry(x.tenant.clone()).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{} duplicate(s), e.g. {:?}",
        dups.len(),
        dups.iter().take(5).collect::<Vec<_>>()
    );
    for (tenant, recs) in expected {
        let missing: Vec<_> = recs
            .iter()
            .filter(|r| !seen.contains_key(&r.key()))
            .collect();
        assert!(
            missing.is_empty(),
            "tenant {tenant}: {} of {} missing, e.g. {:?}",
            missing.len(),
            recs.len(),
            missing
                .iter()
                .take(3)
                .map(|r| (&r.received, &r.message_trace_id, &r.recipient))
                .collect::<Vec<_>>()
        );
        assert_eq!(per_tenant.get(tenant).copied().unwrap_or(0), recs.len());
    }
    per_tenant
}

/// RWS view of what one input must have delivered: from its logged start to its final
/// cursor, end exclusive.
fn rws_expected(
    emu: &Emulator,
    w: &Workdir,
    stderr: &str,
    tenant: &str,
    input: &str,
    id: &str,
) -> Vec<ExpectedRecord> {
    let start = logged_start(stderr, input).unwrap_or_else(|| panic!("{input}: start logged"));
    let end = final_cursor(&w.file("state"), id, RWS).window_start;
    assert!(end > start, "{input}: the cursor moved");
    emu.expected(tenant, start, end, crate::emulator::now_secs())
}

fn count_lines(log: &str, input: &str, what: &str) -> usize {
    let tag = format!("({input},");
    log.lines()
        .filter(|l| l.contains(&tag) && l.contains(what))
        .count()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// Wait until `pred(log)` holds, with a deadline.
fn wait_log(w: &Workdir, deadline: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + deadline;
    loop {
        let log = w.read("stderr.log");
        if pred(&log) {
            return log;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- 1. a hundred tenants

#[test]
fn hundred_tenants_one_with_a_wrong_secret() {
    const N: usize = 100;
    const BAD: usize = 42;
    let tenants = many_tenants(N);
    let specs: Vec<TenantSpec> = tenants.iter().map(|t| TenantSpec::new(&t.1)).collect();
    let emu = Emulator::start(small_data(specs));
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = tenants.clone();
    cfg.tenants[BAD].3 = "wrong-secret-value".into();
    cfg.cutoff_days = 1;
    cfg.window = 3600;
    let w = setup("hundred", &emu, &cfg.yaml());
    let m = w.run_measured(RUN_ONCE, Duration::from_secs(180));
    let log = &m.stderr;
    eprintln!(
        "[tenants] 100 tenants, 1-day catch-up: wall {:.2} s, peak RSS {}",
        m.wall.as_secs_f64(),
        mib(m.peak_rss_kib)
    );
    // Setup error of one tenant: exit 2, named with input name and id, others completed.
    assert_eq!(m.status.code(), Some(2), "{log}");
    let bad_input = input_name(&tenants[BAD].0);
    let bad_who = format!("{bad_input}#{}", 1000 + BAD);
    assert!(log.contains("SetupError(100)"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("input {bad_who} failed: "))
                && l.contains("SetupError(100)")),
        "{log}"
    );
    assert!(
        log.contains(&format!("1 of {N} input(s) failed: {bad_who}")),
        "{log}"
    );
    assert!(!log.contains("wrong-secret-value"), "secret leaked");
    assert_eq!(
        log.matches("Remote data is up to date!").count(),
        N - 1,
        "{log}"
    );
    assert_eq!(
        count_lines(log, &bad_input, "Remote data is up to date!"),
        0
    );
    // Every other tenant: each record of its range exactly once, nothing of the bad one.
    let mut expected = HashMap::new();
    for (i, (suffix, tenant, _, _)) in tenants.iter().enumerate() {
        if i == BAD {
            continue;
        }
        let id = (1000 + i).to_string();
        let recs = rws_expected(&emu, &w, log, tenant, &input_name(suffix), &id);
        assert!(!recs.is_empty(), "{tenant}: no data in its range");
        expected.insert(tenant.clone(), recs);
    }
    let per = assert_each_tenant_exactly_once(&w, &expected);
    assert_eq!(per.len(), N - 1);
    assert!(!per.contains_key(&tenants[BAD].1));
    eprintln!(
        "[tenants] 100 tenants: {} events delivered exactly once",
        per.values().sum::<usize>()
    );
}

#[test]
fn peak_rss_of_one_and_ten_tenants() {
    for n in [1usize, 10] {
        let tenants = many_tenants(n);
        let specs: Vec<TenantSpec> = tenants.iter().map(|t| TenantSpec::new(&t.1)).collect();
        let emu = Emulator::start(small_data(specs));
        let mut cfg = Cfg::new(&emu.base_url());
        cfg.tenants = tenants;
        cfg.cutoff_days = 1;
        let w = setup(&format!("rss-{n}"), &emu, &cfg.yaml());
        let m = w.run_measured(RUN_ONCE, Duration::from_secs(120));
        assert!(m.status.success(), "{}", m.stderr);
        assert_eq!(m.stderr.matches("Remote data is up to date!").count(), n);
        eprintln!(
            "[tenants] {n} tenant(s), 1-day catch-up: wall {:.2} s, peak RSS {}",
            m.wall.as_secs_f64(),
            mib(m.peak_rss_kib)
        );
    }
}

// ---------------------------------------------------------------- 2. isolation, fairness

#[test]
fn a_tenant_in_a_503_storm_does_not_hold_up_the_others() {
    let tenants = many_tenants(4);
    let specs: Vec<TenantSpec> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut spec = TenantSpec::new(&t.1);
            spec.unavailable = i == 0;
            spec
        })
        .collect();
    let emu = Emulator::start(small_data(specs));
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = tenants.clone();
    // Two days in 15-minute windows: long enough for the storm to rage meanwhile. The
    // storm tenant retries at once (wait 0): the worst case for the others.
    cfg.cutoff_days = 2;
    cfg.window = 900;
    cfg.period = 2;
    let storm = input_name(&tenants[0].0);
    let w = setup("storm", &emu, &cfg.yaml());
    let started = Instant::now();
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    let others: Vec<String> = tenants[1..].iter().map(|t| input_name(&t.0)).collect();
    let log = wait_log(&w, Duration::from_secs(90), "the healthy tenants", |log| {
        others
            .iter()
            .all(|i| count_lines(log, i, "Remote data is up to date!") > 0)
    });
    let elapsed = started.elapsed();
    let log = if count_lines(&log, &storm, "giving up after 5 retries") > 0 {
        log
    } else {
        wait_log(
            &w,
            Duration::from_secs(30),
            "the storm tenant to give up",
            |l| count_lines(l, &storm, "giving up after 5 retries") > 0,
        )
    };
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(6)).is_some(), "stopped");
    let requests = emu.request_log();
    let storm_503 = requests
        .iter()
        .filter(|r| r.tenant == tenants[0].1 && r.status == 503)
        .count();
    let last_healthy = requests
        .iter()
        .rposition(|r| r.api == "rws" && r.tenant != tenants[0].1)
        .expect("healthy requests");
    let storm_meanwhile = requests[..last_healthy]
        .iter()
        .filter(|r| r.tenant == tenants[0].1 && r.status == 503)
        .count();
    eprintln!(
        "[tenants] 503 storm: 3 healthy tenants (2 days, 15-min windows) up to date after {:.2} s; the storm tenant got {storm_meanwhile} 503s meanwhile, {storm_503} in all",
        elapsed.as_secs_f64()
    );
    assert!(
        storm_meanwhile >= 6,
        "the storm raged while the others pulled"
    );
    assert_eq!(count_lines(&log, &storm, "Remote data is up to date!"), 0);
    // Nothing of the storm tenant, everything of the others.
    let mut expected = HashMap::new();
    for (i, (suffix, tenant, _, _)) in tenants.iter().enumerate().skip(1) {
        let id = (1000 + i).to_string();
        expected.insert(
            tenant.clone(),
            rws_expected(&emu, &w, &log, tenant, &input_name(suffix), &id),
        );
    }
    assert_each_tenant_exactly_once(&w, &expected);
    // `--once`: the others complete, the storm tenant is named, exit 3 (not a setup error).
    let w2 = setup("storm-once", &emu, &cfg.yaml());
    let out = w2.run(RUN_ONCE, Duration::from_secs(90));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{log}");
    let who = format!("{storm}#1000");
    assert!(
        log.contains(&format!("1 of 4 input(s) failed: {who}")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("input {who} failed: ")) && l.contains("503")),
        "{log}"
    );
    for i in &others {
        assert_eq!(
            count_lines(&log, i, "Remote data is up to date!"),
            1,
            "{log}"
        );
    }
}

#[test]
fn a_long_backfill_does_not_starve_an_up_to_date_tenant() {
    let tenants = many_tenants(2);
    let specs: Vec<TenantSpec> = tenants.iter().map(|t| TenantSpec::new(&t.1)).collect();
    let emu = Emulator::start(small_data(specs));
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = tenants.clone();
    cfg.window = 900;
    cfg.cutoff_days = 1;
    let (a, b) = (input_name(&tenants[0].0), input_name(&tenants[1].0));
    // A: ten days back (the RWS limit) in 15-minute windows; B: one day.
    let yaml = set_input_key(&cfg.yaml(), &a, "max_historic_date_cutoff_days_back", "10");
    let w = setup("fairness", &emu, &yaml);
    let m = w.run_measured(RUN_ONCE, Duration::from_secs(240));
    let log = &m.stderr;
    assert!(m.status.success(), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    let pos = |input: &str| {
        let tag = format!("({input},");
        lines
            .iter()
            .position(|l| l.contains(&tag) && l.contains("Remote data is up to date!"))
            .unwrap_or_else(|| panic!("{input} up to date:\n{log}"))
    };
    let (pa, pb) = (pos(&a), pos(&b));
    let a_total = count_lines(log, &a, "Running a new pipeline");
    let b_total = count_lines(log, &b, "Running a new pipeline");
    let a_before_b = count_lines(&lines[..pb].join("\n"), &a, "Running a new pipeline");
    eprintln!(
        "[tenants] fairness: B ({b_total} windows) up to date when A had run {a_before_b} of {a_total} windows; total {:.2} s",
        m.wall.as_secs_f64()
    );
    assert!(pb < pa, "B finished after A:\n{log}");
    // Interleaved: A got no more than about its fair share while B caught up.
    assert!(
        a_before_b <= 3 * b_total + 10,
        "A ran {a_before_b} windows before B's {b_total}"
    );
}

// ---------------------------------------------------------------- 3. duplicate inputs

#[test]
fn duplicate_ids_or_same_tenant_and_service_are_config_errors() {
    let emu = Emulator::start(small_data(vec![
        TenantSpec::new("tenant-000"),
        TenantSpec::new("tenant-001"),
    ]));
    // Two inputs with the same id.
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = many_tenants(2);
    let yaml = set_input_key(&cfg.yaml(), &input_name("t001"), "id", "1000");
    let w = setup("dup-id", &emu, &yaml);
    let out = w.run(RUN_ONCE, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("1000"), "{err}");
    assert!(err.contains("give every input its own id"), "{err}");
    eprintln!("[tenants] duplicate id: {err}");
    assert!(
        err.contains("InitVariablesError") || err.contains(".id"),
        "{err}"
    );
    assert!(!w.file("events.jsonl").exists() || w.read("events.jsonl").is_empty());
    // Two inputs (different ids) pulling the same tenant with the same service.
    cfg.tenants[1].1 = cfg.tenants[0].1.clone();
    cfg.tenants[1].2 = cfg.tenants[0].2.clone();
    cfg.tenants[1].3 = cfg.tenants[0].3.clone();
    let w = setup("dup-tenant", &emu, &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("both would send the same records"), "{err}");
    assert!(!err.contains("secret-tenant-000"), "secret leaked");
    assert!(emu.request_log().is_empty(), "nothing was requested");
}

// ---------------------------------------------------------------- 4. the move to Graph

/// Every record with Received in [start, end + 1 s): the RWS part [start, X) plus the
/// Graph part, whose last window [s, end] includes the whole second `end`.
fn moved_expected(emu: &Emulator, tenant: &str, start: i64, graph_end: i64) -> Vec<ExpectedRecord> {
    emu.expected(tenant, start, graph_end + 1, crate::emulator::now_secs())
}

/// Events per key; returns (distinct keys, duplicate deliveries).
fn dup_count(w: &Workdir) -> (usize, usize) {
    let mut seen: HashMap<Key, usize> = HashMap::new();
    for e in json_lines(&w.read("events.jsonl")) {
        *seen.entry(event_key(&e)).or_default() += 1;
    }
    let dups = seen.values().map(|n| n - 1).sum();
    (seen.len(), dups)
}

fn assert_keys_match(w: &Workdir, expected: &[ExpectedRecord]) {
    let mut seen: HashMap<Key, usize> = HashMap::new();
    for e in json_lines(&w.read("events.jsonl")) {
        *seen.entry(event_key(&e)).or_default() += 1;
    }
    let want: std::collections::HashSet<Key> = expected.iter().map(ExpectedRecord::key).collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|r| !seen.contains_key(&r.key()))
        .collect();
    let extra: Vec<_> = seen.keys().filter(|k| !want.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} missing, e.g. {:?}",
        missing.len(),
        expected.len(),
        missing
            .iter()
            .take(5)
            .map(|r| (&r.received, &r.message_trace_id))
            .collect::<Vec<_>>()
    );
    assert!(
        extra.is_empty(),
        "{} unexpected, e.g. {:?}",
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>()
    );
}

#[test]
fn move_to_graph_in_the_middle_of_a_catch_up() {
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 60,
        // Several pages a window, so the stop may fall between pages of one window.
        page_size: 25,
        // Some 503s and a 1 s retry wait slow the catch-up down to many seconds, so the
        // stop surely comes in the middle of it however fast the machine.
        faults: Faults {
            rate_503: 0.2,
            ..Faults::default()
        },
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 2;
    cfg.window = 3600;
    let input = input_name("");
    let rws_yaml = set_input_key(
        &cfg.yaml(),
        &input,
        "requests_wait_time_between_retries_in_seconds",
        "1",
    );
    let w = setup("move-mid", &emu, &rws_yaml);
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    const WINDOWS: usize = 8;
    wait_log(&w, Duration::from_secs(60), "some RWS windows", |log| {
        count_lines(log, &input, "Running a new pipeline") >= WINDOWS
    });
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(6)).is_some(), "stopped");
    let rws_log = w.read("stderr.log");
    assert!(
        count_lines(&rws_log, &input, "Remote data is up to date!") == 0,
        "still catching up when stopped"
    );
    let start = logged_start(&rws_log, &input).expect("start logged");
    let rws_cursor = final_cursor(&w.file("state"), "1000", RWS);
    let (rws_keys, rws_dups) = dup_count(&w);
    assert_eq!(rws_dups, 0);
    // Same input id, the service key replaced; Graph without faults.
    emu.set_faults(Faults::default());
    cfg.graph = true;
    w.write("config/config.yaml", &cfg.yaml());
    let graph_from = emu.request_log().len();
    let out = w.run(RUN_ONCE, Duration::from_secs(120));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("took over the cursor of {RWS}")),
        "{log}"
    );
    assert!(!log.contains("no saved state found"), "{log}");
    let graph_cursor = final_cursor(&w.file("state"), "1000", GRAPH);
    let expected = moved_expected(&emu, "tenant-1", start, graph_cursor.window_start);
    assert_keys_match(&w, &expected);
    let (keys, dups) = dup_count(&w);
    // RWS stopped `offset` records into its window (the `$skiptoken` of its saved next
    // link; 0 between windows): Graph restarts that window, so exactly those come again.
    let offset: usize = rws_cursor
        .next_link
        .as_deref()
        .and_then(|l| l.split("skiptoken=").nth(1))
        .map(|t| {
            t.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .expect("numeric $skiptoken")
        })
        .unwrap_or(0);
    eprintln!(
        "[tenants] move mid catch-up: RWS delivered {rws_keys}, stopped {offset} record(s) into window {}; {keys} records in all, {dups} delivered twice",
        fmt_z(rws_cursor.window_start)
    );
    // Graph restarts the interrupted window; the delivery ledger (per input id, shared
    // by both APIs) filters the `offset` records RWS had delivered of it (issue 13:
    // before the ledger exactly those came again).
    assert_eq!(
        dups, 0,
        "the {offset} record(s) RWS had delivered of the interrupted window come again"
    );
    let graph_requests: Vec<_> = emu.request_log()[graph_from..]
        .iter()
        .filter(|r| r.api == "graph")
        .cloned()
        .collect();
    assert!(!graph_requests.is_empty());
    assert!(
        emu.graph_requests_in_any_5min() <= 100,
        "{} Graph requests in 5 minutes",
        emu.graph_requests_in_any_5min()
    );
    // The first Graph query starts exactly where the RWS cursor stood.
    let first = &graph_requests[0].query;
    let from = crate::harness::parse_rfc3339(
        first
            .split("ge%20")
            .nth(1)
            .or_else(|| first.split("ge ").nth(1))
            .unwrap_or(""),
    );
    assert_eq!(from, Some(rws_cursor.window_start), "{first}");
    // The RWS state is kept aside, not reused.
    let rws_path = msgtrace::state::state_path(&w.file("state"), "1000", RWS);
    assert!(!rws_path.exists());
}

#[test]
fn move_to_graph_after_an_up_to_date_pull_repeats_and_skips_nothing() {
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 60,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.service_extra = "        reset_persistence_auth: 2026-01-01\n".into();
    let input = input_name("");
    let w = setup("move-done", &emu, &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let rws_log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{rws_log}");
    let start = logged_start(&rws_log, &input).expect("start logged");
    let x = final_cursor(&w.file("state"), "1000", RWS).window_start;
    // Let the target move on a few seconds, so Graph has a window [X, X + n] to pull.
    std::thread::sleep(Duration::from_millis(2100));
    cfg.graph = true;
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("took over the cursor of {RWS}")),
        "{log}"
    );
    let end = final_cursor(&w.file("state"), "1000", GRAPH).window_start;
    assert!(end > x, "Graph pulled on from {x} to {end}");
    assert_keys_match(&w, &moved_expected(&emu, "tenant-1", start, end));
    let (keys, dups) = dup_count(&w);
    eprintln!("[tenants] move when up to date: {keys} records, {dups} delivered twice");
    assert_eq!(dups, 0);
    let q = emu
        .request_log()
        .into_iter()
        .find(|r| r.api == "graph")
        .expect("a Graph request")
        .query;
    assert!(
        q.contains(&format!("ge%20{}", fmt_z(x))) || q.contains(&format!("ge {}", fmt_z(x))),
        "first Graph query starts at the RWS cursor {}: {q}",
        fmt_z(x)
    );
    // Same reset value: kept. A new value clears the taken-over state.
    let again = w.run(RUN_ONCE, Duration::from_secs(60));
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stderr).contains("state cleared"));
    cfg.service_extra = "        reset_persistence_auth: 2026-02-01\n".into();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("reset_persistence_auth changed (2026-01-01 -> 2026-02-01): state cleared"),
        "{log}"
    );
    assert!(log.contains("no saved state found, starting at"), "{log}");
    assert!(!log.contains("took over the cursor"), "{log}");
}

#[test]
fn moving_and_changing_reset_persistence_auth_together_clears() {
    let emu = Emulator::start(small_data(vec![TenantSpec::new("tenant-1")]));
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.service_extra = "        reset_persistence_auth: 2026-01-01\n".into();
    let w = setup("move-reset", &emu, &cfg.yaml());
    assert!(w.run(RUN_ONCE, Duration::from_secs(60)).status.success());
    cfg.graph = true;
    cfg.service_extra = "        reset_persistence_auth: 2026-03-01\n".into();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("took over the cursor"), "{log}");
    assert!(log.contains("state cleared"), "{log}");
    assert!(log.contains("no saved state found, starting at"), "{log}");
}

fn fmt_z(secs: i64) -> String {
    msgtrace::time::rfc3339(secs)
}

// ---------------------------------------------------------------- 5. check and state show

#[test]
fn check_and_state_show_cover_every_tenant_one_block_each() {
    let tenants = many_tenants(3);
    let specs: Vec<TenantSpec> = tenants.iter().map(|t| TenantSpec::new(&t.1)).collect();
    let emu = Emulator::start(small_data(specs));
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = tenants.clone();
    cfg.cutoff_days = 1;
    let w = setup("check-3", &emu, &cfg.yaml());
    let inputs: Vec<String> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}#{}", input_name(&t.0), 1000 + i))
        .collect();
    // check: every input's steps, contiguous, in config order.
    let out = w.run(
        &["check", "-c", "config/config.yaml"],
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let owner = |l: &str| inputs.iter().position(|i| l.contains(&format!("{i} (")));
    let order: Vec<usize> = text.lines().filter_map(owner).collect();
    let mut blocks = order.clone();
    blocks.dedup();
    assert_eq!(
        blocks,
        vec![0, 1, 2],
        "one block per input, in order:\n{text}"
    );
    for (i, who) in inputs.iter().enumerate() {
        let n = order.iter().filter(|o| **o == i).count();
        assert!(n >= 3, "{who}: token, roles and service steps:\n{text}");
        assert!(
            text.lines()
                .any(|l| l.contains(who.as_str()) && l.contains("message trace service answers")),
            "{text}"
        );
    }
    for t in &tenants {
        assert!(!text.contains(&t.3), "secret leaked");
    }
    // state show before and after a run: one block per input.
    let show = |w: &Workdir| {
        let out = w.run(
            &["state", "show", "-c", "config/config.yaml"],
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let before = show(&w);
    for who in &inputs {
        assert_eq!(
            before.matches(&format!("{who} {RWS}:")).count(),
            1,
            "{before}"
        );
    }
    assert_eq!(before.matches("no state yet").count(), 3, "{before}");
    assert!(w.run(RUN_ONCE, Duration::from_secs(60)).status.success());
    let after = show(&w);
    let headers: Vec<&str> = after.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(headers.len(), 3, "{after}");
    for (h, who) in headers.iter().zip(&inputs) {
        assert_eq!(*h, format!("{who} {RWS}:"));
    }
    assert_eq!(after.matches("  file: ").count(), 3, "{after}");
    assert!(!after.contains("no state yet"), "{after}");
}

/// Peak RSS when every tenant's page is large enough to fill a delivery batch and its
/// dedup set (Graph, one day in one window): what stays allocated per tenant shows here.
#[test]
fn hundred_busy_tenants_peak_rss() {
    const N: usize = 100;
    let tenants = many_tenants(N);
    let specs: Vec<TenantSpec> = tenants.iter().map(|t| TenantSpec::new(&t.1)).collect();
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 40,
        ..small_data(specs)
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = tenants;
    cfg.graph = true;
    cfg.cutoff_days = 1;
    cfg.window = 86_400;
    let w = setup("hundred-busy", &emu, &cfg.yaml());
    let m = w.run_measured(RUN_ONCE, Duration::from_secs(240));
    assert!(m.status.success(), "{}", m.stderr);
    let (keys, dups) = dup_count(&w);
    eprintln!(
        "[tenants] 100 busy Graph tenants ({keys} records, {dups} twice): wall {:.2} s, peak RSS {}",
        m.wall.as_secs_f64(),
        mib(m.peak_rss_kib)
    );
    assert_eq!(dups, 0);
}

/// The boundary second: the Reporting Web Service window `[s, X)` excludes a record
/// received exactly at X.0000000, Graph's `ge X` includes it. A taken-over cursor at X
/// (left by RWS, written here directly so X is exactly such a record's second) must
/// deliver that record once and nothing received before X.
#[test]
fn takeover_at_a_record_exact_second_delivers_it_once_and_nothing_before() {
    let emu = Emulator::start(EmuOptions::default());
    let now = crate::emulator::now_secs();
    let on_edge = emu
        .expected("tenant-1", now - 20 * 3600, now - 10 * 3600, now)
        .into_iter()
        .find(|r| r.received_nanos == 0)
        .expect("a record on a whole second");
    let x = on_edge.received_secs;
    let w = Workdir::new("takeover-edge");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    std::fs::create_dir_all(w.file("state")).unwrap();
    {
        let path = msgtrace::state::state_path(&w.file("state"), "1000", RWS);
        let (mut st, _) = msgtrace::state::StateFile::open(&path).unwrap();
        st.checkpoint(&msgtrace::state::Cursor {
            window_start: x,
            settle_start: x,
            delay_secs: 3600,
            service: RWS.to_string(),
            ..Default::default()
        })
        .unwrap();
    }
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    cfg.cutoff_days = 1;
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "took over the cursor of {RWS} (window start {})",
            fmt_z(x)
        )),
        "{log}"
    );
    let end = final_cursor(&w.file("state"), "1000", GRAPH).window_start;
    let expected = emu.expected("tenant-1", x, end + 1, crate::emulator::now_secs());
    assert!(expected.iter().any(|r| r.key() == on_edge.key()));
    assert_keys_match(&w, &expected);
    let (keys, dups) = dup_count(&w);
    assert_eq!(dups, 0);
    let before: Vec<_> = json_lines(&w.read("events.jsonl"))
        .into_iter()
        .filter(|e| s(e, "Received").is_some_and(|r| r < fmt_z(x).as_str()))
        .map(|e| event_key(&e))
        .collect();
    assert!(
        before.is_empty(),
        "received before {}: {before:?}",
        fmt_z(x)
    );
    eprintln!(
        "[tenants] takeover at {} (a record on that exact second): {keys} records from Graph, none twice",
        fmt_z(x)
    );
}

/// A tenant whose every request is slow holds one worker at a time, never all of them:
/// the others catch up at their own pace, and SIGTERM still stops within 5 s.
#[test]
fn a_slow_tenant_does_not_hold_up_the_others() {
    let tenants = many_tenants(6);
    let specs: Vec<TenantSpec> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut spec = TenantSpec::new(&t.1);
            spec.slow_ms = if i == 0 { 1500 } else { 0 };
            spec
        })
        .collect();
    let emu = Emulator::start(small_data(specs));
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = tenants.clone();
    cfg.cutoff_days = 1;
    cfg.period = 3600;
    let slow = input_name(&tenants[0].0);
    let w = setup("slow", &emu, &cfg.yaml());
    let started = Instant::now();
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    let others: Vec<String> = tenants[1..].iter().map(|t| input_name(&t.0)).collect();
    let log = wait_log(&w, Duration::from_secs(60), "the other tenants", |log| {
        others
            .iter()
            .all(|i| count_lines(log, i, "Remote data is up to date!") > 0)
    });
    let elapsed = started.elapsed();
    let slow_windows = count_lines(&log, &slow, "Running a new pipeline");
    let t = Instant::now();
    p.signal("TERM");
    let st = p.wait(Duration::from_secs(6)).expect("stopped");
    let stop = t.elapsed();
    eprintln!(
        "[tenants] slow tenant (1.5 s a request): 5 others up to date after {:.2} s while it ran {slow_windows} window(s); stopped {:.2} s after SIGTERM",
        elapsed.as_secs_f64(),
        stop.as_secs_f64()
    );
    assert!(st.success(), "{st:?}");
    assert!(stop < Duration::from_secs(5));
    assert_eq!(count_lines(&log, &slow, "Remote data is up to date!"), 0);
    // Each window of the slow tenant takes 1.5 s: the others finished meanwhile.
    assert!(slow_windows < 23, "the slow tenant was not slow");
}

/// The way back (Graph → Reporting Web Service) is the same takeover: Graph's last window
/// `[s, X]` included the whole second X, which the RWS window `[X, ...)` returns again —
/// the carried edge keys filter those, so nothing comes twice and nothing is skipped.
#[test]
fn move_back_from_graph_to_rws_repeats_nothing() {
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 60,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    cfg.cutoff_days = 1;
    let input = input_name("");
    let w = setup("move-back", &emu, &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let glog = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{glog}");
    let start = logged_start(&glog, &input).expect("start logged");
    let x = final_cursor(&w.file("state"), "1000", GRAPH).window_start;
    std::thread::sleep(Duration::from_millis(2100));
    cfg.graph = false;
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("took over the cursor of {GRAPH}")),
        "{log}"
    );
    let end = final_cursor(&w.file("state"), "1000", RWS).window_start;
    assert!(end > x);
    assert_keys_match(
        &w,
        &emu.expected("tenant-1", start, end, crate::emulator::now_secs()),
    );
    let (keys, dups) = dup_count(&w);
    eprintln!("[tenants] move back to RWS: {keys} records, {dups} delivered twice");
    assert_eq!(dups, 0);
}

/// 60 tenants keep 120 files open (state and ledger each): with a soft limit of 100 open
/// files the collector raises it towards the hard limit at start instead of failing the
/// tenants that do not fit.
#[test]
fn a_low_open_files_limit_is_raised_for_many_tenants() {
    let n = 60;
    let tenants = many_tenants(n);
    let specs: Vec<TenantSpec> = tenants.iter().map(|t| TenantSpec::new(&t.1)).collect();
    let emu = Emulator::start(small_data(specs));
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = tenants;
    cfg.cutoff_days = 1;
    let w = setup("fd-limit", &emu, &cfg.yaml());
    let bin = crate::harness::bin();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 100 && exec '{}' run --once -c config/config.yaml",
            bin.display()
        ))
        .current_dir(w.file("."))
        .env_remove("CONFIG_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        log.matches("Remote data is up to date!").count(),
        n,
        "{log}"
    );
    assert!(!log.contains("Too many open files"), "{log}");
}
