//! The phase of one tenant's pull, as a state machine whose transitions consume it.
//!
//! Owns: whether a pull is running (with its counters), which window is being paged
//! (bounds, next link, retry attempt, whether a 401 was already retried), and how the
//! phase maps to and from the persisted `Cursor` fields `window_end`/`next_link`.
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
    pub requests: u64,
    pub filtered: u64,
    pub sent: u64,
}

impl Pull {
    pub fn new(id: i64, started: Instant) -> Pull {
        Pull {
            id,
            started,
            requests: 0,
            filtered: 0,
            sent: 0,
        }
    }

    /// Records sent per second since the pull started.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.started.elapsed().as_secs_f64().max(0.001)
    }
}

/// The window `[start, end)` being paged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    /// The page to ask for next; `None`: the window's first page.
    pub next_link: Option<String>,
    /// Failed attempts at the current page.
    pub attempt: u32,
    /// A 401 was answered by renewing the token once already.
    pub retried_401: bool,
}

impl Window {
    pub fn new(start: i64, end: i64, next_link: Option<String>) -> Window {
        Window {
            start,
            end,
            next_link,
            attempt: 0,
            retried_401: false,
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
    /// (`window_end == 0` is the state file's encoding of "no window").
    pub fn from_cursor(c: &Cursor) -> Phase {
        Phase::Idle {
            resume: (c.window_end != 0)
                .then(|| Window::new(c.window_start, c.window_end, c.next_link.clone())),
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

    /// Page the window `[start, end)` (only between windows; otherwise no change).
    pub fn enter(self, start: i64, end: i64) -> Phase {
        match self {
            Phase::Pulling { pull } => Phase::Paging {
                pull,
                window: Window::new(start, end, None),
            },
            other => other,
        }
    }

    /// A page was delivered: page on with `next_link`, or, without one, the window is
    /// complete and the pull is between windows again.
    pub fn page_done(self, next_link: Option<String>) -> Phase {
        match (self, next_link) {
            (Phase::Paging { pull, window }, Some(link)) => Phase::Paging {
                pull,
                window: Window::new(window.start, window.end, Some(link)),
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
                    resume: Some(Window::new(window.start, window.end, window.next_link)),
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

    /// Write the phase's window into the cursor's persisted fields.
    pub fn store(&self, c: &mut Cursor) {
        match self.window() {
            Some(w) => {
                c.window_start = w.start;
                c.window_end = w.end;
                c.next_link = w.next_link.clone();
            }
            None => {
                c.window_end = 0;
                c.next_link = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull() -> Pull {
        Pull::new(1, Instant::now())
    }

    #[test]
    fn a_pull_pages_windows_and_ends_idle() {
        let p = Phase::from_cursor(&Cursor::default());
        assert!(p.is_idle() && p.window().is_none());
        let p = p.begin(pull());
        assert!(matches!(p, Phase::Pulling { .. }));
        let p = p.enter(100, 200);
        assert_eq!(p.window(), Some(&Window::new(100, 200, None)));
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
        let mut p = Phase::Idle { resume: None }.begin(pull()).enter(100, 200);
        if let Some(w) = p.window_mut() {
            w.attempt = 3;
            w.retried_401 = true;
            w.next_link = Some("l".into());
        }
        let (_, p) = p.finish();
        assert_eq!(p.window(), Some(&Window::new(100, 200, Some("l".into()))));
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
}
