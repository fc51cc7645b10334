//! Pacing of what the line reports about itself: reopen backoff and
//! rate-limited error events. Plain state fed with `Instant`s.

use std::time::{Duration, Instant};

/// Exponential backoff between attempts to reopen a lost port.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The wait before the next attempt; each call doubles the following one.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// At most one report per interval; occurrences in between are counted and
/// handed to the next report so none goes unreported.
#[derive(Debug, Clone)]
pub struct ReportLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl ReportLimiter {
    pub fn new(interval: Duration) -> Self {
        ReportLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// An occurrence at `now`: `Some(n)` when it should be reported, with
    /// the `n` occurrences held back since the last report.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        if self.due(now) {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Whether a report of accumulated state may go out now; if so, the
    /// interval starts again.
    pub fn try_report(&mut self, now: Instant) -> bool {
        let due = self.due(now);
        if due {
            self.last = Some(now);
        }
        due
    }

    /// Occurrences held back that are now due for a summary report.
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed > 0 && self.due(now) {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
    }

    #[test]
    fn limiter_reports_first_then_counts_then_summarises() {
        let t0 = Instant::now();
        let mut l = ReportLimiter::new(Duration::from_secs(10));
        assert_eq!(l.hit(t0), Some(0));
        assert_eq!(l.hit(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.hit(t0 + Duration::from_secs(2)), None);
        assert_eq!(l.flush(t0 + Duration::from_secs(5)), None);
        assert_eq!(l.flush(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(l.flush(t0 + Duration::from_secs(30)), None);
        assert_eq!(l.hit(t0 + Duration::from_secs(30)), Some(0));
        assert!(!l.try_report(t0 + Duration::from_secs(31)));
        assert!(l.try_report(t0 + Duration::from_secs(40)));
    }
}
