//! The MQTT delivery state machine, decided without I/O and without a
//! clock: what the session does with the outbox's records and the broker
//! connection.
//!
//! [`NorthCore`] is fed with link events (connected, a publish went on the
//! wire with packet id N, PUBACK for N, connection lost), the outbox's
//! answers (records read back, records to send again) and `now`; it hands
//! out what to do next ([`NorthCore::poll_io`]) and when to be woken
//! ([`NorthCore::poll_timeout`]). The session driver ([`super::session`])
//! only moves things between it, the outbox and rumqttc.
//!
//! It owns: the connection lifecycle (connect timeout, reconnect backoff
//! with jitter), the window of publishes awaiting a PUBACK and the mapping
//! of packet ids back to outbox records, replay pacing (`replay_rate`),
//! the hung-link deadline (`ack_timeout`), when the acknowledged position
//! is saved, quarantining a message the broker keeps refusing, the
//! graceful close, and the link counters. The outbox keeps the records and
//! the acknowledged cursor.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferrogate_sdk::backoff::{Backoff, jittered};

use super::record::Record;

/// How often the acknowledged position is saved (when it moved): a crash
/// re-sends at most what was acknowledged in this time.
pub const SAVE_FLOOR_EVERY: Duration = Duration::from_millis(100);
/// Connections lost in a row, each right after the same message was sent
/// and before its PUBACK, after which that message is quarantined.
const QUARANTINE_AFTER: u32 = 5;
/// Losses after which the suspect is sent alone first, so the losses that
/// follow can only be its doing.
const PROBE_AFTER: u32 = 2;
/// "Right after": the loss came within this long of sending the message.
const SUSPECT_WITHIN: Duration = Duration::from_secs(5);
/// Part of the 5 s shutdown budget spent waiting for the last PUBACKs.
const DRAIN_ON_SHUTDOWN: Duration = Duration::from_millis(1500);
/// How long the offline status may take to be acknowledged, and the
/// DISCONNECT to close the connection, at shutdown.
const CLOSE_STEP: Duration = Duration::from_millis(500);
/// Most records read from the outbox at a time.
const READ_BATCH: usize = 256;

/// What the core needs to know about the configuration.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// QoS of the outbox's records: with 0, a publish written to the socket
    /// counts as delivered.
    pub qos: u8,
    /// Records published and not yet acknowledged, at most.
    pub window: usize,
    /// A PUBACK later than this after its publish means a hung link.
    pub ack_timeout: Duration,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    /// Replay pacing: records read from the outbox per second, if limited.
    pub replay_rate: Option<u32>,
    /// Seed of the reconnect jitter.
    pub seed: u64,
}

/// Something for the driver to do, in the order handed out.
#[derive(Debug, PartialEq)]
pub enum Io {
    /// Open a connection; [`NorthCore::connected`] or
    /// [`NorthCore::link_closed`] follows.
    Connect,
    /// Subscribe to the command topics.
    Subscribe,
    /// Publish the gateway's retained status (QoS 1, not in the outbox).
    PublishStatus { online: bool },
    /// Take every unacknowledged record again (`Outbox::rewind`) and give
    /// them to [`NorthCore::rewound`].
    Rewind,
    /// Read up to this many unsent records (`Outbox::next_unsent`) and give
    /// them to [`NorthCore::read_back`].
    Read(usize),
    /// Publish this record.
    Publish(Record),
    /// The broker has record `id` (`Outbox::ack`).
    Ack(u64),
    /// Save the acknowledged position if it moved (`Outbox::save_floor`).
    SaveFloor,
    /// Move record `id` to the dead-letter file (`Outbox::quarantine`).
    Quarantine(u64),
    /// Drop the connection without DISCONNECT; `retry_in` is when the next
    /// attempt starts (`None`: stopping).
    Drop {
        reason: String,
        retry_in: Option<Duration>,
    },
    /// Send DISCONNECT (the broker then discards the last will).
    Disconnect,
}

/// Link facts and counters, for the status API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub connected: bool,
    /// Why the last connection ended or failed.
    pub last_error: Option<String>,
    /// Publishes handed to the MQTT client (resends included).
    pub published: u64,
    /// PUBACKs received (or QoS 0 publishes written).
    pub acked: u64,
    /// PUBACKs with an MQTT 5 failure reason (not retried).
    pub rejected: u64,
    /// Connections lost or failed.
    pub reconnects: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Sending what is left and waiting for its PUBACKs.
    Draining,
    /// The offline status is out; waiting for its PUBACK.
    Offline,
    /// DISCONNECT sent; waiting for the connection to close.
    Disconnecting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Down { retry_at: Instant },
    Connecting { deadline: Instant },
    Up,
    Closing { step: Closing, until: Instant },
    Stopped,
}

/// One publish of this connection: the record it carries (`None` for the
/// gateway status) and when it was handed out.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: Option<u64>,
    sent: Instant,
}

/// A token bucket for `replay_rate`.
#[derive(Debug)]
struct Pace {
    rate: Option<f64>,
    tokens: f64,
    last: Instant,
}

impl Pace {
    fn new(rate: Option<u32>, now: Instant) -> Self {
        let rate = rate.map(f64::from);
        Pace {
            rate,
            tokens: rate.map_or(0.0, Self::burst),
            last: now,
        }
    }

    fn burst(rate: f64) -> f64 {
        (rate / 10.0).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let since = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + since * rate).min(Self::burst(rate));
            self.last = self.last.max(now);
        }
    }

    fn allowance(&mut self, want: usize, now: Instant) -> usize {
        if self.rate.is_none() {
            return want;
        }
        self.refill(now);
        (self.tokens.floor().max(0.0) as usize).min(want)
    }

    fn spend(&mut self, n: usize) {
        if self.rate.is_some() {
            self.tokens -= n as f64;
        }
    }

    /// When one more record may be read, if pacing holds it back now.
    fn ready_at(&self) -> Option<Instant> {
        let rate = self.rate?;
        (self.tokens < 1.0).then(|| self.last + Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }
}

/// xorshift64*, for the reconnect jitter only.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The delivery state machine. See the module documentation.
#[derive(Debug)]
pub struct NorthCore {
    cfg: CoreConfig,
    state: State,
    /// Connections that failed in a row since one was up.
    failures: u32,
    /// The record that headed the window at the last losses, and how many.
    suspect: Option<(u64, u32)>,
    rng: Rng,
    io: VecDeque<Io>,
    /// Records read back (or rewound) and not yet published.
    queue: VecDeque<Record>,
    /// A `Read` or `Rewind` was handed out and not answered yet.
    reading: bool,
    /// The last read found nothing more to send; reset by
    /// [`NorthCore::backlog_grew`].
    drained: bool,
    /// Publishes handed out whose packet id rumqttc has not reported yet.
    awaiting_pkid: VecDeque<Slot>,
    /// Publishes on the wire awaiting their PUBACK, in send order.
    on_wire: VecDeque<(u16, Slot)>,
    /// Slots of either list that carry a record.
    records_in_flight: usize,
    /// Sending only this record (the suspect) until it is acknowledged;
    /// `true` once it is out.
    probing: Option<(u64, bool)>,
    pace: Pace,
    floor_moved: bool,
    floor_saved_at: Instant,
    counters: LinkCounters,
}

impl NorthCore {
    /// A core that connects at `now`.
    pub fn new(cfg: CoreConfig, now: Instant) -> Self {
        NorthCore {
            rng: Rng(cfg.seed | 1),
            pace: Pace::new(cfg.replay_rate, now),
            cfg,
            state: State::Down { retry_at: now },
            failures: 0,
            suspect: None,
            io: VecDeque::new(),
            queue: VecDeque::new(),
            reading: false,
            drained: false,
            awaiting_pkid: VecDeque::new(),
            on_wire: VecDeque::new(),
            records_in_flight: 0,
            probing: None,
            floor_moved: false,
            floor_saved_at: now,
            counters: LinkCounters::default(),
        }
    }

    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    /// Whether the core is done (stopped and closed).
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped && self.io.is_empty()
    }

    /// Whether a connection is open or being opened (the driver holds one).
    pub fn has_link(&self) -> bool {
        matches!(
            self.state,
            State::Connecting { .. } | State::Up | State::Closing { .. }
        )
    }

    /// New records may be waiting in the outbox.
    pub fn backlog_grew(&mut self) {
        self.drained = false;
    }

    /// The broker accepted the connection.
    pub fn connected(&mut self, now: Instant) {
        if !matches!(self.state, State::Connecting { .. }) {
            return;
        }
        self.state = State::Up;
        self.counters.connected = true;
        self.counters.last_error = None;
        self.io.push_back(Io::Subscribe);
        self.publish_status(true, now);
        self.io.push_back(Io::Rewind);
        self.reading = true;
        self.drained = false;
        self.pace = Pace::new(self.cfg.replay_rate, now);
    }

    /// The records to send again on this connection, oldest first.
    pub fn rewound(&mut self, records: Vec<Record>) {
        self.reading = false;
        if !matches!(self.state, State::Up | State::Closing { .. }) {
            return;
        }
        let probe = self
            .suspect
            .is_some_and(|(_, losses)| losses >= PROBE_AFTER);
        if probe && records.len() > 1 {
            // The same message headed the window at the last losses: send
            // it alone first. If the broker drops us now, it is that one.
            self.probing = Some((records[0].id, false));
        }
        self.queue.extend(records);
    }

    /// The records a `Read(n)` found, oldest first (fewer than `n`: that is
    /// all there is for now).
    pub fn read_back(&mut self, records: Vec<Record>, asked: usize) {
        self.reading = false;
        self.pace.spend(records.len());
        if records.len() < asked {
            self.drained = true;
        }
        if matches!(self.state, State::Up | State::Closing { .. }) {
            self.queue.extend(records);
        }
    }

    /// rumqttc put the next requested publish on the wire with `pkid` (0
    /// for QoS 0).
    pub fn sent(&mut self, pkid: u16) {
        let Some(slot) = self.awaiting_pkid.pop_front() else {
            return;
        };
        if pkid == 0 || self.cfg.qos == 0 {
            // QoS 0: written to the socket is all the confirmation there is.
            if let Some(id) = slot.id {
                self.delivered(id);
            }
        } else {
            self.on_wire.push_back((pkid, slot));
        }
    }

    /// The broker acknowledged `pkid`; `rejected` is an MQTT 5 failure
    /// reason (the record leaves the outbox all the same: not retried).
    pub fn acked(&mut self, pkid: u16, rejected: Option<&str>) {
        let Some(i) = self.on_wire.iter().position(|(p, _)| *p == pkid) else {
            return;
        };
        let Some((_, slot)) = self.on_wire.remove(i) else {
            return;
        };
        if let Some(reason) = rejected {
            self.counters.rejected += 1;
            tracing::warn!(pkid, %reason, "broker refused a publish; not retried");
        }
        match slot.id {
            Some(id) => self.delivered(id),
            None => self.counters.acked += 1,
        }
    }

    fn delivered(&mut self, id: u64) {
        self.counters.acked += 1;
        self.records_in_flight = self.records_in_flight.saturating_sub(1);
        self.floor_moved = true;
        if self.probing.is_some_and(|(p, _)| p == id) {
            self.probing = None;
        }
        self.io.push_back(Io::Ack(id));
    }

    /// The connection (or the attempt) ended.
    pub fn link_closed(&mut self, reason: &str, now: Instant) {
        match self.state {
            State::Connecting { .. } => self.lost(reason, false, now),
            State::Up => self.lost(reason, true, now),
            State::Closing { .. } => self.stopped(),
            State::Down { .. } | State::Stopped => {}
        }
    }

    /// Stop: drain and close gracefully if connected, at once otherwise.
    pub fn stop(&mut self, now: Instant) {
        match self.state {
            State::Up => {
                self.state = State::Closing {
                    step: Closing::Draining,
                    until: now + DRAIN_ON_SHUTDOWN,
                };
                // Pacing does not hold back the last messages.
                self.pace = Pace::new(None, now);
            }
            State::Connecting { .. } => self.stopped(),
            State::Down { .. } => self.state = State::Stopped,
            State::Closing { .. } | State::Stopped => {}
        }
    }

    /// When [`NorthCore::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Down { retry_at } => Some(retry_at),
            State::Connecting { deadline } => Some(deadline),
            State::Up => {
                let hung = self.oldest_record_sent().map(|s| s + self.cfg.ack_timeout);
                let save = self
                    .floor_moved
                    .then_some(self.floor_saved_at + SAVE_FLOOR_EVERY);
                let paced = if self.wants_read() {
                    self.pace.ready_at()
                } else {
                    None
                };
                [hung, save, paced].into_iter().flatten().min()
            }
            State::Closing { until, .. } => Some(until),
            State::Stopped => None,
        }
    }

    /// Deadlines that passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Down { retry_at } if now >= retry_at => {
                self.state = State::Connecting {
                    deadline: now + self.cfg.connect_timeout,
                };
                self.io.push_back(Io::Connect);
            }
            State::Connecting { deadline } if now >= deadline => {
                self.lost("connect timed out", false, now);
            }
            State::Up => {
                if self
                    .oldest_record_sent()
                    .is_some_and(|s| now >= s + self.cfg.ack_timeout)
                {
                    let reason = format!(
                        "no PUBACK within {:?}: uplink hung, reconnecting",
                        self.cfg.ack_timeout
                    );
                    self.lost(&reason, true, now);
                    return;
                }
                if self.floor_moved && now >= self.floor_saved_at + SAVE_FLOOR_EVERY {
                    self.save_floor(now);
                }
            }
            State::Closing { until, .. } if now >= until => self.close_step(now),
            _ => {}
        }
    }

    /// The next thing to do, if any. Call until `None` after every input.
    pub fn poll_io(&mut self, now: Instant) -> Option<Io> {
        if let Some(io) = self.io.pop_front() {
            return Some(io);
        }
        if let State::Closing {
            step: Closing::Offline,
            ..
        } = self.state
            && self.awaiting_pkid.is_empty()
            && self.on_wire.is_empty()
        {
            // The offline status (and everything before it) is acknowledged.
            self.close_step(now);
            return self.io.pop_front();
        }
        let sending = match self.state {
            State::Up => true,
            State::Closing { step, .. } => step == Closing::Draining,
            _ => false,
        };
        if !sending || self.reading {
            return None;
        }
        if let Some(io) = self.next_publish(now) {
            return Some(io);
        }
        if self.wants_read() {
            let room = self.cfg.window.saturating_sub(self.records_in_flight);
            let n = self.pace.allowance(room.min(READ_BATCH), now);
            if n > 0 {
                self.reading = true;
                return Some(Io::Read(n));
            }
        }
        if let State::Closing {
            step: Closing::Draining,
            ..
        } = self.state
            && self.records_in_flight == 0
            && self.queue.is_empty()
            && self.drained
        {
            self.close_step(now);
            return self.io.pop_front();
        }
        None
    }

    fn next_publish(&mut self, now: Instant) -> Option<Io> {
        match self.probing {
            Some((id, false)) if self.queue.front().is_some_and(|r| r.id == id) => {
                self.probing = Some((id, true));
            }
            Some(_) => return None,
            None if self.records_in_flight >= self.cfg.window => return None,
            None => {}
        }
        let record = self.queue.pop_front()?;
        self.awaiting_pkid.push_back(Slot {
            id: Some(record.id),
            sent: now,
        });
        self.records_in_flight += 1;
        self.counters.published += 1;
        Some(Io::Publish(record))
    }

    fn wants_read(&self) -> bool {
        self.queue.is_empty()
            && !self.drained
            && !self.reading
            && self.probing.is_none()
            && self.records_in_flight < self.cfg.window
    }

    /// When the oldest record awaiting its PUBACK was published.
    fn oldest_record_sent(&self) -> Option<Instant> {
        let on_wire = self.on_wire.iter().map(|(_, s)| s);
        on_wire
            .chain(self.awaiting_pkid.iter())
            .find(|s| s.id.is_some())
            .map(|s| s.sent)
    }

    fn publish_status(&mut self, online: bool, now: Instant) {
        self.io.push_back(Io::PublishStatus { online });
        self.awaiting_pkid.push_back(Slot {
            id: None,
            sent: now,
        });
    }

    fn save_floor(&mut self, now: Instant) {
        self.floor_moved = false;
        self.floor_saved_at = now;
        self.io.push_back(Io::SaveFloor);
    }

    /// The next step of a graceful close.
    fn close_step(&mut self, now: Instant) {
        let State::Closing { step, .. } = self.state else {
            return;
        };
        match step {
            Closing::Draining => {
                self.publish_status(false, now);
                self.state = State::Closing {
                    step: Closing::Offline,
                    until: now + CLOSE_STEP,
                };
            }
            Closing::Offline => {
                self.io.push_back(Io::Disconnect);
                self.state = State::Closing {
                    step: Closing::Disconnecting,
                    until: now + CLOSE_STEP,
                };
            }
            Closing::Disconnecting => self.stopped(),
        }
    }

    fn stopped(&mut self) {
        self.save_floor_at_end();
        self.clear_connection();
        self.counters.connected = false;
        self.state = State::Stopped;
        self.io.push_back(Io::Drop {
            reason: "stopping".into(),
            retry_in: None,
        });
    }

    fn save_floor_at_end(&mut self) {
        self.floor_moved = false;
        self.io.push_back(Io::SaveFloor);
    }

    fn clear_connection(&mut self) {
        // What was read or sent stays unacknowledged in the outbox and is
        // rewound on the next connection.
        self.queue.clear();
        self.awaiting_pkid.clear();
        self.on_wire.clear();
        self.records_in_flight = 0;
        self.probing = None;
        self.reading = false;
    }

    fn lost(&mut self, reason: &str, was_up: bool, now: Instant) {
        if was_up {
            self.watch_head(now);
        }
        self.save_floor_at_end();
        self.floor_saved_at = now;
        self.clear_connection();
        self.counters.connected = false;
        self.counters.last_error = Some(reason.to_string());
        self.counters.reconnects += 1;
        if was_up {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        let delay = jittered(self.cfg.backoff.delay(self.failures), self.rng.unit());
        self.state = State::Down {
            retry_at: now + delay,
        };
        self.io.push_back(Io::Drop {
            reason: reason.to_string(),
            retry_in: Some(delay),
        });
    }

    /// After a connection that was up ended: if the same record headed the
    /// window, freshly sent, at [`QUARANTINE_AFTER`] losses in a row (the
    /// last ones with it alone on the wire), the broker is refusing it (a
    /// topic it rejects drops the connection): quarantine it so the rest
    /// of the line flows.
    fn watch_head(&mut self, now: Instant) {
        let head = self
            .on_wire
            .iter()
            .map(|(_, s)| s)
            .chain(self.awaiting_pkid.iter())
            .find_map(|s| s.id.map(|id| (id, s.sent)))
            .filter(|(_, sent)| now.saturating_duration_since(*sent) <= SUSPECT_WITHIN)
            .map(|(id, _)| id);
        let Some(id) = head else {
            self.suspect = None;
            return;
        };
        let losses = match self.suspect {
            Some((s, n)) if s == id => n + 1,
            _ => 1,
        };
        if losses < QUARANTINE_AFTER {
            self.suspect = Some((id, losses));
            return;
        }
        self.suspect = None;
        self.io.push_back(Io::Quarantine(id));
    }
}

#[cfg(test)]
mod tests;
