//! The report-by-exception stage of one adapter instance: every uplink an
//! adapter sends passes it, in the sender's task, before the runtime sees
//! it. Telemetry of devices with a [`DevicePolicy`] is transformed
//! ([`Transform`](crate::transform::Transform)) and goes through their [`Reporter`]; their meta says
//! what the transforms make of each point; commands to them have their
//! written values inverted and their results transformed
//! ([`CommandTransforms`]); everything else passes untouched. Sans-IO like the
//! reporter: [`Stage::uplink`] and [`Stage::wake`] take `now`, and
//! [`Stage::next_wake`] says when the next held value or heartbeat is due.
//! [`Reporting`] is the shared handle the sender and the wake task hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::adapter::UplinkSender;
use crate::command::{CommandRequest, Operation, Outcome};
use crate::model::{DeviceMeta, PointMeta, Telemetry, Timestamp, Uplink, Value};
use crate::report::{DevicePolicy, Reporter};

/// The reporting of each device of an adapter, by device name. Devices not
/// in it have every reading published.
pub type Policies = BTreeMap<String, DevicePolicy>;

/// Report by exception for the devices of one adapter instance.
#[derive(Debug)]
pub struct Stage {
    policies: Arc<Policies>,
    reporters: HashMap<String, Reporter>,
    /// Each device's next wake, ordered by instant.
    wakes: BTreeSet<(Instant, String)>,
    due: HashMap<String, Instant>,
}

impl Stage {
    pub fn new(policies: Arc<Policies>) -> Self {
        Stage {
            policies,
            reporters: HashMap::new(),
            wakes: BTreeSet::new(),
            due: HashMap::new(),
        }
    }

    /// What of `uplink` goes on north now (`None`: nothing of it).
    pub fn uplink(&mut self, uplink: Uplink, now: Instant) -> Option<Uplink> {
        let mut t = match uplink {
            Uplink::Telemetry(t) => t,
            Uplink::Meta(meta) => return Some(Uplink::Meta(self.meta(meta))),
            other => return Some(other),
        };
        let Some(policy) = self.policies.get(&t.device) else {
            return Some(Uplink::Telemetry(t));
        };
        if !policy.transforms.is_empty() {
            for reading in &mut t.readings {
                let Some(transform) = policy.transforms.get(&*reading.point) else {
                    continue;
                };
                if let Ok(value) = &mut reading.value {
                    let raw = std::mem::replace(value, Value::Bool(false));
                    reading.value = transform.forward(raw);
                }
            }
        }
        if policy.reports_everything() {
            return Some(Uplink::Telemetry(t));
        }
        let reporter = match self.reporters.get_mut(&t.device) {
            Some(r) => r,
            None => self
                .reporters
                .entry(t.device.clone())
                .or_insert_with(|| Reporter::new(policy.clone())),
        };
        let readings = reporter.offer(t.readings, now);
        let next = reporter.next_wake();
        self.reschedule(&t.device, next);
        (!readings.is_empty()).then_some(Uplink::Telemetry(Telemetry {
            device: t.device,
            ts: t.ts,
            readings,
        }))
    }

    /// The device's meta as its transforms make it.
    fn meta(&self, mut meta: DeviceMeta) -> DeviceMeta {
        let Some(policy) = self.policies.get(&meta.device) else {
            return meta;
        };
        if policy.transforms.is_empty() {
            return meta;
        }
        let points: Vec<PointMeta> = meta
            .points
            .iter()
            .map(|p| match policy.transforms.get(&p.name) {
                Some(t) => t.meta(p),
                None => p.clone(),
            })
            .collect();
        meta.points = points.into();
        meta
    }

    /// When [`Stage::wake`] has something to publish.
    pub fn next_wake(&self) -> Option<Instant> {
        self.wakes.first().map(|(at, _)| *at)
    }

    /// The held values and heartbeats due at `now`, one telemetry message
    /// per device.
    pub fn wake(&mut self, now: Instant) -> Vec<Uplink> {
        let mut out = Vec::new();
        while let Some((at, device)) = self.wakes.first().cloned() {
            if at > now {
                break;
            }
            let Some(reporter) = self.reporters.get_mut(&device) else {
                self.reschedule(&device, None);
                continue;
            };
            let readings = reporter.wake(now);
            let next = reporter.next_wake();
            self.reschedule(&device, next);
            if !readings.is_empty() {
                out.push(Uplink::Telemetry(Telemetry {
                    device,
                    ts: Timestamp::now(),
                    readings,
                }));
            }
        }
        out
    }

    /// Every held value, one telemetry message per device.
    pub fn flush(&mut self, now: Instant) -> Vec<Uplink> {
        let mut out = Vec::new();
        let devices: Vec<String> = self.reporters.keys().cloned().collect();
        for device in devices {
            let Some(reporter) = self.reporters.get_mut(&device) else {
                continue;
            };
            let readings = reporter.flush(now);
            let next = reporter.next_wake();
            self.reschedule(&device, next);
            if !readings.is_empty() {
                out.push(Uplink::Telemetry(Telemetry {
                    device,
                    ts: Timestamp::now(),
                    readings,
                }));
            }
        }
        out
    }

    fn reschedule(&mut self, device: &str, next: Option<Instant>) {
        if self.due.get(device) == next.as_ref() {
            return;
        }
        if let Some(old) = self.due.remove(device) {
            self.wakes.remove(&(old, device.to_string()));
        }
        if let Some(at) = next {
            self.due.insert(device.to_string(), at);
            self.wakes.insert((at, device.to_string()));
        }
    }
}

/// A [`Stage`] shared by an adapter's uplink senders and its wake task.
#[derive(Debug, Clone)]
pub struct Reporting {
    stage: Arc<Mutex<Stage>>,
    /// Told when the next wake moved earlier.
    rearm: Arc<Notify>,
}

impl Reporting {
    /// The stage for `policies`, or `None` when no device of them can have
    /// a reading held back or repeated (then there is nothing to do).
    pub fn new(policies: Policies) -> Option<Self> {
        let policies: Policies = policies
            .into_iter()
            .filter(|(_, p)| !p.is_passthrough())
            .collect();
        if policies.is_empty() {
            return None;
        }
        Some(Reporting {
            stage: Arc::new(Mutex::new(Stage::new(Arc::new(policies)))),
            rearm: Arc::new(Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The write and result transforms of the same devices.
    pub fn commands(&self) -> CommandTransforms {
        CommandTransforms(self.lock().policies.clone())
    }

    /// Pass `uplink` through the stage at `now`.
    pub fn uplink(&self, uplink: Uplink, now: Instant) -> Option<Uplink> {
        let mut stage = self.lock();
        let before = stage.next_wake();
        let out = stage.uplink(uplink, now);
        let after = stage.next_wake();
        drop(stage);
        if after.is_some() && (before.is_none() || after < before) {
            self.rearm.notify_one();
        }
        out
    }

    /// Send held values and heartbeats into `uplink` (a sender without
    /// this stage) as they fall due, until `stop`; then the values still
    /// held, so that stopping keeps nothing back.
    pub async fn run_wakes(self, uplink: UplinkSender, stop: CancellationToken) {
        self.wakes(&uplink, &stop).await;
        let held = self.lock().flush(Instant::now());
        for message in held {
            if uplink.send(message).await.is_err() {
                return;
            }
        }
    }

    async fn wakes(&self, uplink: &UplinkSender, stop: &CancellationToken) {
        loop {
            let next = self.lock().next_wake();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.rearm.notified() => continue,
                () = sleep => {}
            }
            let due = self.lock().wake(Instant::now());
            for message in due {
                if uplink.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The transforms of each device's points, applied to commands: a written
/// value is inverted before the adapter sees it (refused when it cannot
/// be), the values of the result are transformed as readings are.
#[derive(Debug, Clone)]
pub struct CommandTransforms(Arc<Policies>);

impl CommandTransforms {
    /// The request with its values inverted and its result mapped, or
    /// `None` when it was answered here (a value the inverse refuses).
    pub fn prepare(&self, mut request: CommandRequest) -> Option<CommandRequest> {
        let Some(policy) = self.0.get(&request.command.device) else {
            return Some(request);
        };
        if policy.transforms.is_empty() {
            return Some(request);
        }
        if let Operation::Write { values } = &mut request.command.op {
            for (point, value) in values.iter_mut() {
                let Some(t) = policy.transforms.get(point) else {
                    continue;
                };
                match t.inverse(value) {
                    Ok(raw) => *value = raw,
                    Err(mut e) => {
                        e.message = format!("{point}: {}", e.message);
                        request.respond(Err(e));
                        return None;
                    }
                }
            }
        }
        let policies = self.0.clone();
        let device = request.command.device.clone();
        Some(request.map_outcome(move |outcome| forward(&policies, &device, outcome)))
    }
}

/// A command's result values as readings would be published.
fn forward(policies: &Policies, device: &str, outcome: Outcome) -> Outcome {
    let Some(policy) = policies.get(device) else {
        return outcome;
    };
    outcome.map(|values| {
        values
            .into_iter()
            .map(|(point, value)| {
                let value = match policy.transforms.get(&point) {
                    Some(t) => t.forward(value.clone()).unwrap_or(value),
                    None => value,
                };
                (point, value)
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Reading, Value};
    use crate::report::{Deadband, ReportPolicy};
    use std::time::Duration;

    fn telemetry(device: &str, value: f64) -> Uplink {
        Uplink::Telemetry(Telemetry {
            device: device.into(),
            ts: Timestamp(0),
            readings: vec![Reading::ok("t", Value::Float(value), Timestamp(0))],
        })
    }

    fn policies() -> Policies {
        let heartbeat = |s| DevicePolicy {
            report: ReportPolicy {
                on_change: true,
                deadband: Deadband::Absolute(1.0),
                max_interval: Some(Duration::from_secs(s)),
                ..ReportPolicy::default()
            },
            ..DevicePolicy::default()
        };
        [
            ("a".to_string(), heartbeat(10)),
            ("b".to_string(), heartbeat(4)),
        ]
        .into()
    }

    #[test]
    fn devices_without_a_policy_and_other_messages_pass() {
        let mut stage = Stage::new(Arc::new(policies()));
        let now = Instant::now();
        assert!(stage.uplink(telemetry("other", 1.0), now).is_some());
        assert!(stage.uplink(telemetry("other", 1.0), now).is_some());
        assert!(stage.uplink(telemetry("a", 1.0), now).is_some());
        assert!(stage.uplink(telemetry("a", 1.5), now).is_none());
        let forget = Uplink::Forgotten(crate::model::DeviceForgotten { device: "a".into() });
        assert_eq!(stage.uplink(forget.clone(), now), Some(forget));
    }

    #[test]
    fn wakes_come_in_order_across_devices() {
        let mut stage = Stage::new(Arc::new(policies()));
        let t0 = Instant::now();
        stage.uplink(telemetry("a", 1.0), t0);
        stage.uplink(telemetry("b", 1.0), t0);
        assert_eq!(stage.next_wake(), Some(t0 + Duration::from_secs(4)));
        let woken = stage.wake(t0 + Duration::from_secs(4));
        assert_eq!(woken.len(), 1);
        assert_eq!(woken[0].device(), "b");
        assert_eq!(stage.next_wake(), Some(t0 + Duration::from_secs(8)));
        let woken = stage.wake(t0 + Duration::from_secs(10));
        let devices: Vec<&str> = woken.iter().map(Uplink::device).collect();
        assert_eq!(devices, ["b", "a"], "b was due at 8 s, a at 10 s");
        assert_eq!(stage.next_wake(), Some(t0 + Duration::from_secs(14)));
    }

    #[tokio::test]
    async fn stopping_sends_what_is_held() {
        let policies: Policies = [(
            "a".to_string(),
            DevicePolicy {
                report: ReportPolicy {
                    on_change: true,
                    min_interval: Duration::from_secs(3600),
                    ..ReportPolicy::default()
                },
                ..DevicePolicy::default()
            },
        )]
        .into();
        let reporting = Reporting::new(policies).expect("a stage");
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            reporting
                .clone()
                .run_wakes(UplinkSender::new("t", tx), stop.clone()),
        );
        let now = Instant::now();
        assert!(reporting.uplink(telemetry("a", 1.0), now).is_some());
        assert!(reporting.uplink(telemetry("a", 2.0), now).is_none(), "held");
        stop.cancel();
        task.await.unwrap();
        let sent = rx.recv().await.expect("the held value on stop");
        let Uplink::Telemetry(t) = sent.uplink else {
            unreachable!()
        };
        assert_eq!(t.readings[0].value, Ok(Value::Float(2.0)));
    }

    #[test]
    fn a_stage_of_passthrough_policies_is_none() {
        let plain: Policies = [("x".to_string(), DevicePolicy::default())].into();
        assert!(Reporting::new(plain).is_none());
        assert!(Reporting::new(policies()).is_some());
    }

    #[tokio::test]
    async fn commands_are_inverted_and_their_results_transformed() {
        use crate::command::{Command, ErrorCode};
        use crate::transform::{Conversion, Transform};
        let transform = Transform {
            scale: 0.1,
            convert: Some(Conversion::parse("degC -> K").unwrap()),
            clamp_max: Some(500.0),
            ..Transform::default()
        };
        let policies: Policies = [(
            "oven".to_string(),
            DevicePolicy {
                transforms: [("temp".to_string(), transform)].into(),
                ..DevicePolicy::default()
            },
        )]
        .into();
        let reporting = Reporting::new(policies).expect("a stage");
        let commands = reporting.commands();
        let write = |value: f64| Command {
            id: "w".into(),
            device: "oven".into(),
            op: Operation::Write {
                values: [("temp".to_string(), Value::Float(value))].into(),
            },
            deadline: tokio::time::Instant::now() + Duration::from_secs(1),
        };
        // 303.15 K = 30 °C = raw 300; the adapter confirms 300, the result says 303.15 K.
        let (request, answer) = CommandRequest::new(write(303.15));
        let request = commands.prepare(request).expect("passed on");
        let Operation::Write { values } = &request.command.op else {
            unreachable!()
        };
        assert_eq!(values["temp"], Value::Int(300));
        request.respond(Ok([("temp".to_string(), Value::Int(300))].into()));
        let confirmed = answer.await.unwrap().unwrap()["temp"].as_f64().unwrap();
        assert!((confirmed - 303.15).abs() < 1e-9);
        // Above the clamp: answered here, never handed to the adapter.
        let (request, answer) = CommandRequest::new(write(600.0));
        assert!(commands.prepare(request).is_none());
        let error = answer.await.unwrap().unwrap_err();
        assert_eq!(error.code, ErrorCode::OutOfRange);
        assert!(error.message.starts_with("temp: "), "{error}");
        // Telemetry and meta of the same point.
        let mut stage = reporting.lock();
        let t = stage
            .uplink(
                Uplink::Telemetry(Telemetry {
                    device: "oven".into(),
                    ts: Timestamp(0),
                    readings: vec![Reading::ok("temp", Value::Int(250), Timestamp(0))],
                }),
                Instant::now(),
            )
            .expect("published");
        let Uplink::Telemetry(t) = t else {
            unreachable!()
        };
        let kelvin = t.readings[0].value.as_ref().unwrap().as_f64().unwrap();
        assert!((kelvin - 298.15).abs() < 1e-9);
        let meta = stage.meta(DeviceMeta {
            device: "oven".into(),
            points: vec![PointMeta {
                name: "temp".into(),
                unit: Some("degC".into()),
                ..PointMeta::default()
            }]
            .into(),
            ..DeviceMeta::default()
        });
        assert_eq!(meta.points[0].unit.as_deref(), Some("K"));
    }
}
