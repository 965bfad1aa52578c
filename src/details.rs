//! Trace details (SPEC §3 "Trace details"): the rows a tenant's delivered pages marked
//! for detail, fetched one `getDetailsByRecipient` request each within their own share
//! of the tenant's Graph budget, and delivered as detail events under each output's
//! `detail_tag`.
//!
//! Owns: choosing the rows (status in `trace_details_statuses`), the durable queue
//! (`detail_queue`) of one input, the detail pacer, when a detail request may go (never
//! in place of a due list request: the scheduler alternates them while a pull pages, and
//! runs details alone while the list pull waits for its period or, with `--once`, after it
//! finished), the retries of a detail request and the delivery of its events.
//! Must not: delay a list request beyond one detail request, send a request past either
//! budget, or mark a row done before every output confirmed its events.
//!
//! Delivery is at least once at one edge: a crash after the outputs confirmed a row's
//! events and before its "done" record reached the disk sends that row's events again at
//! the next start (a window of one fsync).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::auth::TokenClient;
use crate::config::{Config, InputConfig};
use crate::detail_queue::DetailQueue;
use crate::error::{Error, Result};
use crate::output::delivery::Delivery;
use crate::output::Stream;
use crate::pull::{Next, Pacer, BATCH_BYTES, MAX_BACKOFF_SECS};
use crate::record::Record;
use crate::source::PageCtx;
use crate::{backoff, http, info, time, warning};

/// A detail answer larger than this (encoded) is refused as malformed: a recipient's
/// trace has a handful of events.
pub const MAX_ANSWER_BYTES: usize = 8 * BATCH_BYTES;
/// At most one "queue full" warning per input in this long.
pub const DROP_WARNING_EVERY: Duration = Duration::from_secs(3600);

/// `check`'s line for an input with details on: statuses and the budget split.
pub fn describe(input: &InputConfig) -> Option<String> {
    let svc = &input.service;
    if svc.trace_details_statuses.is_empty() || !svc.api.is_paced() {
        return None;
    }
    let detail = svc.max_detail_requests_per_5_minutes;
    Some(format!(
        "{}#{}: trace details on for status {} — budget per 5 minutes: {} requests, of which details use at most {detail} (list calls keep at least {}); queue bound {}",
        input.name,
        input.id,
        svc.trace_details_statuses.join(","),
        svc.max_requests_per_5_minutes,
        svc.max_requests_per_5_minutes.saturating_sub(detail),
        svc.max_pending_details
    ))
}

/// `state show`'s line: rows awaiting details in the input's queue file, if it has one.
pub fn queue_line(dir: &std::path::Path, input: &InputConfig) -> Result<Option<String>> {
    let path = crate::detail_queue::queue_path(dir, &input.id);
    Ok(crate::detail_queue::peek_len(&path)?
        .map(|n| format!("trace details: {n} row(s) pending ({})", path.display())))
}

/// The trace details of one input (Graph, `trace_details_statuses` set).
pub struct Details {
    comp: String,
    statuses: Vec<String>,
    queue: DetailQueue,
    pacer: Pacer,
    budget: u32,
    /// Rows of the page being delivered that get details (enqueued once it is confirmed).
    page_rows: Vec<(String, String)>,
    /// Failed attempts at the front row; the next try not before `retry_at`.
    attempt: u32,
    retry_at: Option<Instant>,
    retried_401: bool,
    /// While the list pull is active: whether the last step was a detail request.
    last_was_detail: bool,
    /// The list pull is idle until then (its period).
    list_due: Option<Instant>,
    /// `--once`: the list pull's result, kept until the queue is drained.
    once_result: Option<Result<()>>,
    last_drop_warning: Option<Instant>,
    /// Rows detailed and events sent since the start (for the summary line).
    pub rows_done: u64,
    pub events_sent: u64,
}

/// What the detail step borrows from its tenant.
pub struct Ctx<'a> {
    pub input: &'a InputConfig,
    pub agent: &'a ureq::Agent,
    pub tokens: &'a mut TokenClient,
    /// The tenant's pacer (the whole budget), which detail requests count against too.
    pub pacer: Option<&'a mut Pacer>,
    /// The list pull is between pulls.
    pub list_idle: bool,
    pub once: bool,
}

impl Details {
    /// The details of `input`, or `None` when off (no statuses, or not Graph).
    pub fn open(cfg: &Config, input: &InputConfig, comp: &str) -> Result<Option<Details>> {
        let svc = &input.service;
        if svc.trace_details_statuses.is_empty() || !svc.api.is_paced() {
            return Ok(None);
        }
        let path = crate::detail_queue::queue_path(&cfg.globals.state_dir, &input.id);
        let queue = DetailQueue::open(&path, svc.max_pending_details)?;
        if !queue.is_empty() {
            info!(
                comp,
                "{} row(s) awaiting trace details from the last run",
                queue.len()
            );
        }
        crate::metrics::input(&input.id).details_pending(queue.len());
        Ok(Some(Details {
            comp: comp.to_string(),
            statuses: svc.trace_details_statuses.clone(),
            queue,
            pacer: Pacer::new(svc.max_detail_requests_per_5_minutes),
            budget: svc.max_detail_requests_per_5_minutes,
            page_rows: Vec::new(),
            attempt: 0,
            retry_at: None,
            retried_401: false,
            last_was_detail: false,
            list_due: None,
            once_result: None,
            last_drop_warning: None,
            rows_done: 0,
            events_sent: 0,
        }))
    }

    /// A record of the page being delivered: kept when its status gets details.
    pub fn note(&mut self, rec: &Record<'_>) {
        let Some(status) = rec.text("Status") else {
            return;
        };
        if !self.statuses.iter().any(|s| s.eq_ignore_ascii_case(status)) {
            return;
        }
        if let (Some(id), Some(rcpt)) = (rec.text("MessageTraceId"), rec.text("RecipientAddress")) {
            self.page_rows.push((id.to_string(), rcpt.to_string()));
        }
    }

    /// The page was not delivered: it is pulled again, its rows noted again then.
    pub fn discard_page(&mut self) {
        self.page_rows.clear();
    }

    /// The page was confirmed by every output: queue its rows durably.
    pub fn page_delivered(&mut self, input_id: &str) -> Result<()> {
        if self.page_rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.page_rows);
        let dropped = self.queue.enqueue(&rows)?;
        let m = crate::metrics::input(input_id);
        m.details_pending(self.queue.len());
        if dropped > 0 {
            m.details_dropped(dropped);
            let now = Instant::now();
            if self
                .last_drop_warning
                .is_none_or(|t| now.duration_since(t) >= DROP_WARNING_EVERY)
            {
                self.last_drop_warning = Some(now);
                warning!(
                    self.comp,
                    "trace detail queue full ({} rows): the oldest {dropped} row(s) were dropped without details ({} dropped since the start) — raise max_pending_details or max_detail_requests_per_5_minutes",
                    self.queue.len(),
                    self.queue.dropped
                );
            }
        }
        Ok(())
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The list pull ended (`--once`: with `result`); in a continuous run the next one
    /// is due after `period`. Returns what the scheduler does when details are pending.
    pub fn list_finished(&mut self, once: bool, result: Result<()>, period: Duration) -> Next {
        info!(
            self.comp,
            "Trace details: {} row(s) pending, {} row(s) detailed with {} event(s), {} row(s) dropped (queue full) since the start",
            self.queue.len(),
            self.rows_done,
            self.events_sent,
            self.queue.dropped
        );
        if once {
            if self.queue.is_empty() {
                return Next::Done(result);
            }
            info!(
                self.comp,
                "{} row(s) awaiting trace details: requesting them before exiting (at most {} requests per 5 minutes)",
                self.queue.len(),
                self.budget
            );
            self.once_result = Some(result);
            return Next::After(Duration::ZERO);
        }
        self.list_due = Instant::now().checked_add(period);
        Next::After(if self.queue.is_empty() {
            period
        } else {
            Duration::ZERO
        })
    }

    /// Before a list step: run a detail step instead (`Some`), or let the list go (`None`).
    pub fn step(&mut self, mut ctx: Ctx<'_>, outputs: &Delivery) -> Result<Option<Next>> {
        let now = Instant::now();
        let list_waiting =
            ctx.list_idle && (self.once_result.is_some() || self.list_due.is_some_and(|t| now < t));
        if ctx.list_idle && !list_waiting {
            self.list_due = None;
        }
        if self.queue.is_empty() {
            if let Some(r) = self.once_result.take() {
                return Ok(Some(Next::Done(r)));
            }
            return Ok(self
                .list_due
                .filter(|_| list_waiting)
                .map(|t| Next::After(t.saturating_duration_since(now))));
        }
        if !list_waiting {
            // The list pull pages: one detail request between two list requests.
            self.last_was_detail = !self.last_was_detail;
            if !self.last_was_detail {
                return Ok(None);
            }
        }
        let mut wait = self.pacer.wait(now);
        if let Some(p) = ctx.pacer.as_deref_mut() {
            wait = wait.max(p.wait(now));
        }
        if let Some(t) = self.retry_at {
            wait = wait.max(t.saturating_duration_since(now));
        }
        if !wait.is_zero() {
            if !list_waiting {
                return Ok(None);
            }
            let until_list = self
                .list_due
                .map_or(wait, |t| t.saturating_duration_since(now));
            return Ok(Some(Next::After(
                wait.min(until_list).max(Duration::from_millis(10)),
            )));
        }
        self.retry_at = None;
        self.request(ctx, outputs).map(Some)
    }

    /// One `getDetailsByRecipient` request for the oldest row, and its delivery.
    fn request(&mut self, ctx: Ctx<'_>, outputs: &Delivery) -> Result<Next> {
        let Some(row) = self.queue.front().cloned() else {
            return Ok(Next::After(Duration::ZERO));
        };
        let svc = &ctx.input.service;
        let metrics = crate::metrics::input(&ctx.input.id);
        let token = match ctx.tokens.token(ctx.agent, time::now()) {
            Ok((t, obtained)) => {
                if obtained.is_some() {
                    metrics.request(crate::metrics::Call::Token, 200);
                }
                t
            }
            Err(e) => {
                metrics.request(crate::metrics::Call::Token, crate::metrics::error_code(&e));
                return self.fail(e.context("token request"), ctx.once, svc);
            }
        };
        let now = Instant::now();
        self.pacer.record(now);
        if let Some(p) = ctx.pacer {
            p.record(now);
            metrics.budget_remaining(p.remaining());
        }
        let url = crate::source::detail::details_url(&svc.graph_url, &row.trace_id, &row.recipient);
        let answer = http::query(ctx.agent, svc.api, &url, &token);
        metrics.request(
            crate::metrics::Call::Graph,
            answer
                .as_ref()
                .map_or_else(crate::metrics::error_code, |_| 200),
        );
        let resp = match answer {
            Ok(r) => r,
            Err(e)
                if e.status() == Some(401)
                    && !matches!(e.root(), Error::ServicePrincipal)
                    && !self.retried_401 =>
            {
                self.retried_401 = true;
                ctx.tokens.invalidate();
                warning!(
                    self.comp,
                    "401 from the API on a trace detail request: renewing the token and retrying"
                );
                return Ok(Next::After(Duration::ZERO));
            }
            Err(e) if matches!(e.status(), Some(400 | 404)) => {
                // The trace is gone or the row cannot be asked for: no retry can help.
                warning!(
                    self.comp,
                    "no trace details for message {} to {}: {e}; the row is skipped",
                    row.trace_id,
                    row.recipient
                );
                self.row_done(&ctx.input.id)?;
                return Ok(Next::After(Duration::ZERO));
            }
            Err(e) => return self.fail(e, ctx.once, svc),
        };
        self.retried_401 = false;
        let ctx_page = PageCtx {
            request_url: &url,
            window_start: 0,
            window_end: 0,
        };
        let pull_id = time::now_millis();
        let mut batch = Vec::new();
        let mut seen = HashSet::new();
        let mut count = 0u64;
        let scanned = crate::source::detail::scan_details(
            resp.into_body().into_reader(),
            &ctx_page,
            &row.trace_id,
            &row.recipient,
            &mut |ev| {
                if seen.insert(crate::source::detail::identity(ev)) {
                    crate::event::encode(ev, pull_id, &mut batch);
                    count = count.saturating_add(1);
                }
                if batch.len() > MAX_ANSWER_BYTES {
                    return Err(Error::Malformed(format!(
                        "trace detail answer larger than {MAX_ANSWER_BYTES} bytes"
                    )));
                }
                Ok(())
            },
        );
        if let Err(e) = scanned {
            // Nothing of a cut answer was sent: the retry sends every event once.
            return self.fail(e.context("trace detail answer"), ctx.once, svc);
        }
        let mut page = outputs.page_of(Stream::Detail);
        let res = page.write(&batch, count).and_then(|()| page.confirm());
        crate::run::publish_outputs(outputs);
        if let Err(e) = res {
            warning!(
                self.comp,
                "trace details not delivered, they will be requested again: {e}"
            );
            return Ok(Next::OutputDown);
        }
        self.events_sent = self.events_sent.saturating_add(count);
        metrics.details_sent(count);
        self.row_done(&ctx.input.id)?;
        Ok(Next::After(Duration::ZERO))
    }

    fn row_done(&mut self, input_id: &str) -> Result<()> {
        self.queue.done_front()?;
        self.attempt = 0;
        self.rows_done = self.rows_done.saturating_add(1);
        crate::metrics::input(input_id).details_pending(self.queue.len());
        Ok(())
    }

    /// A failed detail request: retried with backoff (or `Retry-After`) like list
    /// requests; after the configured retries the row waits a period (`--once`: exit
    /// with the error; the row stays queued for the next run).
    fn fail(&mut self, e: Error, once: bool, svc: &crate::config::ServiceConfig) -> Result<Next> {
        let transient = e.is_transient();
        self.attempt = self.attempt.saturating_add(1);
        if !transient || self.attempt > svc.retries {
            crate::error!(
                self.comp,
                "trace detail request failed: {e}; {} row(s) stay queued",
                self.queue.len()
            );
            self.attempt = 0;
            if once && self.once_result.is_some() {
                let r = self.once_result.take().unwrap_or(Ok(()));
                return Ok(Next::Done(r.and(Err(e))));
            }
            let period = Duration::from_secs(svc.period_secs);
            self.retry_at = Instant::now().checked_add(period);
            return Ok(Next::After(Duration::ZERO));
        }
        let cap = Duration::from_secs(MAX_BACKOFF_SECS);
        let wait = e.retry_after().map_or_else(
            || backoff::jittered(Duration::from_secs(svc.retry_wait_secs), self.attempt, cap),
            |s| Duration::from_secs(s).min(cap),
        );
        warning!(
            self.comp,
            "trace detail request: {e}: retry {}/{} in {:.1}s",
            self.attempt,
            svc.retries,
            wait.as_secs_f64()
        );
        self.retry_at = Instant::now().checked_add(wait);
        Ok(Next::After(Duration::ZERO))
    }
}
