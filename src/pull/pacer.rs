//! Graph's request budget, paced by the collector itself (SPEC §3): at most the
//! configured number of requests in any sliding 5 minutes, retried requests included.
//! Must not: sleep (the scheduler waits) or learn the budget from 429s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Graph's request budget is counted over this sliding span.
pub const PACER_SPAN: Duration = Duration::from_secs(300);

/// The pacer's span: [`PACER_SPAN`], or `MSGTRACE_PACER_SPAN_SECS` seconds (documented
/// for tests, which pair it with an emulator counting over the same short span).
pub fn pacer_span() -> Duration {
    static SPAN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPAN.get_or_init(|| {
        std::env::var("MSGTRACE_PACER_SPAN_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(PACER_SPAN, Duration::from_secs)
    })
}

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
            budget: usize::try_from(budget).unwrap_or(usize::MAX).max(1),
            sent: VecDeque::new(),
        }
    }

    /// How long to wait before the next request may go out (zero when it may now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= pacer_span())
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.budget {
            return Duration::ZERO;
        }
        self.sent.front().map_or(Duration::ZERO, |t| {
            t.checked_add(pacer_span())
                .map_or(Duration::ZERO, |due| due.saturating_duration_since(now))
        })
    }

    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
    }

    /// Requests still allowed in the current span (as of the last `wait`).
    pub fn remaining(&self) -> usize {
        self.budget.saturating_sub(self.sent.len())
    }
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
}
