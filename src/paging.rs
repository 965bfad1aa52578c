//! The next-link policy of one window (SPEC §3 "Faults that must not stall"): which
//! next links are followed, when a link is dropped and the window read again from its
//! start, and when a window is failed instead of looped.
//!
//! Owns: the links followed in the window (as hashes), the page count and its cap, the
//! periods one link has failed in a row, the restarts of the window in this pull.
//! Must not: do IO, log or send anything — `pull::Tenant` asks and acts; re-reading a
//! window is safe because what was sent is filtered (window set / delivery ledger).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

/// Pages one window may take. A 10-day Graph catch-up window of a tenant with a
/// million messages a day is 2,000 pages of 5,000; beyond the cap the page loop is a
/// server's fault and the window fails with a clear message (retried next period).
pub const MAX_PAGES_PER_WINDOW: u32 = 10_000;
/// Periods in a row one next link may fail before it is dropped.
pub const MAX_LINK_FAILURE_PERIODS: u32 = 3;
/// Times one window is read again from its start within one pull before it is failed
/// for this period.
pub const MAX_RESTARTS_PER_PULL: u32 = 3;
/// Longest next link kept (the state file's bound): a longer one is malformed.
pub const MAX_LINK_LEN: usize = crate::state::MAX_LINK_LEN;

/// What to do after a page or a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkVerdict {
    /// Go on (follow the next link, or retry as usual).
    Keep,
    /// Drop the link and read the window again from its start, for this reason.
    Restart(String),
    /// Fail the window for this period, for this reason (it is retried next period).
    Fail(String),
}

/// The policy state of the window being paged.
#[derive(Debug, Default)]
pub struct Paging {
    window: (i64, i64),
    followed: HashSet<u64>,
    pages: u32,
    restarts: u32,
    /// The link that failed the last period(s), and in how many periods in a row.
    failing: Option<(u64, u32)>,
    /// The page that failed to parse the last period(s), and in how many in a row.
    unparsable: Option<(u64, u32)>,
}

fn hash(link: &str) -> u64 {
    let mut h = DefaultHasher::new();
    link.hash(&mut h);
    h.finish()
}

/// 4xx answers that say the link itself is bad (an expired `$skiptoken`, a removed
/// page): all but 401 (token, renewed), 403 (permission, a setup error), 408 and 429
/// (transient).
pub fn link_status_is_permanent(status: Option<u16>) -> bool {
    status.is_some_and(|s| (400..500).contains(&s) && !matches!(s, 401 | 403 | 408 | 429))
}

impl Paging {
    /// The window `[start, end)` is paged: forget another window's links.
    pub fn window(&mut self, start: i64, end: i64) {
        if self.window != (start, end) {
            *self = Paging {
                window: (start, end),
                ..Paging::default()
            };
        }
    }

    /// A new pull starts: the restarts of the last pull no longer count.
    pub fn new_pull(&mut self) {
        self.restarts = 0;
    }

    /// The page fetched from `url` names `next`: follow it, or drop it (repeated,
    /// too long to keep) and read the window again, or fail the window (page cap).
    pub fn next_link(&mut self, url: &str, next: &str) -> LinkVerdict {
        self.followed.insert(hash(url));
        self.pages = self.pages.saturating_add(1);
        if self.failing.is_some_and(|(h, _)| h == hash(url)) {
            self.failing = None;
        }
        if next.len() > MAX_LINK_LEN {
            return self.restart(format!(
                "the next link is {} bytes long, more than the {MAX_LINK_LEN} kept: refused as malformed",
                next.len()
            ));
        }
        if self.followed.contains(&hash(next)) {
            return self.restart(
                "the next link repeats a link already followed in this window".to_string(),
            );
        }
        if self.pages >= MAX_PAGES_PER_WINDOW {
            return LinkVerdict::Fail(format!(
                "the window took more than {MAX_PAGES_PER_WINDOW} pages: the API keeps naming a next page"
            ));
        }
        LinkVerdict::Keep
    }

    /// A next link refused for `why` (another origin, SPEC §10): dropped, and the
    /// window read again from its start (or failed after `MAX_RESTARTS_PER_PULL`).
    pub fn refuse(&mut self, why: String) -> LinkVerdict {
        self.restart(why)
    }

    /// The window's last page was read.
    pub fn done(&mut self) {
        *self = Paging::default();
    }

    /// A request for the next link `link` failed with `status`, and `gave_up` says
    /// whether this period is over for it (retries spent or not retryable).
    pub fn link_failed(&mut self, link: &str, status: Option<u16>, gave_up: bool) -> LinkVerdict {
        if link_status_is_permanent(status) {
            let s = status.unwrap_or(0);
            return self.restart(format!("the next link was answered {s}"));
        }
        if !gave_up {
            return LinkVerdict::Keep;
        }
        let h = hash(link);
        let periods = match self.failing {
            Some((f, n)) if f == h => n.saturating_add(1),
            _ => 1,
        };
        self.failing = Some((h, periods));
        if periods >= MAX_LINK_FAILURE_PERIODS {
            self.failing = None;
            return self.restart(format!(
                "the next link failed in {periods} periods in a row"
            ));
        }
        LinkVerdict::Keep
    }

    /// The page at `url` failed to parse; `gave_up`: this period is over for it.
    pub fn page_unparsable(&mut self, url: &str, gave_up: bool) {
        if !gave_up {
            return;
        }
        let h = hash(url);
        let periods = match self.unparsable {
            Some((u, n)) if u == h => n.saturating_add(1),
            _ => 1,
        };
        self.unparsable = Some((h, periods));
    }

    /// The page at `url` failed to parse in all but the last of
    /// `deadletter::MAX_PARSE_FAILURE_PERIODS` periods: if it fails once more, it is a
    /// dead letter (its bytes are kept while it is read).
    pub fn dead_letter_armed(&self, url: &str) -> bool {
        self.unparsable.is_some_and(|(u, n)| {
            u == hash(url) && n.saturating_add(1) >= crate::deadletter::MAX_PARSE_FAILURE_PERIODS
        })
    }

    /// The page at `url` parsed: its run of failed periods ends.
    pub fn page_parsed(&mut self, url: &str) {
        if self.unparsable.is_some_and(|(u, _)| u == hash(url)) {
            self.unparsable = None;
        }
    }

    fn restart(&mut self, why: String) -> LinkVerdict {
        self.followed.clear();
        self.pages = 0;
        self.restarts = self.restarts.saturating_add(1);
        if self.restarts > MAX_RESTARTS_PER_PULL {
            return LinkVerdict::Fail(format!(
                "{why}; the window was read again {MAX_RESTARTS_PER_PULL} times in this pull already"
            ));
        }
        LinkVerdict::Restart(why)
    }
}

/// While running, a start is clamped once it is within this many seconds of the API's
/// age limit (not at the configured margin: a fresh catch-up starts right at the margin
/// and must be able to page its first window).
pub const RUNNING_CLAMP_SLACK_SECS: u64 = 5;

/// SPEC §3: a cursor or window in progress that ages past the API's limit while
/// running. `Some((new start, seconds lost))` once `start` is within
/// `RUNNING_CLAMP_SLACK_SECS` of the limit; the new start keeps the configured
/// `margin_secs` again, so a tenant that stays down is clamped once per margin, not
/// once per step.
pub fn aged_start(
    api: crate::source::Api,
    start: i64,
    now: i64,
    margin_secs: u64,
) -> Option<(i64, i64)> {
    let threshold = crate::window::oldest_allowed(api, now, RUNNING_CLAMP_SLACK_SECS);
    if start >= threshold {
        return None;
    }
    let to = crate::window::oldest_allowed(api, now, margin_secs).max(threshold);
    Some((to, to.saturating_sub(start)))
}

/// Keep at most `state::MAX_EDGE_KEYS` edge keys (the newest); returns how many were
/// dropped. A window end second with more records than that is the tenant's data, not
/// a reason to fail the state file.
pub fn bound_edge_keys(keys: &mut Vec<u64>) -> Option<usize> {
    let over = keys.len().checked_sub(crate::state::MAX_EDGE_KEYS)?;
    if over == 0 {
        return None;
    }
    keys.drain(..over);
    Some(over)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_link_restarts_the_window_then_fails_it() {
        let mut p = Paging::default();
        p.window(0, 10);
        assert_eq!(p.next_link("q", "a"), LinkVerdict::Keep);
        assert_eq!(p.next_link("a", "b"), LinkVerdict::Keep);
        assert!(matches!(p.next_link("b", "a"), LinkVerdict::Restart(w) if w.contains("repeats")));
        for _ in 1..MAX_RESTARTS_PER_PULL {
            assert!(matches!(p.next_link("q", "q"), LinkVerdict::Restart(_)));
        }
        assert!(matches!(p.next_link("q", "q"), LinkVerdict::Fail(w) if w.contains("again")));
        p.new_pull();
        assert!(matches!(p.next_link("q", "q"), LinkVerdict::Restart(_)));
        // Another window starts afresh.
        p.window(10, 20);
        assert_eq!(p.next_link("q", "a"), LinkVerdict::Keep);
    }

    #[test]
    fn a_page_is_armed_for_its_dead_letter_after_n_minus_one_periods() {
        let mut p = Paging::default();
        for _ in 1..crate::deadletter::MAX_PARSE_FAILURE_PERIODS {
            assert!(!p.dead_letter_armed("u"));
            p.page_unparsable("u", false);
            p.page_unparsable("u", true);
        }
        assert!(p.dead_letter_armed("u"));
        assert!(!p.dead_letter_armed("v"));
        p.page_parsed("u");
        assert!(!p.dead_letter_armed("u"));
    }

    #[test]
    fn a_start_is_clamped_near_the_api_limit_to_the_margin() {
        use crate::source::Api;
        const NOW: i64 = 1_795_000_000;
        let limit = NOW - Api::Reporting.max_age_secs();
        // A fresh start at the margin pages on.
        assert_eq!(aged_start(Api::Reporting, limit + 60, NOW, 60), None);
        assert_eq!(aged_start(Api::Reporting, limit + 5, NOW, 60), None);
        assert_eq!(
            aged_start(Api::Reporting, limit + 4, NOW, 60),
            Some((limit + 60, 56))
        );
        assert_eq!(
            aged_start(Api::Reporting, limit - 3600, NOW, 60),
            Some((limit + 60, 3660))
        );
        // A margin below the slack still moves past the threshold.
        assert_eq!(
            aged_start(Api::Reporting, limit, NOW, 1),
            Some((limit + 5, 5))
        );
    }

    #[test]
    fn edge_keys_are_bounded() {
        let mut k: Vec<u64> = (0..crate::state::MAX_EDGE_KEYS as u64 + 5).collect();
        assert_eq!(bound_edge_keys(&mut k), Some(5));
        assert_eq!(k.len(), crate::state::MAX_EDGE_KEYS);
        assert_eq!(k.first(), Some(&5));
        assert_eq!(bound_edge_keys(&mut k), None);
    }

    #[test]
    fn an_overlong_link_is_refused() {
        let mut p = Paging::default();
        let long = "x".repeat(MAX_LINK_LEN + 1);
        assert!(
            matches!(p.next_link("q", &long), LinkVerdict::Restart(w) if w.contains("bytes long"))
        );
    }

    #[test]
    fn pages_are_capped() {
        let mut p = Paging::default();
        for i in 1..MAX_PAGES_PER_WINDOW {
            assert_eq!(
                p.next_link(&format!("l{i}"), &format!("l{}", i + 1)),
                LinkVerdict::Keep
            );
        }
        assert!(matches!(p.next_link("last", "more"), LinkVerdict::Fail(w) if w.contains("pages")));
    }

    #[test]
    fn a_4xx_restarts_at_once_and_other_failures_after_n_periods() {
        let mut p = Paging::default();
        assert!(matches!(
            p.link_failed("l", Some(400), false),
            LinkVerdict::Restart(_)
        ));
        assert!(matches!(
            p.link_failed("l", Some(410), true),
            LinkVerdict::Restart(_)
        ));
        p.new_pull();
        for s in [Some(401), Some(403), Some(429), Some(503), None] {
            assert_eq!(p.link_failed("l", s, false), LinkVerdict::Keep);
        }
        for _ in 1..MAX_LINK_FAILURE_PERIODS {
            assert_eq!(p.link_failed("l", Some(503), true), LinkVerdict::Keep);
        }
        assert!(
            matches!(p.link_failed("l", Some(503), true), LinkVerdict::Restart(w) if w.contains("periods"))
        );
        // A page of the link read in between breaks the run.
        p.new_pull();
        assert_eq!(p.link_failed("m", None, true), LinkVerdict::Keep);
        assert_eq!(p.next_link("m", "n"), LinkVerdict::Keep);
        assert_eq!(p.link_failed("m", None, true), LinkVerdict::Keep);
        assert_eq!(p.link_failed("m", None, true), LinkVerdict::Keep);
    }
}
