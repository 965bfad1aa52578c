//! The phase of one tenant's pull, as a state machine whose transitions consume it.
//!
//! Owns: whether a pull is running (with its counters and the targets it fixed when it
//! began), which window is being paged and by which pass (first or settle: bounds, next
//! link, retry attempt, whether a 401 was already retried, records seen), and how the
//! phase maps to and from the persisted `Cursor` fields `window_end`/`next_link` (first
//! pass) and `settle_end`/`settle_link` (settle pass). At most one window is paged at a
//! time, whichever pass it belongs to.
//! Must not: do IO, log or read the clock — `pull::Tenant` drives it and does those;
//! the `Cursor`'s encoding belongs to `state`.
//!
//! ```text
//!   Idle{resume} --begin--> Pulling (resume None) | Paging (resume Some)
//!   Pulling --enter(window)--> Paging --page_done(Some link)--> Paging
//!   Paging --page_done(None)--> Pulling        any --finish--> Idle{resume: window}
//! ```

use std::time::Instant;

use crate::state::Cursor;

/// Counters of one pull (from its start to "up to date" or failure).
#[derive(Debug)]
pub struct Pull {
    /// Shown in every event of the pull.
    pub id: i64,
    pub started: Instant,
    /// Where the first pass ends, fixed when the pull began (now − first pass delay):
    /// a pull ends, and a tenant waits for its period, instead of chasing the clock
    /// with 1-second tail windows.
    pub first_target: i64,
    /// Where the settle pass ends (now − `override_time_delay_in_seconds`), fixed alike.
    pub settle_target: i64,
    pub requests: u64,
    pub filtered: u64,
    pub sent: u64,
    /// Records the settle pass found that the first pass had not delivered.
    pub late: u64,
    /// Records sent again with a new Status.
    pub status_changes: u64,
}

impl Pull {
    pub fn new(id: i64, started: Instant, first_target: i64, settle_target: i64) -> Pull {
        Pull {
            id,
            started,
            first_target,
            settle_target,
            requests: 0,
            filtered: 0,
            sent: 0,
            late: 0,
            status_changes: 0,
        }
    }

    /// Records sent per second since the pull started.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.started.elapsed().as_secs_f64().max(0.001)
    }
}

/// Which of the two passes (SPEC §3) a window belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Near real time: up to now − `first_pass_delay_in_seconds`.
    First,
    /// Once more at now − `override_time_delay_in_seconds`: only what is new or changed.
    Settle,
}

impl Pass {
    /// How log lines name it.
    pub fn name(self) -> &'static str {
        match self {
            Pass::First => "first pass",
            Pass::Settle => "settle pass",
        }
    }
}

/// The window `[start, end)` being paged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub pass: Pass,
    pub start: i64,
    pub end: i64,
    /// The page to ask for next; `None`: the window's first page.
    pub next_link: Option<String>,
    /// Failed attempts at the current page.
    pub attempt: u32,
    /// A 401 was answered by renewing the token once already.
    pub retried_401: bool,
    /// Records scanned in this window so far (sizes the next window).
    pub records: u64,
    /// The oldest `Received` among them (where a window too full to finish is cut).
    pub oldest: Option<i64>,
}

impl Window {
    pub fn new(pass: Pass, start: i64, end: i64, next_link: Option<String>) -> Window {
        Window {
            pass,
            start,
            end,
            next_link,
            attempt: 0,
            retried_401: false,
            records: 0,
            oldest: None,
        }
    }
}

/// Where a tenant is.
#[derive(Debug)]
pub enum Phase {
    /// No pull running. `resume`: a window left unfinished (by the last run or a pull
    /// that failed), continued first by the next pull — never skipped.
    Idle { resume: Option<Window> },
    /// A pull is running, between windows.
    Pulling { pull: Pull },
    /// A pull is paging through a window.
    Paging { pull: Pull, window: Window },
}

impl Phase {
    /// The phase a saved cursor describes: idle, resuming its window if it has one
    /// (`window_end == 0` / `settle_end == 0` is the state file's encoding of "no
    /// window"); the first pass's window first.
    pub fn from_cursor(c: &Cursor) -> Phase {
        let first = (c.window_end != 0).then(|| {
            Window::new(
                Pass::First,
                c.window_start,
                c.window_end,
                c.next_link.clone(),
            )
        });
        let settle = (c.settle_end != 0).then(|| {
            Window::new(
                Pass::Settle,
                c.settle_start,
                c.settle_end,
                c.settle_link.clone(),
            )
        });
        Phase::Idle {
            resume: first.or(settle),
        }
    }

    /// Start a pull (no change when one runs).
    pub fn begin(self, pull: Pull) -> Phase {
        match self {
            Phase::Idle { resume: None } => Phase::Pulling { pull },
            Phase::Idle {
                resume: Some(window),
            } => Phase::Paging { pull, window },
            running => running,
        }
    }

    /// Page the window `[start, end)` of `pass` (only between windows; otherwise no
    /// change).
    pub fn enter(self, pass: Pass, start: i64, end: i64) -> Phase {
        match self {
            Phase::Pulling { pull } => Phase::Paging {
                pull,
                window: Window::new(pass, start, end, None),
            },
            other => other,
        }
    }

    /// The window being paged holds too many records: read it again from its start
    /// as `[start, end)` (shorter; the records already delivered beyond `end` are in
    /// the ledger and filtered when a later window returns them). No change unless
    /// paging and `end` is inside the window.
    pub fn shrink(self, end: i64) -> Phase {
        match self {
            Phase::Paging { pull, window } if end > window.start && end < window.end => {
                Phase::Paging {
                    pull,
                    window: Window::new(window.pass, window.start, end, None),
                }
            }
            other => other,
        }
    }

    /// A page was delivered: page on with `next_link`, or, without one, the window is
    /// complete and the pull is between windows again.
    pub fn page_done(self, next_link: Option<String>) -> Phase {
        match (self, next_link) {
            (Phase::Paging { pull, window }, Some(link)) => Phase::Paging {
                pull,
                window: Window {
                    next_link: Some(link),
                    attempt: 0,
                    retried_401: false,
                    ..window
                },
            },
            (Phase::Paging { pull, .. }, None) => Phase::Pulling { pull },
            (other, _) => other,
        }
    }

    /// End the pull: its counters, and the idle phase keeping an unfinished window.
    pub fn finish(self) -> (Option<Pull>, Phase) {
        match self {
            Phase::Idle { resume } => (None, Phase::Idle { resume }),
            Phase::Pulling { pull } => (Some(pull), Phase::Idle { resume: None }),
            Phase::Paging { pull, window } => (
                Some(pull),
                Phase::Idle {
                    resume: Some(Window::new(
                        window.pass,
                        window.start,
                        window.end,
                        window.next_link,
                    )),
                },
            ),
        }
    }

    pub fn is_idle(&self) -> bool {
        matches!(self, Phase::Idle { .. })
    }

    /// The window being paged (or to be resumed).
    pub fn window(&self) -> Option<&Window> {
        match self {
            Phase::Paging { window, .. }
            | Phase::Idle {
                resume: Some(window),
            } => Some(window),
            _ => None,
        }
    }

    pub fn window_mut(&mut self) -> Option<&mut Window> {
        match self {
            Phase::Paging { window, .. } => Some(window),
            _ => None,
        }
    }

    pub fn pull(&self) -> Option<&Pull> {
        match self {
            Phase::Pulling { pull } | Phase::Paging { pull, .. } => Some(pull),
            Phase::Idle { .. } => None,
        }
    }

    pub fn pull_mut(&mut self) -> Option<&mut Pull> {
        match self {
            Phase::Pulling { pull } | Phase::Paging { pull, .. } => Some(pull),
            Phase::Idle { .. } => None,
        }
    }

    /// Write the phase's window into the cursor's persisted fields of its pass; the
    /// other pass is between windows (one window is paged at a time).
    pub fn store(&self, c: &mut Cursor) {
        c.window_end = 0;
        c.next_link = None;
        c.settle_end = 0;
        c.settle_link = None;
        match self.window() {
            Some(w) if w.pass == Pass::First => {
                c.window_start = w.start;
                c.window_end = w.end;
                c.next_link = w.next_link.clone();
            }
            Some(w) => {
                c.settle_start = w.start;
                c.settle_end = w.end;
                c.settle_link = w.next_link.clone();
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull() -> Pull {
        Pull::new(1, Instant::now(), 0, 0)
    }

    #[test]
    fn a_pull_pages_windows_and_ends_idle() {
        let p = Phase::from_cursor(&Cursor::default());
        assert!(p.is_idle() && p.window().is_none());
        let p = p.begin(pull());
        assert!(matches!(p, Phase::Pulling { .. }));
        let p = p.enter(Pass::First, 100, 200);
        assert_eq!(p.window(), Some(&Window::new(Pass::First, 100, 200, None)));
        let p = p.page_done(Some("next".into()));
        assert_eq!(
            p.window().and_then(|w| w.next_link.as_deref()),
            Some("next")
        );
        let p = p.page_done(None);
        assert!(matches!(p, Phase::Pulling { .. }));
        let (done, p) = p.finish();
        assert!(done.is_some() && p.is_idle() && p.window().is_none());
    }

    #[test]
    fn a_failed_pull_keeps_its_window_for_the_next() {
        let mut p = Phase::Idle { resume: None }
            .begin(pull())
            .enter(Pass::First, 100, 200);
        if let Some(w) = p.window_mut() {
            w.attempt = 3;
            w.retried_401 = true;
            w.next_link = Some("l".into());
        }
        let (_, p) = p.finish();
        assert_eq!(
            p.window(),
            Some(&Window::new(Pass::First, 100, 200, Some("l".into())))
        );
        let mut c = Cursor::default();
        p.store(&mut c);
        assert_eq!((c.window_start, c.window_end), (100, 200));
        assert_eq!(c.next_link.as_deref(), Some("l"));
        let back = Phase::from_cursor(&c);
        assert_eq!(back.window(), p.window());
        let p = back.begin(pull());
        assert!(matches!(p, Phase::Paging { .. }));
        let (_, p) = p.page_done(None).finish();
        p.store(&mut c);
        assert_eq!((c.window_end, c.next_link), (0, None));
    }

    #[test]
    fn a_shrunk_window_restarts_from_its_start() {
        let p = Phase::Idle { resume: None }
            .begin(pull())
            .enter(Pass::First, 100, 1000)
            .page_done(Some("n".into()));
        let p = p.shrink(2000).shrink(400);
        assert_eq!(p.window(), Some(&Window::new(Pass::First, 100, 400, None)));
    }

    #[test]
    fn a_settle_window_is_stored_in_the_settle_fields_and_resumed() {
        let p = Phase::Idle { resume: None }
            .begin(pull())
            .enter(Pass::Settle, 50, 80)
            .page_done(Some("s".into()));
        let mut c = Cursor {
            window_start: 100,
            ..Cursor::default()
        };
        p.store(&mut c);
        assert_eq!((c.window_start, c.window_end), (100, 0));
        assert_eq!((c.settle_start, c.settle_end), (50, 80));
        assert_eq!(c.settle_link.as_deref(), Some("s"));
        let back = Phase::from_cursor(&c);
        assert_eq!(
            back.window(),
            Some(&Window::new(Pass::Settle, 50, 80, Some("s".into())))
        );
    }
}
