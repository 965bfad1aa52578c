//! The one backoff curve: retries of a failed page request and reconnects to outputs.
//!
//! Owns: the exponential curve (base doubled per attempt, capped) and its optional
//! jitter. Must not: sleep or keep state — callers count attempts and schedule the wait.

use std::time::Duration;

/// The wait before attempt `attempt` (1 = first retry): `base · 2^(attempt−1)`, at most
/// `cap`. Attempt 0 waits `base` too.
pub fn delay(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(cap)
}

/// [`delay`] plus up to 25 % jitter from the clock's nanoseconds, so the retries of
/// many tenants spread out instead of arriving together.
pub fn jittered(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let d = delay(base, attempt, cap);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| u64::from(t.subsec_nanos()));
    let quarter = u64::try_from(d.as_millis().checked_div(4).unwrap_or(0)).unwrap_or(u64::MAX);
    let jitter_ms = nanos.checked_rem(quarter).unwrap_or(0);
    d.saturating_add(Duration::from_millis(jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(300);

    #[test]
    fn grows_and_is_capped() {
        let s = Duration::from_secs;
        assert!(jittered(Duration::ZERO, 3, CAP).is_zero());
        let b1 = jittered(s(5), 1, CAP);
        assert!(b1 >= s(5) && b1 < s(7), "{b1:?}");
        assert!(jittered(s(5), 3, CAP) >= s(20));
        assert!(jittered(s(5), 30, CAP) <= CAP + CAP / 4);
        assert_eq!(delay(s(5), 30, CAP), CAP);
        assert_eq!(
            delay(Duration::from_millis(500), 1, s(30)),
            Duration::from_millis(500)
        );
        assert_eq!(delay(Duration::from_millis(500), 7, s(30)), s(30));
        assert_eq!(delay(Duration::from_millis(500), 6, s(30)), s(16));
    }
}
