//! The clock guard (SPEC §3 "Faults that must not stall"): the pull target
//! (now − delay) never advances faster than monotonic time since it was last seen,
//! plus `CLOCK_SLACK_SECS`. A wall clock that jumps forward (+50 min for 15 s lost
//! 93 of 15,842 records: windows were read before their records were visible) then
//! only makes the collector lag, never read ahead.
//!
//! Owns: the rule (`guarded_target`, pure) and the per-tenant anchor (`ClockGuard`).
//! Must not: read the wall clock or log — the caller passes `now`/`Instant` and logs
//! the jump it is told about (once).

use std::time::{Duration, Instant};

/// How far the target may run ahead of monotonic time since the anchor: rounding of
/// whole seconds and NTP slewing stay below it; a jump does not.
pub const CLOCK_SLACK_SECS: i64 = 5;

/// The target allowed now: `target`, unless it is further ahead of `last_target` than
/// `elapsed` (monotonic) plus the slack; then that bound. Returns (target to use,
/// seconds the wall clock is ahead of the bound — 0 when it is not).
pub fn guarded_target(target: i64, last_target: Option<i64>, elapsed: Duration) -> (i64, i64) {
    let Some(last) = last_target else {
        return (target, 0);
    };
    let elapsed = i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX);
    let bound = last
        .saturating_add(elapsed)
        .saturating_add(CLOCK_SLACK_SECS);
    if target > bound {
        (bound, target.saturating_sub(bound))
    } else {
        (target, 0)
    }
}

/// One tenant's anchor: the target and the monotonic instant it was last taken at
/// while the wall clock was trusted. After a jump the anchor stays where it was, so
/// the slack is never added twice and the target follows monotonic time from then on.
#[derive(Debug, Default)]
pub struct ClockGuard {
    anchor: Option<(i64, Instant)>,
    reported: bool,
}

impl ClockGuard {
    /// The target to use for `target` seen at `at`, and `Some(seconds ahead)` the first
    /// time a jump is seen (to be logged once).
    pub fn target(&mut self, target: i64, at: Instant) -> (i64, Option<i64>) {
        let (last, elapsed) = match self.anchor {
            Some((t, i)) => (Some(t), at.saturating_duration_since(i)),
            None => (None, Duration::ZERO),
        };
        let (use_target, ahead) = guarded_target(target, last, elapsed);
        if ahead == 0 {
            self.anchor = Some((target, at));
            return (use_target, None);
        }
        let first = !self.reported;
        self.reported = true;
        (use_target, first.then_some(ahead))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_follows_the_wall_clock_while_it_agrees_with_monotonic_time() {
        assert_eq!(guarded_target(1000, None, Duration::ZERO), (1000, 0));
        assert_eq!(
            guarded_target(1015, Some(1000), Duration::from_secs(15)),
            (1015, 0)
        );
        assert_eq!(
            guarded_target(1020, Some(1000), Duration::from_secs(15)),
            (1020, 0)
        );
        // Backwards is never held up.
        assert_eq!(
            guarded_target(900, Some(1000), Duration::from_secs(15)),
            (900, 0)
        );
    }

    #[test]
    fn a_jump_forward_is_held_to_monotonic_time_plus_slack() {
        // +50 min in 15 s: the target moves 15 s + slack, not 50 min.
        let (t, ahead) = guarded_target(1000 + 3000 + 15, Some(1000), Duration::from_secs(15));
        assert_eq!(t, 1000 + 15 + CLOCK_SLACK_SECS);
        assert_eq!(ahead, 3000 - CLOCK_SLACK_SECS);
    }

    #[test]
    fn the_guard_reports_a_jump_once_and_keeps_following_monotonic_time() {
        let t0 = Instant::now();
        let mut g = ClockGuard::default();
        assert_eq!(g.target(1000, t0), (1000, None));
        assert_eq!(g.target(1010, t0 + Duration::from_secs(10)), (1010, None));
        let (t, jump) = g.target(1010 + 3000 + 5, t0 + Duration::from_secs(15));
        assert_eq!(t, 1015 + CLOCK_SLACK_SECS);
        assert_eq!(jump, Some(3000 - CLOCK_SLACK_SECS));
        // Later: still bounded by the anchor before the jump, not reported again, and
        // the slack is not added twice.
        let (t, jump) = g.target(1010 + 3000 + 65, t0 + Duration::from_secs(75));
        assert_eq!((t, jump), (1075 + CLOCK_SLACK_SECS, None));
    }
}
