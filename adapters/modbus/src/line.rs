//! One running connection (serial line or TCP endpoint): the [`Adapter`]
//! that owns its transport, asks the [`LineScheduler`] what to do next,
//! polls devices, executes commands, and reports telemetry, status and
//! metadata.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use ferrogate_sdk::{
    Adapter, AdapterContext, AdapterError, BoxFuture, CommandError, CommandRequest, DeviceMeta,
    DeviceState, DeviceStatus, ErrorCode, Operation, Outcome, PointError, PointErrorKind, Reading,
    Telemetry, Timestamp, Uplink, Value,
};

use crate::build::{DeviceSpec, LineSpec};
use crate::codec::{self, EncodeError};
use crate::pdu::{Exception, Request, Response};
use crate::planner::{Planner, ReadRequest};
use crate::point::{Area, Point, PointType};
use crate::quality::Quality;
use crate::scheduler::{LineScheduler, Next, PollSlot, Settings, first_due, phase};
use crate::transport::{TransactionError, Transport};

/// How many commands may wait for the line before new ones get `busy`.
const COMMAND_QUEUE: usize = 64;
/// Longest stretch without a health beat while idle.
const IDLE_BEAT: Duration = Duration::from_secs(1);

/// Per-device state that survives adapter restarts.
struct DeviceRuntime {
    planner: Planner,
    /// The current plan of each poll group: the spec's (shared) until a
    /// split gives this device its own.
    plans: Vec<Arc<[ReadRequest]>>,
    quality: Quality,
}

impl DeviceRuntime {
    fn new(spec: &DeviceSpec) -> Self {
        DeviceRuntime {
            planner: Planner::new(spec.limits),
            plans: spec.groups.iter().map(|g| g.plan.clone()).collect(),
            quality: Quality::default(),
        }
    }

    fn replan(&mut self, spec: &DeviceSpec) {
        self.plans = spec
            .groups
            .iter()
            .map(|g| self.planner.plan(&spec.points, &g.points).into())
            .collect();
    }
}

/// A command waiting for the line.
struct Queued {
    device: usize,
    request: CommandRequest,
}

/// What reading a set of points gave.
struct ReadOutcome {
    /// Point indexes, in point order once the read is done.
    points: Vec<usize>,
    /// `readings[k]` is the reading of point `points[k]`: kept apart so
    /// the readings become the telemetry message as they are, without a
    /// copy per poll.
    readings: Vec<Reading>,
    /// Some request got an answer (data, exception or garbage).
    answered: bool,
}

impl ReadOutcome {
    fn with_capacity(points: usize) -> Self {
        ReadOutcome {
            points: Vec::with_capacity(points),
            readings: Vec::with_capacity(points),
            answered: false,
        }
    }

    fn push(&mut self, point: usize, reading: Reading) {
        self.points.push(point);
        self.readings.push(reading);
    }

    /// Every point of `request` failed with `error`.
    fn fail(&mut self, request: &ReadRequest, points: &[Point], error: &PointError, ts: Timestamp) {
        for &i in &request.points {
            self.push(
                i,
                Reading::failed(points[i].name.clone(), error.clone(), ts),
            );
        }
    }

    /// Puts the readings in point order (split requests may answer out
    /// of order).
    fn sort(&mut self) {
        if self.points.is_sorted() {
            return;
        }
        let mut pairs: Vec<(usize, Reading)> =
            self.points.drain(..).zip(self.readings.drain(..)).collect();
        pairs.sort_by_key(|(i, _)| *i);
        for (i, r) in pairs {
            self.push(i, r);
        }
    }
}

pub struct ModbusLine {
    spec: LineSpec,
    devices: Vec<DeviceRuntime>,
    transport: Transport,
}

impl ModbusLine {
    pub fn new(spec: LineSpec) -> Self {
        let devices = spec.devices.iter().map(DeviceRuntime::new).collect();
        let transport = Transport::new(spec.endpoint.clone(), spec.reconnect);
        ModbusLine {
            spec,
            devices,
            transport,
        }
    }

    fn meta(&self, device: &DeviceSpec) -> DeviceMeta {
        let mut attributes = BTreeMap::new();
        attributes.insert("protocol".to_string(), "modbus".into());
        attributes.insert("connection".to_string(), self.spec.name.clone().into());
        attributes.insert("unit".to_string(), device.unit.into());
        if let Some(d) = &device.description {
            attributes.insert("description".to_string(), d.clone().into());
        }
        DeviceMeta {
            device: device.name.clone(),
            points: device.point_meta.clone(),
            operations: device.operations.clone(),
            attributes,
        }
    }

    async fn run_line(&mut self, ctx: AdapterContext) -> Result<(), AdapterError> {
        for device in &self.spec.devices {
            if ctx
                .uplink
                .send(Uplink::Meta(self.meta(device)))
                .await
                .is_err()
            {
                return closed(&ctx);
            }
        }
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let slots = self
            .spec
            .devices
            .iter()
            .enumerate()
            .flat_map(|(device, d)| {
                d.groups.iter().enumerate().map(move |(group, g)| {
                    let key = format!("{}/{group}", d.name);
                    let first = first_due(phase(&key, g.period), g.period, since_epoch);
                    (PollSlot { device, group }, g.period, first)
                })
            })
            .collect();
        let mut sched = LineScheduler::new(
            Settings {
                gap: self.spec.gap,
                backoff_after: self.spec.backoff_after,
                backoff_max: self.spec.backoff_max,
                queue_capacity: COMMAND_QUEUE,
            },
            slots,
            Instant::now().into_std(),
        );
        let mut inbox_open = true;
        loop {
            ctx.health.beat();
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            // Take the commands that are already waiting, without waiting.
            while inbox_open {
                tokio::select! {
                    biased;
                    request = ctx.commands.recv() => match request {
                        Some(request) => self.accept(&mut sched, request),
                        None => inbox_open = false,
                    },
                    () = std::future::ready(()) => break,
                }
            }
            // A transaction's future is boxed while it runs: the line's own
            // future then stays small while it waits, which is most of the
            // time (1000 lines: 2 MB less resident). A poll's future is
            // 976 bytes: below 1 KiB, glibc serves it from its per-thread
            // cache, above it every poll paid for a heap consolidation
            // (4 % of the gateway's samples in `perf`).
            match sched.next(Instant::now().into_std()) {
                Next::Command(queued) => {
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return Ok(()),
                        _ = Box::pin(self.execute(&mut sched, queued)) => {}
                    }
                }
                Next::Poll(slot) => {
                    let sent = tokio::select! {
                        _ = ctx.shutdown.cancelled() => return Ok(()),
                        sent = Box::pin(self.poll(&ctx, &mut sched, slot)) => sent,
                    };
                    if sent.is_err() {
                        return closed(&ctx);
                    }
                }
                Next::Wait(until) => {
                    let until = Instant::from_std(until).min(Instant::now() + IDLE_BEAT);
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return Ok(()),
                        request = ctx.commands.recv(), if inbox_open => match request {
                            Some(request) => self.accept(&mut sched, request),
                            None => inbox_open = false,
                        },
                        _ = sleep_until(until) => {}
                    }
                }
            }
        }
    }

    /// One transaction, keeping the line's inter-frame gap.
    async fn transact(
        &mut self,
        sched: &mut LineScheduler<Queued>,
        unit: u8,
        request: &Request,
        limit: Duration,
    ) -> Result<Response, TransactionError> {
        if let Some(quiet) = sched.quiet_until() {
            sleep_until(Instant::from_std(quiet)).await;
        }
        let result = self.transport.transact(unit, request, limit).await;
        sched.transaction_done(Instant::now().into_std());
        result
    }

    /// Read `requests` of `device`; a request refused with "illegal data
    /// address" is split and retried at once; after a timeout the rest of
    /// the device's requests are not sent (it is not there).
    async fn read(
        &mut self,
        sched: &mut LineScheduler<Queued>,
        device: usize,
        requests: Arc<[ReadRequest]>,
        deadline: Option<Instant>,
    ) -> ReadOutcome {
        let unit = self.spec.devices[device].unit;
        let points: usize = requests.iter().map(|r| r.points.len()).sum();
        let mut planned = requests.iter();
        // The parts of a split request, read before the next planned one.
        let mut parts: VecDeque<ReadRequest> = VecDeque::new();
        let mut outcome = ReadOutcome::with_capacity(points);
        let mut abort: Option<PointError> = None;
        let mut replanned = false;
        loop {
            let part;
            let request = match parts.pop_front() {
                Some(p) => {
                    part = p;
                    &part
                }
                None => match planned.next() {
                    Some(r) => r,
                    None => break,
                },
            };
            let limit = match remaining(self.spec.timeout, deadline) {
                Some(limit) => limit,
                None => {
                    abort.get_or_insert_with(|| {
                        PointError::new(PointErrorKind::Timeout, "the command's deadline passed")
                    });
                    Duration::ZERO
                }
            };
            if let Some(error) = &abort {
                let points = &self.spec.devices[device].points;
                outcome.fail(request, points, error, Timestamp::now());
                continue;
            }
            let result = self.transact(sched, unit, &request.pdu(), limit).await;
            let ts = Timestamp::now();
            let spec = &self.spec.devices[device];
            let failed = |e: PointError, outcome: &mut ReadOutcome| {
                outcome.fail(request, &spec.points, &e, ts);
            };
            match result {
                Ok(Response::Data(data)) => {
                    outcome.answered = true;
                    for &i in &request.points {
                        let p = &spec.points[i];
                        let value = decode_point(p, request.start, &data);
                        outcome.push(
                            i,
                            Reading {
                                point: p.name.clone(),
                                value,
                                ts,
                            },
                        );
                    }
                }
                Ok(Response::Written) => {
                    outcome.answered = true;
                    failed(
                        PointError::new(
                            PointErrorKind::Decode,
                            "a write confirmation answered a read",
                        ),
                        &mut outcome,
                    );
                }
                Err(TransactionError::Exception(x)) if x == Exception::ILLEGAL_DATA_ADDRESS => {
                    outcome.answered = true;
                    match self.devices[device].planner.split(&spec.points, request) {
                        Some(split_parts) => {
                            tracing::info!(
                                device = %spec.name,
                                start = request.start,
                                count = request.count,
                                "read refused with illegal data address; splitting it"
                            );
                            replanned = true;
                            for split in split_parts.into_iter().rev() {
                                parts.push_front(split);
                            }
                        }
                        None => failed(point_error(&TransactionError::Exception(x)), &mut outcome),
                    }
                }
                Err(e @ (TransactionError::Exception(_) | TransactionError::Malformed(_))) => {
                    outcome.answered = true;
                    failed(point_error(&e), &mut outcome);
                }
                Err(e @ (TransactionError::Timeout { .. } | TransactionError::Io(_))) => {
                    let error = point_error(&e);
                    failed(error.clone(), &mut outcome);
                    abort = Some(error);
                }
            }
        }
        if replanned {
            let spec = &self.spec.devices[device];
            self.devices[device].replan(spec);
        }
        outcome.sort();
        outcome
    }

    async fn poll(
        &mut self,
        ctx: &AdapterContext,
        sched: &mut LineScheduler<Queued>,
        slot: PollSlot,
    ) -> Result<(), ferrogate_sdk::adapter::UplinkClosed> {
        let requests = self.devices[slot.device].plans[slot.group].clone();
        let outcome = self.read(sched, slot.device, requests, None).await;
        let now = Instant::now();
        sched.cycle_done(slot.device, !outcome.answered, now.into_std());
        let spec = &self.spec.devices[slot.device];
        let runtime = &mut self.devices[slot.device];
        if let Some(state) = runtime.quality.cycle(outcome.answered, spec.offline_after) {
            let reason = match state {
                DeviceState::Online => None,
                DeviceState::Offline => Some(format!(
                    "{} poll cycle(s) in a row without an answer: {}",
                    spec.offline_after,
                    outcome
                        .readings
                        .iter()
                        .find_map(|r| r.value.as_ref().err())
                        .map_or_else(|| "no answer".to_string(), |e| e.to_string())
                )),
            };
            tracing::info!(device = %spec.name, state = state.as_str(), "modbus device status changed");
            ctx.uplink
                .send(Uplink::Status(DeviceStatus {
                    device: spec.name.clone(),
                    state,
                    reason,
                    ts: Timestamp::now(),
                }))
                .await?;
        }
        let ReadOutcome { readings, .. } = outcome;
        ctx.uplink
            .send(Uplink::Telemetry(Telemetry {
                device: spec.name.clone(),
                ts: Timestamp::now(),
                readings,
            }))
            .await
    }

    /// Check a command and queue it, or answer it at once.
    fn accept(&mut self, sched: &mut LineScheduler<Queued>, request: CommandRequest) {
        let command = &request.command;
        let Some(device) = self
            .spec
            .devices
            .iter()
            .position(|d| d.name == command.device)
        else {
            let message = format!(
                "no device `{}` on connection `{}`",
                command.device, self.spec.name
            );
            return request.respond(Err(CommandError::new(ErrorCode::UnknownDevice, message)));
        };
        let spec = &self.spec.devices[device];
        let op = command.op.name();
        if let Some(allowed) = &spec.operations
            && !allowed.iter().any(|a| a == op)
        {
            let message = format!("`{op}` is not allowed on device `{}`", spec.name);
            return request.respond(Err(CommandError::new(ErrorCode::BadRequest, message)));
        }
        let checked = match &command.op {
            Operation::Read { points } => points
                .iter()
                .try_for_each(|name| find_point(spec, name).map(|_| ())),
            Operation::Write { values } if values.is_empty() => Err(CommandError::new(
                ErrorCode::BadRequest,
                "a write needs at least one value",
            )),
            Operation::Write { values } => values.iter().try_for_each(|(name, value)| {
                find_point(spec, name).and_then(|(_, p)| prepare_write(p, value).map(|_| ()))
            }),
            Operation::Protocol { op, .. } => Err(CommandError::new(
                ErrorCode::BadRequest,
                format!("Modbus devices support read and write, not `{op}`"),
            )),
        };
        if let Err(e) = checked {
            return request.respond(Err(e));
        }
        if let Err(rejected) = sched.push_command(Queued { device, request }) {
            rejected.request.respond(Err(CommandError::new(
                ErrorCode::Busy,
                format!("{COMMAND_QUEUE} commands are already waiting for this line"),
            )));
        }
    }

    async fn execute(&mut self, sched: &mut LineScheduler<Queued>, queued: Queued) {
        let Queued { device, request } = queued;
        if request.is_abandoned() {
            return;
        }
        let deadline = request.command.deadline;
        let now = Instant::now();
        let outcome = if now >= deadline {
            Err(CommandError::new(
                ErrorCode::Timeout,
                "the deadline passed while the command waited for the line",
            ))
        } else if sched.backed_off(device, now.into_std())
            || self.devices[device].quality.state() == Some(DeviceState::Offline)
                && !self.transport.is_connected()
        {
            Err(CommandError::new(
                ErrorCode::DeviceOffline,
                format!(
                    "device `{}` is not answering",
                    self.spec.devices[device].name
                ),
            ))
        } else {
            match &request.command.op {
                Operation::Read { points } => {
                    self.fresh_read(sched, device, points, deadline).await
                }
                Operation::Write { values } => self.write(sched, device, values, deadline).await,
                Operation::Protocol { .. } => Err(CommandError::new(
                    ErrorCode::BadRequest,
                    "unsupported operation",
                )),
            }
        };
        request.respond(outcome);
    }

    async fn fresh_read(
        &mut self,
        sched: &mut LineScheduler<Queued>,
        device: usize,
        names: &[String],
        deadline: Instant,
    ) -> Outcome {
        let spec = &self.spec.devices[device];
        let selected: Vec<usize> = if names.is_empty() {
            (0..spec.points.len()).collect()
        } else {
            names
                .iter()
                .map(|n| find_point(spec, n).map(|(i, _)| i))
                .collect::<Result<_, _>>()?
        };
        let requests = self.devices[device]
            .planner
            .plan(&spec.points, &selected)
            .into();
        let outcome = self.read(sched, device, requests, Some(deadline)).await;
        let mut values = BTreeMap::new();
        for reading in outcome.readings {
            match reading.value {
                Ok(v) => {
                    values.insert(reading.point.to_string(), v);
                }
                Err(e) => {
                    let code = match e.kind {
                        PointErrorKind::Timeout => ErrorCode::Timeout,
                        PointErrorKind::Io => ErrorCode::DeviceOffline,
                        PointErrorKind::DeviceException | PointErrorKind::Decode => {
                            ErrorCode::DeviceException
                        }
                    };
                    return Err(CommandError::new(code, format!("{}: {e}", reading.point)));
                }
            }
        }
        Ok(values)
    }

    async fn write(
        &mut self,
        sched: &mut LineScheduler<Queued>,
        device: usize,
        values: &BTreeMap<String, Value>,
        deadline: Instant,
    ) -> Outcome {
        let unit = self.spec.devices[device].unit;
        let single = self.spec.devices[device].single_register_writes;
        let verify = self.spec.devices[device].verify_writes;
        let mut confirmed = BTreeMap::new();
        if !single {
            self.write_coil_runs(sched, device, values, deadline, &mut confirmed)
                .await?;
        }
        for (name, value) in values {
            if confirmed.contains_key(name) {
                continue;
            }
            let (_, point) = find_point(&self.spec.devices[device], name)?;
            let point = point.clone();
            let wire = prepare_write(&point, value)?;
            let fail = |e: &TransactionError, confirmed: &BTreeMap<String, Value>| {
                let mut message = format!("{name}: {e}");
                if !confirmed.is_empty() {
                    let done: Vec<&str> = confirmed.keys().map(String::as_str).collect();
                    message.push_str(&format!(" (already written: {})", done.join(", ")));
                }
                CommandError::new(command_code(e), message)
            };
            // A bit of a register: read the register, change the bit, write
            // the register back (the line runs one command at a time).
            let wire = match point.ty {
                PointType::Bit(bit) => {
                    let limit = remaining(self.spec.timeout, Some(deadline)).ok_or_else(|| {
                        CommandError::new(
                            ErrorCode::Timeout,
                            format!("{name}: the deadline passed"),
                        )
                    })?;
                    let read = Request::Read {
                        area: point.area,
                        start: point.address,
                        count: 1,
                    };
                    let current = match self.transact(sched, unit, &read, limit).await {
                        Ok(Response::Data(d)) if d.len() >= 2 => u16::from_be_bytes([d[0], d[1]]),
                        Ok(_) => {
                            return Err(CommandError::new(
                                ErrorCode::DeviceException,
                                format!(
                                    "{name}: reading the register before setting bit {bit} gave no data"
                                ),
                            ));
                        }
                        Err(e) => return Err(fail(&e, &confirmed)),
                    };
                    let mask = 1u16 << bit;
                    let on = wire.get(1).is_some_and(|b| *b != 0);
                    let updated = if on { current | mask } else { current & !mask };
                    updated.to_be_bytes().to_vec()
                }
                _ => wire,
            };
            for request in write_requests(&point, &wire, single) {
                let limit = remaining(self.spec.timeout, Some(deadline)).ok_or_else(|| {
                    CommandError::new(ErrorCode::Timeout, format!("{name}: the deadline passed"))
                })?;
                match self.transact(sched, unit, &request, limit).await {
                    Ok(_) => {}
                    Err(e) => return Err(fail(&e, &confirmed)),
                }
            }
            if verify {
                let limit = remaining(self.spec.timeout, Some(deadline)).ok_or_else(|| {
                    CommandError::new(
                        ErrorCode::Timeout,
                        format!("{name}: the deadline passed before read-back"),
                    )
                })?;
                let read = Request::Read {
                    area: point.area,
                    start: point.address,
                    count: point.ty.width(),
                };
                let expected = if point.area.is_bits() {
                    vec![u8::from(wire.get(1).is_some_and(|b| *b != 0))]
                } else {
                    wire.clone()
                };
                match self.transact(sched, unit, &read, limit).await {
                    Ok(Response::Data(data)) if data == expected => {}
                    Ok(response) => {
                        let found = match response {
                            Response::Data(data) => decode_point(&point, point.address, &data)
                                .map_or_else(|e| e.to_string(), |v| v.to_string()),
                            Response::Written => "a write confirmation".to_string(),
                        };
                        return Err(CommandError::new(
                            ErrorCode::DeviceException,
                            format!(
                                "{name}: the device accepted {value} but reads back a different value: {found}"
                            ),
                        ));
                    }
                    Err(e) => return Err(fail(&e, &confirmed)),
                }
            }
            let stored = if point.area.is_bits() {
                Value::Bool(wire.get(1).is_some_and(|b| *b != 0))
            } else {
                codec::decode(&point, &wire).unwrap_or_else(|_| value.clone())
            };
            tracing::info!(device = %self.spec.devices[device].name, point = %name, value = %stored, "modbus write confirmed");
            confirmed.insert(name.clone(), stored);
        }
        Ok(confirmed)
    }
}

impl ModbusLine {
    /// Coils of one command at consecutive addresses go in one FC15
    /// request (and one read-back); each run is confirmed as a whole.
    async fn write_coil_runs(
        &mut self,
        sched: &mut LineScheduler<Queued>,
        device: usize,
        values: &BTreeMap<String, Value>,
        deadline: Instant,
        confirmed: &mut BTreeMap<String, Value>,
    ) -> Result<(), CommandError> {
        let spec = &self.spec.devices[device];
        let mut coils: Vec<(u16, &String, bool)> = Vec::new();
        for (name, value) in values {
            let (_, point) = find_point(spec, name)?;
            if point.area == Area::Coil {
                let wire = prepare_write(point, value)?;
                coils.push((point.address, name, wire.get(1).is_some_and(|b| *b != 0)));
            }
        }
        coils.sort_by_key(|(address, _, _)| *address);
        let mut runs: Vec<&[(u16, &String, bool)]> = Vec::new();
        let mut start = 0;
        for i in 1..=coils.len() {
            let breaks = i == coils.len() || coils[i].0 != coils[i - 1].0.wrapping_add(1);
            if breaks {
                if i - start >= 2 {
                    runs.push(&coils[start..i]);
                }
                start = i;
            }
        }
        let unit = spec.unit;
        let verify = spec.verify_writes;
        for run in runs {
            let first = run[0].0;
            let bits: Vec<bool> = run.iter().map(|(_, _, b)| *b).collect();
            let names: Vec<&str> = run.iter().map(|(_, n, _)| n.as_str()).collect();
            let label = names.join(", ");
            let timeout_error =
                || CommandError::new(ErrorCode::Timeout, format!("{label}: the deadline passed"));
            let fail =
                |e: &TransactionError| CommandError::new(command_code(e), format!("{label}: {e}"));
            let limit = remaining(self.spec.timeout, Some(deadline)).ok_or_else(timeout_error)?;
            let request = Request::WriteCoils {
                start: first,
                values: bits.clone(),
            };
            self.transact(sched, unit, &request, limit)
                .await
                .map_err(|e| fail(&e))?;
            if verify {
                let limit =
                    remaining(self.spec.timeout, Some(deadline)).ok_or_else(timeout_error)?;
                let read = Request::Read {
                    area: Area::Coil,
                    start: first,
                    count: bits.len() as u16,
                };
                match self.transact(sched, unit, &read, limit).await {
                    Ok(Response::Data(data)) if data == crate::pdu::pack_bits(&bits) => {}
                    Ok(_) => {
                        return Err(CommandError::new(
                            ErrorCode::DeviceException,
                            format!(
                                "{label}: the device accepted the coils but reads back different states"
                            ),
                        ));
                    }
                    Err(e) => return Err(fail(&e)),
                }
            }
            tracing::info!(device = %self.spec.devices[device].name, points = %label, "modbus coil write confirmed");
            for (_, name, bit) in run {
                confirmed.insert((*name).clone(), Value::Bool(*bit));
            }
        }
        Ok(())
    }
}

impl Adapter for ModbusLine {
    fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(self.run_line(ctx))
    }
}

fn closed(ctx: &AdapterContext) -> Result<(), AdapterError> {
    if ctx.shutdown.is_cancelled() {
        Ok(())
    } else {
        Err(AdapterError::new("the uplink channel closed"))
    }
}

/// The time one transaction may take: the line timeout, cut short by a
/// command's deadline. `None` once the deadline has passed.
fn remaining(line_timeout: Duration, deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(line_timeout),
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(line_timeout))
        }
    }
}

fn find_point<'a>(spec: &'a DeviceSpec, name: &str) -> Result<(usize, &'a Point), CommandError> {
    spec.points
        .iter()
        .enumerate()
        .find(|(_, p)| &*p.name == name)
        .ok_or_else(|| {
            CommandError::new(
                ErrorCode::UnknownPoint,
                format!("device `{}` has no point `{name}`", spec.name),
            )
        })
}

/// Check a value against the point (writable, type, min/max) and encode it.
fn prepare_write(point: &Point, value: &Value) -> Result<Vec<u8>, CommandError> {
    if !point.writable {
        return Err(CommandError::new(
            ErrorCode::NotWritable,
            format!("point `{}` is not writable", point.name),
        ));
    }
    if point.ty.is_numeric()
        && let Some(x) = value.as_f64()
    {
        let below = point.min.is_some_and(|min| x < min);
        let above = point.max.is_some_and(|max| x > max);
        if below || above || x.is_nan() {
            return Err(CommandError::new(
                ErrorCode::OutOfRange,
                format!(
                    "{value} is outside the range of point `{}` ({}..={})",
                    point.name,
                    point.min.map_or("-inf".into(), |m| m.to_string()),
                    point.max.map_or("inf".into(), |m| m.to_string())
                ),
            ));
        }
    }
    codec::encode(point, value).map_err(|e| match e {
        EncodeError::Type { .. } => CommandError::new(
            ErrorCode::InvalidValue,
            format!("point `{}`: {e}", point.name),
        ),
        EncodeError::Range { .. } => CommandError::new(
            ErrorCode::OutOfRange,
            format!("point `{}`: {e}", point.name),
        ),
    })
}

/// The requests that write `wire` to `point`: FC05 for a coil, FC06 for a
/// single register, FC16 for more (or FC06 per register when forced).
fn write_requests(point: &Point, wire: &[u8], single: bool) -> Vec<Request> {
    if point.area == Area::Coil {
        return vec![Request::WriteCoil {
            address: point.address,
            value: wire.get(1).is_some_and(|b| *b != 0),
        }];
    }
    let registers: Vec<u16> = wire
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    if registers.len() == 1 || single {
        return registers
            .iter()
            .enumerate()
            .map(|(i, value)| Request::WriteRegister {
                address: point.address.wrapping_add(i as u16),
                value: *value,
            })
            .collect();
    }
    vec![Request::WriteRegisters {
        start: point.address,
        data: wire.to_vec(),
    }]
}

/// Decode one point out of a read response that starts at `start`.
fn decode_point(point: &Point, start: u16, data: &[u8]) -> Result<Value, PointError> {
    let offset = usize::from(point.address.saturating_sub(start));
    let short = || {
        PointError::new(
            PointErrorKind::Decode,
            format!("the response has no data for address {}", point.address),
        )
    };
    if point.area.is_bits() {
        let byte = data.get(offset / 8).ok_or_else(short)?;
        return Ok(Value::Bool(byte >> (offset % 8) & 1 == 1));
    }
    let len = usize::from(point.ty.width()) * 2;
    let wire = data.get(offset * 2..offset * 2 + len).ok_or_else(short)?;
    codec::decode(point, wire).map_err(|e| PointError::new(PointErrorKind::Decode, e.to_string()))
}

fn point_error(e: &TransactionError) -> PointError {
    let kind = match e {
        TransactionError::Timeout { .. } => PointErrorKind::Timeout,
        TransactionError::Exception(_) => PointErrorKind::DeviceException,
        TransactionError::Malformed(_) => PointErrorKind::Decode,
        TransactionError::Io(_) => PointErrorKind::Io,
    };
    PointError::new(kind, e.to_string())
}

fn command_code(e: &TransactionError) -> ErrorCode {
    match e {
        TransactionError::Timeout { .. } => ErrorCode::Timeout,
        TransactionError::Exception(_) | TransactionError::Malformed(_) => {
            ErrorCode::DeviceException
        }
        TransactionError::Io(_) => ErrorCode::DeviceOffline,
    }
}
