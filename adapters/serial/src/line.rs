//! One device on one serial port, running: opens the port (reopening with
//! backoff after it is lost), moves bytes into the framer, polls, turns
//! frames into telemetry, and executes commands one exchange at a time.
//!
//! A serial line is half-duplex in practice: only one exchange (poll, read,
//! write, raw send) is outstanding; commands that arrive meanwhile queue.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ferrogate_sdk::{
    AdapterContext, AdapterError, CommandError, CommandRequest, DeviceEvent, DeviceState,
    DeviceStatus, ErrorCode, Operation, PointError, PointErrorKind, Reading, Telemetry, Timestamp,
    Uplink, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_serial::{SerialPort, SerialStream};

use crate::bytes::printable;
use crate::config::{Device, Mode};
use crate::downlink::{Reply, judge_reply, raw_payload, validate_write};
use crate::framer::{Framer, FramerStats};
use crate::meta::device_meta;
use crate::nmea;
use crate::parse::{Field, Fields, NMEA_SENTENCE, ParseError};
use crate::port::open;
use crate::readings::readings;
use crate::report::{Backoff, ReportLimiter};

/// Why a session on an open port ended.
enum End {
    Shutdown,
    Lost(String),
}

/// The uplink is closed: the runtime is going away.
struct Closed;

/// Commands waiting while an exchange is outstanding, at most.
const QUEUE_LIMIT: usize = 32;

/// The exchange the line is waiting on.
enum Exchange {
    Poll {
        deadline: Instant,
    },
    Read {
        request: CommandRequest,
        points: Vec<String>,
        deadline: Instant,
    },
    Write {
        request: CommandRequest,
        /// Value being written now.
        current: (String, Value),
        /// `current` was sent and awaits its confirming reply.
        sent: bool,
        /// Still to send after it.
        rest: VecDeque<(String, Value)>,
        confirmed: BTreeMap<String, Value>,
        deadline: Instant,
    },
    Raw {
        request: CommandRequest,
        deadline: Instant,
    },
}

impl Exchange {
    fn deadline(&self) -> Instant {
        match self {
            Exchange::Poll { deadline }
            | Exchange::Read { deadline, .. }
            | Exchange::Write { deadline, .. }
            | Exchange::Raw { deadline, .. } => *deadline,
        }
    }
}

/// Counters that survive port loss and adapter restarts.
#[derive(Debug, Default, Clone)]
pub struct LineCounters {
    pub parse_errors: u64,
    pub checksum_errors: u64,
    pub unsolicited_frames: u64,
    pub skipped_polls: u64,
    /// Framer counters from sessions that ended.
    pub framer_before: FramerStats,
}

/// The running state of one device's line.
pub struct Line {
    device: Arc<Device>,
    ctx: AdapterContext,
    framer: Framer,
    counters: LineCounters,
    reported_framer: FramerStats,
    parse_limiter: ReportLimiter,
    framing_limiter: ReportLimiter,
    state: Option<DeviceState>,
    unanswered_polls: u32,
    /// When the last frame arrived (or the port opened), for silence_timeout.
    last_frame: Instant,
    queue: VecDeque<CommandRequest>,
}

impl Line {
    pub fn new(device: Arc<Device>, ctx: AdapterContext, counters: LineCounters) -> Self {
        let interval = device.error_report_interval;
        Line {
            framer: Framer::new(device.framing.clone(), device.max_frame),
            device,
            ctx,
            reported_framer: counters.framer_before,
            counters,
            parse_limiter: ReportLimiter::new(interval),
            framing_limiter: ReportLimiter::new(interval),
            state: None,
            unanswered_polls: 0,
            last_frame: Instant::now(),
            queue: VecDeque::new(),
        }
    }

    /// Counters to carry into the next run.
    pub fn counters(&self) -> LineCounters {
        let mut c = self.counters.clone();
        c.framer_before = self.framer_stats();
        c
    }

    fn framer_stats(&self) -> FramerStats {
        let now = self.framer.stats();
        let before = self.counters.framer_before;
        FramerStats {
            frames: before.frames + now.frames,
            discarded_bytes: before.discarded_bytes + now.discarded_bytes,
            oversize_frames: before.oversize_frames + now.oversize_frames,
        }
    }

    /// Run until shutdown: open, serve, lose, back off, reopen.
    pub async fn run(&mut self) -> Result<(), AdapterError> {
        match self.serve().await {
            Ok(()) => Ok(()),
            Err(Closed) if self.ctx.shutdown.is_cancelled() => Ok(()),
            Err(Closed) => Err(AdapterError::new("uplink closed")),
        }
    }

    async fn serve(&mut self) -> Result<(), Closed> {
        self.send(Uplink::Meta(device_meta(&self.device))).await?;
        let mut backoff = Backoff::new(self.device.reopen_min, self.device.reopen_max);
        loop {
            if self.ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            match open(&self.device.port) {
                Ok(port) => {
                    tracing::info!(device = %self.device.name, port = %self.device.port.path, "serial port open");
                    backoff.reset();
                    self.unanswered_polls = 0;
                    if self.device.mode == Mode::FreeRunning {
                        self.set_state(DeviceState::Online, "port open".into())
                            .await?;
                    }
                    match self.session(port).await? {
                        End::Shutdown => return Ok(()),
                        End::Lost(reason) => {
                            tracing::warn!(device = %self.device.name, %reason, "serial port lost");
                            self.set_state(DeviceState::Offline, reason).await?;
                        }
                    }
                }
                Err(e) => {
                    let reason = format!("cannot open {}: {e}", self.device.port.path);
                    if self.state != Some(DeviceState::Offline) {
                        tracing::warn!(device = %self.device.name, %reason, "serial port unavailable");
                    }
                    self.set_state(DeviceState::Offline, reason).await?;
                }
            }
            if self.wait_offline(backoff.next_wait()).await? {
                return Ok(());
            }
        }
    }

    /// Wait before reopening, answering commands with `device_offline`.
    /// True when shutdown was requested.
    async fn wait_offline(&mut self, wait: Duration) -> Result<bool, Closed> {
        for request in self.queue.drain(..) {
            request.respond(Err(offline()));
        }
        let until = Instant::now() + wait;
        // Keep beating through long backoffs: waiting is progress too.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut commands_open = true;
        let commands = self.ctx.commands.clone();
        loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Ok(true),
                _ = tokio::time::sleep_until(until) => return Ok(false),
                _ = tick.tick() => self.ctx.health.beat(),
                request = commands.recv(), if commands_open => match request {
                    Some(request) => request.respond(Err(offline())),
                    None => commands_open = false,
                },
            }
        }
    }

    async fn session(&mut self, mut port: SerialStream) -> Result<End, Closed> {
        self.framer.reset();
        self.last_frame = Instant::now();
        let mut poll = match &self.device.mode {
            Mode::Poll { period, .. } => {
                let mut i = tokio::time::interval(*period);
                i.set_missed_tick_behavior(MissedTickBehavior::Delay);
                Some(i)
            }
            Mode::FreeRunning => None,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut exchange: Option<Exchange> = None;
        let mut commands_open = true;
        let mut buf = [0u8; 1024];
        let shutdown = self.ctx.shutdown.clone();
        let commands = self.ctx.commands.clone();
        loop {
            if exchange.is_none() && !self.queue.is_empty() {
                let Some(request) = self.queue.pop_front() else {
                    continue;
                };
                match self.start_command(&mut port, request).await {
                    Ok(started) => exchange = started,
                    Err(reason) => return Ok(self.lose(reason, exchange)),
                }
                continue;
            }
            let deadline = exchange.as_ref().map(Exchange::deadline);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.abandon(exchange, "gateway shutting down");
                    for request in self.queue.drain(..) {
                        request.respond(Err(CommandError::new(ErrorCode::DeviceOffline, "gateway shutting down")));
                    }
                    return Ok(End::Shutdown);
                }
                read = port.read(&mut buf) => match read {
                    Ok(0) => return Ok(self.lose("port closed".into(), exchange)),
                    Ok(n) => {
                        self.ctx.health.beat();
                        self.framer.push(&buf[..n]);
                        while let Some(frame) = self.framer.next_frame() {
                            self.heard_from().await?;
                            exchange = self.on_frame(&frame, exchange).await?;
                            // A confirmed write may have more values to send.
                            if let Err(reason) = self.send_pending_write(&mut port, &mut exchange).await {
                                return Ok(self.lose(reason, exchange));
                            }
                        }
                        self.report_framing().await?;
                    }
                    Err(e) => return Ok(self.lose(format!("read failed: {e}"), exchange)),
                },
                _ = sleep_until_opt(deadline) => {
                    if let Some(expired) = exchange.take() {
                        self.on_timeout(expired).await?;
                    }
                }
                _ = tick_opt(poll.as_mut()) => {
                    if exchange.is_some() {
                        self.counters.skipped_polls += 1;
                        tracing::debug!(device = %self.device.name, "poll skipped: line busy");
                    } else {
                        match self.send_query(&mut port).await {
                            Ok(()) => exchange = Some(Exchange::Poll { deadline: Instant::now() + self.device.timeout }),
                            Err(reason) => return Ok(self.lose(reason, exchange)),
                        }
                    }
                }
                request = commands.recv(), if commands_open => match request {
                    Some(request) if exchange.is_none() => self.queue.push_back(request),
                    Some(request) if self.queue.len() >= QUEUE_LIMIT => {
                        request.respond(Err(CommandError::new(ErrorCode::Busy, "too many commands queued for this serial line")));
                    }
                    Some(request) => self.queue.push_back(request),
                    None => commands_open = false,
                },
                _ = tick.tick() => {
                    self.ctx.health.beat();
                    if std::fs::metadata(&self.device.port.path).is_err() {
                        return Ok(self.lose(format!("{} disappeared", self.device.port.path), exchange));
                    }
                    self.report_framing().await?;
                    self.flush_parse_report().await?;
                    self.check_silence().await?;
                }
            }
        }
    }

    fn lose(&mut self, reason: String, exchange: Option<Exchange>) -> End {
        self.abandon(exchange, &reason);
        for request in self.queue.drain(..) {
            request.respond(Err(offline()));
        }
        End::Lost(reason)
    }

    fn abandon(&mut self, exchange: Option<Exchange>, why: &str) {
        let error = CommandError::new(ErrorCode::DeviceOffline, why.to_string());
        match exchange {
            Some(Exchange::Read { request, .. })
            | Some(Exchange::Write { request, .. })
            | Some(Exchange::Raw { request, .. }) => request.respond(Err(error)),
            Some(Exchange::Poll { .. }) | None => {}
        }
    }

    async fn write(&mut self, port: &mut SerialStream, bytes: &[u8]) -> Result<(), String> {
        let write = async {
            port.write_all(bytes).await?;
            port.flush().await
        };
        // Hardware flow control can hold a write forever.
        match tokio::time::timeout(self.device.timeout.max(Duration::from_millis(100)), write).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err("write did not complete (flow control?)".into()),
        }
    }

    async fn send_query(&mut self, port: &mut SerialStream) -> Result<(), String> {
        let Mode::Poll { query, .. } = &self.device.mode else {
            return Ok(());
        };
        let query = query.clone();
        self.forget_stale_input(port);
        self.write(port, &query).await
    }

    /// On a polled line, whatever arrived before a request (a late answer to
    /// an earlier one) must not be taken for its answer. A free-running
    /// line keeps everything: it is data.
    fn forget_stale_input(&mut self, port: &mut SerialStream) {
        if matches!(self.device.mode, Mode::Poll { .. }) {
            let _ = port.clear(tokio_serial::ClearBuffer::Input);
            self.framer.reset();
        }
    }

    /// Validate a command and start its exchange; `None` when it was
    /// answered at once.
    async fn start_command(
        &mut self,
        port: &mut SerialStream,
        request: CommandRequest,
    ) -> Result<Option<Exchange>, String> {
        let command_deadline = request.command.deadline;
        if request.is_abandoned() {
            return Ok(None);
        }
        if command_deadline <= Instant::now() {
            request.respond(Err(CommandError::new(
                ErrorCode::Expired,
                "the deadline passed while the line was busy",
            )));
            return Ok(None);
        }
        let device = self.device.clone();
        match request.command.op.clone() {
            Operation::Read { points } => {
                if let Some(unknown) = points
                    .iter()
                    .find(|p| !device.points.iter().any(|s| &s.name == *p))
                {
                    let code = if device.command(unknown).is_some() {
                        ErrorCode::BadRequest
                    } else {
                        ErrorCode::UnknownPoint
                    };
                    request.respond(Err(CommandError::new(
                        code,
                        format!("`{unknown}` is not a readable point of {}", device.name),
                    )));
                    return Ok(None);
                }
                if matches!(device.mode, Mode::Poll { .. }) {
                    if let Err(reason) = self.send_query(port).await {
                        request.respond(Err(CommandError::new(
                            ErrorCode::DeviceOffline,
                            reason.clone(),
                        )));
                        return Err(reason);
                    }
                }
                let deadline = (Instant::now() + device.timeout).min(command_deadline);
                Ok(Some(Exchange::Read {
                    request,
                    points,
                    deadline,
                }))
            }
            Operation::Write { values } => {
                let mut checked = VecDeque::new();
                for (name, value) in values {
                    match validate_write(&device, &name, &value) {
                        Ok(v) => checked.push_back((name, v)),
                        Err(e) => {
                            request.respond(Err(e));
                            return Ok(None);
                        }
                    }
                }
                let Some(current) = checked.pop_front() else {
                    request.respond(Err(CommandError::new(
                        ErrorCode::BadRequest,
                        "write without values",
                    )));
                    return Ok(None);
                };
                let mut exchange = Some(Exchange::Write {
                    request,
                    current,
                    sent: false,
                    rest: checked,
                    confirmed: BTreeMap::new(),
                    deadline: command_deadline,
                });
                if let Err(reason) = self.send_pending_write(port, &mut exchange).await {
                    self.abandon(exchange, &reason);
                    return Err(reason);
                }
                Ok(exchange)
            }
            Operation::Protocol {
                op, value, args, ..
            } if op == "send" => {
                if !device.allow_raw_send {
                    request.respond(Err(CommandError::new(
                        ErrorCode::BadRequest,
                        format!(
                            "raw send is not allowed on {} (set allow_raw_send = true)",
                            device.name
                        ),
                    )));
                    return Ok(None);
                }
                let data = match raw_payload(value.as_ref(), &args) {
                    Ok(d) => d,
                    Err(e) => {
                        request.respond(Err(CommandError::new(ErrorCode::BadRequest, e)));
                        return Ok(None);
                    }
                };
                self.forget_stale_input(port);
                if let Err(reason) = self.write(port, &data).await {
                    request.respond(Err(CommandError::new(
                        ErrorCode::DeviceOffline,
                        reason.clone(),
                    )));
                    return Err(reason);
                }
                if args.get("reply").and_then(serde_json::Value::as_bool) == Some(true) {
                    let deadline = (Instant::now() + device.timeout).min(command_deadline);
                    return Ok(Some(Exchange::Raw { request, deadline }));
                }
                request.respond(Ok(BTreeMap::from([(
                    "sent".to_string(),
                    Value::UInt(data.len() as u64),
                )])));
                Ok(None)
            }
            other => {
                request.respond(Err(CommandError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "operation `{}` is not supported by serial devices (read, write, send)",
                        other.name()
                    ),
                )));
                Ok(None)
            }
        }
    }

    /// Send the value the write exchange is at, unless it is already waiting
    /// for its confirmation; values without a reply pattern complete on send.
    async fn send_pending_write(
        &mut self,
        port: &mut SerialStream,
        exchange: &mut Option<Exchange>,
    ) -> Result<(), String> {
        loop {
            let Some(Exchange::Write {
                current,
                sent,
                deadline,
                request,
                ..
            }) = exchange.as_mut()
            else {
                return Ok(());
            };
            if *sent {
                return Ok(());
            }
            let Some(spec) = self.device.command(&current.0).cloned() else {
                return Ok(());
            };
            let bytes = spec.template.render(&current.1);
            *deadline = (Instant::now() + spec.timeout).min(request.command.deadline);
            tracing::debug!(device = %self.device.name, command = %spec.name, bytes = %printable(&bytes, 64), "command sent");
            self.forget_stale_input(port);
            self.write(port, &bytes).await?;
            if spec.reply.is_some() || spec.error_reply.is_some() {
                if let Some(Exchange::Write { sent, .. }) = exchange.as_mut() {
                    *sent = true;
                }
                return Ok(());
            }
            // Nothing to wait for: the write is as confirmed as it can be.
            if let Some(done) = advance_write(exchange) {
                done.0.respond(Ok(done.1));
                return Ok(());
            }
        }
    }

    async fn on_frame(
        &mut self,
        frame: &[u8],
        exchange: Option<Exchange>,
    ) -> Result<Option<Exchange>, Closed> {
        let parsed = self.device.parser.parse(frame);
        let ts = Timestamp::now();
        match exchange {
            None => {
                if matches!(self.device.mode, Mode::Poll { .. }) {
                    self.counters.unsolicited_frames += 1;
                    tracing::debug!(device = %self.device.name, frame = %printable(frame, 64), "unsolicited frame ignored");
                } else {
                    self.spontaneous(frame, parsed, ts).await?;
                }
                Ok(None)
            }
            Some(Exchange::Poll { .. }) => {
                self.poll_answered(frame, parsed, ts).await?;
                Ok(None)
            }
            Some(Exchange::Read {
                request,
                points,
                deadline,
            }) => {
                let fields = match parsed {
                    Ok(f) => f,
                    Err(e) => {
                        self.parse_failed(frame, &e, false).await?;
                        if matches!(self.device.mode, Mode::Poll { .. }) {
                            request.respond(Err(CommandError::new(
                                ErrorCode::DeviceException,
                                format!("reply does not parse: {e}"),
                            )));
                            return Ok(None);
                        }
                        return Ok(Some(Exchange::Read {
                            request,
                            points,
                            deadline,
                        }));
                    }
                };
                let poll = matches!(self.device.mode, Mode::Poll { .. });
                let readings = readings(&self.device, &fields, ts, poll);
                if readings.is_empty() {
                    return Ok(Some(Exchange::Read {
                        request,
                        points,
                        deadline,
                    }));
                }
                let mut values = BTreeMap::new();
                let mut errors = Vec::new();
                for r in &readings {
                    if !points.is_empty() && !points.iter().any(|p| **p == *r.point) {
                        continue;
                    }
                    match &r.value {
                        Ok(v) => {
                            values.insert(r.point.to_string(), v.clone());
                        }
                        Err(e) => errors.push(format!("{}: {e}", r.point)),
                    }
                }
                if poll {
                    self.answered().await?;
                }
                self.telemetry(readings, ts).await?;
                if !errors.is_empty() {
                    request.respond(Err(CommandError::new(
                        ErrorCode::DeviceException,
                        errors.join("; "),
                    )));
                } else if values.is_empty() {
                    return Ok(Some(Exchange::Read {
                        request,
                        points,
                        deadline,
                    }));
                } else {
                    request.respond(Ok(values));
                }
                Ok(None)
            }
            Some(Exchange::Raw { request, .. }) => {
                let reply = match std::str::from_utf8(frame) {
                    Ok(text) => Value::String(text.to_string()),
                    Err(_) => Value::Bytes(frame.to_vec()),
                };
                request.respond(Ok(BTreeMap::from([("reply".to_string(), reply)])));
                Ok(None)
            }
            Some(Exchange::Write {
                request,
                current,
                sent,
                rest,
                confirmed,
                deadline,
            }) => {
                let spec = self.device.command(&current.0).cloned();
                let exchange = Exchange::Write {
                    request,
                    current,
                    sent,
                    rest,
                    confirmed,
                    deadline,
                };
                let Some(spec) = spec else {
                    return Ok(Some(exchange));
                };
                match judge_reply(&spec, frame) {
                    Reply::Confirmed => {
                        let mut exchange = Some(exchange);
                        if let Some(done) = advance_write(&mut exchange) {
                            done.0.respond(Ok(done.1));
                        }
                        Ok(exchange)
                    }
                    Reply::Refused => {
                        if let Exchange::Write { request, .. } = exchange {
                            request.respond(Err(CommandError::new(
                                ErrorCode::DeviceException,
                                format!(
                                    "{} refused `{}`: {}",
                                    self.device.name,
                                    spec.name,
                                    printable(frame, 80)
                                ),
                            )));
                        }
                        Ok(None)
                    }
                    Reply::Other if self.device.mode == Mode::FreeRunning => {
                        // The instrument kept talking; the reply may still come.
                        self.spontaneous(frame, parsed, ts).await?;
                        Ok(Some(exchange))
                    }
                    Reply::Other => {
                        if let Exchange::Write { request, .. } = exchange {
                            request.respond(Err(CommandError::new(
                                ErrorCode::DeviceException,
                                format!(
                                    "unexpected reply to `{}`: {}",
                                    spec.name,
                                    printable(frame, 80)
                                ),
                            )));
                        }
                        Ok(None)
                    }
                }
            }
        }
    }

    async fn on_timeout(&mut self, expired: Exchange) -> Result<(), Closed> {
        let timeout = self.device.timeout;
        match expired {
            Exchange::Poll { .. } => {
                let ts = Timestamp::now();
                let error = PointError::new(
                    PointErrorKind::Timeout,
                    format!("no reply within {} ms", timeout.as_millis()),
                );
                let readings = self
                    .device
                    .points
                    .iter()
                    .map(|p| Reading::failed(p.name.clone(), error.clone(), ts))
                    .collect();
                self.telemetry(readings, ts).await?;
                self.unanswered_polls += 1;
                if self.unanswered_polls >= self.device.offline_after {
                    let reason = format!("no reply to {} consecutive polls", self.unanswered_polls);
                    self.set_state(DeviceState::Offline, reason).await?;
                }
            }
            Exchange::Read { request, .. } | Exchange::Raw { request, .. } => {
                request.respond(Err(CommandError::new(
                    ErrorCode::Timeout,
                    "no reply from the device in time",
                )));
            }
            Exchange::Write {
                request,
                current,
                confirmed,
                ..
            } => {
                let mut message = format!("`{}` was not confirmed in time", current.0);
                if !confirmed.is_empty() {
                    let done: Vec<&str> = confirmed.keys().map(String::as_str).collect();
                    message.push_str(&format!(" (already confirmed: {})", done.join(", ")));
                }
                request.respond(Err(CommandError::new(ErrorCode::Timeout, message)));
            }
        }
        Ok(())
    }

    async fn poll_answered(
        &mut self,
        frame: &[u8],
        parsed: Result<Fields, ParseError>,
        ts: Timestamp,
    ) -> Result<(), Closed> {
        self.answered().await?;
        let readings = match parsed {
            Ok(fields) => readings(&self.device, &fields, ts, true),
            Err(e) => {
                self.parse_failed(frame, &e, true).await?;
                let error =
                    PointError::new(PointErrorKind::Decode, format!("reply does not parse: {e}"));
                self.device
                    .points
                    .iter()
                    .map(|p| Reading::failed(p.name.clone(), error.clone(), ts))
                    .collect()
            }
        };
        self.telemetry(readings, ts).await
    }

    /// A frame arrived: a free-running instrument that had gone quiet is
    /// back.
    async fn heard_from(&mut self) -> Result<(), Closed> {
        self.last_frame = Instant::now();
        if self.device.mode == Mode::FreeRunning {
            self.set_state(DeviceState::Online, "receiving data".into())
                .await?;
        }
        Ok(())
    }

    async fn check_silence(&mut self) -> Result<(), Closed> {
        let Some(limit) = self.device.silence_timeout else {
            return Ok(());
        };
        if self.device.mode == Mode::FreeRunning && self.last_frame.elapsed() >= limit {
            let reason = format!("no data for {} ms", limit.as_millis());
            self.set_state(DeviceState::Offline, reason).await?;
        }
        Ok(())
    }

    async fn answered(&mut self) -> Result<(), Closed> {
        self.unanswered_polls = 0;
        self.set_state(DeviceState::Online, "answering polls".into())
            .await
    }

    async fn spontaneous(
        &mut self,
        frame: &[u8],
        parsed: Result<Fields, ParseError>,
        ts: Timestamp,
    ) -> Result<(), Closed> {
        match parsed {
            Ok(fields) => {
                let readings = readings(&self.device, &fields, ts, false);
                if !readings.is_empty() {
                    self.telemetry(readings, ts).await?;
                } else if let Some(Field::Text(kind)) = fields.get(NMEA_SENTENCE) {
                    // well-formed, but no point reads it: counted, so a
                    // sentence the config misses is visible
                    self.ctx.refusals.count(nmea::unused_reason(kind));
                }
                Ok(())
            }
            Err(e) => self.parse_failed(frame, &e, false).await,
        }
    }

    async fn parse_failed(
        &mut self,
        frame: &[u8],
        error: &ParseError,
        in_telemetry: bool,
    ) -> Result<(), Closed> {
        self.counters.parse_errors += 1;
        if error.is_checksum() {
            self.counters.checksum_errors += 1;
        }
        tracing::debug!(device = %self.device.name, %error, frame = %printable(frame, 64), "frame does not parse");
        let Some(suppressed) = self.parse_limiter.hit(std::time::Instant::now()) else {
            return Ok(());
        };
        let mut data = self.parse_counters(suppressed);
        data.insert("error".into(), error.to_string().into());
        data.insert("frame".into(), printable(frame, 120).into());
        data.insert("reported_as_point_errors".into(), in_telemetry.into());
        self.event("parse_error", data).await
    }

    fn parse_counters(&self, suppressed: u64) -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([
            ("parse_errors".into(), self.counters.parse_errors.into()),
            (
                "checksum_errors".into(),
                self.counters.checksum_errors.into(),
            ),
            ("suppressed".into(), suppressed.into()),
        ])
    }

    async fn flush_parse_report(&mut self) -> Result<(), Closed> {
        if let Some(suppressed) = self.parse_limiter.flush(std::time::Instant::now()) {
            let mut data = self.parse_counters(suppressed);
            data.insert("error".into(), "further frames did not parse".into());
            self.event("parse_error", data).await?;
        }
        Ok(())
    }

    /// Report new framer discards (garbage, oversize frames), at most once
    /// per interval; the event carries totals and what is new since the last
    /// one, so discards between reports are not lost.
    async fn report_framing(&mut self) -> Result<(), Closed> {
        let stats = self.framer_stats();
        let last = self.reported_framer;
        let new_discards = stats.discarded_bytes > last.discarded_bytes
            || stats.oversize_frames > last.oversize_frames;
        if !new_discards || !self.framing_limiter.try_report(std::time::Instant::now()) {
            return Ok(());
        }
        self.reported_framer = stats;
        let data = BTreeMap::from([
            ("discarded_bytes".into(), stats.discarded_bytes.into()),
            ("oversize_frames".into(), stats.oversize_frames.into()),
            (
                "new_discarded_bytes".into(),
                (stats.discarded_bytes - last.discarded_bytes).into(),
            ),
            (
                "new_oversize_frames".into(),
                (stats.oversize_frames - last.oversize_frames).into(),
            ),
            ("max_frame".into(), self.device.max_frame.into()),
        ]);
        tracing::debug!(device = %self.device.name, discarded = stats.discarded_bytes, oversize = stats.oversize_frames, "framing discards");
        self.event("framing_error", data).await
    }

    async fn event(
        &mut self,
        event: &str,
        data: BTreeMap<String, serde_json::Value>,
    ) -> Result<(), Closed> {
        self.send(Uplink::Event(DeviceEvent {
            device: self.device.name.clone(),
            ts: Timestamp::now(),
            event: event.to_string(),
            data,
        }))
        .await
    }

    async fn telemetry(&mut self, readings: Vec<Reading>, ts: Timestamp) -> Result<(), Closed> {
        self.send(Uplink::Telemetry(Telemetry {
            device: self.device.name.clone(),
            ts,
            readings,
        }))
        .await
    }

    async fn set_state(&mut self, state: DeviceState, reason: String) -> Result<(), Closed> {
        if self.state == Some(state) {
            return Ok(());
        }
        self.state = Some(state);
        self.send(Uplink::Status(DeviceStatus {
            device: self.device.name.clone(),
            state,
            reason: Some(reason),
            ts: Timestamp::now(),
        }))
        .await
    }

    async fn send(&self, uplink: Uplink) -> Result<(), Closed> {
        self.ctx.uplink.send(uplink).await.map_err(|_| Closed)
    }
}

fn offline() -> CommandError {
    CommandError::new(ErrorCode::DeviceOffline, "serial port is not open")
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The current value is confirmed: move to the next, or finish. Returns
/// the request and its values when the write is complete.
fn advance_write(
    exchange: &mut Option<Exchange>,
) -> Option<(CommandRequest, BTreeMap<String, Value>)> {
    let Some(Exchange::Write {
        current,
        sent,
        rest,
        confirmed,
        ..
    }) = exchange.as_mut()
    else {
        return None;
    };
    confirmed.insert(current.0.clone(), current.1.clone());
    if let Some(next) = rest.pop_front() {
        *current = next;
        *sent = false;
        return None;
    }
    match exchange.take() {
        Some(Exchange::Write {
            request, confirmed, ..
        }) => Some((request, confirmed)),
        _ => None,
    }
}
