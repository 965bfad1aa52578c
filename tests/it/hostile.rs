//! Hostile or broken surroundings through the real binary (issue 14, SPEC §6 and §10):
//! planted state files (symlink, FIFO, garbage, out-of-range record), endpoints that
//! echo secrets back, next links to a foreign origin, and the start-up warnings. Each
//! case asserts the outcome: victim file unchanged, no hang, no secret in any output,
//! no request to the foreign origin, the other tenant unaffected, the exit code.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::emulator::{EmuOptions, Emulator, Faults, TenantSpec};
use crate::harness::{input_name, many_tenants, Cfg, Workdir};

const RWS: &str = "office365_exchange_message_service";
const RUN_ONCE: &[&str] = &["run", "--once", "-c", "config/config.yaml"];

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn small() -> EmuOptions {
    EmuOptions {
        tenants: many_tenants(2)
            .iter()
            .map(|t| TenantSpec::new(&t.1))
            .collect(),
        records_per_hour: 12,
        ..EmuOptions::default()
    }
}

/// Two tenants (ids 1000 and 1001), one day back, files under `state/`.
fn two_tenants(name: &str, emu: &Emulator) -> Workdir {
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = many_tenants(2);
    cfg.cutoff_days = 1;
    let w = Workdir::new(name);
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    std::fs::create_dir_all(w.file("state")).unwrap();
    std::fs::set_permissions(w.file("state"), std::fs::Permissions::from_mode(0o700)).unwrap();
    w
}

fn state_of(w: &Workdir, id: &str) -> PathBuf {
    msgtrace::state::state_path(&w.file("state"), id, RWS)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first tenant (id 1000) is refused at start with `needle` in its error; the
/// second (id 1001) pulls to the end; the run exits 3 (one input failed).
fn assert_first_refused_second_runs(out: &std::process::Output, needle: &str) -> String {
    let log = stderr(out);
    let first = input_name("t000");
    let second = input_name("t001");
    let refused = log
        .lines()
        .find(|l| l.contains(&format!("{first}#1000 cannot start")))
        .unwrap_or_else(|| panic!("first tenant not refused:\n{log}"));
    assert!(refused.contains(needle), "{refused}");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("({second},1001,"))
                && l.contains("Remote data is up to date!")),
        "second tenant did not run:\n{log}"
    );
    assert_eq!(out.status.code(), Some(3), "{log}");
    refused.to_string()
}

#[test]
fn symlinked_state_file_is_refused_and_its_target_unchanged() {
    let emu = Emulator::start(small());
    let w = two_tenants("hostile-symlink", &emu);
    let victim = w.file("victim.conf");
    std::fs::write(&victim, b"precious = true\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&victim, state_of(&w, "1000")).unwrap();
    let out = w.run(RUN_ONCE, secs(60));
    let line = assert_first_refused_second_runs(&out, "is a symbolic link");
    eprintln!("hostile: symlink: {line}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious = true\n");
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "victim chmod-ed");
    assert!(std::fs::symlink_metadata(state_of(&w, "1000"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn fifo_state_file_does_not_hang_the_start() {
    let emu = Emulator::start(small());
    let w = two_tenants("hostile-fifo", &emu);
    let path = state_of(&w, "1000");
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let t = Instant::now();
    // The harness kills the child at the deadline: a hang shows as a missing exit code.
    let out = w.run(RUN_ONCE, secs(30));
    let took = t.elapsed();
    let line = assert_first_refused_second_runs(&out, "not a regular file");
    eprintln!(
        "hostile: fifo: exit {:?} after {:.2} s: {line}",
        out.status.code(),
        took.as_secs_f64()
    );
    assert!(took < secs(25));
}

#[test]
fn garbage_first_record_is_refused_and_the_file_left_as_it_is() {
    let emu = Emulator::start(small());
    let w = two_tenants("hostile-garbage", &emu);
    let path = state_of(&w, "1000");
    let garbage = b"[global]\nnot = a state file\n".to_vec();
    std::fs::write(&path, &garbage).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = w.run(RUN_ONCE, secs(60));
    let line = assert_first_refused_second_runs(&out, "not a msgtrace state file");
    assert!(line.contains("move it away"), "{line}");
    eprintln!("hostile: garbage: {line}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

/// The committed fixture through `state show`, and an out-of-range record after a
/// recent checkpoint through `run --once`: the record is corrupt, the one before it wins.
#[test]
fn out_of_range_state_record_is_corrupt_not_a_panic() {
    let emu = Emulator::start(small());
    let w = two_tenants("hostile-range", &emu);
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/state/002_v1_out_of_range.state");
    let path = state_of(&w, "1000");
    std::fs::copy(&fixture, &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = w.run(&["state", "show", "-c", "config/config.yaml"], secs(20));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    let want = msgtrace::time::rfc3339(1_795_000_000);
    assert!(shown.contains(&want), "{shown}");
    // A run: a recent good checkpoint, then the same with window_start = i64::MIN.
    let now = msgtrace::time::now();
    let good = msgtrace::state::Cursor {
        window_start: now - 6 * 3600,
        window_end: 0,
        delay_secs: 3600,
        service: RWS.into(),
        ..Default::default()
    };
    let mut bytes = msgtrace::state::encode_record(&good);
    let first_len = bytes.len();
    bytes.extend(msgtrace::state::encode_record(&msgtrace::state::Cursor {
        window_start: i64::MIN,
        ..good.clone()
    }));
    std::fs::write(&path, &bytes).unwrap();
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let warn = log
        .lines()
        .find(|l| l.contains("WARNING") && l.contains("value out of range"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warn.contains(&format!("at byte {first_len}")), "{warn}");
    assert!(
        log.contains(&format!(
            "retrieved state: window start {}",
            msgtrace::time::rfc3339(good.window_start)
        )),
        "{log}"
    );
    eprintln!("hostile: out-of-range record: {warn}");
}

/// True when `text` holds a control character other than the newline ending each line.
fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\n')
}

#[test]
fn secrets_echoed_by_endpoints_never_reach_any_output() {
    // A secret with characters a form encodes, so the echo shows it percent-encoded.
    let secret = "Zx8Q~s3cret/with+odd&chars";
    let spec = TenantSpec::new("tenant-echo").with_secret(secret);
    let emu = Emulator::start(EmuOptions {
        tenants: vec![spec.clone()],
        records_per_hour: 12,
        faults: Faults {
            echo_token_form: true,
            ..Faults::default()
        },
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = vec![(
        String::new(),
        spec.tenant_id.clone(),
        spec.client_id.clone(),
        format!("\"{secret}\""),
    )];
    cfg.cutoff_days = 1;
    let w = Workdir::new("hostile-echo");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    let forbidden = |text: &str, what: &str| {
        for needle in [secret, "Zx8Q", "s3cret", "%7Es3cret", "\u{1b}"] {
            assert!(!text.contains(needle), "{what} holds {needle:?}:\n{text}");
        }
        assert!(
            !has_control(text),
            "{what} holds a control character:\n{text}"
        );
    };
    // 1. The token endpoint echoes the posted form: `run` and `check`.
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    forbidden(&log, "run stderr");
    forbidden(&String::from_utf8_lossy(&out.stdout), "run stdout");
    assert!(log.contains("client_secret=****"), "{log}");
    assert!(
        log.contains("\\ryou sent"),
        "control characters escaped:\n{log}"
    );
    assert_eq!(out.status.code(), Some(2), "{log}");
    let line = log.lines().find(|l| l.contains("you sent")).unwrap_or("");
    eprintln!("hostile: token echo: {line}");
    let out = w.run(&["check", "-c", "config/config.yaml"], secs(60));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    forbidden(&printed, "check stdout");
    forbidden(&stderr(&out), "check stderr");
    assert!(printed.contains("client_secret=****"), "{printed}");
    // 2. The data endpoint echoes the request headers, Authorization included.
    emu.set_faults(Faults {
        echo_auth_header: true,
        ..Faults::default()
    });
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    forbidden(&log, "run stderr (data echo)");
    assert!(log.contains("authorization: Bearer ****"), "{log}");
    // The emulator's tokens are JWTs: their header starts with `eyJ`.
    assert!(!log.contains("eyJ"), "a token reached the log:\n{log}");
    assert!(emu
        .request_log()
        .iter()
        .any(|r| r.api == "rws" && r.status == 400));
    let line = log
        .lines()
        .find(|l| l.contains("Bearer ****"))
        .unwrap_or("");
    eprintln!("hostile: header echo: {line}");
    let out = w.run(&["check", "-c", "config/config.yaml"], secs(60));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    forbidden(&printed, "check stdout (data echo)");
    assert!(!printed.contains("eyJ"), "{printed}");
}

/// A loopback listener that counts the connections made to it (any connection is a
/// request the collector should not have sent); stops on drop.
struct Counter {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Counter {
    fn start() -> Counter {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (Arc::clone(&hits), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes even if the test forgets to stop it.
            let until = Instant::now() + secs(600);
            while !s.load(Ordering::SeqCst) && Instant::now() < until {
                match l.accept() {
                    Ok(_) => {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Counter {
            port,
            hits,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn foreign_next_link_gets_no_request(graph: bool) {
    let counter = Counter::start();
    let foreign = format!("https://127.0.0.1:{}", counter.port);
    let emu = Emulator::start(EmuOptions {
        tenants: vec![TenantSpec::new("tenant-1")],
        page_size: 5,
        // Graph pages hold 5,000 records: the first (one-hour) window must hold more,
        // so that a next link comes.
        records_per_hour: if graph { 6000 } else { 12 },
        faults: Faults {
            foreign_origin: Some(foreign.clone()),
            ..Faults::default()
        },
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = graph;
    cfg.cutoff_days = 1;
    let w = Workdir::new(if graph {
        "hostile-next-graph"
    } else {
        "hostile-next-rws"
    });
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, secs(90));
    let log = stderr(&out);
    assert_eq!(
        counter.hits.load(Ordering::SeqCst),
        0,
        "the foreign origin got a request:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains(&format!("foreign origin {foreign}")))
        .unwrap_or_else(|| panic!("foreign origin not named:\n{log}"));
    assert!(line.contains("not followed"), "{line}");
    // The link is dropped and the window read again (SPEC §3), 3 times, then the window
    // is left for the next period: `--once` exits 3.
    assert_eq!(out.status.code(), Some(3), "{log}");
    let api = if graph { "graph" } else { "rws" };
    let served = emu.request_log();
    assert!(served.iter().any(|r| r.api == api && r.status == 200));
    assert!(
        !served.iter().any(|r| r.query.contains("skiptoken")),
        "a next page was requested"
    );
    eprintln!("hostile: foreign next link ({api}): {line}");
}

#[test]
fn foreign_next_link_via_xml_base_gets_no_request() {
    foreign_next_link_gets_no_request(false);
}

#[test]
fn foreign_graph_next_link_gets_no_request() {
    foreign_next_link_gets_no_request(true);
}

fn warnings_of(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.starts_with("WARNING MainProcess::MainThread") && l.contains(needle))
        .count()
}

#[test]
fn start_up_warnings_come_once_and_name_the_fix() {
    let emu = Emulator::start(small());
    let mut cfg = Cfg::new(&emu.base_url());
    // A clear-text output (never connected: the input is disabled, so the run stops
    // right after the start-up checks).
    cfg.outputs = "  plain:\n    type: syslog\n    config:\n      address: 127.0.0.1\n      port: 9\n      type: TCP\n".into();
    let w = Workdir::new("hostile-warn");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    let yaml = cfg.yaml().replace("enabled: true", "enabled: false");
    let conf = w.write("config/config.yaml", &yaml);
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir_all(w.file("state")).unwrap();
    std::fs::set_permissions(w.file("state"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = w.run(RUN_ONCE, secs(30));
    let log = stderr(&out);
    for (needle, fix) in [
        ("persistence directory", "chmod 700"),
        ("holds a client secret inline", "chmod 600"),
        ("has `type: TCP`", "type: SSL"),
    ] {
        assert_eq!(warnings_of(&log, needle), 1, "{needle}:\n{log}");
        let line = log.lines().find(|l| l.contains(needle)).unwrap_or("");
        assert!(line.contains(fix), "{line}");
        eprintln!("hostile: start-up: {line}");
    }
    assert!(!log.contains("secret-tenant-1"), "{log}");
    // Tightened: no warning left.
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(w.file("state"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let yaml = yaml.replace(
        &cfg.outputs,
        "  out_file:\n    type: file\n    config:\n      path: events.jsonl\n",
    );
    std::fs::write(&conf, yaml).unwrap();
    let log = stderr(&w.run(RUN_ONCE, secs(30)));
    for needle in ["persistence directory", "inline", "type: TCP"] {
        assert_eq!(warnings_of(&log, needle), 0, "{needle}:\n{log}");
    }
    // World-readable again, but the secret comes from the environment: nothing inline.
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("secret-tenant-1", "${MSGTRACE_TEST_SECRET}"),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = w.run_env(
        RUN_ONCE,
        &[("MSGTRACE_TEST_SECRET", "secret-tenant-1")],
        secs(30),
    );
    let log = stderr(&out);
    assert_eq!(warnings_of(&log, "inline"), 0, "{log}");
    assert!(log.contains("no enabled input"), "{log}");
}

#[test]
fn read_only_persistence_directory_stops_the_start_with_exit_2() {
    let emu = Emulator::start(small());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    let w = Workdir::new("hostile-rodir");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    // Root writes through mode bits: use a directory no one can create files in.
    let dir = if root {
        "/proc".to_string()
    } else {
        std::fs::create_dir_all(w.file("state")).unwrap();
        std::fs::set_permissions(w.file("state"), std::fs::Permissions::from_mode(0o500)).unwrap();
        "state".to_string()
    };
    w.write(
        "config/config.yaml",
        &cfg.yaml()
            .replace("directory_name: state", &format!("directory_name: {dir}")),
    );
    let out = w.run(RUN_ONCE, secs(30));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("is not writable"))
        .unwrap_or_else(|| panic!("no refusal:\n{log}"));
    assert!(
        line.contains("persistence directory") && line.contains("write access"),
        "{line}"
    );
    assert!(!log.contains("Running a new pipeline"), "{log}");
    assert!(emu.request_log().is_empty(), "a tenant started");
    eprintln!("hostile: read-only persistence directory: {line}");
    if !root {
        std::fs::set_permissions(w.file("state"), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

#[test]
fn file_output_refuses_a_symlink_unless_allowed() {
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 12,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    let w = Workdir::new("hostile-outlink");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    let victim = w.file("victim.txt");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, w.file("events.jsonl")).unwrap();
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("is a symbolic link: refused"))
        .unwrap_or_else(|| panic!("not refused:\n{log}"));
    assert!(line.contains("follow_symlinks: true"), "{line}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert!(emu.request_log().is_empty(), "pulled without an output");
    eprintln!("hostile: file output symlink: {line}");
    // The documented key allows it.
    w.write(
        "config/config.yaml",
        &cfg.yaml().replace(
            "path: events.jsonl\n",
            "path: events.jsonl\n      follow_symlinks: true\n",
        ),
    );
    let out = w.run(RUN_ONCE, secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&victim).unwrap();
    assert!(text.starts_with("precious\n") && text.lines().count() > 1);
}

/// A next link saved in the state file (forged, or written before this rule) obeys the
/// same rule: dropped with a warning, the window read again from its start.
#[test]
fn foreign_next_link_in_the_state_file_gets_no_request() {
    let counter = Counter::start();
    let foreign = format!("https://127.0.0.1:{}", counter.port);
    let emu = Emulator::start(EmuOptions {
        records_per_hour: 12,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    let w = Workdir::new("hostile-savedlink");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    std::fs::create_dir_all(w.file("state")).unwrap();
    let now = msgtrace::time::now();
    let start = now - 6 * 3600;
    let saved = msgtrace::state::Cursor {
        window_start: start,
        window_end: start + 3600,
        next_link: Some(format!(
            "{foreign}/ecp/reportingwebservice/reporting.svc/MessageTrace?$skiptoken=5"
        )),
        delay_secs: 3600,
        service: RWS.into(),
        ..Default::default()
    };
    let path = state_of(&w, "1000");
    std::fs::write(&path, msgtrace::state::encode_record(&saved)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(counter.hits.load(Ordering::SeqCst), 0, "{log}");
    let line = log
        .lines()
        .find(|l| {
            l.contains(&format!(
                "saved state: the next link points to the foreign origin {foreign}"
            ))
        })
        .unwrap_or_else(|| panic!("not refused:\n{log}"));
    eprintln!("hostile: saved foreign link: {line}");
}

// ---------------------------------------------------------------- faults that must not stall
// (issue 14 "Stalls and loops", "Isolation", "Messages"; SPEC §3)

/// Tenants t000 (faulty, `spec`) and t001 (healthy), RWS pages of 5.
fn faulty_and_healthy(spec: TenantSpec) -> EmuOptions {
    let names = many_tenants(2);
    EmuOptions {
        tenants: vec![
            TenantSpec {
                tenant_id: names[0].1.clone(),
                client_id: names[0].2.clone(),
                client_secret: names[0].3.clone(),
                ..spec
            },
            TenantSpec::new(&names[1].1),
        ],
        page_size: 5,
        records_per_hour: 12,
        ..EmuOptions::default()
    }
}

fn requests_of(emu: &Emulator, tenant: &str) -> usize {
    emu.request_log()
        .iter()
        .filter(|r| r.api == "rws" && r.tenant == tenant)
        .count()
}

fn assert_second_up_to_date(log: &str) {
    let second = input_name("t001");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("({second},1001,"))
                && l.contains("Remote data is up to date!")),
        "the healthy tenant did not finish:\n{log}"
    );
}

#[test]
fn a_next_link_loop_is_dropped_and_bounded() {
    let emu = Emulator::start(faulty_and_healthy(TenantSpec {
        repeat_next: true,
        ..TenantSpec::new("x")
    }));
    let w = two_tenants("hostile-next-loop", &emu);
    let started = Instant::now();
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    let faulty = many_tenants(2)[0].1.clone();
    let n = requests_of(&emu, &faulty);
    eprintln!(
        "hostile: next-link loop figure: {n} requests of the looping tenant, run {:.1}s, exit {:?}",
        started.elapsed().as_secs_f64(),
        out.status.code()
    );
    let line = log
        .lines()
        .find(|l| l.contains("repeats a link already followed in this window"))
        .unwrap_or_else(|| panic!("loop not seen:\n{log}"));
    assert!(line.contains("is read again from its start"), "{line}");
    assert!(
        log.contains("the window was read again 3 times in this pull already"),
        "{log}"
    );
    // 4 reads of the window (first page + the looping second), then the window fails.
    assert!(n <= 10, "{n} requests for a looping tenant:\n{log}");
    assert_second_up_to_date(&log);
    eprintln!(
        "hostile: next-link loop: {n} requests in {:.1}s (before: 676 in 30 s): {line}",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn an_expired_skiptoken_is_dropped_and_the_window_read_again() {
    let emu = Emulator::start(faulty_and_healthy(TenantSpec {
        next_fail_once: Some(400),
        ..TenantSpec::new("x")
    }));
    let w = two_tenants("hostile-next-400", &emu);
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("the next link was answered 400"))
        .unwrap_or_else(|| panic!("4xx next link not dropped:\n{log}"));
    assert!(line.contains("is read again from its start"), "{line}");
    // Nothing twice: the window's first page, read again, is filtered.
    let events = w.read("events.jsonl");
    let mut keys: Vec<_> = crate::harness::json_lines(&events)
        .iter()
        .map(crate::harness::event_key)
        .collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "duplicates delivered");
    assert!(total > 100, "{total} events");
    assert_second_up_to_date(&log);
    eprintln!("hostile: expired skiptoken: {total} events, none twice: {line}");
}

/// Peak RSS (VmHWM, KiB) of a `run --once` with `env`, and its stderr.
fn run_once_peak(w: &Workdir, env: &[(&str, &str)], limit: Duration) -> (Option<i32>, String, u64) {
    let mut p = w.spawn_log(RUN_ONCE, env, "run.log");
    let started = Instant::now();
    let mut peak = 0;
    let code = loop {
        if let Some(k) = crate::harness::vm_hwm_kib(p.pid() as u32) {
            peak = peak.max(k);
        }
        if let Some(st) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            break st.code();
        }
        if started.elapsed() >= limit {
            // Killed: the caller's assertions on the exit code and the log say why.
            p.kill9();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, w.read("run.log"), peak)
}

#[test]
fn endless_and_slowloris_bodies_are_cut_and_the_healthy_tenant_is_not_held_up() {
    // One endless and three slowloris tenants: as many as there are workers
    // (run::MAX_WORKERS), then the healthy one.
    let names = many_tenants(5);
    let spec = |i: usize, body| TenantSpec {
        body,
        ..TenantSpec::new(&names[i].1)
    };
    let slow = crate::emulator::BodyFault::Slowloris { ms: 200 };
    let emu = Emulator::start(EmuOptions {
        tenants: vec![
            spec(0, crate::emulator::BodyFault::Endless),
            spec(1, slow),
            spec(2, slow),
            spec(3, slow),
            spec(4, crate::emulator::BodyFault::None),
        ],
        page_size: 5,
        records_per_hour: 12,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = names.clone();
    cfg.cutoff_days = 1;
    cfg.service_extra = String::new();
    let yaml = cfg.yaml().replace(
        "requests_retries_before_error_in_units: 5",
        "requests_retries_before_error_in_units: 1",
    );
    let w = Workdir::new("hostile-bodies");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &yaml);
    let started = Instant::now();
    let deadline = 3.0;
    let (code, log, peak) = run_once_peak(
        &w,
        &[
            ("MSGTRACE_PAGE_DEADLINE_SECS", "3"),
            ("MSGTRACE_PAGE_MAX_BYTES", "4194304"),
        ],
        secs(60),
    );
    let wall = started.elapsed();
    // The healthy tenant's requests: none waits more than one page deadline (plus
    // scheduling slack) after the run's first request or its own previous one.
    let healthy_id = names[4].1.clone();
    let log_of = emu.request_log();
    let first = log_of
        .iter()
        .filter(|r| r.api == "rws")
        .map(|r| r.at_secs)
        .fold(f64::MAX, f64::min);
    let mut prev = first;
    let mut gap = 0.0f64;
    let mut served = 0;
    for r in log_of
        .iter()
        .filter(|r| r.api == "rws" && r.tenant == healthy_id)
    {
        gap = gap.max(r.at_secs - prev);
        prev = r.at_secs;
        served += 1;
    }
    if served == 0 {
        // Starved: it waited the whole run.
        gap = wall.as_secs_f64();
    }
    eprintln!(
        "hostile: bodies figure: run {:.1}s, peak RSS {peak} KiB, exit {code:?}, longest wait of the healthy tenant {gap:.1}s",
        wall.as_secs_f64()
    );
    assert!(
        gap <= deadline + 3.0,
        "the healthy tenant waited {gap:.1}s for a worker:\n{log}"
    );
    assert_eq!(code, Some(3), "no exit within 60 s, or not 3:\n{log}");
    let healthy = input_name("t004");
    let done = log
        .lines()
        .find(|l| {
            l.contains(&format!("({healthy},1004,")) && l.contains("Remote data is up to date!")
        })
        .unwrap_or_else(|| panic!("healthy tenant not done:\n{log}"));
    let cut_bytes = log
        .lines()
        .find(|l| l.contains("the page is larger than 4194304 bytes"))
        .unwrap_or_else(|| panic!("endless body not cut:\n{log}"));
    let cut_time = log
        .lines()
        .find(|l| l.contains("the page was not complete within its deadline of 3 s"))
        .unwrap_or_else(|| panic!("slowloris body not cut:\n{log}"));
    assert_eq!(code, Some(3), "{log}");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    eprintln!(
        "hostile: endless/slowloris: run {:.1}s, peak RSS {} KiB\n  {done}\n  {cut_bytes}\n  {cut_time}",
        wall.as_secs_f64(),
        peak
    );
}

#[test]
fn a_page_malformed_three_periods_in_a_row_becomes_a_dead_letter() {
    let emu = Emulator::start(faulty_and_healthy(TenantSpec {
        malformed_next_pages: true,
        ..TenantSpec::new("x")
    }));
    let w = two_tenants("hostile-deadletter", &emu);
    let yaml = w.read("config/config.yaml").replace(
        "requests_retries_before_error_in_units: 5",
        "requests_retries_before_error_in_units: 0",
    );
    w.write("config/config.yaml", &yaml);
    let mut p = w.spawn_log(&["run", "-c", "config/config.yaml"], &[], "run.log");
    let log = w.wait_log("run.log", "rejected_entries", secs(50));
    let line = log
        .lines()
        .find(|l| l.contains("rejected_entries"))
        .unwrap_or_else(|| panic!("{log}"))
        .to_string();
    // The tenant goes on: the next window's pipeline starts after the dead letter.
    let first = input_name("t000");
    let started = Instant::now();
    let log_after = loop {
        let log = w.read("run.log");
        let after = log.split(line.as_str()).nth(1).unwrap_or("").to_string();
        if after
            .lines()
            .any(|l| l.contains(&format!("({first},1000,")) && l.contains("Running a new pipeline"))
        {
            break log;
        }
        assert!(
            started.elapsed() < secs(10),
            "the tenant did not go on:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    p.kill9();
    assert!(
        line.contains("failed to parse in 3 periods in a row"),
        "{line}"
    );
    assert!(line.contains("ends after this page"), "{line}");
    let dead: Vec<_> = std::fs::read_dir(w.file("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deadletter"))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(line.contains(&dead[0].display().to_string()), "{line}");
    let text = std::fs::read_to_string(&dead[0]).unwrap();
    assert!(text.contains("</d:Wrong>"), "{text}");
    assert!(!text.contains("secret-"), "{text}");
    let mode = std::fs::metadata(&dead[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_second_up_to_date(&log_after);
    eprintln!("hostile: dead letter: {line}");
}

#[test]
fn a_cursor_aging_past_the_limit_while_running_is_clamped() {
    let names = many_tenants(1);
    let emu = Emulator::start(EmuOptions {
        tenants: vec![TenantSpec {
            unavailable: true,
            ..TenantSpec::new(&names[0].1)
        }],
        records_per_hour: 12,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = names;
    let w = Workdir::new("hostile-aging");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    // A margin of 8 s: the saved start below is not clamped at open, and reaches the
    // running clamp (5 s from the API's limit) about 5 s later.
    w.write(
        "config/config.yaml",
        &cfg.yaml().replace(
            "max_historic_date_margin_seconds: 60",
            "max_historic_date_margin_seconds: 8",
        ),
    );
    std::fs::create_dir_all(w.file("state")).unwrap();
    std::fs::set_permissions(w.file("state"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let start = msgtrace::time::now() - 10 * 86_400 + 10;
    let saved = msgtrace::state::Cursor {
        window_start: start,
        delay_secs: 3600,
        service: RWS.into(),
        ..Default::default()
    };
    let path = state_of(&w, "1000");
    std::fs::write(&path, msgtrace::state::encode_record(&saved)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut p = w.spawn_log(&["run", "-c", "config/config.yaml"], &[], "run.log");
    // Both passes' cursors age (the settle cursor was clamped to the margin at open):
    // wait for the line about the saved (first pass) cursor.
    let needle = format!(
        "cursor {} aged past the API's limit while running",
        msgtrace::time::rfc3339(start)
    );
    let log = w.wait_log("run.log", &needle, secs(30));
    p.kill9();
    let line = log
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_default();
    assert!(
        line.contains("WARNING") || line.to_lowercase().contains("warn"),
        "{line}"
    );
    assert!(line.contains(&msgtrace::time::rfc3339(start)), "{line}");
    assert!(line.contains("cannot be pulled any more"), "{line}");
    assert!(!log.contains("StartDate can't be older"), "{log}");
    eprintln!("hostile: aging cursor: {line}");
}

#[test]
fn an_oversized_token_answer_says_so() {
    let emu = Emulator::start(EmuOptions {
        faults: Faults {
            token_body_bytes: Some(1 << 20),
            ..Faults::default()
        },
        ..small()
    });
    let w = two_tenants("hostile-token-size", &emu);
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    let line = log
        .lines()
        .find(|l| l.contains("over the 16 KiB limit"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(!line.contains("not with JSON"), "{line}");
    eprintln!("hostile: token size: {line}");
}

#[test]
fn a_redirect_shows_its_location() {
    let emu = Emulator::start(EmuOptions {
        faults: Faults {
            redirect_to: Some("https://elsewhere.example/moved".into()),
            ..Faults::default()
        },
        ..small()
    });
    let w = two_tenants("hostile-redirect", &emu);
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    let line = log
        .lines()
        .find(|l| l.contains("redirect to https://elsewhere.example/moved"))
        .unwrap_or_else(|| panic!("{log}"));
    eprintln!("hostile: redirect: {line}");
}

fn devo_cfg(
    pki: &crate::receivers::Pki,
    port: u16,
    cert: PathBuf,
    key: PathBuf,
) -> msgtrace::config::TlsOutput {
    msgtrace::config::TlsOutput {
        address: "127.0.0.1".into(),
        port,
        tls: true,
        chain: Some(pki.path("ca.pem")),
        cert: Some(cert),
        key: Some(key),
        tag: "cloud.office365.messagetracing".into(),
        detail_tag: String::new(),
    }
}

fn quick() -> msgtrace::output::Timeouts {
    msgtrace::output::Timeouts {
        connect: secs(5),
        io: secs(5),
        drain: secs(5),
    }
}

#[test]
fn a_ca_certificate_served_by_the_receiver_gets_words() {
    use crate::receivers::{Pki, RawOptions, RawReceiver, TempDir};
    use msgtrace::output::Sink;
    let dir = TempDir::new("hostile-ca-ee");
    let pki = Pki::create(dir.path());
    let rx = RawReceiver::start(
        &pki,
        RawOptions {
            serve_ca: true,
            require_client_cert: false,
            ..RawOptions::default()
        },
    );
    let cfg = devo_cfg(
        &pki,
        rx.port,
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let mut sink = msgtrace::output::devo::DevoSink::open("devo_1", &cfg, quick()).unwrap();
    let e = sink.ensure_ready().unwrap_err().to_string();
    assert!(e.contains("is a CA certificate"), "{e}");
    assert!(
        !e.contains("OtherError") && !e.contains("CaUsedAsEndEntity"),
        "{e}"
    );
    eprintln!("hostile: CA as end entity: {e}");
}

#[test]
fn an_x509_v1_client_certificate_is_named() {
    use crate::receivers::{Pki, TempDir};
    let dir = TempDir::new("hostile-v1");
    let pki = Pki::create(dir.path());
    let (key, csr, cert) = (
        dir.path().join("v1.key"),
        dir.path().join("v1.csr"),
        dir.path().join("v1.pem"),
    );
    let sh = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let s = |p: &PathBuf| p.display().to_string();
    let made = sh(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &s(&key),
    ]) && sh(&[
        "req",
        "-new",
        "-key",
        &s(&key),
        "-subj",
        "/CN=msgtrace-client",
        "-out",
        &s(&csr),
    ]) && sh(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-signkey",
        &s(&key),
        "-days",
        "2",
        "-out",
        &s(&cert),
    ]);
    if !made {
        crate::harness::missing("openssl is needed to make an X.509 v1 certificate");
        return;
    }
    let cfg = devo_cfg(&pki, 9, cert, key);
    let e = match msgtrace::output::devo::DevoSink::open("devo_1", &cfg, quick()) {
        Ok(_) => panic!("a v1 client certificate was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("X.509 v1 certificate: rustls needs v3 — reissue it with extensions"),
        "{e}"
    );
    assert!(!e.contains("not a usable RSA or ECDSA private key"), "{e}");
    eprintln!("hostile: v1 client certificate: {e}");
}

/// `run` (not `--once`) of `opts` (see `faulty_and_healthy`) with no retries: waits
/// for `needle`, then asserts the process still runs and the healthy tenant is up to date.
fn daemon_survives(
    name: &str,
    opts: EmuOptions,
    delay: u64,
    needle: &str,
    limit: Duration,
    healthy_done: bool,
) -> (String, u64) {
    let emu = Emulator::start(opts);
    let w = two_tenants(name, &emu);
    let yaml = w
        .read("config/config.yaml")
        .replace(
            "requests_retries_before_error_in_units: 5",
            "requests_retries_before_error_in_units: 0",
        )
        .replace(
            "override_time_delay_in_seconds: 3600",
            &format!("override_time_delay_in_seconds: {delay}"),
        );
    w.write("config/config.yaml", &yaml);
    let mut p = w.spawn_log(&["run", "-c", "config/config.yaml"], &[], "run.log");
    let log = w.wait_log("run.log", needle, limit);
    // The next period comes and goes: still running, no exit 3.
    std::thread::sleep(secs(2));
    let status = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
    let log_after = w.read("run.log");
    let peak = crate::harness::vm_hwm_kib(p.pid() as u32).unwrap_or(0);
    p.kill9();
    assert!(
        status.is_none(),
        "the process ended ({status:?}):\n{log_after}"
    );
    if healthy_done {
        assert_second_up_to_date(&log_after);
    }
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
        .to_string();
    (line, peak)
}

#[test]
fn a_900_kb_next_link_is_refused_not_fatal() {
    let (line, _) = daemon_survives(
        "hostile-huge-link",
        faulty_and_healthy(TenantSpec {
            next_pad: 900 * 1024,
            ..TenantSpec::new("x")
        }),
        3600,
        "more than the 65536 kept: refused as malformed",
        secs(40),
        true,
    );
    assert!(line.contains("is read again from its start"), "{line}");
    eprintln!("hostile: 900 KB next link: {line}");
}

#[test]
fn a_page_over_the_record_cap_is_malformed_not_fatal() {
    // One window (a day back, 23 h delay) of 21,000 records: one page for the faulty
    // tenant, pages of 2000 for the other (which is slow in a debug build: not awaited).
    let opts = EmuOptions {
        page_size: 2000,
        records_per_hour: 21_000,
        ..faulty_and_healthy(TenantSpec {
            page_size: Some(1_000_000),
            ..TenantSpec::new("x")
        })
    };
    let (line, peak) = daemon_survives(
        "hostile-record-cap",
        opts,
        23 * 3600,
        "the page holds more than 20000 records",
        secs(50),
        false,
    );
    eprintln!("hostile: record cap: peak RSS {peak} KiB: {line}");
    assert!(peak > 0 && peak < 64 * 1024, "peak RSS {peak} KiB");
}

/// Where Debian's `faketime` puts the library (tests/support/install-tools.sh).
fn libfaketime() -> Option<&'static str> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
}

/// The latest `EndDate` of the RWS queries served so far (epoch seconds).
fn latest_end(emu: &Emulator) -> Option<i64> {
    const KEY: &str = "EndDate%20eq%20datetime'";
    emu.request_log()
        .iter()
        .filter(|r| r.api == "rws")
        .filter_map(|r| {
            let at = r.query.find(KEY)? + KEY.len();
            let t = r.query.get(at..at + 19)?;
            crate::harness::parse_rfc3339(&format!("{t}Z"))
        })
        .max()
}

/// A wall clock that jumps 50 minutes ahead (libfaketime, monotonic time left alone)
/// must not make the collector read windows before their records exist.
#[test]
fn a_wall_clock_jump_forward_does_not_pull_ahead() {
    let Some(lib) = libfaketime() else {
        crate::harness::missing(
            "libfaketime (Debian package faketime, tests/support/install-tools.sh) fakes the wall clock",
        );
        return;
    };
    let names = many_tenants(1);
    let emu = Emulator::start(EmuOptions {
        tenants: vec![TenantSpec::new(&names[0].1)],
        records_per_hour: 12,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = names;
    cfg.cutoff_days = 1;
    cfg.window = 600;
    let w = Workdir::new("hostile-clock");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    let offset = w.write("faketime.txt", "+0\n");
    let offset_s = offset.display().to_string();
    let mut p = w.spawn_log(
        &["run", "-c", "config/config.yaml"],
        &[
            ("LD_PRELOAD", lib),
            ("FAKETIME_TIMESTAMP_FILE", &offset_s),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
        "run.log",
    );
    w.wait_log("run.log", "Remote data is up to date!", secs(40));
    let caught_up = latest_end(&emu).unwrap_or(0);
    // +50 minutes, then several periods.
    w.write("faketime.txt", "+3000\n");
    std::thread::sleep(secs(5));
    let log = w.read("run.log");
    let real_target = msgtrace::time::now() - 3600;
    let latest = latest_end(&emu).unwrap_or(0);
    p.kill9();
    eprintln!(
        "hostile: clock jump figure: latest EndDate {}s past the real target (caught up at {}s)",
        latest - real_target,
        caught_up - real_target
    );
    let line = log
        .lines()
        .find(|l| l.contains("the wall clock jumped forward"))
        .unwrap_or_else(|| panic!("jump not logged:\n{log}"));
    assert_eq!(
        log.matches("the wall clock jumped forward").count(),
        1,
        "{log}"
    );
    assert!(
        latest <= real_target + msgtrace::clock::CLOCK_SLACK_SECS + 2,
        "a window ending {}s after the real target was read:\n{log}",
        latest - real_target
    );
    eprintln!("hostile: clock jump: {line}");
}

#[test]
fn a_huge_comment_is_not_called_an_entry() {
    let emu = Emulator::start(faulty_and_healthy(TenantSpec {
        comment_bytes: 1 << 20,
        ..TenantSpec::new("x")
    }));
    let w = two_tenants("hostile-comment", &emu);
    let out = w.run(RUN_ONCE, secs(60));
    let log = stderr(&out);
    let line = log
        .lines()
        .find(|l| l.contains("markup outside the entries (a comment or processing instruction) is larger than 1048576 bytes"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(!log.contains("one entry is larger than"), "{log}");
    assert_second_up_to_date(&log);
    eprintln!("hostile: 1 MiB comment: {line}");
}
