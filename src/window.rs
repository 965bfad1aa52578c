//! Windows, delay, cutoff and edge dedup: (cursor, settings, now) -> next query.
//!
//! Owns: where the first pull starts, how long each window is, when a tenant is up to
//! date, clamping a cursor older than the API allows, the per-window dedup set and the
//! end-edge keys carried into the next window. Must not: read a clock or do IO — `now`
//! is always an argument, so every rule here is unit-tested with fixed instants. What
//! differs per API (maximum age, window length) is asked of `source::Api`.

use std::collections::HashSet;

use crate::source::Api;
use crate::time::DAY;
/// Records received within this many seconds of a window's end are remembered as edge
/// keys: Graph bounds are inclusive (a record exactly on the boundary comes back in
/// both windows) and the Reporting Web Service rounds fractional seconds.
pub const EDGE_SECS: i64 = 1;
/// Upper bound of the per-window dedup set (8 bytes a key). A window with more records
/// than this (a 10-day Graph catch-up window of a huge tenant) keeps deduplicating
/// retried pages and edges, but not repeats across distant pages of that one window.
pub const MAX_WINDOW_KEYS: usize = 262_144;

/// The oldest instant a query may start at, keeping `margin` seconds of safety.
pub fn oldest_allowed(api: Api, now: i64, margin_secs: u64) -> i64 {
    let max_age = api.max_age_secs();
    let margin = i64::try_from(margin_secs).unwrap_or(max_age).min(max_age);
    now.saturating_sub(max_age).saturating_add(margin)
}

/// Where a tenant without state starts: `now − cutoff days`, clamped to what the API
/// allows less the margin.
pub fn first_start(api: Api, now: i64, cutoff_days: u64, margin_secs: u64) -> i64 {
    let back = i64::try_from(cutoff_days)
        .ok()
        .and_then(|d| d.checked_mul(DAY))
        .unwrap_or(i64::MAX / 4);
    now.saturating_sub(back)
        .max(oldest_allowed(api, now, margin_secs))
}

/// A cursor older than the API allows is moved forward; returns (new start, seconds
/// lost) so the caller can log the gap — never silently.
pub fn clamp_start(api: Api, start: i64, now: i64, margin_secs: u64) -> (i64, i64) {
    let oldest = oldest_allowed(api, now, margin_secs);
    if start < oldest {
        (oldest, oldest.saturating_sub(start))
    } else {
        (start, 0)
    }
}

/// The pulled data ends this far behind now.
pub fn target(now: i64, delay_secs: u64) -> i64 {
    now.saturating_sub(i64::try_from(delay_secs).unwrap_or(0))
}

/// The next window `[start, end)` from `start`, or `None` when up to date; its length
/// is the API's rule (`Api::window_len`) applied to `window_secs`.
pub fn next_window(
    api: Api,
    start: i64,
    now: i64,
    delay_secs: u64,
    window_secs: u64,
) -> Option<(i64, i64)> {
    let target = target(now, delay_secs);
    if start >= target {
        return None;
    }
    let configured = i64::try_from(window_secs).unwrap_or(i64::MAX).max(1);
    let len = api.window_len(configured, target.saturating_sub(start));
    Some((start, start.saturating_add(len).min(target)))
}

/// Progress while catching up: how far behind the target the cursor is, and the share
/// of the way from the first window to the target done.
pub fn progress(origin: i64, start: i64, now: i64, delay_secs: u64) -> (i64, u32) {
    let target = target(now, delay_secs);
    let behind = target.saturating_sub(start).max(0);
    let total = target.saturating_sub(origin).max(1);
    let done = total.saturating_sub(behind).clamp(0, total);
    let pct = i128::from(done)
        .saturating_mul(100)
        .checked_div(i128::from(total))
        .unwrap_or(100);
    (behind, u32::try_from(pct).unwrap_or(100))
}

/// Dedup state of the window being pulled.
#[derive(Debug, Default)]
pub struct Dedup {
    /// Keys of the previous window's end edge.
    edge_prev: HashSet<u64>,
    /// Keys of records sent in this window (bounded by `MAX_WINDOW_KEYS`).
    window: HashSet<u64>,
    /// Keys accepted since the last confirmed delivery: forgotten again if the output
    /// loses them, so the page's retry sends them.
    unconfirmed: Vec<u64>,
    /// Keys of this window's end edge, computed as records arrive.
    edge_next: Vec<u64>,
}

/// What to do with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    Filter,
}

impl Dedup {
    pub fn new(edge_keys: &[u64]) -> Self {
        Dedup {
            edge_prev: edge_keys.iter().copied().collect(),
            ..Dedup::default()
        }
    }

    /// Decide for a record with `key` received at `received` in window ending `end`.
    pub fn check(&mut self, key: u64, received: Option<i64>, end: i64) -> Verdict {
        if self.edge_prev.contains(&key) || self.window.contains(&key) {
            return Verdict::Filter;
        }
        if self.window.len() < MAX_WINDOW_KEYS {
            self.window.insert(key);
        }
        self.unconfirmed.push(key);
        if received.is_some_and(|r| r >= end.saturating_sub(EDGE_SECS)) {
            self.edge_next.push(key);
        }
        Verdict::Send
    }

    /// The records accepted so far were delivered.
    pub fn confirm(&mut self) {
        self.unconfirmed.clear();
    }

    /// The output lost what was written since the last confirm: forget those keys so the
    /// retried page sends them again.
    pub fn rollback(&mut self) {
        for k in self.unconfirmed.drain(..) {
            self.window.remove(&k);
            self.edge_next.retain(|e| *e != k);
        }
    }

    /// The window is complete: its end-edge keys become the next window's filter.
    pub fn finish_window(&mut self) -> Vec<u64> {
        let edge = std::mem::take(&mut self.edge_next);
        self.edge_prev = edge.iter().copied().collect();
        // Release, not `clear`: a cleared set keeps its capacity, so every tenant would
        // hold the memory of its largest window ever (up to MAX_WINDOW_KEYS keys, MiBs)
        // between windows — with 100 tenants, over SPEC §9's 16 MiB.
        self.window = HashSet::new();
        self.unconfirmed = Vec::new();
        edge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000;

    #[test]
    fn first_start_is_clamped_by_api_age_and_margin() {
        assert_eq!(first_start(Api::Reporting, NOW, 1, 60), NOW - DAY);
        assert_eq!(
            first_start(Api::Reporting, NOW, 30, 60),
            NOW - 10 * DAY + 60
        );
        assert_eq!(first_start(Api::Graph, NOW, 30, 60), NOW - 30 * DAY);
        assert_eq!(
            first_start(Api::Graph, NOW, 1_000_000, 60),
            NOW - 90 * DAY + 60
        );
    }

    #[test]
    fn windows_back_to_back_until_target() {
        let delay: u64 = 3600;
        let mut start = NOW - 2 * 3600;
        let mut n = 0;
        while let Some((s, e)) = next_window(Api::Reporting, start, NOW, delay, 900) {
            assert_eq!(s, start);
            assert!(e <= NOW - 3600 && e > s);
            start = e;
            n += 1;
        }
        assert_eq!(start, NOW - 3600);
        assert_eq!(n, 4);
    }

    #[test]
    fn graph_windows_grow_while_catching_up() {
        let start = NOW - 12 * DAY;
        let (s, e) = next_window(Api::Graph, start, NOW, 90_000, 900).unwrap();
        assert_eq!((s, e - s), (start, 10 * DAY));
        let (_, e2) = next_window(Api::Graph, e, NOW, 90_000, 900).unwrap();
        assert_eq!(e2, NOW - 90_000);
        assert_eq!(next_window(Api::Graph, e2, NOW, 90_000, 900), None);
    }

    #[test]
    fn clamp_reports_gap() {
        let (s, lost) = clamp_start(Api::Reporting, NOW - 20 * DAY, NOW, 60);
        assert_eq!(s, NOW - 10 * DAY + 60);
        assert_eq!(lost, 10 * DAY + 60);
        assert_eq!(
            clamp_start(Api::Reporting, NOW - DAY, NOW, 60),
            (NOW - DAY, 0)
        );
    }

    #[test]
    fn leap_day_window_is_plain_seconds() {
        let feb28 = crate::time::parse_date("2028-02-28").unwrap();
        let (s, e) =
            next_window(Api::Reporting, feb28 + DAY - 300, feb28 + 3 * DAY, 0, 900).unwrap();
        assert_eq!(crate::time::ymd(e), "2028-02-29");
        assert_eq!(e - s, 900);
    }

    #[test]
    fn dedup_filters_edges_and_repeats_and_rolls_back() {
        let mut d = Dedup::new(&[7]);
        assert_eq!(d.check(7, Some(100), 1000), Verdict::Filter);
        assert_eq!(d.check(1, Some(100), 1000), Verdict::Send);
        assert_eq!(d.check(1, Some(100), 1000), Verdict::Filter);
        d.confirm();
        assert_eq!(d.check(2, Some(999), 1000), Verdict::Send);
        d.rollback();
        assert_eq!(d.check(2, Some(999), 1000), Verdict::Send);
        assert_eq!(d.check(3, Some(1000), 1000), Verdict::Send);
        let edge = d.finish_window();
        assert_eq!(edge, vec![2, 3]);
        assert_eq!(d.check(3, Some(1000), 1900), Verdict::Filter);
        assert_eq!(d.check(1, Some(1000), 1900), Verdict::Send);
    }

    #[test]
    fn progress_percent() {
        assert_eq!(progress(0, 50, 100, 0), (50, 50));
        assert_eq!(progress(0, 100, 100, 0), (0, 100));
    }
}
