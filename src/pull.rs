//! The pull loop of one tenant: token, windows, paging, retries, pacing, delivery and
//! checkpoint — the IO shell around the pure scanners (`source/`), window rules
//! (`window`) and state codec (`state`).
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
use crate::config::{Api, Config, InputConfig};
use crate::error::{Error, Result};
use crate::output::delivery::Delivery;
use crate::source::{graph, reporting, PageCtx};
use crate::state::{Cursor, StateFile};
use crate::window::{self, Dedup, Verdict};
use crate::{debug, error, info, warning};
use crate::{event, http, time};

/// Encoded events are handed to the outputs in batches of about this many bytes: large
/// TLS records, and memory that does not grow with the page size.
pub const BATCH_BYTES: usize = 128 * 1024;
/// Ceiling of the exponential retry backoff.
pub const MAX_BACKOFF_SECS: u64 = 300;
/// Graph's request budget is counted over this sliding span.
pub const PACER_SPAN: Duration = Duration::from_secs(300);
/// `$top` of Graph queries: the API's maximum page.
pub const GRAPH_TOP: u32 = 5000;

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
            budget: usize::try_from(budget).unwrap_or(100).max(1),
            sent: VecDeque::new(),
        }
    }

    /// How long to wait before the next request may go out (zero when it may now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= PACER_SPAN)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.budget {
            return Duration::ZERO;
        }
        self.sent.front().map_or(Duration::ZERO, |t| {
            (*t + PACER_SPAN).saturating_duration_since(now)
        })
    }

    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
    }
}

/// What the scheduler does with a tenant after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Run the next step after this long (zero: as soon as a worker is free).
    After(Duration),
    /// The outputs failed: run again once they are back (pulling pauses).
    OutputDown,
    /// `--once` finished: up to date (`Ok`) or failed with the reason.
    Done(std::result::Result<(), String>),
}

/// Counters of one pull (from start to "up to date").
struct Pull {
    id: i64,
    started: Instant,
    requests: u64,
    filtered: u64,
    sent: u64,
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
    attempt: u32,
    retried_401: bool,
    pull: Option<Pull>,
    once: bool,
}

fn backoff(base_secs: u64, attempt: u32) -> Duration {
    let exp = base_secs.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(MAX_BACKOFF_SECS);
    // Jitter of up to 25 % from the clock's nanoseconds: retries of many tenants spread out.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let jitter_ms = if capped == 0 {
        0
    } else {
        nanos % (capped * 250).max(1)
    };
    Duration::from_secs(capped) + Duration::from_millis(jitter_ms)
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
        let other = match svc.api {
            Api::Graph => Api::Reporting,
            Api::Reporting => Api::Graph,
        };
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
        let mut cursor = match saved {
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
        }
        .map(|mut c| {
            if c.delay_secs != svc.delay_secs {
                info!(
                    comp,
                    "override_time_delay_in_seconds changed from {} to {}: the cursor is kept",
                    c.delay_secs,
                    svc.delay_secs
                );
            }
            if c.service != service {
                // A Reporting Web Service next link means nothing to Graph: restart that window.
                c.next_link = None;
                c.window_end = 0;
            }
            c
        });
        let fresh = cursor.is_none();
        let mut c = cursor.take().unwrap_or_else(|| Cursor {
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
            c.window_end = 0;
            c.next_link = None;
        }
        c.reset_auth = svc.reset_persistence_auth.clone();
        c.delay_secs = svc.delay_secs;
        c.service = service.to_string();
        state.checkpoint(&c)?;
        let tokens = TokenClient::new(
            svc.api,
            &svc.auth_url,
            &svc.resource_url,
            input.credentials.clone(),
        );
        let pacer = (svc.api == Api::Graph).then(|| Pacer::new(svc.max_requests_per_5_minutes));
        Ok(Tenant {
            input: input.clone(),
            comp,
            setup_comp,
            agent,
            tokens,
            state,
            dedup: Dedup::new(&c.edge_keys),
            origin: c.window_start,
            cursor: c,
            pacer,
            attempt: 0,
            retried_401: false,
            pull: None,
            once,
        })
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.input.service.period_secs)
    }

    /// One step: at most one HTTP request to the message-trace API, and delivery of its page.
    pub fn step(&mut self, outputs: &Delivery) -> Result<Next> {
        let now = time::now();
        let svc = self.input.service.clone();
        if self.pull.is_none() {
            self.pull = Some(Pull {
                id: time::now_millis(),
                started: Instant::now(),
                requests: 0,
                filtered: 0,
                sent: 0,
            });
            debug!(self.comp, "pull started");
        }
        if self.cursor.window_end == 0 {
            match window::next_window(
                svc.api,
                self.cursor.window_start,
                now,
                svc.delay_secs,
                svc.window_secs,
            ) {
                None => return Ok(self.finish_pull(None)),
                Some((s, e)) => {
                    self.cursor.window_start = s;
                    self.cursor.window_end = e;
                    self.cursor.next_link = None;
                    let (behind, pct) = window::progress(self.origin, s, now, svc.delay_secs);
                    let rate = self.pull.as_ref().map_or(0.0, |p| {
                        p.sent as f64 / p.started.elapsed().as_secs_f64().max(0.001)
                    });
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
            }
        }
        let (ws, we) = (self.cursor.window_start, self.cursor.window_end);
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
                    info!(
                        self.setup_comp,
                        "Successfully received JWT token from {} which expires in {} seconds",
                        o.url,
                        o.expires_in
                    );
                }
                t
            }
            Err(e) => return Ok(self.fail(e.context("token request"))),
        };
        let url = match &self.cursor.next_link {
            Some(l) => l.clone(),
            None => match svc.api {
                Api::Reporting => reporting::query_url(&svc.reporting_url, ws, we),
                Api::Graph => graph::query_url(&svc.graph_url, ws, we, GRAPH_TOP),
            },
        };
        if let Some(p) = &mut self.pacer {
            p.record(Instant::now());
        }
        if let Some(p) = &mut self.pull {
            p.requests += 1;
        }
        self.cursor.requests += 1;
        debug!(
            self.comp,
            "Requesting data. URL: {}",
            crate::log::scrub_url(&url)
        );
        let started = Instant::now();
        let accept = match svc.api {
            Api::Reporting => "application/atom+xml",
            Api::Graph => "application/json",
        };
        let resp = match self
            .agent
            .get(&url)
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", accept)
            .call()
        {
            Ok(r) => r,
            Err(e) => return Ok(self.fail(http::transport(e))),
        };
        let status = resp.status().as_u16();
        debug!(
            self.comp,
            "status {status} after {} ms",
            started.elapsed().as_millis()
        );
        if status == 200 {
            self.retried_401 = false;
            return self.consume(resp, outputs, &url, ws, we);
        }
        let retry_after = http::retry_after(&resp);
        let body = http::read_error_body(resp);
        let msg = match svc.api {
            Api::Reporting => reporting::error_message(&body),
            Api::Graph => graph::error_message(&body),
        }
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        if status == 401 {
            if svc.api == Api::Graph && msg.contains("Service principal-less authentication failed")
            {
                return Ok(self.fail_permanent(

                    "Graph answered 401 \"Service principal-less authentication failed\": the tenant has not provisioned the service principal of Exchange message trace (app 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373) — a tenant admin runs once: New-MgServicePrincipal -AppId 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373 (or az ad sp create --id 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373), then grant admin consent again"
                    .to_string(),
                ));
            }
            if !self.retried_401 {
                // The token may have been revoked or expired early: renew once, at once.
                self.retried_401 = true;
                self.tokens.invalidate();
                warning!(
                    self.comp,
                    "401 from the API: renewing the token and retrying"
                );
                return Ok(Next::After(Duration::ZERO));
            }
        }
        self.retried_401 = false;
        Ok(self.fail(Error::Http {
            status,
            message: msg,
            retry_after,
        }))
    }

    /// Stream the page through dedup and the encoder into the outputs, confirm, checkpoint.
    fn consume(
        &mut self,
        resp: ureq::http::Response<ureq::Body>,
        outputs: &Delivery,
        url: &str,
        ws: i64,
        we: i64,
    ) -> Result<Next> {
        let api = self.input.service.api;
        let mut page = outputs.page();
        let pull_id = self.pull.as_ref().map_or(0, |p| p.id);
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
        let mut on_record = |rec: &crate::record::Record<'_>| -> Result<()> {
            match dedup.check(rec.key(), rec.received(), we) {
                Verdict::Filter => filtered += 1,
                Verdict::Send => {
                    event::encode(rec, pull_id, &mut batch);
                    pending += 1;
                    sent += 1;
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
        let scanned = match api {
            Api::Reporting => reporting::scan_page(body, &ctx, &mut on_record),
            Api::Graph => graph::scan_page(body, &ctx, &mut on_record),
        };
        // Deliver what was scanned, even before a cut: the retry filters it, so nothing
        // already sent goes out twice and nothing is skipped.
        if output_err.is_none() {
            if let Err(e) = page.write(&batch, pending).and_then(|()| page.confirm()) {
                output_err = Some(e);
            }
        }
        drop(batch);
        if let Some(e) = output_err {
            self.dedup.rollback();
            warning!(
                self.comp,
                "page not delivered, it will be pulled again: {e}"
            );
            return Ok(Next::OutputDown);
        }
        self.dedup.confirm();
        if let Some(p) = &mut self.pull {
            p.sent += sent;
            p.filtered += filtered;
        }
        self.cursor.sent += sent;
        self.cursor.filtered += filtered;
        let end = match scanned {
            Ok(end) => end,
            Err(e) => {
                self.state.checkpoint(&self.cursor)?;
                return Ok(self.fail(e.context(format!("page {}", crate::log::scrub_url(url)))));
            }
        };
        debug!(
            self.comp,
            "{} Events retrieved from the last API call ({} sent, {} filtered)",
            end.records,
            sent,
            filtered
        );
        self.attempt = 0;
        match end.next_link {
            Some(link) => self.cursor.next_link = Some(link),
            None => {
                self.cursor.edge_keys = self.dedup.finish_window();
                self.cursor.window_start = we;
                self.cursor.window_end = 0;
                self.cursor.next_link = None;
            }
        }
        self.state.checkpoint(&self.cursor)?;
        Ok(Next::After(Duration::ZERO))
    }

    fn finish_pull(&mut self, failed: Option<String>) -> Next {
        if let Some(p) = self.pull.take() {
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
        self.attempt = 0;
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

    fn fail_permanent(&mut self, why: String) -> Next {
        error!(self.comp, "{why}");
        self.finish_pull(Some(why))
    }

    /// A failed request: retry transient failures with backoff up to the configured
    /// count, then leave the window for the next period (never skip it).
    fn fail(&mut self, e: Error) -> Next {
        let svc = &self.input.service;
        if !e.is_transient() {
            let mut why = e.to_string();
            let lower = why.to_ascii_lowercase();
            if svc.api == Api::Reporting
                && (lower.contains("not available")
                    || lower.contains("retire")
                    || lower.contains("messagetracev2"))
            {
                why.push_str(" — Microsoft is retiring message trace in the Reporting Web Service: move this input to the Graph service (replace office365_exchange_message_service with office365_exchange_message_graph_service; the cursor is taken over)");
            }
            if let Error::Setup { .. } = e.root() {
                error!(self.setup_comp, "{why}");
                return self.finish_pull(Some(why));
            }
            return self.fail_permanent(format!("{why}; the window will be retried next period"));
        }
        self.attempt += 1;
        if self.attempt > svc.retries {
            let why = format!(
                "{e}: giving up after {} retries; window {} - {} is retried next period",
                svc.retries,
                time::rfc3339(self.cursor.window_start),
                time::rfc3339(self.cursor.window_end)
            );
            error!(self.comp, "{why}");
            return self.finish_pull(Some(why));
        }
        let ra = match e.root() {
            Error::Http { retry_after, .. } => *retry_after,
            _ => None,
        };
        let wait = ra
            .map(|s| Duration::from_secs(s.min(MAX_BACKOFF_SECS)))
            .unwrap_or_else(|| backoff(svc.retry_wait_secs, self.attempt));
        warning!(
            self.comp,
            "{e}: retry {}/{} in {:.1}s",
            self.attempt,
            svc.retries,
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

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0, 3).is_zero());
        let b1 = backoff(5, 1);
        assert!(b1 >= Duration::from_secs(5) && b1 < Duration::from_secs(7));
        let b3 = backoff(5, 3);
        assert!(b3 >= Duration::from_secs(20));
        assert!(backoff(5, 30) <= Duration::from_secs(MAX_BACKOFF_SECS + MAX_BACKOFF_SECS / 4 + 1));
    }
}
