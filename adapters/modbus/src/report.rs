//! Report on change: which readings of a poll cycle are sent north. A
//! number is sent when it moved more than its deadband from the value last
//! *sent* (so slow drift is not lost), anything else when it differs, an
//! error when it is new or different, and everything once `max_interval`
//! has passed since the point was last sent.

use std::time::{Duration, Instant};

use ferrogate_sdk::{PointError, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportPolicy {
    pub on_change: bool,
    pub deadband: f64,
    pub max_interval: Duration,
}

/// What was last sent for each point of a device.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    last: Vec<Option<(Result<Value, PointError>, Instant)>>,
}

impl ChangeFilter {
    pub fn new(points: usize) -> Self {
        ChangeFilter {
            last: vec![None; points],
        }
    }

    /// Whether this reading of `point` is to be sent; records it if so.
    pub fn admit(
        &mut self,
        policy: &ReportPolicy,
        point: usize,
        deadband: Option<f64>,
        reading: &Result<Value, PointError>,
        now: Instant,
    ) -> bool {
        if !policy.on_change {
            return true;
        }
        let Some(slot) = self.last.get_mut(point) else {
            return true;
        };
        let changed = match slot {
            None => true,
            Some((_, at)) if now.saturating_duration_since(*at) >= policy.max_interval => true,
            Some((previous, _)) => differs(previous, reading, deadband.unwrap_or(policy.deadband)),
        };
        if changed {
            *slot = Some((reading.clone(), now));
        }
        changed
    }
}

fn differs(
    previous: &Result<Value, PointError>,
    now: &Result<Value, PointError>,
    deadband: f64,
) -> bool {
    match (previous, now) {
        (Ok(a), Ok(b)) => match (a, b) {
            (Value::String(_) | Value::Bytes(_) | Value::Bool(_), _) => a != b,
            _ => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if deadband > 0.0 => (x - y).abs() > deadband,
                _ => a != b,
            },
        },
        (Err(a), Err(b)) => a != b,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogate_sdk::PointErrorKind;

    fn policy() -> ReportPolicy {
        ReportPolicy {
            on_change: true,
            deadband: 0.5,
            max_interval: Duration::from_secs(10),
        }
    }

    #[test]
    fn deadband_is_measured_from_the_last_sent_value() {
        let mut f = ChangeFilter::new(1);
        let t = Instant::now();
        let p = policy();
        assert!(f.admit(&p, 0, None, &Ok(Value::Float(10.0)), t));
        assert!(!f.admit(&p, 0, None, &Ok(Value::Float(10.3)), t));
        // Drift: 10.3 then 10.6 is 0.6 away from the sent 10.0.
        assert!(f.admit(&p, 0, None, &Ok(Value::Float(10.6)), t));
        assert!(!f.admit(&p, 0, Some(1.0), &Ok(Value::Float(11.5)), t));
        assert!(f.admit(&p, 0, Some(1.0), &Ok(Value::Float(11.7)), t));
    }

    #[test]
    fn max_interval_and_errors_force_a_report() {
        let mut f = ChangeFilter::new(1);
        let t = Instant::now();
        let p = policy();
        assert!(f.admit(&p, 0, None, &Ok(Value::UInt(1)), t));
        assert!(!f.admit(&p, 0, None, &Ok(Value::UInt(1)), t + Duration::from_secs(9)));
        assert!(f.admit(
            &p,
            0,
            None,
            &Ok(Value::UInt(1)),
            t + Duration::from_secs(10)
        ));
        let err = Err(PointError::new(PointErrorKind::Timeout, "no response"));
        assert!(f.admit(&p, 0, None, &err, t + Duration::from_secs(11)));
        assert!(!f.admit(&p, 0, None, &err, t + Duration::from_secs(12)));
        assert!(f.admit(
            &p,
            0,
            None,
            &Ok(Value::UInt(1)),
            t + Duration::from_secs(13)
        ));
    }

    #[test]
    fn without_on_change_everything_is_sent() {
        let mut f = ChangeFilter::new(1);
        let p = ReportPolicy {
            on_change: false,
            ..policy()
        };
        let t = Instant::now();
        assert!(f.admit(&p, 0, None, &Ok(Value::Bool(true)), t));
        assert!(f.admit(&p, 0, None, &Ok(Value::Bool(true)), t));
    }
}
