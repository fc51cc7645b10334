//! Exponential backoff: the one doubling-and-capped delay used wherever
//! something is retried after a failure (an adapter restart, a broker
//! reconnect, a device line that stopped answering).

use std::time::Duration;

/// Delay bounds: the first retry waits `min`, each further one twice as
/// long, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based): doubling, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The delay after `current`: twice it, within the bounds.
    pub fn next(&self, current: Duration) -> Duration {
        current
            .saturating_mul(2)
            .clamp(self.min, self.max.max(self.min))
    }
}

/// `d` spread by ±20% with `unit` in [0, 1), so that many clients retrying
/// the same server do not retry in step.
pub fn jittered(d: Duration, unit: f64) -> Duration {
    d.mul_f64(0.8 + unit.clamp(0.0, 1.0) * 0.4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.next(Duration::ZERO), Duration::from_millis(100));
        assert_eq!(b.next(Duration::from_millis(600)), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let d = Duration::from_secs(10);
        assert_eq!(jittered(d, 0.0), Duration::from_secs(8));
        assert!(jittered(d, 0.999) < Duration::from_secs(12));
        assert_eq!(jittered(d, 5.0), Duration::from_secs(12));
    }
}
