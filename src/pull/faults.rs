//! The tenant's answers to faults that must not stall it (SPEC §3 "Faults that must
//! not stall"): a cursor aging past the API's limit while running is clamped, the pull
//! target follows monotonic time across wall-clock jumps, the next-link policy's
//! verdicts (re-read the window, or fail it for the period), dead letters for a page
//! that keeps failing to parse, and the checkpoint that bounds what a tenant's data
//! put into the cursor — so only this host's disk can fail it (exit 3).
//! Must not: decide the policies themselves (`paging`, `clock`, `deadletter` do).

use std::time::{Duration, Instant};

use super::{Next, Tenant};
use crate::error::{Error, Result};
use crate::paging::LinkVerdict;
use crate::tenant::Pass;
use crate::{error, time, warning, window};

impl Tenant {
    /// SPEC §3: a cursor or window in progress that aged past the API's limit while
    /// running is clamped at once, and the span that can no longer be pulled logged.
    /// Each pass's cursor is clamped on its own; a window in progress that aged is
    /// dropped and its pass starts again at the clamped instant.
    pub(super) fn clamp_running(&mut self, now: i64) -> Result<()> {
        let api = self.input.service.api;
        let margin = self.input.margin_secs;
        let in_progress = self.phase.window().map(|w| (w.pass, w.start));
        let mut moved = false;
        for pass in [Pass::First, Pass::Settle] {
            let start = match in_progress {
                Some((p, s)) if p == pass => s,
                _ => match pass {
                    Pass::First => self.cursor.window_start,
                    Pass::Settle => self.cursor.settle_start,
                },
            };
            let Some((clamped, lost)) = crate::paging::aged_start(api, start, now, margin) else {
                continue;
            };
            warning!(
                self.comp,
                "the {} cursor {} aged past the API's limit while running: moved to {}, records of {} ({} to {}) cannot be pulled any more",
                pass.name(),
                time::rfc3339(start),
                time::rfc3339(clamped),
                time::human_duration(lost),
                time::rfc3339(start),
                time::rfc3339(clamped)
            );
            if in_progress.is_some_and(|(p, _)| p == pass) {
                // The window in progress is dropped; its pass starts at `clamped`.
                self.advance(|p| p.page_done(None));
                self.paging.done();
                self.set = None;
            }
            match pass {
                Pass::First => self.cursor.window_start = self.cursor.window_start.max(clamped),
                Pass::Settle => self.cursor.settle_start = self.cursor.settle_start.max(clamped),
            }
            moved = true;
        }
        if !moved {
            return Ok(());
        }
        self.phase.store(&mut self.cursor);
        self.checkpoint()
    }

    /// `now` as far as the pull targets may see it: a wall-clock jump forward is held to
    /// monotonic time since the last pull (SPEC §3), and logged once.
    pub(super) fn guarded_now(&mut self, now: i64) -> i64 {
        let target = window::target(now, self.input.service.delay_secs);
        let (guarded, jump) = self.clock.target(target, Instant::now());
        if let Some(ahead) = jump {
            warning!(
                self.comp,
                "the wall clock jumped forward ({} ahead of monotonic time): the pull target follows monotonic time, so no window is read before its records exist",
                time::human_duration(ahead)
            );
        }
        now.saturating_sub(target.saturating_sub(guarded))
    }

    /// Act on the next-link policy: read the window again from its start, or fail it
    /// for this period (SPEC §3). `cause` is what happened to the link. The ledger
    /// filters what the window already delivered.
    pub(super) fn link_verdict(&mut self, verdict: LinkVerdict, cause: &str) -> Result<Next> {
        match verdict {
            LinkVerdict::Keep => Ok(Next::After(Duration::ZERO)),
            LinkVerdict::Restart(why) => {
                let (ws, we) = self.phase.window().map_or((0, 0), |w| (w.start, w.end));
                warning!(
                    self.comp,
                    "{why} ({}): the link is dropped and window {} - {} is read again from its start",
                    crate::log::sanitize_remote(cause),
                    time::rfc3339(ws),
                    time::rfc3339(we)
                );
                if let Some(w) = self.phase.window_mut() {
                    w.next_link = None;
                    w.attempt = 0;
                }
                self.phase.store(&mut self.cursor);
                self.checkpoint()?;
                Ok(Next::After(Duration::ZERO))
            }
            LinkVerdict::Fail(why) => {
                if let Some(w) = self.phase.window_mut() {
                    w.next_link = None;
                }
                self.phase.store(&mut self.cursor);
                self.checkpoint()?;
                let e = Error::Malformed(why);
                error!(self.comp, "{e}; the window will be retried next period");
                Ok(self.finish_pull(Some(e)))
            }
        }
    }

    /// Checkpoint the cursor. What a tenant's data put in it (too many migrated edge
    /// keys, an overlong next link) is bounded first, so only this host's disk can
    /// fail it (exit 3).
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        if let Some(dropped) = crate::paging::bound_edge_keys(&mut self.cursor.edge_keys) {
            warning!(
                self.comp,
                "{dropped} records at the end second of the window are not remembered for the next window (at most {} are): they may be sent twice",
                crate::state::MAX_EDGE_KEYS
            );
        }
        let too_long = |l: &Option<String>| {
            l.as_ref()
                .is_some_and(|l| l.len() > crate::paging::MAX_LINK_LEN)
        };
        if too_long(&self.cursor.next_link) {
            self.cursor.next_link = None;
        }
        if too_long(&self.cursor.settle_link) {
            self.cursor.settle_link = None;
        }
        self.state.checkpoint(&self.cursor)
    }

    /// The page at `url` failed to parse in `MAX_PARSE_FAILURE_PERIODS` periods in a
    /// row (SPEC §3): what parsed (`parsed` records) was delivered; its raw bytes go to
    /// a dead letter, the window is closed after it and the tenant goes on. When the
    /// dead letter cannot be written nothing is skipped: the window fails as before.
    pub(super) fn dead_letter(
        &mut self,
        url: &str,
        e: &Error,
        raw: &crate::deadletter::Captured,
        parsed: u64,
    ) -> Result<Next> {
        let api = self.input.service.api;
        let (pass, ws, we) = self
            .phase
            .window()
            .map_or((Pass::First, 0, 0), |w| (w.pass, w.start, w.end));
        let page = crate::log::scrub_url(url);
        let written = crate::deadletter::write(
            &self.state_dir,
            &self.input.id,
            time::now(),
            url,
            &e.to_string(),
            raw,
        );
        let path = match written {
            Ok(p) => p,
            Err(w) => {
                self.checkpoint()?;
                return Ok(self.fail(
                    Error::Malformed(format!("{e}; the dead letter could not be written: {w}"))
                        .context(format!("page {page}")),
                ));
            }
        };
        let rejected = crate::deadletter::count_entries(api, &raw.bytes)
            .saturating_sub(parsed)
            .max(1);
        self.rejected_entries = self.rejected_entries.saturating_add(rejected);
        warning!(
            self.comp,
            "page {page} failed to parse in {} periods in a row ({e}): the {parsed} record(s) that parsed were delivered, the raw page is in the dead letter {} ({rejected} rejected entries, rejected_entries {}); window {} - {} ({}) ends after this page",
            crate::deadletter::MAX_PARSE_FAILURE_PERIODS,
            path.display(),
            self.rejected_entries,
            time::rfc3339(ws),
            time::rfc3339(we),
            pass.name()
        );
        self.paging.done();
        self.window_done(pass, ws, we);
        self.advance(|p| p.page_done(None));
        self.phase.store(&mut self.cursor);
        self.checkpoint()?;
        crate::metrics::input(&self.input.id).cursor(self.cursor.window_start);
        Ok(Next::After(Duration::ZERO))
    }
}
