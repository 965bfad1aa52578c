//! Windows, delays, cutoff and window sizing: (cursor, settings, now) -> next query.
//!
//! Owns: where the first pull starts, the two passes' targets, how long each window is
//! (the API's rule, capped by the length sized from the record count of recent
//! windows), when a pass is up to date, clamping a cursor older than the API allows,
//! and the span of ledger entries a window's dedup set covers. Must not: read a clock
//! or do IO — `now` is always an argument, so every rule here is unit-tested with fixed
//! instants; dedup itself is the delivery ledger's (`ledger.rs`). What differs per API
//! (maximum age, window length) is asked of `source::Api`.

use crate::source::Api;
use crate::time::DAY;
/// A window's dedup set holds the ledger entries received within this many seconds
/// around it: Graph bounds are inclusive (a record exactly on the boundary comes back
/// in both windows) and the Reporting Web Service rounds fractional seconds.
pub const EDGE_SECS: i64 = 1;
/// A window that held more records than this makes the next one shorter: one window's
/// dedup set (two 64-bit hashes an entry, ~40 bytes with the table's slack) then stays
/// near 4 MiB, within SPEC §9's 8 MiB for a 1M-records/day tenant, whatever the
/// window's length in time.
pub const MAX_WINDOW_RECORDS: u64 = 100_000;
/// A window that held fewer than this many records lets the next one double (up to
/// the API's rule): quiet hours do not cost a request per small window.
pub const FEW_WINDOW_RECORDS: u64 = MAX_WINDOW_RECORDS / 4;
/// Shortest window sizing ever asks for: a burst (120,000 recipients of one message
/// in one second) cannot be split by time, it pages on within one window.
pub const MIN_WINDOW_SECS: u64 = 60;

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

/// The next window `[start, end)` from `start` towards `target`, or `None` when up to
/// date; its length is the API's rule (`Api::window_len`) applied to `window_secs`,
/// capped by `sized_secs` (the record-count sizing; 0 = not sized yet: the configured
/// length, so catch-up windows grow from it) and never past `stop`
/// (the first pass stops its catch-up windows at the settle target, so the windows
/// read settled are exactly those the settle pass rides along).
pub fn next_window(
    api: Api,
    start: i64,
    target: i64,
    window_secs: u64,
    sized_secs: u64,
    stop: i64,
) -> Option<(i64, i64)> {
    if start >= target {
        return None;
    }
    let configured = i64::try_from(window_secs).unwrap_or(i64::MAX).max(1);
    // Before any window was sized by its records (`sized_secs == 0`), start at the
    // configured length and let `resize` double it while windows hold few records: a
    // first 10-day Graph window of a 1M-records/day tenant would hold 10 M records, be
    // cut back page by page, and have its already delivered tail read again.
    let sized = if sized_secs == 0 {
        configured
    } else {
        i64::try_from(sized_secs).unwrap_or(i64::MAX).max(1)
    };
    let len = api
        .window_len(configured, target.saturating_sub(start))
        .min(sized);
    let mut end = start.saturating_add(len).min(target);
    if start < stop && stop < end {
        end = stop;
    }
    Some((start, end))
}

/// The window length after a window `[.., ..)` of `len` seconds held `records`
/// records: shrink in proportion past [`MAX_WINDOW_RECORDS`] (to half the bound, so the
/// next window has room), double below [`FEW_WINDOW_RECORDS`] up to `api_max`.
/// Never 0: 0 in the cursor means "not sized yet" (the configured length).
pub fn resize(len: i64, records: u64, api_max: i64) -> u64 {
    let len = u64::try_from(len).unwrap_or(0).max(1);
    let api_max = u64::try_from(api_max).unwrap_or(u64::MAX).max(1);
    if records > MAX_WINDOW_RECORDS {
        let scaled = u128::from(len)
            .saturating_mul(u128::from(MAX_WINDOW_RECORDS / 2))
            .checked_div(u128::from(records))
            .unwrap_or(0);
        return u64::try_from(scaled)
            .unwrap_or(u64::MAX)
            .clamp(MIN_WINDOW_SECS, api_max.max(MIN_WINDOW_SECS));
    }
    if records < FEW_WINDOW_RECORDS {
        return len.saturating_mul(2).min(api_max);
    }
    len
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
        while let Some((s, e)) =
            next_window(Api::Reporting, start, target(NOW, delay), 900, 0, i64::MIN)
        {
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
        let t = target(NOW, 90_000);
        let ten_days = 10 * DAY;
        // Not sized yet: the configured length, then doubling while windows hold few
        // records, up to Graph's 10 days.
        let (s, e) = next_window(Api::Graph, start, t, 900, 0, t).unwrap();
        assert_eq!((s, e - s), (start, 900));
        let (mut at, mut len, mut n) = (e, resize(900, 10, ten_days), 1);
        while let Some((s, e)) = next_window(Api::Graph, at, t, 900, len, t) {
            assert_eq!(s, at);
            len = resize(e - s, 10, ten_days);
            at = e;
            n += 1;
        }
        assert_eq!(at, t);
        // 12 days less the delay in 11 windows: a backfill costs a handful of requests.
        assert_eq!(n, 11);
        assert_eq!(
            next_window(Api::Graph, at, t, 900, ten_days as u64, t),
            None
        );
        let (_, e) = next_window(Api::Graph, start, t, 900, ten_days as u64, t).unwrap();
        assert_eq!(e - start, ten_days);
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
        let (s, e) = next_window(
            Api::Reporting,
            feb28 + DAY - 300,
            feb28 + 3 * DAY,
            900,
            0,
            i64::MIN,
        )
        .unwrap();
        assert_eq!(crate::time::ymd(e), "2028-02-29");
        assert_eq!(e - s, 900);
    }

    #[test]
    fn windows_shrink_past_the_record_bound_and_grow_back() {
        let ten_days = 10 * DAY;
        // 8 h holding 333,333 records (1M a day): the next one holds ~50,000.
        let shrunk = resize(8 * 3600, 333_333, ten_days);
        assert_eq!(shrunk, 4320);
        assert_eq!(resize(4320, 50_000, ten_days), 4320);
        assert_eq!(resize(4320, 1_000, ten_days), 8640);
        assert_eq!(resize(6 * DAY, 10, ten_days), 10 * DAY as u64);
        // A burst in one second cannot shrink a window below the floor.
        assert_eq!(resize(60, 120_000, ten_days), MIN_WINDOW_SECS);
        let start = NOW - 9 * DAY;
        let (_, e) = next_window(Api::Graph, start, NOW, 900, shrunk, NOW).unwrap();
        assert_eq!(e - start, 4320);
        let (_, e) = next_window(Api::Graph, start, NOW, 900, 0, NOW).unwrap();
        assert_eq!(e - start, 900);
        let (_, e) = next_window(Api::Graph, start, NOW, 900, 10 * DAY as u64, NOW).unwrap();
        assert_eq!(e, NOW);
    }

    #[test]
    fn catch_up_windows_stop_at_the_settle_target() {
        let stop = NOW - 90_000;
        let start = NOW - 3 * DAY;
        let (_, e) = next_window(Api::Graph, start, NOW - 900, 900, 3 * DAY as u64, stop).unwrap();
        assert_eq!(e, stop);
        let (s, e) = next_window(Api::Graph, stop, NOW - 900, 900, 3 * DAY as u64, stop).unwrap();
        assert_eq!((s, e), (stop, NOW - 900));
    }

    #[test]
    fn progress_percent() {
        assert_eq!(progress(0, 50, 100, 0), (50, 50));
        assert_eq!(progress(0, 100, 100, 0), (0, 100));
    }
}
