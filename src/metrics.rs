//! Prometheus metrics and health (SPEC §7 "Metrics and health"): the registry the puller
//! and the outputs count into, its rendering in the text exposition format 0.0.4, and the
//! `/healthz` and `/readyz` verdicts. The listener serving them is `metrics::http`.
//!
//! The registry is built once when `run` starts (one slot per input and per output) and
//! never changes shape afterwards: every counter is an atomic, so a hook is a relaxed
//! atomic add and a scrape takes no lock the pullers hold. Hooks are one-line calls on
//! `input(id)` / `output(index)`; before `start` (or for an unknown id) they count into a
//! detached slot that is never rendered, so library code and tests need no registry.
//!
//! Must not: block, allocate on a hook, or hold secrets — labels are input and output
//! names from the config (never tenant or client ids).

pub mod http;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::config::{Api, Config};
use crate::error::Result;
use crate::output::SinkStats;

/// Distinct (api, code) pairs counted per input; further pairs count as `code="other"`.
/// Real inputs see a handful (200, 401, 429, 503, `error`, the token's 200 and 400).
pub const REQUEST_SLOTS: usize = 12;
/// An input whose pulls failed this many periods in a row makes `/readyz` answer 503.
pub const READY_MAX_FAILED_PERIODS: u32 = 3;
/// `/healthz` fails when the main loop has not ticked for this long (it ticks every
/// 100 ms; the statistics lines may hold it a little while an output drains).
pub const HEALTH_STALL_MILLIS: i64 = 60_000;
/// `code` label value 0: the request got no HTTP answer (connect, TLS, timeout).
pub const CODE_NO_ANSWER: u16 = 0;

/// The `code` label of a failed request: its HTTP status, or `CODE_NO_ANSWER`. Token
/// setup errors carry the status they stand for: 100 is a 401, 102 a 200 without a token,
/// 101 any other refusal (Entra answers 400 for an unknown tenant or a bad request).
pub fn error_code(e: &crate::error::Error) -> u16 {
    use crate::error::Error;
    match e.root() {
        Error::Http { status, .. } => *status,
        Error::Setup { code: 100, .. } => 401,
        Error::Setup { code: 102, .. } => 200,
        Error::Setup { .. } => 400,
        _ => CODE_NO_ANSWER,
    }
}

/// Which endpoint a request went to: the `api` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// The OAuth2 token endpoint.
    Token,
    /// The Reporting Web Service.
    Reporting,
    /// Microsoft Graph.
    Graph,
}

impl Call {
    const ALL: [Call; 3] = [Call::Token, Call::Reporting, Call::Graph];

    fn label(self) -> &'static str {
        match self {
            Call::Token => "token",
            Call::Reporting => "reporting",
            Call::Graph => "graph",
        }
    }

    fn index(self) -> usize {
        match self {
            Call::Token => 0,
            Call::Reporting => 1,
            Call::Graph => 2,
        }
    }
}

impl From<Api> for Call {
    fn from(api: Api) -> Call {
        match api {
            Api::Reporting => Call::Reporting,
            Api::Graph => Call::Graph,
        }
    }
}

/// One (api, code) counter; `key` 0 is a free slot, else `(api index + 1) << 16 | code`.
struct CodeSlot {
    key: AtomicU32,
    count: AtomicU64,
}

impl CodeSlot {
    const fn new() -> CodeSlot {
        CodeSlot {
            key: AtomicU32::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// The counters of one input.
pub struct InputMetrics {
    name: String,
    id: String,
    graph: bool,
    sent: AtomicU64,
    filtered: AtomicU64,
    window_failures: AtomicU64,
    /// Periods failed in a row (0 after a pull that reached "up to date").
    failing: AtomicU32,
    /// Unix seconds up to which everything is delivered; `i64::MIN` before the first.
    cursor: AtomicI64,
    /// Graph requests left in the current 5-minute span; -1 for the Reporting Web Service.
    budget: AtomicI64,
    /// Trace details: rows queued, rows dropped (queue full), detail events sent.
    details_pending: AtomicU64,
    details_dropped: AtomicU64,
    detail_events: AtomicU64,
    requests: [CodeSlot; REQUEST_SLOTS],
    /// Per `Call`: requests whose code found no free slot.
    overflow: [AtomicU64; 3],
}

impl InputMetrics {
    const fn detached() -> InputMetrics {
        InputMetrics {
            name: String::new(),
            id: String::new(),
            graph: false,
            sent: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            window_failures: AtomicU64::new(0),
            failing: AtomicU32::new(0),
            cursor: AtomicI64::new(i64::MIN),
            budget: AtomicI64::new(-1),
            details_pending: AtomicU64::new(0),
            details_dropped: AtomicU64::new(0),
            detail_events: AtomicU64::new(0),
            requests: [const { CodeSlot::new() }; REQUEST_SLOTS],
            overflow: [const { AtomicU64::new(0) }; 3],
        }
    }

    fn new(name: &str, id: &str, graph: bool) -> InputMetrics {
        InputMetrics {
            name: name.to_string(),
            id: id.to_string(),
            graph,
            ..InputMetrics::detached()
        }
    }

    /// One request answered with HTTP status `code` (`CODE_NO_ANSWER`: no answer).
    pub fn request(&self, call: Call, code: u16) {
        let api = u32::try_from(call.index()).unwrap_or(0).saturating_add(1);
        let key = (api << 16) | u32::from(code);
        for slot in &self.requests {
            let found = match slot.key.load(Ordering::Relaxed) {
                k if k == key => true,
                0 => match slot
                    .key
                    .compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => true,
                    Err(k) => k == key,
                },
                _ => false,
            };
            if found {
                slot.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if let Some(o) = self.overflow.get(call.index()) {
            o.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A page confirmed by every output: `sent` events delivered, `filtered` dropped as
    /// already sent.
    pub fn delivered(&self, sent: u64, filtered: u64) {
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.filtered.fetch_add(filtered, Ordering::Relaxed);
    }

    /// Everything before `unix_secs` is delivered (the checkpointed window start).
    pub fn cursor(&self, unix_secs: i64) {
        self.cursor.store(unix_secs, Ordering::Relaxed);
    }

    /// A pull ended: up to date (`ok`) or given up until the next period.
    pub fn pull_finished(&self, ok: bool) {
        if ok {
            self.failing.store(0, Ordering::Relaxed);
        } else {
            self.window_failures.fetch_add(1, Ordering::Relaxed);
            let _ = self
                .failing
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                    Some(f.saturating_add(1))
                });
        }
    }

    /// The input could not start (its state is held or unreadable): not ready.
    pub fn failed_to_start(&self) {
        self.failing
            .fetch_max(READY_MAX_FAILED_PERIODS, Ordering::Relaxed);
    }

    /// Rows awaiting trace details.
    pub fn details_pending(&self, n: usize) {
        self.details_pending
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Rows dropped from a full detail queue.
    pub fn details_dropped(&self, n: u64) {
        self.details_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Detail events confirmed by every output.
    pub fn details_sent(&self, n: u64) {
        self.detail_events.fetch_add(n, Ordering::Relaxed);
    }

    /// Graph requests this input may still make in the current 5-minute span.
    pub fn budget_remaining(&self, n: usize) {
        self.budget
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

/// The state of one output.
pub struct OutputMetrics {
    name: String,
    up: AtomicBool,
    queue_bytes: AtomicU64,
}

impl OutputMetrics {
    const fn detached() -> OutputMetrics {
        OutputMetrics {
            name: String::new(),
            up: AtomicBool::new(false),
            queue_bytes: AtomicU64::new(0),
        }
    }

    /// Copy a sink's connection state and queue size.
    pub fn observe(&self, stats: &SinkStats) {
        self.up.store(stats.connected, Ordering::Relaxed);
        self.queue_bytes
            .store(stats.queued_bytes, Ordering::Relaxed);
    }
}

/// Every input and output of this run, fixed at start.
pub struct Registry {
    inputs: Vec<InputMetrics>,
    by_id: HashMap<String, usize>,
    outputs: Vec<OutputMetrics>,
    started: Instant,
    /// Milliseconds after `started` of the main loop's last tick.
    heartbeat: AtomicI64,
}

impl Registry {
    /// A registry for these inputs (name, id, is Graph) and outputs (names).
    pub fn new(inputs: &[(&str, &str, bool)], outputs: &[&str]) -> Registry {
        Registry {
            inputs: inputs
                .iter()
                .map(|(n, id, g)| InputMetrics::new(n, id, *g))
                .collect(),
            by_id: inputs
                .iter()
                .enumerate()
                .map(|(i, (_, id, _))| (id.to_string(), i))
                .collect(),
            outputs: outputs
                .iter()
                .map(|n| OutputMetrics {
                    name: n.to_string(),
                    ..OutputMetrics::detached()
                })
                .collect(),
            started: Instant::now(),
            heartbeat: AtomicI64::new(0),
        }
    }

    pub fn input(&self, id: &str) -> Option<&InputMetrics> {
        self.by_id.get(id).and_then(|i| self.inputs.get(*i))
    }

    pub fn output(&self, index: usize) -> Option<&OutputMetrics> {
        self.outputs.get(index)
    }

    fn millis(&self, at: Instant) -> i64 {
        i64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(i64::MAX)
    }

    /// The main loop ran at `at`.
    pub fn beat(&self, at: Instant) {
        self.heartbeat.store(self.millis(at), Ordering::Relaxed);
    }

    /// `/healthz`: `Err(reason)` when the main loop has stalled.
    pub fn health(&self, at: Instant) -> std::result::Result<(), String> {
        let idle = self
            .millis(at)
            .saturating_sub(self.heartbeat.load(Ordering::Relaxed));
        if idle > HEALTH_STALL_MILLIS {
            return Err(format!(
                "the main loop has not run for {} s",
                idle.saturating_div(1000)
            ));
        }
        Ok(())
    }

    /// `/readyz`: `Err(reason)` naming the first output that is not connected or the first
    /// input that failed `READY_MAX_FAILED_PERIODS` periods in a row.
    pub fn readiness(&self, stopping: bool) -> std::result::Result<(), String> {
        if stopping {
            return Err("stopping".into());
        }
        if let Some(o) = self.outputs.iter().find(|o| !o.up.load(Ordering::Relaxed)) {
            return Err(format!("output {} is not connected", o.name));
        }
        if let Some(i) = self
            .inputs
            .iter()
            .find(|i| i.failing.load(Ordering::Relaxed) >= READY_MAX_FAILED_PERIODS)
        {
            return Err(format!(
                "input {}#{} failed {} periods in a row",
                i.name,
                i.id,
                i.failing.load(Ordering::Relaxed)
            ));
        }
        Ok(())
    }

    /// The whole exposition (text format 0.0.4) at `now` (Unix seconds), with the
    /// process's resident set `rss` when known.
    pub fn render(&self, now: i64, rss: Option<u64>, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            out,
            "msgtrace_build_info",
            "gauge",
            "Version and target of this binary (always 1).",
        );
        sample(
            out,
            "msgtrace_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("target", &crate::app::target()),
            ],
            1,
        );
        family(
            out,
            "msgtrace_resident_memory_bytes",
            "gauge",
            "Resident set size of the process.",
        );
        if let Some(rss) = rss {
            sample(out, "msgtrace_resident_memory_bytes", &[], rss);
        }
        family(
            out,
            "msgtrace_events_sent_total",
            "counter",
            "Events delivered and confirmed by the output (every output confirms each page).",
        );
        for i in &self.inputs {
            for o in &self.outputs {
                sample(
                    out,
                    "msgtrace_events_sent_total",
                    &[("input", &i.name), ("output", &o.name)],
                    load(&i.sent),
                );
            }
        }
        family(
            out,
            "msgtrace_events_filtered_total",
            "counter",
            "Records not sent because they were already sent (window edge deduplication).",
        );
        for i in &self.inputs {
            sample(
                out,
                "msgtrace_events_filtered_total",
                &[("input", &i.name)],
                load(&i.filtered),
            );
        }
        family(
            out,
            "msgtrace_requests_total",
            "counter",
            "HTTP requests to Microsoft by endpoint and status code (error: no answer).",
        );
        for i in &self.inputs {
            for slot in &i.requests {
                let key = slot.key.load(Ordering::Relaxed);
                let Some(call) = usize::try_from(key >> 16)
                    .ok()
                    .and_then(|a| a.checked_sub(1))
                    .and_then(|a| Call::ALL.get(a))
                else {
                    continue;
                };
                let code = u16::try_from(key & 0xffff).unwrap_or(CODE_NO_ANSWER);
                let code = if code == CODE_NO_ANSWER {
                    "error".to_string()
                } else {
                    code.to_string()
                };
                sample(
                    out,
                    "msgtrace_requests_total",
                    &[("input", &i.name), ("api", call.label()), ("code", &code)],
                    load(&slot.count),
                );
            }
            for (call, n) in Call::ALL.iter().zip(&i.overflow) {
                let n = load(n);
                if n > 0 {
                    sample(
                        out,
                        "msgtrace_requests_total",
                        &[("input", &i.name), ("api", call.label()), ("code", "other")],
                        n,
                    );
                }
            }
        }
        family(
            out,
            "msgtrace_lag_seconds",
            "gauge",
            "Now minus the cursor: everything older is delivered (pass: first or second).",
        );
        for i in &self.inputs {
            let c = i.cursor.load(Ordering::Relaxed);
            if c != i64::MIN {
                sample_i(
                    out,
                    "msgtrace_lag_seconds",
                    &[("input", &i.name), ("pass", "first")],
                    now.saturating_sub(c),
                );
            }
        }
        family(
            out,
            "msgtrace_window_failures_total",
            "counter",
            "Pulls that gave up on a window until the next period.",
        );
        for i in &self.inputs {
            sample(
                out,
                "msgtrace_window_failures_total",
                &[("input", &i.name)],
                load(&i.window_failures),
            );
        }
        family(
            out,
            "msgtrace_input_failing_periods",
            "gauge",
            "Periods in a row whose pull failed (0 once a pull gets up to date).",
        );
        for i in &self.inputs {
            sample(
                out,
                "msgtrace_input_failing_periods",
                &[("input", &i.name)],
                u64::from(i.failing.load(Ordering::Relaxed)),
            );
        }
        family(
            out,
            "msgtrace_graph_budget_remaining",
            "gauge",
            "Graph requests the input may still make in the current 5-minute span.",
        );
        for i in self.inputs.iter().filter(|i| i.graph) {
            let b = i.budget.load(Ordering::Relaxed);
            if b >= 0 {
                sample_i(
                    out,
                    "msgtrace_graph_budget_remaining",
                    &[("input", &i.name)],
                    b,
                );
            }
        }
        for (name, kind, help, pick) in [
            (
                "msgtrace_details_pending",
                "gauge",
                "Rows awaiting trace details (durable queue).",
                0,
            ),
            (
                "msgtrace_details_dropped_total",
                "counter",
                "Rows dropped without details because the detail queue was full.",
                1,
            ),
            (
                "msgtrace_detail_events_total",
                "counter",
                "Trace detail events confirmed by every output.",
                2,
            ),
        ] {
            family(out, name, kind, help);
            for i in self.inputs.iter().filter(|i| i.graph) {
                let v = match pick {
                    0 => &i.details_pending,
                    1 => &i.details_dropped,
                    _ => &i.detail_events,
                };
                sample(out, name, &[("input", &i.name)], load(v));
            }
        }
        family(
            out,
            "msgtrace_output_up",
            "gauge",
            "1 while the output is connected (file and stdout: open).",
        );
        for o in &self.outputs {
            sample(
                out,
                "msgtrace_output_up",
                &[("output", &o.name)],
                u64::from(o.up.load(Ordering::Relaxed)),
            );
        }
        family(
            out,
            "msgtrace_output_queue_bytes",
            "gauge",
            "Bytes buffered for the output or not yet acknowledged by its receiver.",
        );
        for o in &self.outputs {
            sample(
                out,
                "msgtrace_output_queue_bytes",
                &[("output", &o.name)],
                load(&o.queue_bytes),
            );
        }
    }
}

/// `# HELP` and `# TYPE` lines of one metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape(help, false));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(out: &mut String, name: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    if labels.is_empty() {
        out.push(' ');
        return;
    }
    out.push('{');
    for (n, (k, v)) in labels.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape(v, true));
    }
    out.push_str("} ");
}

fn sample(out: &mut String, name: &str, l: &[(&str, &str)], value: u64) {
    labels(out, name, l);
    let _ = writeln!(out, "{value}");
}

fn sample_i(out: &mut String, name: &str, l: &[(&str, &str)], value: i64) {
    labels(out, name, l);
    let _ = writeln!(out, "{value}");
}

/// Escape for the text format: `\` and newline always, `"` in label values.
fn escape(text: &str, label_value: bool) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c == '\\' || c == '\n' || (label_value && c == '"'))
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut s = String::with_capacity(text.len().saturating_add(8));
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if label_value => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    std::borrow::Cow::Owned(s)
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();
static DETACHED_INPUT: InputMetrics = InputMetrics::detached();
static DETACHED_OUTPUT: OutputMetrics = OutputMetrics::detached();

/// The registry of this run, once `start` has built it.
pub fn registry() -> Option<&'static Registry> {
    REGISTRY.get()
}

/// The counters of input `id` (a detached slot when there is no such input).
pub fn input(id: &str) -> &'static InputMetrics {
    registry()
        .and_then(|r| r.input(id))
        .unwrap_or(&DETACHED_INPUT)
}

/// The state of output number `index` in config order.
pub fn output(index: usize) -> &'static OutputMetrics {
    registry()
        .and_then(|r| r.output(index))
        .unwrap_or(&DETACHED_OUTPUT)
}

/// The main loop is alive (call on every tick).
pub fn heartbeat() {
    if let Some(r) = registry() {
        r.beat(Instant::now());
    }
}

/// Build the registry for the enabled inputs and the outputs of `cfg` (once per
/// process) and, with `globals.metrics_listen`, start serving it. A port that cannot be
/// bound is a setup error (exit 2).
pub fn start(cfg: &Config) -> Result<()> {
    let inputs: Vec<(&str, &str, bool)> = cfg
        .inputs
        .iter()
        .filter(|i| i.enabled)
        .map(|i| (i.name.as_str(), i.id.as_str(), i.service.api == Api::Graph))
        .collect();
    let outputs: Vec<&str> = cfg.outputs.iter().map(|o| o.name.as_str()).collect();
    let reg = REGISTRY.get_or_init(|| Registry::new(&inputs, &outputs));
    reg.beat(Instant::now());
    if let Some(listen) = &cfg.globals.metrics_listen {
        let addr = http::serve(listen, reg).map_err(|e| {
            crate::error::Error::Config(vec![format!(
                "{}: globals.metrics_listen: cannot listen on {listen}: {e} — choose a free port or an address of this host",
                cfg.path.display()
            )])
        })?;
        crate::info!(
            "MainProcess::MainThread",
            "metrics on http://{addr}/metrics, health on /healthz and /readyz"
        );
    }
    Ok(())
}

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.checked_mul(u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        Registry::new(
            &[
                ("office365_exchange_message", "1", false),
                ("office365_exchange_message_\"odd\\name\n", "2", true),
            ],
            &["devo_1", "file_1"],
        )
    }

    #[test]
    fn renders_every_family_with_help_type_and_escaped_labels() {
        let r = reg();
        let i = r.input("1").unwrap_or(&DETACHED_INPUT);
        i.request(Call::Token, 200);
        i.request(Call::Reporting, 200);
        i.request(Call::Reporting, 200);
        i.request(Call::Reporting, CODE_NO_ANSWER);
        i.delivered(10, 2);
        i.delivered(5, 0);
        i.cursor(1_000);
        let g = r.input("2").unwrap_or(&DETACHED_INPUT);
        g.budget_remaining(97);
        g.pull_finished(false);
        if let Some(o) = r.output(0) {
            o.observe(&SinkStats {
                sent_total: 0,
                connected: true,
                queued_bytes: 42,
            });
        }
        let mut s = String::new();
        r.render(4_600, Some(4096), &mut s);
        for line in [
            "# TYPE msgtrace_events_sent_total counter",
            "msgtrace_events_sent_total{input=\"office365_exchange_message\",output=\"devo_1\"} 15",
            "msgtrace_events_sent_total{input=\"office365_exchange_message\",output=\"file_1\"} 15",
            "msgtrace_events_filtered_total{input=\"office365_exchange_message\"} 2",
            "msgtrace_requests_total{input=\"office365_exchange_message\",api=\"token\",code=\"200\"} 1",
            "msgtrace_requests_total{input=\"office365_exchange_message\",api=\"reporting\",code=\"200\"} 2",
            "msgtrace_requests_total{input=\"office365_exchange_message\",api=\"reporting\",code=\"error\"} 1",
            "msgtrace_lag_seconds{input=\"office365_exchange_message\",pass=\"first\"} 3600",
            "msgtrace_window_failures_total{input=\"office365_exchange_message_\\\"odd\\\\name\\n\"} 1",
            "msgtrace_graph_budget_remaining{input=\"office365_exchange_message_\\\"odd\\\\name\\n\"} 97",
            "msgtrace_output_up{output=\"devo_1\"} 1",
            "msgtrace_output_up{output=\"file_1\"} 0",
            "msgtrace_output_queue_bytes{output=\"devo_1\"} 42",
            "msgtrace_resident_memory_bytes 4096",
            "# HELP msgtrace_build_info Version and target of this binary (always 1).",
        ] {
            assert!(s.lines().any(|l| l == line), "no {line:?} in\n{s}");
        }
        // The Reporting input has no Graph budget; no lag before a cursor is known.
        assert!(
            !s.contains("msgtrace_graph_budget_remaining{input=\"office365_exchange_message\"}")
        );
        assert_eq!(s.matches("msgtrace_lag_seconds{").count(), 1);
        // Every sample line belongs to the family announced last.
        let mut current = String::new();
        for l in s.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap_or("").to_string();
            } else if !l.starts_with('#') {
                assert!(l.starts_with(&current), "{l} outside {current}");
            }
        }
    }

    #[test]
    fn request_codes_beyond_the_slots_count_as_other() {
        let r = reg();
        let i = r.input("1").unwrap_or(&DETACHED_INPUT);
        for code in 400..420u16 {
            i.request(Call::Graph, code);
        }
        let mut s = String::new();
        r.render(0, None, &mut s);
        assert_eq!(s.matches("api=\"graph\",code=\"4").count(), REQUEST_SLOTS);
        assert!(s.contains(
            "msgtrace_requests_total{input=\"office365_exchange_message\",api=\"graph\",code=\"other\"} 8"
        ));
        assert!(!s
            .lines()
            .any(|l| l.starts_with("msgtrace_resident_memory_bytes ")));
    }

    #[test]
    fn readiness_names_the_reason() {
        let r = reg();
        assert_eq!(
            r.readiness(false),
            Err("output devo_1 is not connected".into())
        );
        let up = SinkStats {
            sent_total: 0,
            connected: true,
            queued_bytes: 0,
        };
        for i in 0..2 {
            if let Some(o) = r.output(i) {
                o.observe(&up);
            }
        }
        assert_eq!(r.readiness(false), Ok(()));
        assert_eq!(r.readiness(true), Err("stopping".into()));
        let i = r.input("1").unwrap_or(&DETACHED_INPUT);
        for _ in 0..READY_MAX_FAILED_PERIODS - 1 {
            i.pull_finished(false);
        }
        assert_eq!(r.readiness(false), Ok(()));
        i.pull_finished(false);
        assert_eq!(
            r.readiness(false),
            Err("input office365_exchange_message#1 failed 3 periods in a row".into())
        );
        i.pull_finished(true);
        assert_eq!(r.readiness(false), Ok(()));
        i.failed_to_start();
        assert!(r.readiness(false).is_err());
    }

    #[test]
    fn error_codes_of_failed_requests() {
        use crate::error::Error;
        let http = Error::Http {
            status: 503,
            message: String::new(),
            retry_after: None,
        };
        assert_eq!(error_code(&http.context("token request")), 503);
        let setup = |code| Error::Setup {
            code,
            message: String::new(),
            fix: "",
        };
        assert_eq!(error_code(&setup(100)), 401);
        assert_eq!(error_code(&setup(101)), 400);
        assert_eq!(error_code(&setup(102)), 200);
        assert_eq!(
            error_code(&Error::Transport("refused".into())),
            CODE_NO_ANSWER
        );
    }

    #[test]
    fn health_follows_the_heartbeat() {
        let r = reg();
        let t0 = Instant::now();
        r.beat(t0);
        assert_eq!(r.health(t0), Ok(()));
        let late = t0 + std::time::Duration::from_millis(HEALTH_STALL_MILLIS as u64 + 1000);
        assert!(r
            .health(late)
            .is_err_and(|e| e.contains("has not run for 61 s")));
    }
}
