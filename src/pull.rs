//! The pull loop of one tenant: token, windows, paging, retries, pacing, delivery and
//! checkpoint — the IO shell around the API seam and scanners (`source/`), the phase
//! state machine (`tenant`), window rules (`window`) and state codec (`state`).
//!
//! Owns: `Tenant` (one input + its service), the step that makes one page request and
//! delivers its events (through `output::delivery`), the Graph request pacer.
//! Must not: keep a page in memory (records stream from the socket through the encoder
//! into a bounded batch), move the cursor before every output confirmed the page, or
//! skip a window that keeps failing (it is retried next period).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::TokenClient;
use crate::config::{Config, InputConfig};
use crate::error::{Error, Result};
use crate::output::delivery::Delivery;
use crate::source::api::Query;
use crate::source::PageCtx;
use crate::state::{Cursor, StateFile};
use crate::tenant::{Phase, Pull};
use crate::window::{self, Dedup, Verdict};
use crate::{backoff, debug, error, info, warning};
use crate::{event, http, time};

/// Encoded events are handed to the outputs in batches of about this many bytes: large
/// TLS records, and memory that does not grow with the page size.
pub const BATCH_BYTES: usize = 128 * 1024;
/// Ceiling of the exponential retry backoff.
pub const MAX_BACKOFF_SECS: u64 = 300;
/// Graph's request budget is counted over this sliding span.
pub const PACER_SPAN: Duration = Duration::from_secs(300);

/// The pacer's span: [`PACER_SPAN`], or `MSGTRACE_PACER_SPAN_SECS` seconds (documented
/// for tests, which pair it with an emulator counting over the same short span).
pub fn pacer_span() -> Duration {
    static SPAN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPAN.get_or_init(|| {
        std::env::var("MSGTRACE_PACER_SPAN_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(PACER_SPAN, Duration::from_secs)
    })
}

/// Sliding-window pacer: at most `budget` requests in any `PACER_SPAN`, retried
/// requests included, so Graph's shared 100-per-5-minutes limit is never how we learn.
#[derive(Debug)]
pub struct Pacer {
    budget: usize,
    sent: VecDeque<Instant>,
}

impl Pacer {
    pub fn new(budget: u32) -> Self {
        Pacer {
            budget: usize::try_from(budget).unwrap_or(usize::MAX).max(1),
            sent: VecDeque::new(),
        }
    }

    /// How long to wait before the next request may go out (zero when it may now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= pacer_span())
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.budget {
            return Duration::ZERO;
        }
        self.sent.front().map_or(Duration::ZERO, |t| {
            t.checked_add(pacer_span())
                .map_or(Duration::ZERO, |due| due.saturating_duration_since(now))
        })
    }

    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
    }

    /// Requests still allowed in the current span (as of the last `wait`).
    pub fn remaining(&self) -> usize {
        self.budget.saturating_sub(self.sent.len())
    }
}

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
    agent: ureq::Agent,
    tokens: TokenClient,
    state: StateFile,
    cursor: Cursor,
    origin: i64,
    dedup: Dedup,
    pacer: Option<Pacer>,
    phase: Phase,
    once: bool,
    /// Trace details (Graph with `trace_details_statuses`), see `details`.
    details: Option<crate::details::Details>,
}

impl Tenant {
    /// Open the tenant's state (taking over the Reporting Web Service cursor on a
    /// tenant's first Graph start), apply `reset_persistence_auth`, clamp an old cursor.
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
        let other = svc.api.other();
        if let Some(old) = crate::state::take_over(
            &cfg.globals.state_dir,
            &input.id,
            other.service_name(),
            service,
        )? {
            info!(
                comp,
                "took over the cursor of {} (window start {}): no window is skipped or pulled twice",
                other.service_name(),
                time::rfc3339(old.window_start)
            );
        }
        let (mut state, saved) = StateFile::open(&path)?;
        for w in std::mem::take(&mut state.warnings) {
            warning!(comp, "{w}");
        }
        let cursor = match saved {
            Some(c) if c.reset_auth != svc.reset_persistence_auth => {
                info!(
                    comp,
                    "reset_persistence_auth changed ({} -> {}): state cleared, pulling restarts",
                    c.reset_auth.as_deref().unwrap_or("none"),
                    svc.reset_persistence_auth.as_deref().unwrap_or("none")
                );
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
        // A Reporting Web Service next link means nothing to Graph: restart that window.
        let mut restart = cursor.as_ref().is_some_and(|c| c.service != service);
        let fresh = cursor.is_none();
        let mut c = cursor.unwrap_or_else(|| Cursor {
            window_start: window::first_start(svc.api, now, input.cutoff_days, input.margin_secs),
            ..Cursor::default()
        });
        if fresh {
            info!(
                comp,
                "no saved state found, starting at {}",
                time::rfc3339(c.window_start)
            );
        } else {
            info!(
                comp,
                "retrieved state: window start {}",
                time::rfc3339(c.window_start)
            );
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
        let phase = if restart {
            Phase::Idle { resume: None }
        } else {
            Phase::from_cursor(&c)
        };
        phase.store(&mut c);
        c.reset_auth = svc.reset_persistence_auth.clone();
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
        Ok(Tenant {
            details,
            input: input.clone(),
            comp,
            setup_comp,
            agent,
            tokens,
            state,
            dedup: Dedup::new(&c.edge_keys),
            origin: c.window_start,
            phase,
            cursor: c,
            pacer,
            once,
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
        }
        self.advance(|p| p.begin(Pull::new(time::now_millis(), Instant::now())));
        if self.phase.window().is_none() {
            let Some((s, e)) = window::next_window(
                api,
                self.cursor.window_start,
                now,
                svc.delay_secs,
                svc.window_secs,
            ) else {
                return Ok(self.finish_pull(None));
            };
            self.advance(|p| p.enter(s, e));
            let (behind, pct) = window::progress(self.origin, s, now, svc.delay_secs);
            let rate = self.phase.pull().map_or(0.0, Pull::rate);
            info!(
                self.comp,
                "Running a new pipeline ({} - {}): {} behind, {}% caught up, {:.0} records/s",
                time::rfc3339(s),
                time::rfc3339(e),
                time::human_duration(behind),
                pct,
                rate
            );
        }
        let Some(win) = self.phase.window() else {
            return Ok(self.finish_pull(None));
        };
        let (ws, we) = (win.start, win.end);
        let next_link = win.next_link.clone();
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
            Ok(resp) => self.consume(resp, outputs, &url, ws, we),
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
            Err(e) => Ok(self.fail(e)),
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

    /// Stream the page through dedup and the encoder into the outputs, confirm, checkpoint.
    fn consume(
        &mut self,
        resp: http::Response,
        outputs: &Delivery,
        url: &str,
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
        let mut output_err: Option<Error> = None;
        let dedup = &mut self.dedup;
        let mut details = self.details.as_mut();
        let mut on_record = |rec: &crate::record::Record<'_>| -> Result<()> {
            match dedup.check(rec.key(), rec.received(), we) {
                Verdict::Filter => filtered = filtered.saturating_add(1),
                Verdict::Send => {
                    if let Some(d) = details.as_deref_mut() {
                        d.note(rec);
                    }
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
        let body = resp.into_body().into_reader();
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
            self.dedup.rollback();
            if let Some(d) = self.details.as_mut() {
                d.discard_page();
            }
            warning!(
                self.comp,
                "page not delivered, it will be pulled again: {e}"
            );
            return Ok(Next::OutputDown);
        }
        self.dedup.confirm();
        if let Some(d) = self.details.as_mut() {
            d.page_delivered(&self.input.id)?;
        }
        if let Some(p) = self.phase.pull_mut() {
            p.sent = p.sent.saturating_add(sent);
            p.filtered = p.filtered.saturating_add(filtered);
        }
        self.cursor.sent = self.cursor.sent.saturating_add(sent);
        self.cursor.filtered = self.cursor.filtered.saturating_add(filtered);
        crate::metrics::input(&self.input.id).delivered(sent, filtered);
        let end = match scanned {
            Ok(end) => end,
            Err(e) => {
                self.phase.store(&mut self.cursor);
                self.state.checkpoint(&self.cursor)?;
                return Ok(self.fail(e.context(format!("page {}", crate::log::scrub_url(url)))));
            }
        };
        // SPEC §10: the token goes only where the page came from; no request is sent.
        let foreign = end.next_link.as_deref();
        if let Some(why) = foreign.and_then(|l| crate::source::link::refusal(url, l)) {
            self.state.checkpoint(&self.cursor)?;
            let e = Error::Malformed(why).context(format!("page {}", crate::log::scrub_url(url)));
            return Ok(self.fail(e));
        }
        debug!(
            self.comp,
            "{} Events retrieved from the last API call ({} sent, {} filtered)",
            end.records,
            sent,
            filtered
        );
        if end.next_link.is_none() {
            self.cursor.edge_keys = self.dedup.finish_window();
            self.cursor.window_start = we;
        }
        self.advance(|p| p.page_done(end.next_link));
        self.phase.store(&mut self.cursor);
        self.state.checkpoint(&self.cursor)?;
        crate::metrics::input(&self.input.id).cursor(self.cursor.window_start);
        Ok(Next::After(Duration::ZERO))
    }

    /// End the pull (up to date, or failed with `failed`): log its summary, keep an
    /// unfinished window for the next pull, and say when to run again.
    fn finish_pull(&mut self, failed: Option<Error>) -> Next {
        crate::metrics::input(&self.input.id).pull_finished(failed.is_none());
        let phase = std::mem::replace(&mut self.phase, Phase::Idle { resume: None });
        let (pull, idle) = phase.finish();
        self.phase = idle;
        if let Some(p) = pull {
            if failed.is_none() {
                info!(self.comp, "Remote data is up to date!");
            }
            info!(
                self.comp,
                "Pull Summary: {} request(s) made, {} event(s) filtered, {} event(s) sent. Using tag: {}. Elapsed time: {:.3} seconds",
                p.requests,
                p.filtered,
                p.sent,
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

/// Lock, recovering from a poisoned lock (a worker that panicked cannot leave the
/// outputs in a state worse than a dropped connection, which they handle).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_keeps_every_span_within_budget() {
        let t0 = Instant::now();
        let mut p = Pacer::new(3);
        for i in 0..3 {
            assert!(p.wait(t0 + Duration::from_secs(i)).is_zero());
            p.record(t0 + Duration::from_secs(i));
        }
        assert_eq!(
            p.wait(t0 + Duration::from_secs(10)),
            Duration::from_secs(290)
        );
        assert!(p.wait(t0 + Duration::from_secs(300)).is_zero());
    }
}
