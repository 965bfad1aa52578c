//! `msgtrace run`: the process around the tenants — outputs, a small worker pool that
//! interleaves tenants' pulls, signals, statistics.
//!
//! Concurrency model: every tenant is a state machine (`pull::Tenant`, its phase in
//! `tenant`) whose `step`
//! makes at most one page request. A scheduler queue holds each tenant with the
//! instant it is due; `MAX_WORKERS` threads take the earliest due tenant, run one step
//! and put it back. A tenant in a ten-day backfill goes to the back of the queue after
//! every page, so up-to-date tenants are never starved; a tenant waiting out a backoff
//! or its Graph budget occupies no thread. Memory per extra tenant is its cursor, dedup
//! set and token — not a thread, a connection or a page buffer (SPEC §9: 100 tenants in
//! 16 MiB). All tenants share the outputs' one connection each.
//!
//! Must not: block shutdown — SIGTERM/SIGINT stop within 5 s; a page in flight is left
//! for next time (its cursor was not moved), which the state file makes safe.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::output::delivery::Delivery;
use crate::pull::{lock, Next, Tenant};
use crate::{error, info, time, warning};

/// Worker threads: enough that one tenant's slow request does not hold up the others,
/// few enough that 100 tenants stay within the memory budget.
pub const MAX_WORKERS: usize = 4;
/// Stack of a worker thread: the scanners are iterative, nothing deep recurses.
pub const WORKER_STACK: usize = 256 * 1024;
/// How long shutdown waits for workers before leaving (the 5 s promise, with margin).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(4000);
/// First wait before pulling is retried while an output is down…
pub const RECONNECT_BASE: Duration = Duration::from_millis(500);
/// …doubling per failed attempt up to this.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Default interval of memory statistics; sender statistics come every second one.
pub const STATS_INTERVAL: Duration = Duration::from_secs(300);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT request a clean stop; SIGHUP is ignored (documented: restart the
/// process to reload the configuration). libc is used because std has no signal API.
pub fn install_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

struct Sched {
    queue: Vec<(Instant, usize)>,
    done: Vec<Option<Result<()>>>,
    fatal: Option<Error>,
    out_attempt: u32,
    stopping: bool,
}

struct Shared {
    sched: Mutex<Sched>,
    cv: Condvar,
    outputs: Delivery,
    tenants: Vec<Mutex<Tenant>>,
    active: AtomicUsize,
}

/// The instant `d` from now; a wait too long for the clock counts as a year (a tenant
/// "waiting forever" is still looked at again).
fn later(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

/// Interval of the statistics lines: `MSGTRACE_STATS_INTERVAL_SECS` (documented, for
/// tests and troubleshooting) or 5 minutes.
fn stats_interval() -> Duration {
    std::env::var("MSGTRACE_STATS_INTERVAL_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(STATS_INTERVAL, Duration::from_secs)
}

/// RSS and VMS in MiB from /proc/self/statm.
pub fn memory_mib() -> Option<(f64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut it = statm.split_whitespace();
    let vms: f64 = it.next()?.parse().ok()?;
    let rss: f64 = it.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as f64 } else { 4096.0 };
    Some((rss * page / 1_048_576.0, vms * page / 1_048_576.0))
}

/// Descriptors each tenant keeps open (state file, delivery ledger), plus those of the
/// process itself (outputs, HTTP connections, the metrics listener, stdio).
const FDS_PER_TENANT: u64 = 2;
const FDS_BASE: u64 = 64;

/// Raise the soft limit on open files towards the hard limit when the tenants need
/// more than the soft limit allows (1,000 tenants keep 2,000 files open; the usual
/// soft limit is 1,024). std has no API for this, so libc's getrlimit/setrlimit are
/// used. A limit that cannot be raised is logged: the tenants that do not fit fail to
/// open their state, each with its own message, and the others run.
fn raise_fd_limit(tenants: usize) {
    let need = u64::try_from(tenants)
        .unwrap_or(u64::MAX)
        .saturating_mul(FDS_PER_TENANT)
        .saturating_add(FDS_BASE);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= need {
        return;
    }
    let want = need.min(lim.rlim_max);
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit through a valid pointer.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
    if !ok || want < need {
        warning!(
            "MainProcess::MainThread",
            "{tenants} input(s) need about {need} open files, the limit is {} (hard {}): raise it (ulimit -n, LimitNOFILE= in systemd)",
            if ok { want } else { lim.rlim_cur },
            lim.rlim_max
        );
    }
}

/// Run until stopped (or, with `once`, until every tenant is up to date or failed).
/// Returns the exit code.
pub fn run(cfg: &Config, once: bool) -> Result<u8> {
    install_signals();
    let now = time::now();
    let enabled: Vec<_> = cfg.inputs.iter().filter(|i| i.enabled).collect();
    if enabled.is_empty() {
        return Err(Error::Config(vec![format!(
            "{}: no enabled input — set `enabled: true` on an office365_exchange_message input",
            cfg.path.display()
        )]));
    }
    raise_fd_limit(enabled.len());
    let mut sinks = Vec::new();
    for o in &cfg.outputs {
        sinks.push(crate::output::open(o)?);
    }
    if sinks.is_empty() {
        return Err(Error::Config(vec![format!(
            "{}: no output configured — add one under `outputs` (devo_platform, syslog, file or stdout)",
            cfg.path.display()
        )]));
    }
    let outputs = Delivery::start(sinks)?;
    crate::metrics::start(cfg)?;
    // One agent per distinct (timeout, ca_file): agents share their connection pool,
    // which bounds idle connections (and their buffers) however many tenants there are.
    let mut agents: HashMap<(u64, Option<PathBuf>), ureq::Agent> = HashMap::new();
    let mut tenants = Vec::new();
    let mut failed_at_start: Vec<(String, Error)> = Vec::new();
    for input in enabled {
        let svc = &input.service;
        let key = (svc.timeout_secs.to_bits(), svc.ca_file.clone());
        let agent = match agents.get(&key) {
            Some(a) => a.clone(),
            None => {
                let a = crate::http::agent(
                    Duration::from_secs_f64(svc.timeout_secs),
                    svc.ca_file.as_deref(),
                )?;
                agents.insert(key, a.clone());
                a
            }
        };
        match Tenant::open(cfg, input, agent, once, now) {
            Ok(t) => tenants.push(Mutex::new(t)),
            Err(e) => {
                // A state file another collector holds, or one written by a newer
                // msgtrace, stops this input only: the others run (SPEC §2). A state
                // write failing later, while running, is fatal (exit 3).
                error!(
                    "InputProcess::MainThread",
                    "{}#{} cannot start: {e}", input.name, input.id
                );
                crate::metrics::input(&input.id).failed_to_start();
                failed_at_start.push((format!("{}#{}", input.name, input.id), e));
            }
        }
    }
    let n = tenants.len();
    let total = n.saturating_add(failed_at_start.len());
    let start = Instant::now();
    let shared = Arc::new(Shared {
        sched: Mutex::new(Sched {
            queue: (0..n).map(|i| (start, i)).collect(),
            done: (0..n).map(|_| None).collect(),
            fatal: None,
            out_attempt: 0,
            stopping: false,
        }),
        cv: Condvar::new(),
        outputs,
        tenants,
        active: AtomicUsize::new(0),
    });
    let workers = n.clamp(1, MAX_WORKERS);
    info!(
        "InputProcess::MainThread",
        "{n} input(s) started, {workers} worker thread(s)"
    );
    let mut handles = Vec::new();
    for w in 0..workers.min(n) {
        let sh = Arc::clone(&shared);
        sh.active.fetch_add(1, Ordering::SeqCst);
        let h = std::thread::Builder::new()
            .name(format!("worker-{w}"))
            .stack_size(WORKER_STACK)
            .spawn(move || {
                worker(&sh);
                sh.active.fetch_sub(1, Ordering::SeqCst);
                sh.cv.notify_all();
            })
            .map_err(|e| Error::State(format!("cannot start a worker thread: {e}")))?;
        handles.push(h);
    }
    // Main thread: signals, statistics, completion.
    let interval = stats_interval();
    let mut next_mem = later(interval);
    let mut next_send = later(interval.saturating_mul(2));
    // Per output: messages sent at the last report.
    let mut last_sent: Vec<u64> = Vec::new();
    let mut last_stamp = time::now();
    let mut stop_at: Option<Instant> = None;
    loop {
        crate::metrics::heartbeat();
        let mut s = lock(&shared.sched);
        let all_done = s.done.iter().all(Option::is_some);
        if shared.active.load(Ordering::SeqCst) == 0 || (once && all_done) || s.fatal.is_some() {
            s.stopping = true;
            drop(s);
            shared.cv.notify_all();
            break;
        }
        if stop_requested() && stop_at.is_none() {
            info!(
                "MainProcess::MainThread",
                "stop requested: finishing the page in flight (at most {} s)",
                SHUTDOWN_GRACE.as_secs()
            );
            s.stopping = true;
            stop_at = Some(later(SHUTDOWN_GRACE));
            shared.cv.notify_all();
        }
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            drop(s);
            warning!(
                "MainProcess::MainThread",
                "workers still busy after {} s: leaving; their pages are pulled again next start",
                SHUTDOWN_GRACE.as_secs()
            );
            return Ok(0);
        }
        let (g, _) = shared
            .cv
            .wait_timeout(s, Duration::from_millis(100))
            .unwrap_or_else(|p| p.into_inner());
        drop(g);
        let now_i = Instant::now();
        if now_i >= next_mem {
            next_mem = later(interval);
            if let Some((rss, vms)) = memory_mib() {
                info!(
                    "InputProcess::MainThread",
                    "[GC] process: RSS({rss:.2}MiB), VMS({vms:.2}MiB)"
                );
            }
        }
        if now_i >= next_send {
            next_send = later(interval.saturating_mul(2));
            let stats = shared.outputs.stats();
            last_sent.resize(stats.len(), 0);
            for ((name, st), last) in stats.iter().zip(last_sent.iter_mut()) {
                info!(
                    "OutputProcess::SenderManagerMonitor",
                    "Sender: {name}, status: {{\"internal_queue_size\": {}, \"is_connection_open\": {}}}",
                    st.queued_bytes,
                    st.connected
                );
                info!(
                    "OutputProcess::SenderManagerMonitor",
                    "Sender: {name} - Total number of messages sent: {}, messages sent since \"{}\": {}",
                    st.sent_total,
                    time::rfc3339(last_stamp),
                    st.sent_total.saturating_sub(*last)
                );
                *last = st.sent_total;
            }
            last_stamp = time::now();
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let s = lock(&shared.sched);
    if let Some(e) = &s.fatal {
        error!("MainProcess::MainThread", "fatal: {e}");
        return Ok(e.exit_code().max(3));
    }
    if stop_requested() {
        info!("MainProcess::MainThread", "stopped");
        return Ok(0);
    }
    let mut failed = failed_at_start;
    let mut s = s;
    let done = std::mem::take(&mut s.done);
    drop(s);
    for (d, t) in done.into_iter().zip(&shared.tenants) {
        if let Some(Err(why)) = d {
            let t = lock(t);
            failed.push((format!("{}#{}", t.input.name, t.input.id), why));
        }
    }
    if failed.is_empty() {
        info!("MainProcess::MainThread", "all inputs up to date");
        return Ok(0);
    }
    for (who, why) in &failed {
        error!("MainProcess::MainThread", "input {who} failed: {why}");
    }
    let names: Vec<&str> = failed.iter().map(|(w, _)| w.as_str()).collect();
    error!(
        "MainProcess::MainThread",
        "{} of {} input(s) failed: {}",
        failed.len(),
        total,
        names.join(", ")
    );
    // Only credentials problems everywhere: a setup error (exit 2); else fatal (3).
    Ok(if failed.iter().all(|(_, e)| e.is_setup()) {
        2
    } else {
        3
    })
}

fn worker(sh: &Shared) {
    loop {
        // Take the earliest due tenant.
        let idx = {
            let mut s = lock(&sh.sched);
            loop {
                if s.stopping || s.fatal.is_some() {
                    return;
                }
                let now = Instant::now();
                let best = s
                    .queue
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (due, _))| *due)
                    .map(|(pos, (due, i))| (pos, *due, *i));
                match best {
                    None => {
                        if s.done.iter().all(Option::is_some) {
                            return;
                        }
                        s = sh
                            .cv
                            .wait_timeout(s, Duration::from_millis(200))
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    Some((pos, due, i)) if due <= now => {
                        s.queue.swap_remove(pos);
                        break i;
                    }
                    Some((_, due, _)) => {
                        let wait = due
                            .saturating_duration_since(now)
                            .min(Duration::from_millis(200));
                        s = sh
                            .cv
                            .wait_timeout(s, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
        };
        // Outputs first: while they are down pulling pauses, so nothing queues up.
        let ready = sh.outputs.ensure_ready();
        publish_outputs(&sh.outputs);
        let next = match ready {
            // A permanent refusal (certificate rejected, wrong chain) will not heal by
            // reconnecting: stop with exit 3 and say so in the fatal line.
            Err(e) if !e.is_transient() => Err(e.context("output permanently refused")),
            Err(_) => Ok(Next::OutputDown),
            Ok(()) => {
                lock(&sh.sched).out_attempt = 0;
                match sh.tenants.get(idx) {
                    Some(t) => lock(t).step(&sh.outputs),
                    None => Err(Error::State(format!("no tenant {idx} in the schedule"))),
                }
            }
        };
        let mut s = lock(&sh.sched);
        match next {
            Ok(Next::After(d)) => s.queue.push((later(d), idx)),
            Ok(Next::OutputDown) => {
                s.out_attempt = s.out_attempt.saturating_add(1);
                let wait = crate::backoff::delay(RECONNECT_BASE, s.out_attempt, RECONNECT_MAX);
                s.queue.push((later(wait), idx));
            }
            Ok(Next::Done(r)) => {
                if let Some(slot) = s.done.get_mut(idx) {
                    *slot = Some(r);
                }
            }
            Err(e) => s.fatal = Some(e),
        }
        drop(s);
        sh.cv.notify_all();
    }
}

/// Copy each output's connection state and queue size into the metrics registry.
pub fn publish_outputs(outputs: &Delivery) {
    for (i, (_, st)) in outputs.stats().iter().enumerate() {
        crate::metrics::output(i).observe(st);
    }
}
