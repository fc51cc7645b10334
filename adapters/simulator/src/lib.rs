//! The simulator adapter: devices whose points follow waveforms (counter,
//! sine, random walk, square, setpoint), for demos, tests and benchmarks.
//!
//! It goes through the same SDK interface as a real protocol adapter, so a
//! config can mix simulated and real devices and everything downstream
//! (pipeline, outbox, MQTT, commands) is exercised without hardware.
//!
//! ```toml
//! [[simulator.device]]
//! name = "meter-1"
//! period = "1s"             # one telemetry message per period
//!
//! [[simulator.device.point]]
//! name = "voltage"
//! waveform = "sine"         # counter | sine | random-walk | square | setpoint
//! min = 225.0
//! max = 235.0
//! cycle = "60s"             # sine and square: the length of one cycle
//! unit = "V"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::f64::consts::TAU;
use std::sync::Arc;
use std::time::Duration;

use ferrogate_sdk::config::{BuildContext, ConfigDuration, ConfigIssue, Located, Section};
use ferrogate_sdk::{
    Adapter, AdapterContext, AdapterError, AdapterKind, BoxFuture, BuiltAdapter, CommandError,
    CommandRequest, DeviceMeta, DeviceState, DeviceStatus, ErrorCode, Operation, PointMeta,
    Reading, Telemetry, Timestamp, Uplink, Value,
};
use serde::Deserialize;
use tokio::time::{Instant, MissedTickBehavior};

/// One `[[simulator.device]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimDeviceConfig {
    pub name: String,
    /// Time between telemetry messages.
    #[serde(default = "default_period")]
    pub period: ConfigDuration,
    #[serde(default)]
    pub point: Vec<SimPointConfig>,
}

fn default_period() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

/// How a simulated point's value changes over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Waveform {
    /// Counts up by `step` each period from `min`, wrapping at `max`.
    Counter,
    /// A sine between `min` and `max` with the given `cycle`.
    Sine,
    /// A random walk of at most `step` per period, kept within min/max.
    RandomWalk,
    /// `min` for the first half of each `cycle`, `max` for the second.
    Square,
    /// Holds the last written value (starting at `min`); always writable.
    Setpoint,
}

/// One `[[simulator.device.point]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPointConfig {
    pub name: String,
    pub waveform: Waveform,
    #[serde(default)]
    pub min: f64,
    #[serde(default = "default_max")]
    pub max: f64,
    #[serde(default = "default_step")]
    pub step: f64,
    #[serde(default = "default_cycle")]
    pub cycle: ConfigDuration,
    pub unit: Option<String>,
    pub description: Option<String>,
    /// Allow writes (implied for `setpoint`). A written value holds until
    /// the waveform moves on at the next period.
    #[serde(default)]
    pub writable: bool,
}

fn default_max() -> f64 {
    100.0
}
fn default_step() -> f64 {
    1.0
}
fn default_cycle() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}

/// The `simulator` adapter kind.
pub struct SimulatorKind;

impl AdapterKind for SimulatorKind {
    fn key(&self) -> &'static str {
        "simulator"
    }

    fn build(
        &self,
        section: &Section<'_>,
        _ctx: &BuildContext<'_>,
    ) -> Result<Vec<BuiltAdapter>, Vec<ConfigIssue>> {
        let mut issues = section.unknown_keys(&["device"]);
        let mut devices: Vec<Located<SimDeviceConfig>> = Vec::new();
        for node in section.list("device") {
            match node.parse::<SimDeviceConfig>() {
                Ok(d) => devices.push(d),
                Err(e) => issues.push(e),
            }
        }
        for d in &devices {
            issues.extend(validate_device(d));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let listed = devices
            .iter()
            .map(|d| (d.name.clone(), d.origin.field("name")))
            .collect();
        Ok(vec![BuiltAdapter {
            name: "simulator".into(),
            devices: listed,
            notes: Vec::new(),
            fingerprint: ferrogate_sdk::fingerprint(&devices),
            policies: Default::default(),
            adapter: Box::new(Simulator::new(
                devices.into_iter().map(|d| d.value).collect(),
            )),
        }])
    }
}

fn validate_device(d: &Located<SimDeviceConfig>) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    if d.period.0 < Duration::from_millis(1) {
        issues.push(
            d.origin
                .issue("period", "period must be at least 1ms")
                .with_hint("use e.g. period = \"100ms\""),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, p) in d.point.iter().enumerate() {
        if !seen.insert(p.name.as_str()) {
            issues.push(d.origin.issue(
                &format!("point.{i}.name"),
                format!("duplicate point `{}` in device `{}`", p.name, d.name),
            ));
        }
        if p.min > p.max {
            issues.push(d.origin.issue(
                &format!("point.{i}.min"),
                format!("min ({}) is greater than max ({})", p.min, p.max),
            ));
        }
        if p.cycle.0.is_zero() {
            issues.push(
                d.origin
                    .issue(&format!("point.{i}.cycle"), "cycle must be longer than 0"),
            );
        }
    }
    issues
}

/// A small deterministic PRNG (xorshift64*); statistical quality is
/// irrelevant for a random walk, and it keeps the crate dependency-free.
struct Rng(u64);

impl Rng {
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct SimPoint {
    /// The configured name, shared by every reading of the point.
    name: Arc<str>,
    config: SimPointConfig,
    value: f64,
}

impl SimPoint {
    fn advance(&mut self, elapsed: Duration, rng: &mut Rng) {
        let c = &self.config;
        let phase = (elapsed.as_secs_f64() / c.cycle.0.as_secs_f64()).fract();
        self.value = match c.waveform {
            Waveform::Counter => {
                let next = self.value + c.step;
                if next > c.max { c.min } else { next }
            }
            Waveform::Sine => c.min + (c.max - c.min) * (0.5 + 0.5 * (TAU * phase).sin()),
            Waveform::RandomWalk => {
                (self.value + c.step * (2.0 * rng.next_unit() - 1.0)).clamp(c.min, c.max)
            }
            Waveform::Square => {
                if phase < 0.5 {
                    c.min
                } else {
                    c.max
                }
            }
            Waveform::Setpoint => self.value,
        };
    }

    fn writable(&self) -> bool {
        self.config.writable || self.config.waveform == Waveform::Setpoint
    }

    fn value(&self) -> Value {
        match self.config.waveform {
            Waveform::Counter => Value::Int(self.value as i64),
            _ => Value::Float(self.value),
        }
    }

    fn meta(&self) -> PointMeta {
        let c = &self.config;
        PointMeta {
            name: c.name.clone(),
            data_type: match c.waveform {
                Waveform::Counter => "i64".into(),
                _ => "f64".into(),
            },
            unit: c.unit.clone(),
            writable: self.writable(),
            min: self.writable().then_some(c.min),
            max: self.writable().then_some(c.max),
            description: c.description.clone(),
            address: None,
        }
    }
}

struct SimDevice {
    name: String,
    period: Duration,
    points: Vec<SimPoint>,
    next_due: Instant,
}

impl SimDevice {
    fn readings(&self, ts: Timestamp, only: &[String]) -> Vec<Reading> {
        self.points
            .iter()
            .filter(|p| only.is_empty() || only.contains(&p.config.name))
            .map(|p| Reading::ok(p.name.clone(), p.value(), ts))
            .collect()
    }
}

/// The running simulator: all configured devices in one task.
pub struct Simulator {
    devices: Vec<SimDevice>,
    started: Instant,
    rng: Rng,
}

impl Simulator {
    pub fn new(configs: Vec<SimDeviceConfig>) -> Self {
        let now = Instant::now();
        let devices = configs
            .into_iter()
            .map(|d| SimDevice {
                name: d.name,
                period: d.period.0,
                next_due: now,
                points: d
                    .point
                    .into_iter()
                    .map(|p| SimPoint {
                        name: p.name.as_str().into(),
                        value: p.min,
                        config: p,
                    })
                    .collect(),
            })
            .collect();
        Simulator {
            devices,
            started: now,
            rng: Rng(0x9E37_79B9_7F4A_7C15),
        }
    }

    async fn announce(&self, ctx: &AdapterContext) -> Result<(), AdapterError> {
        for d in &self.devices {
            let meta = DeviceMeta {
                device: d.name.clone(),
                points: d.points.iter().map(SimPoint::meta).collect(),
                operations: None,
                attributes: BTreeMap::from([("simulated".to_string(), true.into())]),
            };
            send(ctx, Uplink::Meta(meta)).await?;
            let status = DeviceStatus {
                device: d.name.clone(),
                state: DeviceState::Online,
                reason: Some("simulated device started".into()),
                ts: Timestamp::now(),
            };
            send(ctx, Uplink::Status(status)).await?;
        }
        Ok(())
    }

    async fn tick(&mut self, ctx: &AdapterContext) -> Result<(), AdapterError> {
        let now = Instant::now();
        let elapsed = now - self.started;
        for d in &mut self.devices {
            if d.next_due > now {
                continue;
            }
            // Catch up without bursting: one message per tick, schedule from now.
            d.next_due += d.period;
            if d.next_due < now {
                d.next_due = now + d.period;
            }
            for p in &mut d.points {
                p.advance(elapsed, &mut self.rng);
            }
            let ts = Timestamp::now();
            let telemetry = Telemetry {
                device: d.name.clone(),
                ts,
                readings: d.readings(ts, &[]),
            };
            send(ctx, Uplink::Telemetry(telemetry)).await?;
        }
        Ok(())
    }

    fn next_due(&self) -> Instant {
        self.devices
            .iter()
            .map(|d| d.next_due)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
    }

    fn execute(&mut self, request: CommandRequest) {
        let outcome = self.outcome(&request.command.device, &request.command.op);
        request.respond(outcome);
    }

    fn outcome(&mut self, device: &str, op: &Operation) -> ferrogate_sdk::Outcome {
        let Some(d) = self.devices.iter_mut().find(|d| d.name == device) else {
            return Err(CommandError::new(
                ErrorCode::UnknownDevice,
                format!("no simulated device `{device}`"),
            ));
        };
        match op {
            Operation::Read { points } => {
                if let Some(missing) = points
                    .iter()
                    .find(|p| !d.points.iter().any(|sp| &sp.config.name == *p))
                {
                    return Err(CommandError::new(
                        ErrorCode::UnknownPoint,
                        format!("device `{device}` has no point `{missing}`"),
                    ));
                }
                Ok(d.readings(Timestamp::now(), points)
                    .into_iter()
                    .filter_map(|r| r.value.ok().map(|v| (r.point.to_string(), v)))
                    .collect())
            }
            Operation::Write { values } => {
                // Check every value before changing any, so a write is all or nothing.
                let mut plan = Vec::new();
                for (name, value) in values {
                    let Some(idx) = d.points.iter().position(|p| &p.config.name == name) else {
                        return Err(CommandError::new(
                            ErrorCode::UnknownPoint,
                            format!("device `{device}` has no point `{name}`"),
                        ));
                    };
                    let p = &d.points[idx];
                    if !p.writable() {
                        return Err(CommandError::new(
                            ErrorCode::NotWritable,
                            format!("point `{name}` is read-only"),
                        ));
                    }
                    let Some(x) = value.as_f64().filter(|x| x.is_finite()) else {
                        return Err(CommandError::new(
                            ErrorCode::InvalidValue,
                            format!("point `{name}` takes a number, not a {}", value.type_name()),
                        ));
                    };
                    if x < p.config.min || x > p.config.max {
                        return Err(CommandError::new(
                            ErrorCode::OutOfRange,
                            format!(
                                "{x} is outside [{}, {}] for point `{name}`",
                                p.config.min, p.config.max
                            ),
                        ));
                    }
                    plan.push((idx, x));
                }
                let mut confirmed = BTreeMap::new();
                for (idx, x) in plan {
                    let p = &mut d.points[idx];
                    p.value = x;
                    confirmed.insert(p.config.name.clone(), p.value());
                }
                Ok(confirmed)
            }
            Operation::Protocol { op, .. } => Err(CommandError::new(
                ErrorCode::BadRequest,
                format!("the simulator does not support `{op}`"),
            )),
        }
    }
}

async fn send(ctx: &AdapterContext, uplink: Uplink) -> Result<(), AdapterError> {
    ctx.uplink
        .send(uplink)
        .await
        .map_err(|e| AdapterError::new(e.to_string()))
}

impl Adapter for Simulator {
    fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            self.announce(&ctx).await?;
            let mut idle = tokio::time::interval(Duration::from_secs(1));
            idle.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ctx.health.beat();
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(self.next_due()) => self.tick(&ctx).await?,
                    _ = idle.tick() => {}
                    request = ctx.commands.recv() => match request {
                        Some(request) => self.execute(request),
                        None => return Ok(()),
                    },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogate_sdk::Command;
    use ferrogate_sdk::testing;

    const CONFIG: &str = r#"
[[simulator.device]]
name = "meter-1"
period = "10ms"

[[simulator.device.point]]
name = "energy"
waveform = "counter"
step = 2

[[simulator.device.point]]
name = "setpoint"
waveform = "setpoint"
min = 10.0
max = 30.0
"#;

    fn command(op: Operation) -> Command {
        Command {
            id: "c1".into(),
            device: "meter-1".into(),
            op,
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn produces_meta_status_then_counting_telemetry_and_takes_writes() {
        let mut built = testing::build(&SimulatorKind, CONFIG, &[]).unwrap();
        assert_eq!(built[0].devices[0].0, "meter-1");
        let mut adapter = built.remove(0).adapter;
        let (ctx, mut harness) = testing::context("simulator");
        let task = tokio::spawn(async move { adapter.run(ctx).await });

        assert!(
            matches!(harness.uplinks.recv().await.unwrap().uplink, Uplink::Meta(m) if m.points.len() == 2)
        );
        assert!(
            matches!(harness.uplinks.recv().await.unwrap().uplink, Uplink::Status(s) if s.state == DeviceState::Online)
        );
        let mut energies = Vec::new();
        while energies.len() < 3 {
            if let Uplink::Telemetry(t) = harness.uplinks.recv().await.unwrap().uplink {
                energies.push(t.readings[0].value.clone().unwrap());
            }
        }
        assert_eq!(energies, vec![Value::Int(2), Value::Int(4), Value::Int(6)]);

        let mut values = BTreeMap::new();
        values.insert("setpoint".to_string(), Value::Float(21.5));
        let ok = harness
            .command(command(Operation::Write { values }))
            .await
            .unwrap();
        assert_eq!(ok["setpoint"], Value::Float(21.5));

        let read = harness
            .command(command(Operation::Read {
                points: vec!["setpoint".into()],
            }))
            .await
            .unwrap();
        assert_eq!(read["setpoint"], Value::Float(21.5));

        let mut values = BTreeMap::new();
        values.insert("energy".to_string(), Value::Int(1));
        let err = harness
            .command(command(Operation::Write { values }))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::NotWritable);

        let mut values = BTreeMap::new();
        values.insert("setpoint".to_string(), Value::Float(99.0));
        let err = harness
            .command(command(Operation::Write { values }))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::OutOfRange);

        let mut values = BTreeMap::new();
        values.insert("setpoint".to_string(), Value::String("warm".into()));
        let err = harness
            .command(command(Operation::Write { values }))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidValue);

        let err = harness
            .command(command(Operation::Read {
                points: vec!["nope".into()],
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownPoint);

        harness.shutdown.cancel();
        assert!(task.await.unwrap().is_ok());
    }

    #[test]
    fn config_mistakes_are_located() {
        let bad = r#"
[[simulator.device]]
name = "a"
period = "fast"

[[simulator.device]]
name = "b"
[[simulator.device.point]]
name = "x"
waveform = "sine"
min = 5.0
max = 1.0
[[simulator.device.point]]
name = "x"
waveform = "triangle"
"#;
        let issues = match testing::build(&SimulatorKind, bad, &[]) {
            Ok(_) => panic!("bad config accepted"),
            Err(issues) => issues,
        };
        let lines: Vec<(usize, &str)> = issues
            .iter()
            .map(|i| (i.pos.as_ref().unwrap().line, i.message.as_str()))
            .collect();
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == 4 && m.contains("invalid duration")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == 15 && m.contains("unknown variant `triangle`")),
            "{lines:?}"
        );
    }
}
