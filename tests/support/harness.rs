//! Drives the real `msgtrace` binary in a scratch working directory laid out like the
//! vendor's (config/, certs/, state/), against the emulator and receivers.
//!
//! Must not: leave processes behind — every child has a deadline and is killed on drop;
//! let a test that cannot run pass silently under `MSGTRACE_STRICT=1` (see [`missing`]).

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use miniserde::json::{self, Value};

/// Set to `1` by `.ci/run`: a test that cannot run here (a tool or a privilege is
/// missing) fails instead of skipping.
pub const STRICT_VAR: &str = "MSGTRACE_STRICT";

/// Set (to anything) to rewrite golden `.expected` files instead of comparing with them;
/// the one bless switch of every fixture folder (tests/fixtures/README.md).
pub const BLESS_VAR: &str = "MSGTRACE_BLESS";

/// Whether `MSGTRACE_STRICT=1` is in the environment.
pub fn strict() -> bool {
    std::env::var_os(STRICT_VAR).is_some_and(|v| v == "1")
}

/// Whether golden files are to be rewritten (`MSGTRACE_BLESS` set). Refused under
/// `MSGTRACE_STRICT=1`: a blessing run compares nothing, so it must not pass for CI.
pub fn bless() -> bool {
    let set = std::env::var_os(BLESS_VAR).is_some();
    assert!(
        !(set && strict()),
        "{BLESS_VAR} rewrites the golden files instead of checking them: unset it for {STRICT_VAR}=1"
    );
    set
}

/// Something this test needs is missing here (`reason` names it and how to get it): a
/// `SKIP` note on stderr on a developer's machine, a failure under `MSGTRACE_STRICT=1`.
/// A test that cannot run at all calls [`skip!`](crate::skip) instead, which also returns.
#[track_caller]
pub fn missing(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let at = std::panic::Location::caller();
    assert!(
        !strict(),
        "{test} ({at}) cannot run here and {STRICT_VAR}=1 forbids skipping: {reason}"
    );
    eprintln!("SKIP {test} ({at}): {reason}");
}

/// `skip!("… {x}")`: report with [`harness::missing`](crate::harness::missing) (a note,
/// or a failure under `MSGTRACE_STRICT=1`), then return from the test.
#[macro_export]
macro_rules! skip {
    ($($why:tt)+) => {{
        $crate::harness::missing(&format!($($why)+));
        return;
    }};
}

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_msgtrace"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under target/ (no tempfile crate), removed on drop unless
/// MSGTRACE_KEEP_TEST_DIRS is set.
pub struct Workdir {
    pub path: PathBuf,
}

impl Workdir {
    pub fn new(name: &str) -> Workdir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("it-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("config")).unwrap();
        std::fs::create_dir_all(path.join("certs")).unwrap();
        Workdir { path }
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path.join(rel)).unwrap_or_default()
    }

    /// Run `msgtrace ARGS` here with a deadline; returns its output.
    pub fn run(&self, args: &[&str], deadline: Duration) -> Output {
        self.run_env(args, &[], deadline)
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Output {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(&self.path)
            .env_remove("CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn msgtrace");
        wait_with_deadline(child, deadline)
    }

    /// Start `msgtrace ARGS` in the background (killed on drop of the handle).
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(&self.path)
            .env_remove("CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.path.join("stderr.log")).unwrap(),
            ));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: Some(cmd.spawn().expect("spawn msgtrace")),
        }
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::env::var_os("MSGTRACE_KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A background msgtrace, killed on drop.
pub struct Proc {
    pub child: Option<Child>,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }
    /// Wait for exit up to `deadline`; None if it is still running.
    pub fn wait(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        while start.elapsed() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_with_deadline(mut child: Child, deadline: Duration) -> Output {
    let start = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = t_err.join().unwrap_or_default();
            panic!(
                "msgtrace did not finish within {deadline:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Parse JSON lines; panics with the line number on a broken line.
pub fn json_lines(text: &str) -> Vec<miniserde::json::Object> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match json::from_str::<Value>(l) {
            Ok(Value::Object(o)) => o,
            _ => panic!("line {} is not a JSON object: {l}", i + 1),
        })
        .collect()
}

pub fn s<'a>(o: &'a miniserde::json::Object, k: &str) -> Option<&'a str> {
    match o.get(k) {
        Some(Value::String(v)) => Some(v),
        _ => None,
    }
}

/// Settings for a generated test config.
pub struct Cfg {
    pub base: String,
    pub tenants: Vec<(String, String, String, String)>, // (input suffix, tenant, client, secret)
    pub graph: bool,
    pub outputs: String,
    pub service_extra: String,
    pub cutoff_days: u32,
    pub delay: u64,
    /// `first_pass_delay_in_seconds`; `None`: the delay itself (one pass, so a test's
    /// expected records are those visible up to the cursor when it ran).
    pub first_pass: Option<u64>,
    pub window: u64,
    pub period: u64,
    pub debug: bool,
}

impl Cfg {
    pub fn new(base: &str) -> Cfg {
        Cfg {
            base: base.to_string(),
            tenants: vec![(
                String::new(),
                "tenant-1".into(),
                "client-tenant-1".into(),
                "secret-tenant-1".into(),
            )],
            graph: false,
            outputs: "  out_file:\n    type: file\n    config:\n      path: events.jsonl\n".into(),
            service_extra: String::new(),
            cutoff_days: 2,
            delay: 3600,
            first_pass: None,
            window: 3600,
            period: 1,
            debug: false,
        }
    }

    pub fn yaml(&self) -> String {
        let mut y = format!(
            "globals:\n  debug: {}\n  id: not_used\n  name: o365_emt_collector\n  persistence:\n    type: filesystem\n    config:\n      directory_name: state\noutputs:\n{}inputs:\n",
            self.debug, self.outputs
        );
        for (i, (suffix, tenant, client, secret)) in self.tenants.iter().enumerate() {
            let name = if suffix.is_empty() {
                "office365_exchange_message".to_string()
            } else {
                format!("office365_exchange_message_{suffix}")
            };
            let service = if self.graph {
                "office365_exchange_message_graph_service"
            } else {
                "office365_exchange_message_service"
            };
            let urls = if self.graph {
                format!("        override_graph_url: {}\n", self.base)
            } else {
                format!("        override_base_url: {}\n", self.base)
            };
            y.push_str(&format!(
                "  {name}:\n    id: {}\n    enabled: true\n    max_historic_date_cutoff_days_back: {}\n    max_historic_date_margin_seconds: 60\n    credentials:\n      tenant_id: {tenant}\n      client_id: {client}\n      client_secret: {secret}\n    services:\n      {service}:\n{urls}        override_base_auth_url: {}\n        ca_file: certs/emulator-ca.pem\n        override_time_delay_in_seconds: {}\n        first_pass_delay_in_seconds: {}\n        window_in_seconds: {}\n        request_period_in_seconds: {}\n        requests_retries_before_error_in_units: 5\n        requests_wait_time_between_retries_in_seconds: 0\n        requests_timeout_in_seconds: 10\n{}",
                1000 + i,
                self.cutoff_days,
                self.base,
                self.delay,
                self.first_pass.unwrap_or(self.delay).max(60),
                self.window,
                self.period,
                self.service_extra
            ));
        }
        y
    }
}

/// The `starting at <RFC3339>` instant logged for a fresh input.
pub fn logged_start(stderr: &str, input: &str) -> Option<i64> {
    stderr
        .lines()
        .filter(|l| l.contains(&format!("({input},")))
        .find_map(|l| l.split("no saved state found, starting at ").nth(1))
        .and_then(|t| parse_rfc3339(t.trim()))
}

pub fn parse_rfc3339(t: &str) -> Option<i64> {
    // YYYY-MM-DDThh:mm:ssZ
    let b = t.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, s) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Final cursor position of an input from its state file.
pub fn final_cursor(dir: &Path, id: &str, service: &str) -> msgtrace::state::Cursor {
    let path = msgtrace::state::state_path(dir, id, service);
    msgtrace::state::peek(&path)
        .expect("state readable")
        .expect("state present")
        .0
}

// ---------------------------------------------------------------- many tenants (tests/it/tenants.rs)

/// `n` tenants for `Cfg::tenants`: input suffix `tNNN`, tenant `tenant-NNN`, the
/// emulator's default client id and secret (`TenantSpec::new`). Input ids are 1000 + index.
pub fn many_tenants(n: usize) -> Vec<(String, String, String, String)> {
    (0..n)
        .map(|i| {
            let t = format!("tenant-{i:03}");
            (
                format!("t{i:03}"),
                t.clone(),
                format!("client-{t}"),
                format!("secret-{t}"),
            )
        })
        .collect()
}

/// The input name `Cfg::yaml` gives a tenant suffix.
pub fn input_name(suffix: &str) -> String {
    if suffix.is_empty() {
        "office365_exchange_message".to_string()
    } else {
        format!("office365_exchange_message_{suffix}")
    }
}

/// Set `key: value` inside one input's block of a config made by `Cfg::yaml` (every
/// occurrence of the key within that block, indentation kept). Panics when the input or
/// key is absent, so a typo in a test cannot silently test nothing.
pub fn set_input_key(yaml: &str, input: &str, key: &str, value: &str) -> String {
    let header = format!("  {input}:");
    let mut inside = false;
    let mut hits = 0;
    let mut out = String::with_capacity(yaml.len() + 64);
    for line in yaml.lines() {
        if line == header {
            inside = true;
        } else if inside && line.starts_with("  ") && !line.starts_with("   ") {
            inside = false;
        }
        let trimmed = line.trim_start();
        if inside && trimmed.starts_with(&format!("{key}:")) {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{indent}{key}: {value}\n"));
            hits += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(hits > 0, "no `{key}` in input {input}");
    out
}

/// A finished msgtrace run with its peak RSS.
pub struct Measured {
    pub status: std::process::ExitStatus,
    pub stderr: String,
    /// VmHWM of the process, last read before it exited (KiB); `None` without /proc.
    pub peak_rss_kib: Option<u64>,
    pub wall: Duration,
}

/// VmHWM (peak resident set) of a live process from /proc, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Workdir {
    /// Run `msgtrace ARGS` here with a deadline, polling its peak RSS (VmHWM) every
    /// 10 ms until it exits. stderr goes to `measured-stderr.log` (no pipe to fill).
    /// `MSGTRACE_MEASURE_BIN` (an absolute path) runs another build instead, e.g. the
    /// release binary, whose figures are the ones SPEC §9 budgets.
    pub fn run_measured(&self, args: &[&str], deadline: Duration) -> Measured {
        let log = self.path.join("measured-stderr.log");
        let started = Instant::now();
        let exe = std::env::var_os("MSGTRACE_MEASURE_BIN")
            .filter(|v| !v.is_empty())
            .map_or_else(bin, PathBuf::from);
        let mut child = Command::new(exe)
            .args(args)
            .current_dir(&self.path)
            .env_remove("CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("spawn msgtrace");
        let pid = child.id();
        let mut peak = None;
        let status = loop {
            // Read before reaping: once reaped, /proc/PID is gone.
            if let Some(v) = vm_hwm_kib(pid) {
                peak = Some(peak.map_or(v, |p: u64| p.max(v)));
            }
            if let Ok(Some(st)) = child.try_wait() {
                break st;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "msgtrace did not finish within {deadline:?}; stderr:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Measured {
            status,
            stderr: std::fs::read_to_string(&log).unwrap_or_default(),
            peak_rss_kib: peak,
            wall: started.elapsed(),
        }
    }
}

// ------------------------------------------------ durable state and delivery tests

/// Name of the Reporting Web Service in state file names.
pub const RWS_SERVICE: &str = "office365_exchange_message_service";

impl Workdir {
    /// `spawn` with stderr in `log_rel` (each restart of a crash test keeps its own log).
    pub fn spawn_log(&self, args: &[&str], env: &[(&str, &str)], log_rel: &str) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(&self.path)
            .env_remove("CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.path.join(log_rel)).unwrap(),
            ));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: Some(cmd.spawn().expect("spawn msgtrace")),
        }
    }

    /// Wait until `log_rel` contains `needle`; panics with the log after `limit`.
    pub fn wait_log(&self, log_rel: &str, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let log = self.read(log_rel);
            if log.contains(needle) {
                return log;
            }
            assert!(
                start.elapsed() < limit,
                "{needle:?} not logged within {limit:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Path of the state file of input `id` (Reporting Web Service).
    pub fn state_file(&self, id: &str) -> PathBuf {
        msgtrace::state::state_path(&self.file("state"), id, RWS_SERVICE)
    }
}

impl Proc {
    /// SIGKILL and reap (the state lock is free once this returns).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Resident set size in KiB from /proc/PID/status (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// YAML of a `devo_platform` or `syslog` output entry (absolute certificate paths).
pub fn tls_output_yaml(
    name: &str,
    kind: &str,
    port: u16,
    chain: &Path,
    cert: &Path,
    key: &Path,
) -> String {
    format!(
        "  {name}:\n    type: {kind}\n    config:\n      address: 127.0.0.1\n      port: {port}\n      type: SSL\n      chain: {}\n      cert: {}\n      key: {}\n",
        chain.display(),
        cert.display(),
        key.display()
    )
}

/// YAML of a `file` output entry.
pub fn file_output_yaml(name: &str, path: &str) -> String {
    format!("  {name}:\n    type: file\n    config:\n      path: {path}\n")
}

/// (MessageTraceId, RecipientAddress) of a delivered event.
pub fn event_key(e: &miniserde::json::Object) -> (String, String) {
    (
        s(e, "MessageTraceId").unwrap_or("").to_string(),
        s(e, "RecipientAddress").unwrap_or("").to_string(),
    )
}

/// What a set of delivered events looks like against the emulator's records.
#[derive(Debug, Default)]
pub struct Tally {
    pub delivered: usize,
    pub expected: usize,
    /// Expected records never delivered (first few, for messages).
    pub missing: Vec<String>,
    pub missing_count: usize,
    /// Deliveries beyond the first of the same record.
    pub duplicates: usize,
    /// Delivered events that are not expected records.
    pub unexpected: usize,
}

/// Compare delivered events (JSON objects) with the emulator's records of the range the
/// input covered: from the `starting at` instant in `first_log` to its final cursor.
/// Field values are compared byte-exact, as e2e.rs does.
pub fn tally(
    emu: &crate::emulator::Emulator,
    w: &Workdir,
    first_log: &str,
    events: &[miniserde::json::Object],
    tenant: &str,
    input: &str,
    id: &str,
) -> Tally {
    use std::collections::HashMap;
    let start = logged_start(first_log, input).expect("start logged");
    let end = final_cursor(&w.file("state"), id, RWS_SERVICE).window_start;
    let expected = emu.expected(tenant, start, end, crate::emulator::now_secs());
    let mut seen: HashMap<(String, String), (usize, &miniserde::json::Object)> = HashMap::new();
    for e in events {
        seen.entry(event_key(e)).or_insert((0, e)).0 += 1;
    }
    let mut t = Tally {
        delivered: events.len(),
        expected: expected.len(),
        ..Tally::default()
    };
    let mut matched = 0usize;
    for x in &expected {
        match seen.get(&(x.message_trace_id.clone(), x.recipient.clone())) {
            None => {
                t.missing_count += 1;
                if t.missing.len() < 5 {
                    t.missing.push(format!(
                        "{} {} {}",
                        x.received, x.message_trace_id, x.recipient
                    ));
                }
            }
            Some((n, e)) => {
                matched += 1;
                t.duplicates += n - 1;
                assert_eq!(
                    s(e, "Subject"),
                    Some(x.subject.as_str()),
                    "subject byte-exact"
                );
                assert_eq!(s(e, "SenderAddress"), Some(x.sender.as_str()));
                assert_eq!(s(e, "Status"), Some(x.status.as_str()));
                let received = s(e, "Received").unwrap_or("");
                assert!(
                    received.starts_with(&x.received) && received.ends_with('Z'),
                    "{received} vs {}",
                    x.received
                );
                assert!(e.get("@devo_pulling_id").is_some());
            }
        }
    }
    t.unexpected = seen.len() - matched;
    t
}
