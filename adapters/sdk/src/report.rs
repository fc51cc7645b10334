//! Report by exception for one device: which readings of each point are
//! published north, and when the device must be looked at again.
//!
//! Sans-IO: [`Reporter::offer`] takes a poll's (or a notification's)
//! readings and `now` and returns those to publish now;
//! [`Reporter::next_wake`] says when a held value or a heartbeat falls
//! due, and [`Reporter::wake`] hands those out. Per point:
//! - a number is published when it moved more than its [`Deadband`] from
//!   the value last *published* (so slow drift is not lost); booleans,
//!   strings and bytes on any change;
//! - a change of quality (value ↔ error, one error ↔ another) is
//!   published at once, whatever the intervals say;
//! - `min_interval`: at most one publish per interval, the latest value
//!   wins (it is published when the interval ends);
//! - `max_interval`: a heartbeat, the latest value is published again when
//!   nothing was published for this long, so "unchanged" can be told from
//!   "dead".
//!
//! A suppressed value is not a loss: the next published value (or the
//! heartbeat) says the same within the deadband, and `seq` still counts
//! messages, not readings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{PointError, Reading, Value};
use crate::time::saturating_add;
use crate::transform::Transform;

/// How far a number must move from the last published value to be
/// published again. The edge itself is not a change: a move of exactly
/// the deadband is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Deadband {
    /// Any change.
    #[default]
    Any,
    /// More than this many units.
    Absolute(f64),
    /// More than this percentage of the last published value's magnitude.
    /// Of zero that is zero: any change from zero is published.
    Percent(f64),
    /// More than this percentage of a configured span (the measuring
    /// range, `high - low`), the same wherever the value is.
    PercentOfSpan { percent: f64, span: f64 },
}

impl Deadband {
    /// The absolute move that `from` must exceed.
    fn around(self, from: f64) -> f64 {
        match self {
            Deadband::Any => 0.0,
            Deadband::Absolute(d) => d,
            Deadband::Percent(p) => from.abs() * p / 100.0,
            Deadband::PercentOfSpan { percent, span } => span.abs() * percent / 100.0,
        }
    }
}

/// The deadband written in a configuration: `deadband` (absolute) or
/// `deadband_percent` (of the last published value, or of `span` when
/// that is given), checked. An error names the key at fault and why.
pub fn deadband_from(
    absolute: Option<f64>,
    percent: Option<f64>,
    span: Option<f64>,
) -> Result<Option<Deadband>, (&'static str, String)> {
    let non_negative = |key: &'static str, v: f64| {
        if v >= 0.0 && v.is_finite() {
            Ok(v)
        } else {
            Err((key, format!("`{key}` must be zero or more")))
        }
    };
    match (absolute, percent, span) {
        (Some(_), Some(_), _) => Err((
            "deadband_percent",
            "set `deadband` (absolute) or `deadband_percent`, not both".into(),
        )),
        (Some(_), None, Some(_)) | (None, None, Some(_)) => Err((
            "span",
            "`span` is what `deadband_percent` is a percentage of: set `deadband_percent` too"
                .into(),
        )),
        (Some(d), None, None) => Ok(Some(Deadband::Absolute(non_negative("deadband", d)?))),
        (None, Some(p), None) => Ok(Some(Deadband::Percent(non_negative(
            "deadband_percent",
            p,
        )?))),
        (None, Some(p), Some(s)) => {
            let percent = non_negative("deadband_percent", p)?;
            if !(s > 0.0 && s.is_finite()) {
                return Err(("span", "`span` must be more than zero".into()));
            }
            Ok(Some(Deadband::PercentOfSpan { percent, span: s }))
        }
        (None, None, None) => Ok(None),
    }
}

/// The heartbeat of a device with `report_on_change` and no `max_interval`.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The report keys as an integrator writes them, on a device or a point
/// (`deadband`, `deadband_percent`, `span`, `min_interval`,
/// `max_interval`); every adapter's configuration and the gateway's
/// `[[report]]` table check them here, the same way.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReportKeys {
    pub deadband: Option<f64>,
    pub deadband_percent: Option<f64>,
    pub span: Option<f64>,
    pub min_interval: Option<Duration>,
    pub max_interval: Option<Duration>,
}

impl ReportKeys {
    /// Checked, as one point's overrides. Errors name the key and why.
    pub fn point(&self) -> Result<PointReport, Vec<(&'static str, String)>> {
        let mut errors = self.interval_errors();
        let deadband = deadband_from(self.deadband, self.deadband_percent, self.span)
            .unwrap_or_else(|e| {
                errors.push(e);
                None
            });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(PointReport {
            deadband,
            min_interval: self.min_interval,
            max_interval: self.max_interval,
        })
    }

    /// Checked, as a device's policy: `on_change` turns the deadband and
    /// the heartbeat ([`DEFAULT_MAX_INTERVAL`] unless set) on;
    /// `min_interval` applies either way.
    pub fn device(&self, on_change: bool) -> Result<ReportPolicy, Vec<(&'static str, String)>> {
        let point = self.point()?;
        Ok(ReportPolicy {
            on_change,
            deadband: point.deadband.unwrap_or_default(),
            min_interval: point.min_interval.unwrap_or_default(),
            max_interval: on_change.then(|| point.max_interval.unwrap_or(DEFAULT_MAX_INTERVAL)),
        })
    }

    fn interval_errors(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if self.max_interval.is_some_and(|d| d.is_zero()) {
            errors.push((
                "max_interval",
                "`max_interval` must be more than zero".into(),
            ));
        }
        if let (Some(lo), Some(hi)) = (self.min_interval, self.max_interval)
            && lo > hi
        {
            errors.push((
                "min_interval",
                "`min_interval` is longer than `max_interval`: the heartbeat could never be kept"
                    .into(),
            ));
        }
        errors
    }
}

/// When one point's readings are published. The default publishes every
/// reading, as if there were no stage.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReportPolicy {
    /// Publish only changes (beyond `deadband`); otherwise every reading.
    pub on_change: bool,
    pub deadband: Deadband,
    /// At most one publish per this interval; zero for no limit.
    pub min_interval: Duration,
    /// Publish the latest value again after this long without a publish.
    pub max_interval: Option<Duration>,
}

impl ReportPolicy {
    /// Whether the policy can hold back or add anything.
    pub fn is_passthrough(&self) -> bool {
        !self.on_change && self.min_interval.is_zero() && self.max_interval.is_none()
    }
}

/// One point's settings on top of its device's (unset: the device's).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PointReport {
    pub deadband: Option<Deadband>,
    pub min_interval: Option<Duration>,
    pub max_interval: Option<Duration>,
}

/// A device's reporting: its policy, the points that differ from it, and
/// the points whose values are transformed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DevicePolicy {
    pub report: ReportPolicy,
    pub points: BTreeMap<String, PointReport>,
    pub transforms: BTreeMap<String, Transform>,
}

impl DevicePolicy {
    /// The policy of the point called `name`.
    pub fn point(&self, name: &str) -> ReportPolicy {
        let base = self.report;
        match self.points.get(name) {
            None => base,
            Some(p) => ReportPolicy {
                on_change: base.on_change,
                deadband: p.deadband.unwrap_or(base.deadband),
                min_interval: p.min_interval.unwrap_or(base.min_interval),
                max_interval: p.max_interval.or(base.max_interval),
            },
        }
    }

    /// Whether no point of the device can be held back or repeated.
    pub fn reports_everything(&self) -> bool {
        self.report.is_passthrough()
            && self
                .points
                .keys()
                .all(|name| self.point(name).is_passthrough())
    }

    /// Whether the stage has nothing to do for the device.
    pub fn is_passthrough(&self) -> bool {
        self.reports_everything() && self.transforms.values().all(Transform::is_identity)
    }
}

/// What is known of one point.
#[derive(Debug)]
struct PointState {
    policy: ReportPolicy,
    /// The value last published and when.
    published: Result<Value, PointError>,
    published_at: Instant,
    /// The latest reading offered: what a held publish or a heartbeat sends.
    latest: Reading,
    /// `latest` is a change waiting for `min_interval` to end.
    held: bool,
}

impl PointState {
    fn publish(&mut self, reading: Reading, now: Instant) -> Reading {
        self.published = reading.value.clone();
        self.published_at = now;
        self.latest = reading.clone();
        self.held = false;
        reading
    }

    fn due(&self) -> Option<Instant> {
        let held = self
            .held
            .then(|| saturating_add(self.published_at, self.policy.min_interval));
        let heartbeat = self
            .policy
            .max_interval
            .map(|d| saturating_add(self.published_at, d));
        held.into_iter().chain(heartbeat).min()
    }
}

/// Report by exception for the points of one device.
#[derive(Debug)]
pub struct Reporter {
    policy: DevicePolicy,
    points: Vec<PointState>,
    /// Point name → index into `points`.
    index: BTreeMap<Arc<str>, usize>,
}

impl Reporter {
    pub fn new(policy: DevicePolicy) -> Self {
        Reporter {
            policy,
            points: Vec::new(),
            index: BTreeMap::new(),
        }
    }

    /// The readings of `readings` to publish now, in their order.
    pub fn offer(&mut self, readings: Vec<Reading>, now: Instant) -> Vec<Reading> {
        let mut out = Vec::with_capacity(readings.len());
        for (k, reading) in readings.into_iter().enumerate() {
            // Polls usually list the points in the same order every time.
            let hinted = self
                .points
                .get(k)
                .is_some_and(|p| Arc::ptr_eq(&p.latest.point, &reading.point));
            let slot = if hinted {
                Some(k)
            } else {
                self.index.get(&reading.point).copied()
            };
            let Some(i) = slot else {
                self.index.insert(reading.point.clone(), self.points.len());
                self.points.push(PointState {
                    policy: self.policy.point(&reading.point),
                    published: reading.value.clone(),
                    published_at: now,
                    latest: reading.clone(),
                    held: false,
                });
                out.push(reading);
                continue;
            };
            let state = &mut self.points[i];
            let policy = state.policy;
            let quality_changed = match (&state.published, &reading.value) {
                (Ok(_), Ok(_)) => false,
                (Err(a), Err(b)) => a != b,
                _ => true,
            };
            let since = now.saturating_duration_since(state.published_at);
            if quality_changed {
                out.push(state.publish(reading, now));
            } else if !policy.on_change || differs(&state.published, &reading.value, policy) {
                if since >= policy.min_interval {
                    out.push(state.publish(reading, now));
                } else {
                    state.latest = reading;
                    state.held = true;
                }
            } else if policy.max_interval.is_some_and(|d| since >= d) {
                out.push(state.publish(reading, now));
            } else {
                state.latest = reading;
                state.held = false;
            }
        }
        out
    }

    /// When [`Reporter::wake`] has something to publish: the end of a
    /// held value's `min_interval`, or a heartbeat.
    pub fn next_wake(&self) -> Option<Instant> {
        self.points.iter().filter_map(PointState::due).min()
    }

    /// Every value held for `min_interval`, published now (the gateway
    /// stops: what was read is not kept back).
    pub fn flush(&mut self, now: Instant) -> Vec<Reading> {
        let mut out = Vec::new();
        for state in self.points.iter_mut().filter(|s| s.held) {
            let latest = state.latest.clone();
            out.push(state.publish(latest, now));
        }
        out
    }

    /// The held values and heartbeats due at `now`.
    pub fn wake(&mut self, now: Instant) -> Vec<Reading> {
        let mut out = Vec::new();
        for state in &mut self.points {
            if state.due().is_some_and(|at| at <= now) {
                let latest = state.latest.clone();
                out.push(state.publish(latest, now));
            }
        }
        out
    }
}

/// Whether `now` is a change from `published` under `policy`'s deadband.
fn differs(
    published: &Result<Value, PointError>,
    now: &Result<Value, PointError>,
    policy: ReportPolicy,
) -> bool {
    let (Ok(a), Ok(b)) = (published, now) else {
        return published != now;
    };
    match (a, b) {
        (Value::Bool(_) | Value::String(_) | Value::Bytes(_), _)
        | (_, Value::Bool(_) | Value::String(_) | Value::Bytes(_)) => a != b,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                let band = policy.deadband.around(x);
                if band > 0.0 {
                    (x - y).abs() > band
                } else {
                    x != y
                }
            }
            // NaN, infinities: published on any change of representation.
            _ => !same_number(a, b),
        },
    }
}

fn same_number(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PointErrorKind, Timestamp};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// One point called `level`, its readings fed one at a time.
    struct Point {
        reporter: Reporter,
        name: Arc<str>,
        t0: Instant,
    }

    impl Point {
        fn new(report: ReportPolicy) -> Self {
            Point {
                reporter: Reporter::new(DevicePolicy {
                    report,
                    ..DevicePolicy::default()
                }),
                name: Arc::from("level"),
                t0: Instant::now(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// Offer `value` at `ms`; the value published, if any.
        fn offer(&mut self, ms: u64, value: Result<Value, PointError>) -> Option<Value> {
            let reading = Reading {
                point: self.name.clone(),
                value,
                ts: Timestamp(ms),
            };
            let now = self.at(ms);
            let mut out = self.reporter.offer(vec![reading], now);
            assert!(out.len() <= 1);
            out.pop()
                .map(|r| r.value.unwrap_or(Value::String("error".into())))
        }

        fn float(&mut self, ms: u64, x: f64) -> Option<Value> {
            self.offer(ms, Ok(Value::Float(x)))
        }

        fn wake_at(&self) -> Option<u64> {
            self.reporter
                .next_wake()
                .map(|at| at.duration_since(self.t0).as_millis() as u64)
        }

        fn wake(&mut self, ms: u64) -> Vec<Value> {
            let now = self.at(ms);
            self.reporter
                .wake(now)
                .into_iter()
                .map(|r| r.value.unwrap_or(Value::String("error".into())))
                .collect()
        }
    }

    fn on_change(deadband: Deadband) -> ReportPolicy {
        ReportPolicy {
            on_change: true,
            deadband,
            ..ReportPolicy::default()
        }
    }

    /// A small deterministic generator (xorshift), so the sequences are
    /// the same on every run.
    struct Seeded(u64);

    impl Seeded {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn the_deadband_edge_is_not_a_change() {
        let mut p = Point::new(on_change(Deadband::Absolute(0.5)));
        assert_eq!(p.float(0, 10.0), Some(Value::Float(10.0)));
        assert_eq!(p.float(1, 10.5), None, "exactly the deadband");
        assert_eq!(p.float(2, 9.5), None, "exactly the deadband, downwards");
        assert_eq!(p.float(3, 10.500001), Some(Value::Float(10.500001)));
        // Measured from the value last published (10.500001), not the last read.
        assert_eq!(p.float(4, 10.2), None);
        assert_eq!(p.float(5, 10.1), None);
        assert_eq!(p.float(6, 9.9), Some(Value::Float(9.9)));
    }

    #[test]
    fn slow_drift_is_published_once_it_adds_up() {
        let mut p = Point::new(on_change(Deadband::Absolute(1.0)));
        let mut published = vec![p.float(0, 0.0).unwrap()];
        for step in 1..=30u64 {
            published.extend(p.float(step, step as f64 * 0.3));
        }
        // 0.3 a step: past 1.0 from the last publish every fourth step.
        let expected: Vec<Value> = [0.0, 1.2, 2.4, 3.6, 4.8, 6.0, 7.2, 8.4]
            .iter()
            .map(|&x| Value::Float(x))
            .collect();
        let got: Vec<f64> = published.iter().filter_map(Value::as_f64).collect();
        let want: Vec<f64> = expected.iter().filter_map(Value::as_f64).collect();
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
    }

    #[test]
    fn a_percent_deadband_of_zero_publishes_any_change() {
        let mut p = Point::new(on_change(Deadband::Percent(10.0)));
        assert_eq!(p.offer(0, Ok(Value::Int(0))), Some(Value::Int(0)));
        assert_eq!(p.offer(1, Ok(Value::Int(0))), None);
        assert_eq!(p.offer(2, Ok(Value::Int(1))), Some(Value::Int(1)));
        // 10 % of 1 is 0.1: 1 → 1 is no change, 1 → 2 is.
        assert_eq!(p.offer(3, Ok(Value::Int(1))), None);
        assert_eq!(p.offer(4, Ok(Value::Int(2))), Some(Value::Int(2)));
        // 10 % of 200 is 20: 215 is inside, 221 outside; negative values
        // measure from their magnitude.
        assert_eq!(p.offer(5, Ok(Value::Int(200))), Some(Value::Int(200)));
        assert_eq!(p.offer(6, Ok(Value::Int(220))), None);
        assert_eq!(p.offer(7, Ok(Value::Int(221))), Some(Value::Int(221)));
        assert_eq!(p.offer(8, Ok(Value::Int(-100))), Some(Value::Int(-100)));
        assert_eq!(p.offer(9, Ok(Value::Int(-109))), None);
        assert_eq!(p.offer(10, Ok(Value::Int(-111))), Some(Value::Int(-111)));
    }

    #[test]
    fn a_percent_of_span_is_the_same_everywhere() {
        let mut p = Point::new(on_change(Deadband::PercentOfSpan {
            percent: 1.0,
            span: 500.0,
        }));
        assert!(p.float(0, 0.0).is_some());
        assert_eq!(p.float(1, 5.0), None, "1 % of 500 is 5: the edge");
        assert!(p.float(2, 5.1).is_some());
        assert!(p.float(3, 400.0).is_some());
        assert_eq!(p.float(4, 404.9), None);
    }

    #[test]
    fn heartbeats_come_every_max_interval_after_the_last_publish() {
        let mut p = Point::new(ReportPolicy {
            max_interval: Some(secs(10)),
            ..on_change(Deadband::Absolute(1.0))
        });
        assert!(p.float(0, 20.0).is_some());
        assert_eq!(p.wake_at(), Some(10_000));
        assert!(p.wake(9_999).is_empty());
        assert_eq!(p.float(4_000, 20.4), None);
        // The heartbeat repeats the latest value read, not the published one.
        assert_eq!(p.wake(10_000), vec![Value::Float(20.4)]);
        assert_eq!(p.wake_at(), Some(20_000));
        // A change publishes and moves the next heartbeat.
        assert!(p.float(15_000, 30.0).is_some());
        assert_eq!(p.wake_at(), Some(25_000));
        // A poll arriving after the heartbeat was due publishes itself.
        assert_eq!(p.float(25_500, 30.1), Some(Value::Float(30.1)));
        assert_eq!(p.wake_at(), Some(35_500));
    }

    #[test]
    fn min_interval_keeps_the_latest_value() {
        let mut p = Point::new(ReportPolicy {
            min_interval: secs(5),
            ..on_change(Deadband::Any)
        });
        assert!(p.float(0, 1.0).is_some());
        assert_eq!(p.float(1_000, 2.0), None);
        assert_eq!(p.float(2_000, 3.0), None);
        assert_eq!(p.wake_at(), Some(5_000));
        assert_eq!(p.wake(5_000), vec![Value::Float(3.0)]);
        assert_eq!(p.wake_at(), None);
        // Back to the published value before the interval ended: nothing
        // is held any more.
        assert_eq!(p.float(6_000, 4.0), None);
        assert_eq!(p.float(7_000, 3.0), None);
        assert_eq!(p.wake_at(), None);
        assert!(p.wake(10_000).is_empty());
        // After the interval a change is published at once.
        assert_eq!(p.float(10_001, 5.0), Some(Value::Float(5.0)));
    }

    #[test]
    fn a_flush_publishes_what_is_held_and_nothing_else() {
        let mut p = Point::new(ReportPolicy {
            min_interval: secs(60),
            max_interval: Some(secs(600)),
            ..on_change(Deadband::Any)
        });
        assert!(p.float(0, 1.0).is_some());
        assert!(p.reporter.flush(p.at(1)).is_empty(), "nothing held");
        assert_eq!(p.float(2, 2.0), None);
        let flushed = p.reporter.flush(p.at(3));
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].value, Ok(Value::Float(2.0)));
        assert!(p.reporter.flush(p.at(4)).is_empty());
    }

    #[test]
    fn min_interval_without_on_change_rate_limits_every_reading() {
        let mut p = Point::new(ReportPolicy {
            min_interval: secs(1),
            ..ReportPolicy::default()
        });
        let published: usize = (0..100u64)
            .filter(|ms| p.float(ms * 100, 7.0).is_some())
            .count();
        // One every second of the ten, the same value included.
        assert_eq!(published, 10);
    }

    #[test]
    fn quality_changes_are_published_at_once() {
        let mut p = Point::new(ReportPolicy {
            min_interval: secs(60),
            max_interval: Some(secs(600)),
            ..on_change(Deadband::Absolute(100.0))
        });
        let timeout = || Err(PointError::new(PointErrorKind::Timeout, "no response"));
        let exception = || {
            Err(PointError::new(
                PointErrorKind::DeviceException,
                "exception 2",
            ))
        };
        assert!(p.float(0, 1.0).is_some());
        assert!(p.offer(1, timeout()).is_some(), "value → error");
        assert!(p.offer(2, timeout()).is_none(), "the same error again");
        assert!(p.offer(3, exception()).is_some(), "error → another error");
        assert!(p.float(4, 1.0).is_some(), "error → value, inside the band");
        assert!(p.float(5, 1.0).is_none());
    }

    #[test]
    fn booleans_and_strings_publish_on_any_change() {
        let mut p = Point::new(on_change(Deadband::Absolute(10.0)));
        assert!(p.offer(0, Ok(Value::Bool(false))).is_some());
        assert!(p.offer(1, Ok(Value::Bool(false))).is_none());
        assert!(p.offer(2, Ok(Value::Bool(true))).is_some());
        assert!(p.offer(3, Ok(Value::String("a".into()))).is_some());
        assert!(p.offer(4, Ok(Value::String("a".into()))).is_none());
        assert!(p.offer(5, Ok(Value::String("b".into()))).is_some());
    }

    #[test]
    fn without_a_policy_every_reading_is_published() {
        let mut p = Point::new(ReportPolicy::default());
        assert!(p.float(0, 1.0).is_some());
        assert!(p.float(0, 1.0).is_some());
        assert_eq!(p.wake_at(), None);
    }

    #[test]
    fn points_keep_their_own_settings() {
        let mut reporter = Reporter::new(DevicePolicy {
            report: on_change(Deadband::Absolute(5.0)),
            transforms: BTreeMap::new(),
            points: [(
                "mode".to_string(),
                PointReport {
                    deadband: Some(Deadband::Any),
                    ..PointReport::default()
                },
            )]
            .into(),
        });
        let level: Arc<str> = Arc::from("level");
        let mode: Arc<str> = Arc::from("mode");
        let t = Instant::now();
        let poll = |l: i64, m: u64| {
            vec![
                Reading::ok(level.clone(), Value::Int(l), Timestamp(0)),
                Reading::ok(mode.clone(), Value::UInt(m), Timestamp(0)),
            ]
        };
        assert_eq!(reporter.offer(poll(100, 7), t).len(), 2);
        let out = reporter.offer(poll(103, 8), t);
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].point, "mode");
        // A reading with a fresh name allocation finds its point too.
        let out = reporter.offer(vec![Reading::ok("level", Value::Int(106), Timestamp(0))], t);
        assert_eq!(out.len(), 1);
    }

    /// Seeded random walks with dropouts, woken when the reporter asks:
    /// a quality change is published at once; any other publish is at
    /// least `min_interval` after the previous one; a value not published
    /// is inside the deadband of the last published one or held for at
    /// most `min_interval`; no point goes `max_interval` unpublished.
    #[test]
    fn seeded_sequences_keep_every_promise() {
        const BAND: f64 = 2.0;
        const MIN: u64 = 300;
        const MAX: u64 = 3_000;
        for seed in 1..=20u64 {
            let mut rng = Seeded(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut p = Point::new(ReportPolicy {
                on_change: true,
                deadband: Deadband::Absolute(BAND),
                min_interval: Duration::from_millis(MIN),
                max_interval: Some(Duration::from_millis(MAX)),
            });
            let mut x = 50.0f64;
            let (mut last, mut last_at) = (p.float(0, x).expect("first"), 0u64);
            let mut last_ok = true;
            let mut ms = 0u64;
            for _ in 0..2_000 {
                ms += 50 + rng.next() % 100;
                while let Some(at) = p.wake_at().filter(|&at| at <= ms) {
                    let woken = p.wake(at);
                    assert_eq!(woken.len(), 1, "seed {seed}");
                    assert!(at - last_at <= MAX, "seed {seed}: silent too long");
                    (last, last_at) = (woken[0].clone(), at);
                }
                let value = if rng.next() % 40 == 0 {
                    Err(PointError::new(PointErrorKind::Timeout, "no response"))
                } else {
                    x += (rng.next() % 1000) as f64 / 1000.0 - 0.5;
                    Ok(Value::Float(x))
                };
                let quality_changed = value.is_ok() != last_ok;
                last_ok = value.is_ok();
                match p.offer(ms, value.clone()) {
                    Some(v) => {
                        assert!(
                            quality_changed || ms - last_at >= MIN,
                            "seed {seed}: {} ms after the last publish",
                            ms - last_at
                        );
                        (last, last_at) = (v, ms);
                    }
                    None => {
                        assert!(!quality_changed, "seed {seed}: quality change held back");
                        if let (Ok(Value::Float(now)), Some(was)) = (&value, last.as_f64())
                            && (now - was).abs() > BAND
                        {
                            let due = p.wake_at().expect("a held change is woken");
                            assert!(due <= last_at + MIN, "seed {seed}");
                        }
                    }
                }
                assert!(ms - last_at <= MAX, "seed {seed}: silent too long");
            }
        }
    }
}
