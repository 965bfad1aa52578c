//! The pull loop of one tenant: token, windows, paging, retries, pacing, delivery and
//! checkpoint — the IO shell around the API seam and scanners (`source/`), the phase
//! state machine (`tenant`), window rules (`window`) and state codec (`state`).
//!
//! Owns: `Tenant` (one input + its service), the step that makes one page request and
//! delivers its events, the choice of the next window (first pass before settle pass,
//! towards targets fixed per pull), the use of the delivery ledger (a window's set
//! loaded on entry, each confirmed page appended before its checkpoint, pruned behind
//! the settle cursor), the Graph request pacer; pages
//! are delivered through `output::delivery`.
//! Must not: keep a page in memory (records stream from the socket through the encoder
//! into a bounded batch), move the cursor before every output confirmed the page, or
//! skip a window that keeps failing (it is retried next period).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::TokenClient;
use crate::clock::ClockGuard;
use crate::config::ServiceConfig;
use crate::config::{Config, InputConfig};
use crate::error::{Error, Result};
use crate::ledger::{status_code, Entry, Ledger, Seen, WindowSet};
use crate::output::delivery::Delivery;
use crate::paging::{LinkVerdict, Paging};
use crate::source::api::Query;
use crate::source::PageCtx;
use crate::state::{Cursor, StateFile};
use crate::tenant::{Pass, Phase, Pull};
use crate::window;
use crate::{backoff, debug, error, info, warning};
use crate::{event, http, time};

mod faults;
mod pacer;

pub use pacer::{pacer_span, Pacer, PACER_SPAN};

/// Encoded events are handed to the outputs in batches of about this many bytes: large
/// TLS records, and memory that does not grow with the page size.
pub const BATCH_BYTES: usize = 128 * 1024;
/// Ceiling of the exponential retry backoff.
pub const MAX_BACKOFF_SECS: u64 = 300;
/// What the scheduler does with a tenant after a step.
#[derive(Debug)]
pub enum Next {
    /// Run the next step after this long (zero: as soon as a worker is free).
    After(Duration),
    /// The outputs failed: run again once they are back (pulling pauses).
    OutputDown,
    /// `--once` finished: up to date (`Ok`) or failed with the reason.
    Done(Result<()>),
}

/// One input (tenant) and its service.
pub struct Tenant {
    pub input: InputConfig,
    pub comp: String,
    setup_comp: String,
    state_dir: std::path::PathBuf,
    agent: ureq::Agent,
    tokens: TokenClient,
    state: StateFile,
    /// The input's delivery ledger (shared by both APIs): every dedup decision.
    ledger: Ledger,
    /// The ledger entries around the window being paged plus what it delivered since;
    /// loaded when the window is entered or resumed, released when it is done.
    set: Option<(Window, WindowSet)>,
    cursor: Cursor,
    origin: i64,
    pacer: Option<Pacer>,
    phase: Phase,
    once: bool,
    /// Trace details (Graph with `trace_details_statuses`), see `details`.
    details: Option<crate::details::Details>,
    /// `run --once`: both targets, fixed when the run started (SPEC §1).
    once_targets: (i64, i64),
    /// Next-link policy and page cap of the window being paged (SPEC §3).
    paging: Paging,
    /// The target never runs ahead of monotonic time (SPEC §3).
    clock: ClockGuard,
    /// Entries written to dead letters since start.
    rejected_entries: u64,
}

/// The bounds of a window, as the key of its loaded dedup set.
type Window = (Pass, i64, i64);

impl Tenant {
    /// Open the tenant's state (taking over the other API's cursor on a tenant's
    /// first start on this one), its delivery ledger, apply `reset_persistence_auth`,
    /// migrate a version 1 cursor, clamp an old cursor.
    pub fn open(
        cfg: &Config,
        input: &InputConfig,
        agent: ureq::Agent,
        once: bool,
        now: i64,
    ) -> Result<Tenant> {
        let svc = &input.service;
        let service = svc.api.service_name();
        let comp = format!(
            "InputProcess::Office365ExchangeMessageTracePuller({},{},{},predefined)",
            input.name, input.id, service
        );
        let setup_comp = format!(
            "InputProcess::Office365ExchangeMessageTracePullerSetup({},{}#{},{}#predefined)",
            cfg.globals.name, input.name, input.id, service
        );
        let path = crate::state::state_path(&cfg.globals.state_dir, &input.id, service);
        // Moving between APIs keeps the cursor: the new service takes over what the
        // other one left for this input id (the state module writes it crash-safely).
        // The ledger is per input id, so what the old API sent is filtered.
        let other = svc.api.other();
        let took_over = crate::state::take_over(
            &cfg.globals.state_dir,
            &input.id,
            other.service_name(),
            service,
        )?;
        if let Some(old) = &took_over {
            info!(
                comp,
                "took over the cursor of {} (window start {}): no window is skipped, and the delivery ledger filters what it already sent",
                other.service_name(),
                time::rfc3339(old.window_start)
            );
        }
        let (mut state, saved) = StateFile::open(&path)?;
        // After the state file: opening it creates the persistence directory.
        for w in std::mem::take(&mut state.warnings) {
            warning!(comp, "{w}");
        }
        let mut ledger = Ledger::open(&crate::ledger::ledger_path(
            &cfg.globals.state_dir,
            &input.id,
        ))?;
        for w in std::mem::take(&mut ledger.warnings) {
            warning!(comp, "{w}");
        }
        // Only a value that differs clears the state: a block without
        // reset_persistence_auth keeps the saved one (so a taken-over cursor survives a
        // new block that does not repeat the old block's value).
        let cursor = match saved {
            Some(c)
                if svc.reset_persistence_auth.is_some()
                    && c.reset_auth != svc.reset_persistence_auth =>
            {
                info!(
                    comp,
                    "reset_persistence_auth changed ({} -> {}): state cleared, pulling restarts (the delivery ledger is cleared too)",
                    c.reset_auth.as_deref().unwrap_or("none"),
                    svc.reset_persistence_auth.as_deref().unwrap_or("none")
                );
                ledger.clear()?;
                None
            }
            other => other,
        };
        if let Some(c) = cursor.as_ref().filter(|c| c.delay_secs != svc.delay_secs) {
            info!(
                comp,
                "override_time_delay_in_seconds changed from {} to {}: the cursor is kept",
                c.delay_secs,
                svc.delay_secs
            );
        }
        // A next link of one API means nothing to the other: restart that window.
        let mut restart = cursor.as_ref().is_some_and(|c| c.service != service);
        let fresh = cursor.is_none();
        let mut c = cursor.unwrap_or_else(|| {
            let start = window::first_start(svc.api, now, input.cutoff_days, input.margin_secs);
            Cursor {
                window_start: start,
                settle_start: start,
                ..Cursor::default()
            }
        });
        // Version 1 edge keys (carried by a v1 cursor, or by the one taken over) go into
        // the ledger as "any status" entries at the edge they guard, before the first
        // checkpoint writes version 2 without them.
        let v1_keys = took_over
            .as_ref()
            .map(|o| o.edge_keys.as_slice())
            .filter(|k| !k.is_empty())
            .unwrap_or(c.edge_keys.as_slice());
        if !v1_keys.is_empty() {
            let entries: Vec<Entry> = v1_keys
                .iter()
                .map(|&key| Entry {
                    received: c.window_start,
                    key,
                    status: crate::ledger::STATUS_ANY,
                })
                .collect();
            ledger.append(&entries)?;
            info!(
                comp,
                "state format 1 migrated: {} edge key(s) moved into the delivery ledger",
                entries.len()
            );
        }
        c.edge_keys = Vec::new();
        if fresh {
            info!(
                comp,
                "no saved state found, starting at {}",
                time::rfc3339(c.window_start)
            );
        } else {
            info!(
                comp,
                "retrieved state: window start {}, settle pass at {}",
                time::rfc3339(c.window_start),
                time::rfc3339(c.settle_start)
            );
        }
        // The settle pass is never ahead of the first.
        if c.settle_start > c.window_start {
            c.settle_start = c.window_start;
            c.settle_end = 0;
            c.settle_link = None;
        }
        let (clamped, lost) = window::clamp_start(svc.api, c.window_start, now, input.margin_secs);
        if lost > 0 {
            warning!(
                comp,
                "the saved cursor {} is older than the API allows: moved to {}, records of {} ({} to {}) cannot be pulled any more",
                time::rfc3339(c.window_start),
                time::rfc3339(clamped),
                time::human_duration(lost),
                time::rfc3339(c.window_start),
                time::rfc3339(clamped)
            );
            c.window_start = clamped;
            restart = true;
        }
        let (settle_clamped, settle_lost) =
            window::clamp_start(svc.api, c.settle_start, now, input.margin_secs);
        if settle_lost > 0 {
            if lost == 0 {
                warning!(
                    comp,
                    "the settle pass cursor {} is older than the API allows: moved to {}; records of {} cannot be read settled any more",
                    time::rfc3339(c.settle_start),
                    time::rfc3339(settle_clamped),
                    time::human_duration(settle_lost)
                );
            }
            // Only the settle pass's own window (if one was in progress) starts over.
            c.settle_start = settle_clamped;
            c.settle_end = 0;
            c.settle_link = None;
        }
        let phase = if restart {
            Phase::Idle { resume: None }
        } else {
            Phase::from_cursor(&c)
        };
        phase.store(&mut c);
        if svc.reset_persistence_auth.is_some() {
            c.reset_auth = svc.reset_persistence_auth.clone();
        }
        c.delay_secs = svc.delay_secs;
        c.service = service.to_string();
        state.checkpoint(&c)?;
        crate::metrics::input(&input.id).cursor(c.window_start);
        let tokens = TokenClient::new(
            svc.api,
            &svc.auth_url,
            &svc.resource_url,
            input.credentials.clone(),
        );
        let pacer = svc
            .api
            .is_paced()
            .then(|| Pacer::new(svc.max_requests_per_5_minutes));
        let details = crate::details::Details::open(cfg, input, &comp)?;
        let once_targets = targets(svc, now);
        Ok(Tenant {
            details,
            input: input.clone(),
            comp,
            setup_comp,
            state_dir: cfg.globals.state_dir.clone(),
            agent,
            tokens,
            state,
            ledger,
            set: None,
            origin: c.window_start,
            phase,
            cursor: c,
            pacer,
            once,
            once_targets,
            paging: Paging::default(),
            clock: ClockGuard::default(),
            rejected_entries: 0,
        })
    }

    /// Move the phase on by a transition (which consumes the old phase).
    fn advance(&mut self, transition: impl FnOnce(Phase) -> Phase) {
        let old = std::mem::replace(&mut self.phase, Phase::Idle { resume: None });
        self.phase = transition(old);
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.input.service.period_secs)
    }

    /// The next window due, first pass before settle pass, towards the pull's targets.
    fn next_window(&self, first_target: i64, settle_target: i64) -> Option<(Pass, i64, i64)> {
        let svc = &self.input.service;
        let c = &self.cursor;
        if let Some((s, e)) = window::next_window(
            svc.api,
            c.window_start,
            first_target,
            svc.window_secs,
            c.window_len,
            settle_target,
        ) {
            return Some((Pass::First, s, e));
        }
        window::next_window(
            svc.api,
            c.settle_start,
            settle_target.min(c.window_start),
            svc.window_secs,
            c.window_len,
            i64::MIN,
        )
        .map(|(s, e)| (Pass::Settle, s, e))
    }

    /// One step: at most one HTTP request to the message-trace API, and delivery of its page.
    pub fn step(&mut self, outputs: &Delivery) -> Result<Next> {
        if let Some(next) = self.detail_step(outputs)? {
            return Ok(next);
        }
        let now = time::now();
        let svc = self.input.service.clone();
        let api = svc.api;
        if self.phase.is_idle() {
            debug!(self.comp, "pull started");
            self.paging.new_pull();
        }
        // A pull fixes its targets when it begins (`--once`: when the run began): it
        // ends when both passes reach them, and the next starts a period later.
        let (ft, st) = if self.once {
            self.once_targets
        } else {
            targets(&svc, self.guarded_now(now))
        };
        self.advance(|p| p.begin(Pull::new(time::now_millis(), Instant::now(), ft, st)));
        self.clamp_running(now)?;
        let (ft, st) = self
            .phase
            .pull()
            .map_or((ft, st), |p| (p.first_target, p.settle_target));
        if self.phase.window().is_none() {
            let Some((pass, s, e)) = self.next_window(ft, st) else {
                return Ok(self.finish_pull(None));
            };
            self.advance(|p| p.enter(pass, s, e));
            let (origin, target) = match pass {
                Pass::First => (self.origin, ft),
                Pass::Settle => (self.origin.min(s), st),
            };
            let (behind, pct) = window::progress(origin, s, target, 0);
            let rate = self.phase.pull().map_or(0.0, Pull::rate);
            info!(
                self.comp,
                "Running a new pipeline ({} - {}): {}, {} behind, {}% caught up, {:.0} records/s",
                time::rfc3339(s),
                time::rfc3339(e),
                pass.name(),
                time::human_duration(behind),
                pct,
                rate
            );
        }
        let Some(win) = self.phase.window() else {
            return Ok(self.finish_pull(None));
        };
        let (pass, ws, we) = (win.pass, win.start, win.end);
        let next_link = win.next_link.clone();
        self.paging.window(ws, we);
        if let Some(p) = &mut self.pacer {
            let wait = p.wait(Instant::now());
            if !wait.is_zero() {
                info!(
                    self.comp,
                    "request budget of {} per 5 minutes reached: waiting {}s before the next Graph request",
                    svc.max_requests_per_5_minutes,
                    wait.as_secs().max(1)
                );
                return Ok(Next::After(wait));
            }
        }
        // The window's dedup set: the ledger's entries around it (what any pass or API
        // delivered there, by this run or an earlier one).
        if self.set.as_ref().map(|(k, _)| *k) != Some((pass, ws, we)) {
            self.set = None;
            let set = self.ledger.window(
                ws.saturating_sub(window::EDGE_SECS),
                we.saturating_add(window::EDGE_SECS),
            )?;
            self.set = Some(((pass, ws, we), set));
        }
        let token = match self.tokens.token(&self.agent, now) {
            Ok((t, obtained)) => {
                if let Some(o) = obtained {
                    crate::metrics::input(&self.input.id).request(crate::metrics::Call::Token, 200);
                    info!(
                        self.setup_comp,
                        "Successfully received JWT token from {} which expires in {} seconds",
                        o.url,
                        o.expires_in
                    );
                }
                t
            }
            Err(e) => {
                crate::metrics::input(&self.input.id)
                    .request(crate::metrics::Call::Token, crate::metrics::error_code(&e));
                return Ok(self.fail(e.context("token request")));
            }
        };
        // A saved link (state file) obeys the origin rule of SPEC §10 too.
        let base = api.pick(&svc.reporting_url, &svc.graph_url);
        let query = api.query_url(base, ws, we, Query::Pull);
        let next_link = match next_link {
            Some(l) => match crate::source::link::refusal(&query, &l) {
                Some(why) => {
                    warning!(
                        self.comp,
                        "saved state: {why}; the window is read again from its start"
                    );
                    if let Some(w) = self.phase.window_mut() {
                        w.next_link = None;
                    }
                    None
                }
                None => Some(l),
            },
            None => None,
        };
        let used_link = next_link.clone();
        let url = next_link.unwrap_or(query);
        if let Some(p) = &mut self.pacer {
            p.record(Instant::now());
            crate::metrics::input(&self.input.id).budget_remaining(p.remaining());
        }
        if let Some(p) = self.phase.pull_mut() {
            p.requests = p.requests.saturating_add(1);
        }
        self.cursor.requests = self.cursor.requests.saturating_add(1);
        debug!(
            self.comp,
            "Requesting data. URL: {}",
            crate::log::scrub_url(&url)
        );
        let started = Instant::now();
        let answer = http::query(&self.agent, api, &url, &token);
        crate::metrics::input(&self.input.id).request(
            api.into(),
            answer
                .as_ref()
                .map_or_else(crate::metrics::error_code, |_| 200),
        );
        debug!(
            self.comp,
            "status {} after {} ms",
            answer
                .as_ref()
                .map_or_else(|e| e.status().unwrap_or(0), |_| 200),
            started.elapsed().as_millis()
        );
        let retried_401 = self.phase.window().is_some_and(|w| w.retried_401);
        if let Some(w) = self.phase.window_mut() {
            w.retried_401 = false;
        }
        match answer {
            Ok(resp) => self.consume(resp, outputs, &url, pass, ws, we),
            Err(e)
                if e.status() == Some(401)
                    && !matches!(e.root(), Error::ServicePrincipal)
                    && !retried_401 =>
            {
                // The token may have been revoked or expired early: renew once, at once.
                if let Some(w) = self.phase.window_mut() {
                    w.retried_401 = true;
                }
                self.tokens.invalidate();
                warning!(
                    self.comp,
                    "401 from the API: renewing the token and retrying"
                );
                Ok(Next::After(Duration::ZERO))
            }
            Err(e) => {
                if let Some(link) = used_link.as_deref() {
                    let attempt = self.phase.window().map_or(0, |w| w.attempt);
                    let gave_up = !e.is_transient() || attempt >= svc.retries;
                    match self.paging.link_failed(link, e.status(), gave_up) {
                        LinkVerdict::Keep => {}
                        verdict => return self.link_verdict(verdict, &e.to_string()),
                    }
                }
                Ok(self.fail(e))
            }
        }
    }

    /// A trace detail request instead of the list step, when `details` says so.
    fn detail_step(&mut self, outputs: &Delivery) -> Result<Option<Next>> {
        let Some(d) = self.details.as_mut() else {
            return Ok(None);
        };
        let ctx = crate::details::Ctx {
            input: &self.input,
            agent: &self.agent,
            tokens: &mut self.tokens,
            pacer: self.pacer.as_mut(),
            list_idle: self.phase.is_idle(),
            once: self.once,
        };
        d.step(ctx, outputs)
    }

    /// Stream the page through the ledger's dedup set and the encoder into the
    /// outputs, confirm, append the page to the ledger, checkpoint.
    fn consume(
        &mut self,
        resp: http::Response,
        outputs: &Delivery,
        url: &str,
        pass: Pass,
        ws: i64,
        we: i64,
    ) -> Result<Next> {
        let api = self.input.service.api;
        let mut page = outputs.page();
        let pull_id = self.phase.pull().map_or(0, |p| p.id);
        let ctx = PageCtx {
            request_url: url,
            window_start: ws,
            window_end: we,
        };
        // The batch lives for one page only, not in the tenant: kept per tenant it
        // stayed at ~132 KiB for each of 100 tenants once their pages had filled it
        // once (28 MiB peak for 100 busy tenants, SPEC §9 allows 16). Per step, at most
        // MAX_WORKERS batches exist and the allocator reuses their memory.
        let mut batch = Vec::with_capacity(BATCH_BYTES + 4096);
        let (mut pending, mut sent, mut filtered) = (0u64, 0u64, 0u64);
        let (mut records, mut late, mut changed) = (0u64, 0u64, 0u64);
        let mut oldest: Option<i64> = None;
        // What this page delivers: appended to the ledger once confirmed, taken out of
        // the window's set again if the outputs lose it.
        let mut delivered: Vec<Entry> = Vec::new();
        let mut output_err: Option<Error> = None;
        let mut empty = WindowSet::default();
        let set = self.set.as_mut().map_or(&mut empty, |(_, s)| s);
        let mut details = self.details.as_mut();
        let max_records = crate::source::max_page_records(api);
        let mut on_record = |rec: &crate::record::Record<'_>| -> Result<()> {
            if records >= max_records {
                return Err(Error::Malformed(format!(
                    "the page holds more than {max_records} records (10 times the API's page maximum)"
                )));
            }
            records = records.saturating_add(1);
            // Parsed once: the window's oldest record and the ledger entry both need it.
            let received = rec.received();
            if let Some(r) = received {
                oldest = Some(oldest.map_or(r, |o| o.min(r)));
            }
            let key = rec.key();
            let status = status_code(rec.text("Status").unwrap_or(""));
            let seen = set.check(key, status);
            match seen {
                Seen::Delivered => filtered = filtered.saturating_add(1),
                Seen::StatusChanged | Seen::New => {
                    if seen == Seen::StatusChanged {
                        changed = changed.saturating_add(1);
                    } else if pass == Pass::Settle {
                        late = late.saturating_add(1);
                    }
                    set.insert(key, status);
                    if let Some(d) = details.as_deref_mut() {
                        d.note(rec);
                    }
                    delivered.push(Entry {
                        received: received.unwrap_or(ws),
                        key,
                        status,
                    });
                    event::encode(rec, pull_id, &mut batch);
                    pending = pending.saturating_add(1);
                    sent = sent.saturating_add(1);
                    if batch.len() >= BATCH_BYTES {
                        if let Err(e) = page.write(&batch, pending) {
                            output_err = Some(e);
                            return Err(Error::Interrupted);
                        }
                        batch.clear();
                        pending = 0;
                    }
                }
            }
            Ok(())
        };
        let timeout = Duration::try_from_secs_f64(self.input.service.timeout_secs)
            .unwrap_or(Duration::from_secs(60));
        let body = http::PageBody::new(
            resp.into_body().into_reader(),
            http::page_deadline(timeout),
            http::page_max_bytes(),
        );
        let (body, captured) =
            crate::deadletter::Capture::new(body, self.paging.dead_letter_armed(url));
        let scanned = api.scan_page(body, &ctx, &mut on_record);
        // Deliver what was scanned, even before a cut: the retry filters it, so nothing
        // already sent goes out twice and nothing is skipped.
        if output_err.is_none() {
            let res = page.write(&batch, pending).and_then(|()| page.confirm());
            crate::run::publish_outputs(outputs);
            if let Err(e) = res {
                output_err = Some(e);
            }
        }
        drop(batch);
        if let Some(e) = output_err {
            if let Some((_, set)) = self.set.as_mut() {
                for en in &delivered {
                    set.remove(en.key, en.status);
                }
            }
            if let Some(d) = self.details.as_mut() {
                d.discard_page();
            }
            warning!(
                self.comp,
                "page not delivered, it will be pulled again: {e}"
            );
            return Ok(Next::OutputDown);
        }
        // Durable before the checkpoint that moves past the page: a crash between the
        // two re-reads the page, and the ledger filters it.
        // Rows for details are queued before the ledger takes the page: a crash between
        // the two pulls the page again, and the queue skips rows it already holds.
        if let Some(d) = self.details.as_mut() {
            d.page_delivered(&self.input.id)?;
        }
        self.ledger.append(&delivered)?;
        drop(delivered);
        if let Some(w) = self.phase.window_mut() {
            w.records = w.records.saturating_add(records);
            w.oldest = match (w.oldest, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if let Some(p) = self.phase.pull_mut() {
            p.sent = p.sent.saturating_add(sent);
            p.filtered = p.filtered.saturating_add(filtered);
            p.late = p.late.saturating_add(late);
            p.status_changes = p.status_changes.saturating_add(changed);
        }
        let c = &mut self.cursor;
        c.sent = c.sent.saturating_add(sent);
        c.filtered = c.filtered.saturating_add(filtered);
        c.late_events = c.late_events.saturating_add(late);
        c.status_changes = c.status_changes.saturating_add(changed);
        crate::metrics::input(&self.input.id).delivered(sent, filtered);
        let end = match scanned {
            Ok(end) => end,
            Err(e) => {
                self.phase.store(&mut self.cursor);
                if matches!(e.root(), Error::Malformed(_)) {
                    if let Some(raw) = captured {
                        let raw = raw.take();
                        return self.dead_letter(url, &e, &raw, records);
                    }
                    let attempt = self.phase.window().map_or(0, |w| w.attempt);
                    self.paging
                        .page_unparsable(url, attempt >= self.input.service.retries);
                }
                self.checkpoint()?;
                return Ok(self.fail(e.context(format!("page {}", crate::log::scrub_url(url)))));
            }
        };
        self.paging.page_parsed(url);
        // SPEC §10: the token goes only where the page came from; no request is sent.
        // SPEC §3: such a link is dropped and the window read again from its start.
        let foreign = end.next_link.as_deref();
        if let Some(why) = foreign.and_then(|l| crate::source::link::refusal(url, l)) {
            let verdict = self.paging.refuse(why);
            let cause = format!("page {}", crate::log::scrub_url(url));
            return self.link_verdict(verdict, &cause);
        }
        debug!(
            self.comp,
            "{} Events retrieved from the last API call ({} sent, {} filtered) ({})",
            end.records,
            sent,
            filtered,
            pass.name()
        );
        let settle_before = self.cursor.settle_start;
        let (held, oldest) = self
            .phase
            .window()
            .map_or((0, None), |w| (w.records, w.oldest));
        if let Some(next) = end.next_link.as_deref() {
            match self.paging.next_link(url, next) {
                LinkVerdict::Keep => {}
                verdict => {
                    let cause = format!("page {}", crate::log::scrub_url(url));
                    return self.link_verdict(verdict, &cause);
                }
            }
        }
        if end.next_link.is_none() {
            self.paging.done();
            self.window_done(pass, ws, we);
            self.advance(|p| p.page_done(None));
        } else if let Some(short_end) = oversized(held, oldest, ws, we) {
            // Bounded memory: the window's set would grow past the bound. End the window
            // before the oldest record it returned so far (pages come newest first, so
            // what lies after is delivered — and in the ledger, which filters it when
            // the next window reads it again); nothing is skipped.
            info!(
                self.comp,
                "window {} - {} ({}) holds more than {} records: it ends at {} instead, the next one starts there",
                time::rfc3339(ws),
                time::rfc3339(we),
                pass.name(),
                window::MAX_WINDOW_RECORDS,
                time::rfc3339(short_end)
            );
            let api_max = self.api_max();
            self.cursor.window_len = window::resize(we.saturating_sub(short_end), held, api_max);
            self.set = None;
            self.advance(|p| p.shrink(short_end));
        } else {
            self.advance(|p| p.page_done(end.next_link));
        }
        self.phase.store(&mut self.cursor);
        self.checkpoint()?;
        if self.cursor.settle_start > settle_before {
            // Below the settle cursor no pass reads again: the ledger lets go of it.
            let bound = self.cursor.settle_start.saturating_sub(window::EDGE_SECS);
            if self.ledger.prune(bound)? {
                debug!(
                    self.comp,
                    "delivery ledger compacted to {} bytes (entries before {} dropped)",
                    self.ledger.len(),
                    time::rfc3339(bound)
                );
            }
        }
        crate::metrics::input(&self.input.id).cursor(self.cursor.window_start);
        Ok(Next::After(Duration::ZERO))
    }

    /// The longest window the API's rule gives (the configured length for the
    /// Reporting Web Service, 10 days for Graph).
    fn api_max(&self) -> i64 {
        let svc = &self.input.service;
        svc.api
            .window_len(i64::try_from(svc.window_secs).unwrap_or(i64::MAX), i64::MAX)
    }

    /// The window `[ws, we)` of `pass` is complete: move that pass's cursor (the settle
    /// pass rides along a first-pass window already read settled), size the next
    /// window by this one's record count, release its dedup set.
    fn window_done(&mut self, pass: Pass, ws: i64, we: i64) {
        let records = self.phase.window().map_or(0, |w| w.records);
        let settle_target = self.phase.pull().map_or(i64::MIN, |p| p.settle_target);
        let api_max = self.api_max();
        let c = &mut self.cursor;
        let sized = window::resize(we.saturating_sub(ws), records, api_max);
        if sized != c.window_len && records > window::MAX_WINDOW_RECORDS {
            info!(
                self.comp,
                "window held {records} records (more than {}): the next window is {} long",
                window::MAX_WINDOW_RECORDS,
                time::human_duration(i64::try_from(sized).unwrap_or(i64::MAX))
            );
        }
        c.window_len = sized;
        match pass {
            Pass::First => {
                c.window_start = we;
                if c.settle_end == 0
                    && c.settle_start >= ws
                    && c.settle_start < we
                    && we <= settle_target
                {
                    c.settle_start = we;
                }
            }
            Pass::Settle => c.settle_start = we,
        }
        self.set = None;
    }

    /// End the pull (up to date, or failed with `failed`): log its summary, keep an
    /// unfinished window for the next pull, and say when to run again.
    fn finish_pull(&mut self, failed: Option<Error>) -> Next {
        crate::metrics::input(&self.input.id).pull_finished(failed.is_none());
        let phase = std::mem::replace(&mut self.phase, Phase::Idle { resume: None });
        let (pull, idle) = phase.finish();
        self.phase = idle;
        if self.phase.window().is_none() {
            self.set = None;
        }
        if let Some(p) = pull {
            if failed.is_none() {
                info!(self.comp, "Remote data is up to date!");
            }
            info!(
                self.comp,
                "Pull Summary: {} request(s) made, {} event(s) filtered, {} event(s) sent ({} late, {} status change(s)). Using tag: {}. Elapsed time: {:.3} seconds",
                p.requests,
                p.filtered,
                p.sent,
                p.late,
                p.status_changes,
                crate::output::DEFAULT_TAG,
                p.started.elapsed().as_secs_f64()
            );
        }
        let period = self.period();
        if let Some(d) = self.details.as_mut() {
            return d.list_finished(self.once, failed.map_or(Ok(()), Err), period);
        }
        match (self.once, failed) {
            (true, f) => Next::Done(f.map_or(Ok(()), Err)),
            (false, _) => {
                debug!(
                    self.comp,
                    "waiting {} second(s) until the next pull",
                    self.period().as_secs()
                );
                Next::After(self.period())
            }
        }
    }

    /// A failed request: retry transient failures with backoff up to the configured
    /// count, then leave the window for the next period (never skip it).
    fn fail(&mut self, e: Error) -> Next {
        let svc = &self.input.service;
        if !e.is_transient() {
            if e.is_setup() {
                error!(self.setup_comp, "{e}");
            } else {
                error!(self.comp, "{e}; the window will be retried next period");
            }
            return self.finish_pull(Some(e));
        }
        let (retries, base) = (svc.retries, Duration::from_secs(svc.retry_wait_secs));
        let attempt = match self.phase.window_mut() {
            Some(w) => {
                w.attempt = w.attempt.saturating_add(1);
                w.attempt
            }
            None => 1,
        };
        if attempt > retries {
            let (ws, we) = self.phase.window().map_or((0, 0), |w| (w.start, w.end));
            error!(
                self.comp,
                "{e}: giving up after {retries} retries; window {} - {} is retried next period",
                time::rfc3339(ws),
                time::rfc3339(we)
            );
            return self.finish_pull(Some(e));
        }
        let cap = Duration::from_secs(MAX_BACKOFF_SECS);
        let wait = e.retry_after().map_or_else(
            || backoff::jittered(base, attempt, cap),
            |s| Duration::from_secs(s).min(cap),
        );
        warning!(
            self.comp,
            "{e}: retry {attempt}/{retries} in {:.1}s",
            wait.as_secs_f64()
        );
        Next::After(wait)
    }
}

/// Where to end the window `[ws, we)` being paged early, when it has returned `held`
/// records (more than [`window::MAX_WINDOW_RECORDS`]), the oldest received at `oldest`:
/// one second before that, if the window stays at least [`window::MIN_WINDOW_SECS`]
/// long. `None`: page on (a burst within one short span cannot be split by time).
fn oversized(held: u64, oldest: Option<i64>, ws: i64, we: i64) -> Option<i64> {
    if held <= window::MAX_WINDOW_RECORDS {
        return None;
    }
    let end = oldest?.saturating_sub(window::EDGE_SECS);
    let min = i64::try_from(window::MIN_WINDOW_SECS).unwrap_or(i64::MAX);
    (end < we && end.saturating_sub(ws) >= min).then_some(end)
}

/// The two passes' targets at `now`: (first pass, settle pass). A first pass delay at
/// or above `override_time_delay_in_seconds` is one pass (the vendor's behaviour).
pub fn targets(svc: &ServiceConfig, now: i64) -> (i64, i64) {
    let first = svc.first_pass_delay_secs.min(svc.delay_secs);
    (
        window::target(now, first),
        window::target(now, svc.delay_secs),
    )
}

/// Lock, recovering from a poisoned lock (a worker that panicked cannot leave the
/// outputs in a state worse than a dropped connection, which they handle).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overfull_window_ends_before_its_oldest_record() {
        let max = window::MAX_WINDOW_RECORDS;
        assert_eq!(oversized(max, Some(5000), 0, 10_000), None);
        assert_eq!(oversized(max + 1, Some(5000), 0, 10_000), Some(4999));
        // A burst in one second at the window's end: cut before it, once.
        assert_eq!(oversized(max + 1, Some(10_000), 0, 10_000), Some(9999));
        // The window already ends right after the burst: page on.
        assert_eq!(oversized(max + 1, Some(10_000), 9_950, 10_000), None);
        assert_eq!(oversized(max + 1, None, 0, 10_000), None);
    }
}
