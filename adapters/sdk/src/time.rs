//! Deadlines from durations that came from configuration or the network.
//! `Instant + Duration` panics when the sum leaves the clock's range, and
//! the release build aborts on panic: one datagram announcing a lifetime
//! near `u64::MAX` seconds would stop the gateway. A deadline that far is
//! "never"; [`saturating_add`] says so without panicking.

use std::time::{Duration, Instant};

/// About a century: what "never" means for a deadline.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `at + d`, or as far as the clock goes (at most about a century ahead)
/// when that sum overflows.
pub fn saturating_add(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(NEVER))
        .unwrap_or(at)
}

/// A duration from seconds written as a float (a rate's reciprocal, a
/// scaled timeout): negative and NaN give zero, too large gives
/// `Duration::MAX`, instead of panicking as `Duration::from_secs_f64` does.
pub fn duration_from_secs_f64(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_deadlines_are_far_not_a_panic() {
        let now = Instant::now();
        let far = saturating_add(now, Duration::from_secs(u64::MAX));
        assert!(far >= now + Duration::from_secs(365 * 24 * 3600));
        let near = saturating_add(now, Duration::from_secs(5));
        assert_eq!(near, now + Duration::from_secs(5));
    }

    #[test]
    fn float_seconds_never_panic() {
        assert_eq!(duration_from_secs_f64(1.0 / 1e-300), Duration::MAX);
        assert_eq!(duration_from_secs_f64(f64::INFINITY), Duration::MAX);
        assert_eq!(duration_from_secs_f64(f64::NAN), Duration::ZERO);
        assert_eq!(duration_from_secs_f64(-1.0), Duration::ZERO);
        assert_eq!(duration_from_secs_f64(0.5), Duration::from_millis(500));
    }
}
