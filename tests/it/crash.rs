//! Durable state through the real binary: SIGKILL at pseudo-random moments, a state
//! write failing on a full filesystem, `state show`/`state reset`, a torn state file,
//! and a changed `reset_persistence_auth`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::emulator::{EmuOptions, Emulator, Faults};
use crate::harness::{
    bin, final_cursor, json_lines, tally, wait_with_deadline, Cfg, Workdir, RWS_SERVICE,
};

const INPUT: &str = "office365_exchange_message";
const ID: &str = "1000";
const TENANT: &str = "tenant-1";
const RUN_ONCE: &[&str] = &["run", "--once", "-c", "config/config.yaml"];

fn setup(name: &str, emu: &Emulator, cfg: &Cfg) -> Workdir {
    let w = Workdir::new(name);
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    w
}

/// splitmix64: deterministic kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Watches the state file's size: a drop from near 64 KiB to a few records is a compaction.
#[derive(Default)]
struct SizeWatch {
    last: u64,
    max: u64,
    compactions: usize,
}

impl SizeWatch {
    fn poll(&mut self, w: &Workdir) {
        let size = std::fs::metadata(w.state_file(ID)).map_or(0, |m| m.len());
        // The file passes the bound only for the instant between the append and the
        // compaction; what a poll sees is the drop from near 64 KiB to a few records.
        if self.last > msgtrace::state::COMPACT_AT / 2 && size < 4096 {
            self.compactions += 1;
        }
        self.last = size;
        self.max = self.max.max(size);
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_repeats_at_most_a_page_per_kill() {
    const PAGE: usize = 20;
    const KILLS: usize = 12;
    let emu = Emulator::start(EmuOptions {
        page_size: PAGE,
        // Many small pages: hundreds of checkpoints, so the state file passes the
        // compaction bound (64 KiB) while the collector is being killed.
        records_per_hour: 480,
        token_lifetime_secs: 20,
        faults: Faults {
            rate_503: 0.1,
            rate_cut: 0.1,
            ..Faults::default()
        },
        ..EmuOptions::default()
    });
    let cfg = Cfg::new(&emu.base_url());
    let w = setup("crash-kill", &emu, &cfg);
    let mut rng = Rng(0x5EED_2026_1125);
    // Interleaved: within the first 50 ms (config, state, token fetch), mid-page
    // (50-600 ms), later (0.6-2.5 s: deep in the backfill or between periods).
    let delays: Vec<u64> = (0..KILLS)
        .map(|i| match i % 3 {
            0 => 5 + rng.next() % 45,
            1 => 50 + rng.next() % 550,
            _ => 600 + rng.next() % 1900,
        })
        .collect();
    let mut watch = SizeWatch::default();
    let started = Instant::now();
    for (i, d) in delays.iter().enumerate() {
        let mut p = w.spawn_log(
            &["run", "-c", "config/config.yaml"],
            &[],
            &format!("run-{i}.log"),
        );
        let until = Instant::now() + Duration::from_millis(*d);
        while Instant::now() < until {
            watch.poll(&w);
            std::thread::sleep(Duration::from_millis(2));
        }
        p.kill9();
        watch.poll(&w);
    }
    let killed_for = started.elapsed();
    // A kill in the middle of an event line: the file output cuts the torn line on open
    // (the page it belonged to was not checkpointed, so it is sent again).
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(w.file("events.jsonl"))
            .unwrap();
        f.write_all(b"{\"Organization\":\"torn-by-a-crash").unwrap();
    }
    // The final run catches up and exits.
    let mut p = w.spawn_log(RUN_ONCE, &[], "final.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        watch.poll(&w);
        if let Some(st) = p.wait(Duration::from_millis(5)) {
            break st;
        }
        assert!(Instant::now() < deadline, "{}", w.read("final.log"));
    };
    let final_log = w.read("final.log");
    assert!(status.success(), "{status:?}\n{final_log}");
    assert!(
        final_log.contains("Remote data is up to date!"),
        "{final_log}"
    );
    assert!(final_log.contains("cut a torn last line"), "{final_log}");

    // events.jsonl parses line by line (json_lines panics on a broken line).
    let events = json_lines(&w.read("events.jsonl"));
    // The start is the one of the last run that found no state: a run killed before
    // its first checkpoint pulled nothing, and the next one starts afresh.
    let first = (0..KILLS)
        .rev()
        .map(|i| w.read(&format!("run-{i}.log")))
        .find(|l| l.contains("no saved state found"))
        .expect("a run started afresh");
    let t = tally(&emu, &w, &first, &events, TENANT, INPUT, ID);
    assert!(
        t.missing_count == 0,
        "{} of {} missing, e.g. {:?}",
        t.missing_count,
        t.expected,
        t.missing
    );
    assert_eq!(t.unexpected, 0, "events outside the covered range");
    assert!(
        t.expected > 8000,
        "two days of data expected: {}",
        t.expected
    );
    let torn_cut = (0..KILLS)
        .map(|i| w.read(&format!("run-{i}.log")))
        .filter(|l| l.contains("cut a torn last line"))
        .count();
    let state_torn = (0..KILLS)
        .map(|i| w.read(&format!("run-{i}.log")))
        .chain(std::iter::once(final_log.clone()))
        .filter(|l| l.contains("state file") && l.contains("at byte"))
        .count();
    let stale_tmp = (0..KILLS)
        .map(|i| w.read(&format!("run-{i}.log")))
        .chain(std::iter::once(final_log.clone()))
        .filter(|l| l.contains("interrupted compaction"))
        .count();
    eprintln!(
        "crash: {KILLS} SIGKILLs over {:.1}s (delays {delays:?} ms); {} events delivered for {} records; \
         duplicates {} total = {:.1} per kill (bound {PAGE} per kill); events.jsonl torn tails cut after kills: {torn_cut} (plus one made on purpose); \
         state torn tails cut: {state_torn}; stale compaction files removed: {stale_tmp}; \
         state file max {} bytes, compactions seen {}",
        killed_for.as_secs_f64(),
        t.delivered,
        t.expected,
        t.duplicates,
        t.duplicates as f64 / KILLS as f64,
        watch.max,
        watch.compactions
    );
    assert!(
        t.duplicates <= KILLS * PAGE,
        "{} duplicates for {KILLS} kills of pages of {PAGE}",
        t.duplicates
    );
    assert!(
        watch.compactions >= 1,
        "the state file never passed the compaction bound (max {} bytes)",
        watch.max
    );
    // A compaction's temp file never outlives the run that wrote it.
    let leftovers: Vec<_> = std::fs::read_dir(w.file("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// SIGKILL the moment a compaction's temp file appears (spin-polling for it), twice,
/// then finish with `run --once`: the stale temp file is removed on open, the state
/// decodes, nothing is lost.
#[test]
fn sigkill_during_compaction_recovers() {
    const PAGE: usize = 20;
    let emu = Emulator::start(EmuOptions {
        page_size: PAGE,
        records_per_hour: 480,
        ..EmuOptions::default()
    });
    let cfg = Cfg::new(&emu.base_url());
    let w = setup("crash-compact", &emu, &cfg);
    let mut tmp = w.state_file(ID).into_os_string();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut caught = 0;
    let mut first = String::new();
    for i in 0..2 {
        let log = format!("compact-{i}.log");
        let mut p = w.spawn_log(&["run", "-c", "config/config.yaml"], &[], &log);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if tmp.exists() {
                p.kill9();
                caught += 1;
                break;
            }
            let exited = p
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                p.kill9();
                break;
            }
            std::thread::yield_now();
        }
        if i == 0 {
            first = w.read(&log);
        }
    }
    let left_behind = tmp.exists();
    let out = w.run(RUN_ONCE, secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let removed = [w.read("compact-1.log"), stderr.to_string()]
        .iter()
        .filter(|l| l.contains("interrupted compaction"))
        .count();
    eprintln!(
        "crash: {caught} kill(s) with a compaction temp file present; left behind by the last kill: {left_behind}; \
         stale temp files removed on open: {removed}"
    );
    assert!(!tmp.exists(), "the stale temp file is removed");
    if left_behind {
        assert!(stderr.contains("interrupted compaction"), "{stderr}");
    }
    let events = json_lines(&w.read("events.jsonl"));
    let t = tally(&emu, &w, &first, &events, TENANT, INPUT, ID);
    assert_eq!(t.missing_count, 0, "{:?}", t.missing);
    assert_eq!(t.unexpected, 0);
    assert!(t.duplicates <= 2 * PAGE, "{} duplicates", t.duplicates);
}

/// Whether `unshare -m` + `mount -t tmpfs` work here (root, or CAP_SYS_ADMIN).
fn can_mount_tmpfs() -> Result<(), String> {
    let out = Command::new("timeout")
        .args([
            "10",
            "unshare",
            "-m",
            "sh",
            "-c",
            "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && umount \"$d\"; rc=$?; rmdir \"$d\"; exit $rc",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn failing_state_write_exits_3_and_keeps_the_last_good_cursor() {
    if let Err(why) = can_mount_tmpfs() {
        crate::skip!("cannot mount a tmpfs (needs CAP_SYS_ADMIN): {why}");
    }
    const PAGE: usize = 10;
    let emu = Emulator::start(EmuOptions {
        page_size: PAGE,
        ..EmuOptions::default()
    });
    let cfg = Cfg::new(&emu.base_url());
    let w = setup("crash-full", &emu, &cfg);
    std::fs::create_dir_all(w.file("state")).unwrap();
    std::fs::create_dir_all(w.file("saved")).unwrap();
    let state_name = format!("{ID}_{RWS_SERVICE}.state");
    // In a private mount namespace: a 64 KiB tmpfs on state/, filled up right after the
    // collector's first checkpoint; the state file is copied out after it exits (the
    // tmpfs dies with the namespace).
    let script = format!(
        "mount -t tmpfs -o size=64k,mode=0700 tmpfs state || exit 99\n\
         \"$0\" run --once -c config/config.yaml 2>run.log &\n\
         pid=$!\n\
         i=0; while [ ! -s state/{state_name} ] && [ $i -lt 2000 ]; do sleep 0.005; i=$((i+1)); done\n\
         dd if=/dev/zero of=state/fill bs=4096 2>/dev/null\n\
         wait $pid; rc=$?\n\
         cp -p state/{state_name} saved/ 2>/dev/null\n\
         exit $rc\n"
    );
    let child = Command::new("timeout")
        .args(["120", "unshare", "-m", "sh", "-c", &script])
        .arg(msgtrace_bin())
        .current_dir(&w.path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_deadline(child, Duration::from_secs(130));
    let log = w.read("run.log");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = log
        .lines()
        .find(|l| l.contains("fatal:"))
        .unwrap_or_else(|| panic!("no fatal line:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    // The delivery ledger is appended before each checkpoint: either may hit the full disk.
    assert!(
        line.contains("cannot write checkpoint")
            || line.contains("cannot fsync checkpoint")
            || line.contains("compaction")
            || line.contains("cannot append to the delivery ledger"),
        "{line}"
    );
    assert!(
        line.contains(&state_name) || line.contains(&format!("{ID}.ledger")),
        "names the file: {line}"
    );
    // The saved state still decodes, to the last good checkpoint: the events written
    // are what it counts plus at most the one page whose checkpoint failed.
    let saved = w.file(&format!("saved/{state_name}"));
    let (cursor, size) = msgtrace::state::peek(&saved)
        .unwrap()
        .expect("the state file decodes");
    let events = json_lines(&w.read("events.jsonl"));
    let sent = usize::try_from(cursor.sent).unwrap();
    assert!(
        sent <= events.len() && events.len() <= sent + PAGE,
        "cursor counts {sent} sent, events.jsonl holds {}",
        events.len()
    );
    eprintln!(
        "crash: state write failed on a full tmpfs with {size} bytes of state; cursor at {} ({} sent), {} events written: {line}",
        msgtrace::time::rfc3339(cursor.window_start),
        cursor.sent,
        events.len()
    );
    // The next run (on a normal filesystem) continues from that cursor: nothing is
    // lost, at most the page whose checkpoint failed comes again.
    std::fs::copy(&saved, w.state_file(ID)).unwrap();
    let out = w.run(RUN_ONCE, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "retrieved state: window start {}",
            msgtrace::time::rfc3339(cursor.window_start)
        )),
        "{stderr}"
    );
    let events = json_lines(&w.read("events.jsonl"));
    let t = tally(&emu, &w, &log, &events, TENANT, INPUT, ID);
    assert_eq!(t.missing_count, 0, "{:?}", t.missing);
    assert_eq!(t.unexpected, 0);
    assert!(t.duplicates <= PAGE, "{} duplicates", t.duplicates);
}

fn msgtrace_bin() -> String {
    bin().display().to_string()
}

#[test]
fn state_show_and_reset_through_the_binary() {
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    let w = setup("crash-show", &emu, &cfg);
    let before = w.run(&["state", "show", "-c", "config/config.yaml"], secs(30));
    let text = String::from_utf8_lossy(&before.stdout);
    assert!(before.status.success());
    assert!(text.contains("no state yet"), "{text}");
    let out = w.run(RUN_ONCE, secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = json_lines(&w.read("events.jsonl")).len();
    let c = final_cursor(&w.file("state"), ID, RWS_SERVICE);
    let show = w.run(&["state", "show", "-c", "config/config.yaml"], secs(30));
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{text}");
    assert!(
        text.contains(&format!("{INPUT}#{ID} {RWS_SERVICE}:")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "window: next one starts at {}",
            msgtrace::time::rfc3339(c.window_start)
        )),
        "{text}"
    );
    assert!(text.contains("lag: "), "{text}");
    assert!(
        text.contains(&format!("{n} event(s) sent")) && text.contains("request(s) made"),
        "{text}"
    );
    assert!(!text.contains("secret-tenant-1"));
    // By input name too.
    let one = w.run(
        &["state", "show", "--input", ID, "-c", "config/config.yaml"],
        secs(30),
    );
    assert!(one.status.success());
    // A detail queue left by a Graph service is per input too: the reset clears it.
    let queue = msgtrace::detail_queue::queue_path(&w.file("state"), ID);
    std::fs::write(&queue, b"").unwrap();
    let reset = w.run(&["state", "reset", "-c", "config/config.yaml"], secs(30));
    let text = String::from_utf8_lossy(&reset.stdout);
    assert!(reset.status.success(), "{text}");
    assert!(text.contains("state cleared"), "{text}");
    assert!(!w.state_file(ID).exists());
    assert!(!queue.exists(), "{text}");
    let after = w.run(&["state", "show", "-c", "config/config.yaml"], secs(30));
    let text = String::from_utf8_lossy(&after.stdout);
    assert!(after.status.success());
    assert!(text.contains("no state yet"), "{text}");
    let again = w.run(&["state", "reset", "-c", "config/config.yaml"], secs(30));
    assert!(String::from_utf8_lossy(&again.stdout).contains("no state to clear"));
}

#[test]
fn state_reset_refuses_while_a_collector_runs() {
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.period = 3600;
    let w = setup("crash-locked", &emu, &cfg);
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    w.wait_log("stderr.log", "Remote data is up to date!", secs(60));
    let reset = w.run(&["state", "reset", "-c", "config/config.yaml"], secs(30));
    let err = String::from_utf8_lossy(&reset.stderr);
    assert_ne!(reset.status.code(), Some(0), "{err}");
    assert!(err.contains("locked by another msgtrace process"), "{err}");
    assert!(w.state_file(ID).exists());
    let line = err.lines().find(|l| l.contains("locked")).unwrap_or("");
    eprintln!("crash: state reset while running: {line}");
    p.signal("TERM");
    assert!(p.wait(secs(5)).is_some());
}

#[test]
fn torn_state_file_is_cut_with_a_warning_and_the_run_continues() {
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    let w = setup("crash-torn", &emu, &cfg);
    let out = w.run(RUN_ONCE, secs(60));
    let first = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{first}");
    let path = w.state_file(ID);
    let good = std::fs::metadata(&path).unwrap().len();
    let cursor = final_cursor(&w.file("state"), ID, RWS_SERVICE);
    // A torn record: the magic, a version, then garbage.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"\xC7\x01\x20\x00\x00\x00garbage");
    std::fs::write(&path, &bytes).unwrap();
    let out = w.run(RUN_ONCE, secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warn = stderr
        .lines()
        .find(|l| l.contains("WARNING") && l.contains("state file"))
        .unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(warn.contains(&format!("at byte {good}")), "{warn}");
    assert!(
        stderr.contains(&format!(
            "retrieved state: window start {}",
            msgtrace::time::rfc3339(cursor.window_start)
        )),
        "{stderr}"
    );
    eprintln!("crash: torn state: {warn}");
    let events = json_lines(&w.read("events.jsonl"));
    let t = tally(&emu, &w, &first, &events, TENANT, INPUT, ID);
    assert_eq!(t.missing_count, 0, "{:?}", t.missing);
    assert_eq!(t.duplicates, 0, "continuing from the last good cursor");
    // A torn record in the middle of a crash test is cut the same way: the file is
    // valid again (the next open finds nothing to cut).
    let (c, _) = msgtrace::state::peek(&path).unwrap().unwrap();
    assert!(c.window_start >= cursor.window_start);
    let out = w.run(RUN_ONCE, secs(60));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("at byte"));
}

#[test]
fn changed_reset_persistence_auth_clears_state_and_pulls_again() {
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.service_extra = "        reset_persistence_auth: 2026-01-01\n".into();
    let w = setup("crash-resetauth", &emu, &cfg);
    let out = w.run(RUN_ONCE, secs(60));
    let first = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{first}");
    let n1 = json_lines(&w.read("events.jsonl")).len();
    assert!(n1 > 500, "{n1}");
    // The same value again: state kept, nothing re-sent.
    let out = w.run(RUN_ONCE, secs(60));
    let same = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(same.contains("retrieved state"), "{same}");
    assert!(!same.contains("reset_persistence_auth changed"));
    let n_same = json_lines(&w.read("events.jsonl")).len();
    cfg.service_extra = "        reset_persistence_auth: 2026-02-01\n".into();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(RUN_ONCE, secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("reset_persistence_auth changed"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("2026-01-01 -> 2026-02-01") && line.contains("state cleared"),
        "{line}"
    );
    assert!(
        stderr.contains("no saved state found, starting at"),
        "{stderr}"
    );
    let restart = crate::harness::logged_start(&stderr, INPUT).unwrap();
    let first_start = crate::harness::logged_start(&first, INPUT).unwrap();
    assert!(
        (restart - first_start).abs() < 600,
        "restarts from the cutoff: {restart} vs {first_start}"
    );
    let n2 = json_lines(&w.read("events.jsonl")).len() - n_same;
    eprintln!("crash: reset_persistence_auth changed: {n1} events first, {n2} re-sent");
    assert!(n2 + 100 >= n1, "events re-sent: {n2} of {n1}");
    let c = final_cursor(&w.file("state"), ID, RWS_SERVICE);
    assert_eq!(c.reset_auth.as_deref(), Some("2026-02-01"));
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
