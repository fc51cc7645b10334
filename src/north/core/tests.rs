//! The delivery state machine against a fake clock, a fake outbox and a
//! fake broker: every case runs in microseconds, deterministically.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use ferrogate_sdk::backoff::Backoff;

use super::{CoreConfig, Io, NorthCore};
use crate::north::record::Record;

fn cfg() -> CoreConfig {
    CoreConfig {
        qos: 1,
        window: 4,
        ack_timeout: Duration::from_secs(10),
        backoff: Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(8),
        },
        connect_timeout: Duration::from_secs(10),
        replay_rate: None,
        seed: 7,
    }
}

fn record(id: u64, device: &str, seq: u64) -> Record {
    Record {
        id,
        accepted_ms: 0,
        seq,
        qos: 1,
        retain: false,
        device: device.into(),
        topic: format!("t/{device}"),
        correlation: None,
        payload: Vec::new().into(),
    }
}

/// The outbox as the core sees it: records kept in order, an in-flight
/// window (read, not yet acknowledged), an acknowledged position, and what
/// a crash keeps (the records and the saved position).
#[derive(Default)]
struct FakeOutbox {
    records: Vec<Record>,
    /// Every id below is acknowledged.
    floor: u64,
    saved_floor: u64,
    inflight: VecDeque<(Record, bool)>,
    quarantined: HashSet<u64>,
    resent: u64,
}

impl FakeOutbox {
    fn new() -> Self {
        FakeOutbox {
            floor: 1,
            saved_floor: 1,
            ..Default::default()
        }
    }

    fn append(&mut self, device: &str, seq: u64) {
        let id = self.records.len() as u64 + 1;
        self.records.push(record(id, device, seq));
    }

    fn next_unsent(&mut self, max: usize) -> Vec<Record> {
        let from = self
            .inflight
            .back()
            .map_or(self.floor, |(r, _)| r.id + 1)
            .max(self.floor);
        let out: Vec<Record> = self
            .records
            .iter()
            .filter(|r| r.id >= from)
            .take(max)
            .cloned()
            .collect();
        self.inflight.extend(out.iter().map(|r| (r.clone(), false)));
        out
    }

    fn rewind(&mut self) -> Vec<Record> {
        let out: Vec<Record> = self
            .inflight
            .iter()
            .filter(|(_, acked)| !acked)
            .map(|(r, _)| r.clone())
            .collect();
        self.resent += out.len() as u64;
        out
    }

    fn ack(&mut self, id: u64) {
        for (r, acked) in self.inflight.iter_mut() {
            if r.id == id {
                *acked = true;
            }
        }
        while self.inflight.front().is_some_and(|(_, a)| *a) {
            if let Some((r, _)) = self.inflight.pop_front() {
                self.floor = self.floor.max(r.id + 1);
            }
        }
    }

    fn crash(&mut self) {
        self.floor = self.saved_floor;
        self.inflight.clear();
    }

    fn all_acked(&self) -> bool {
        self.floor > self.records.len() as u64 || self.records.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    Up,
    /// Refuses connections.
    Down,
    /// Takes bytes and never answers (a black-holed link).
    Hung,
}

#[derive(Debug, PartialEq, Eq)]
enum LinkState {
    None,
    Connecting,
    Open,
}

/// One delivery the broker received: on which connection, which record.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    connection: u32,
    id: u64,
}

/// The core, the fake outbox and a fake broker, moved by hand or by a
/// random schedule.
struct World {
    now: Instant,
    core: NorthCore,
    outbox: FakeOutbox,
    broker: Broker,
    link: LinkState,
    connection: u32,
    /// Publishes requested, not yet on the wire (`None`: gateway status).
    queued: VecDeque<Option<u64>>,
    /// On the wire, awaiting the broker's PUBACK.
    wire: Vec<(u16, Option<u64>)>,
    next_pkid: u16,
    delivered: Vec<Delivery>,
    statuses: Vec<bool>,
    log: Vec<String>,
    qos: u8,
    cfg: CoreConfig,
    seqs: BTreeMap<String, u64>,
}

impl World {
    fn new(cfg: CoreConfig) -> Self {
        let now = Instant::now();
        World {
            now,
            core: NorthCore::new(cfg.clone(), now),
            outbox: FakeOutbox::new(),
            broker: Broker::Up,
            link: LinkState::None,
            connection: 0,
            queued: VecDeque::new(),
            wire: Vec::new(),
            next_pkid: 1,
            delivered: Vec::new(),
            statuses: Vec::new(),
            log: Vec::new(),
            qos: cfg.qos,
            cfg,
            seqs: BTreeMap::new(),
        }
    }

    /// Performs everything the core hands out, like the session driver.
    fn pump(&mut self) {
        while let Some(io) = self.core.poll_io(self.now) {
            self.log.push(format!("{io:?}"));
            match io {
                Io::Connect => self.link = LinkState::Connecting,
                Io::Subscribe => {}
                Io::PublishStatus { online } => {
                    self.statuses.push(online);
                    self.queued.push_back(None);
                }
                Io::Publish(r) => self.queued.push_back(Some(r.id)),
                Io::Rewind => {
                    let r = self.outbox.rewind();
                    self.core.rewound(r);
                }
                Io::Read(n) => {
                    let r = self.outbox.next_unsent(n);
                    self.core.read_back(r, n);
                }
                Io::Ack(id) => self.outbox.ack(id),
                Io::SaveFloor => self.outbox.saved_floor = self.outbox.floor,
                Io::Quarantine(id) => {
                    self.outbox.quarantined.insert(id);
                    self.outbox.ack(id);
                }
                Io::Drop { .. } => self.drop_link(),
                Io::Disconnect => {
                    self.drop_link();
                    self.core.link_closed("disconnected", self.now);
                }
            }
        }
    }

    fn drop_link(&mut self) {
        self.link = LinkState::None;
        self.queued.clear();
        self.wire.clear();
    }

    fn append(&mut self, device: &str) {
        let seq = self.seqs.entry(device.to_string()).or_default();
        *seq += 1;
        let seq = *seq;
        self.outbox.append(device, seq);
        self.core.backlog_grew();
        self.pump();
    }

    /// The connection attempt gets its answer.
    fn answer_connect(&mut self) -> bool {
        if self.link != LinkState::Connecting {
            return false;
        }
        match self.broker {
            Broker::Up => {
                self.link = LinkState::Open;
                self.connection += 1;
                self.core.connected(self.now);
            }
            Broker::Down => {
                self.drop_link();
                self.core.link_closed("connection refused", self.now);
            }
            Broker::Hung => return false,
        }
        self.pump();
        true
    }

    /// The next requested publish goes on the wire (and reaches the broker).
    fn transmit(&mut self) -> bool {
        if self.link != LinkState::Open || self.broker == Broker::Hung {
            return false;
        }
        let Some(id) = self.queued.pop_front() else {
            return false;
        };
        let pkid = if self.qos == 0 && id.is_some() {
            0
        } else {
            let p = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            p
        };
        if let Some(id) = id {
            self.delivered.push(Delivery {
                connection: self.connection,
                id,
            });
        }
        if pkid != 0 {
            self.wire.push((pkid, id));
        }
        self.core.sent(pkid);
        self.pump();
        true
    }

    /// The broker acknowledges the `nth` publish on the wire.
    fn puback(&mut self, nth: usize) -> bool {
        if self.link != LinkState::Open || self.broker != Broker::Up || self.wire.is_empty() {
            return false;
        }
        let (pkid, _) = self.wire.remove(nth % self.wire.len());
        self.core.acked(pkid, None);
        self.pump();
        true
    }

    fn cut(&mut self) {
        if self.link != LinkState::None {
            self.drop_link();
            self.core.link_closed("connection reset", self.now);
            self.pump();
        }
    }

    /// kill -9: the core starts again from what the outbox kept.
    fn kill(&mut self) {
        self.drop_link();
        self.outbox.crash();
        self.core = NorthCore::new(self.cfg.clone(), self.now);
        self.pump();
    }

    /// Moves the clock by `d`, waking the core at each deadline on the way.
    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(at) = self.core.poll_timeout() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            self.pump();
        }
        self.now = until;
        self.core.handle_timeout(self.now);
        self.pump();
    }

    /// Runs the healthy link (broker up, no faults) until the outbox is
    /// empty, answering everything; fails if it never gets there.
    fn heal(&mut self) {
        self.broker = Broker::Up;
        for _ in 0..100_000 {
            self.pump();
            if self.outbox.all_acked() && self.link == LinkState::Open && self.wire.is_empty() {
                return;
            }
            if self.answer_connect() || self.transmit() || self.puback(0) {
                continue;
            }
            let next = self
                .core
                .poll_timeout()
                .map_or(Duration::from_millis(100), |at| {
                    at.saturating_duration_since(self.now)
                });
            self.advance(next.max(Duration::from_millis(1)));
        }
        panic!(
            "never drained: floor {} of {} records; last io {:?}",
            self.outbox.floor,
            self.outbox.records.len(),
            &self.log[self.log.len().saturating_sub(20)..]
        );
    }

    fn ios(&self) -> &[String] {
        &self.log
    }

    fn delivered_ids(&self) -> Vec<u64> {
        self.delivered.iter().map(|d| d.id).collect()
    }
}

fn connected_world(cfg: CoreConfig) -> World {
    let mut w = World::new(cfg);
    w.advance(Duration::ZERO);
    assert!(w.answer_connect());
    // The birth status goes out and is acknowledged.
    assert!(w.transmit());
    assert!(w.puback(0));
    w
}

#[test]
fn connects_at_once_then_announces_itself_and_subscribes() {
    let mut w = World::new(cfg());
    w.advance(Duration::ZERO);
    assert_eq!(w.ios(), ["Connect"]);
    assert!(w.answer_connect());
    assert_eq!(
        &w.ios()[1..4],
        ["Subscribe", "PublishStatus { online: true }", "Rewind"]
    );
    assert!(w.core.counters().connected);
}

#[test]
fn window_limits_publishes_and_acks_refill_it() {
    let mut w = connected_world(cfg());
    for _ in 0..10 {
        w.append("d");
    }
    while w.transmit() {}
    assert_eq!(w.delivered_ids(), [1, 2, 3, 4], "window of 4");
    assert!(w.puback(0));
    while w.transmit() {}
    assert_eq!(w.delivered_ids(), [1, 2, 3, 4, 5]);
    w.heal();
    assert_eq!(w.delivered_ids(), (1..=10).collect::<Vec<_>>());
}

#[test]
fn reordered_pubacks_ack_the_right_records() {
    let mut w = connected_world(cfg());
    for _ in 0..4 {
        w.append("d");
    }
    while w.transmit() {}
    // The broker answers 3, 1, 4, 2.
    for nth in [2, 0, 1, 0] {
        assert!(w.puback(nth));
    }
    let acks: Vec<&str> = w
        .ios()
        .iter()
        .filter(|s| s.starts_with("Ack("))
        .map(String::as_str)
        .collect();
    assert_eq!(acks, ["Ack(3)", "Ack(1)", "Ack(4)", "Ack(2)"]);
    assert_eq!(w.outbox.floor, 5);
    assert_eq!(w.core.counters().acked, 5, "4 records and the birth");
}

#[test]
fn disconnect_with_publishes_in_flight_resends_them_in_order() {
    let mut w = connected_world(cfg());
    for _ in 0..6 {
        w.append("d");
    }
    while w.transmit() {}
    assert!(w.puback(1)); // record 2 only
    w.cut();
    assert!(!w.core.counters().connected);
    w.heal();
    let second: Vec<u64> = w
        .delivered
        .iter()
        .filter(|d| d.connection == 2)
        .map(|d| d.id)
        .collect();
    assert_eq!(second, [1, 3, 4, 5, 6], "unacked first, in order, then new");
    // 5 was read (the window had room after 2's PUBACK), not yet on the wire.
    assert_eq!(w.outbox.resent, 4);
}

#[test]
fn a_hung_link_is_dropped_after_ack_timeout_and_replaced() {
    let mut w = connected_world(cfg());
    w.append("d");
    assert!(w.transmit());
    w.broker = Broker::Hung;
    w.advance(Duration::from_millis(9_999));
    assert!(w.core.counters().connected, "not yet");
    w.advance(Duration::from_millis(1));
    assert!(!w.core.counters().connected);
    let error = w.core.counters().last_error.clone().unwrap_or_default();
    assert!(error.contains("uplink hung"), "{error}");
    w.heal();
    assert_eq!(w.delivered_ids(), [1, 1]);
}

#[test]
fn an_idle_link_is_never_called_hung() {
    let mut w = connected_world(cfg());
    w.advance(Duration::from_secs(3600));
    assert!(w.core.counters().connected);
    assert_eq!(w.core.counters().reconnects, 0);
}

#[test]
fn outage_backs_off_doubling_with_jitter_up_to_the_cap() {
    let mut w = World::new(cfg());
    w.broker = Broker::Down;
    let mut waits = Vec::new();
    w.advance(Duration::ZERO);
    for _ in 0..8 {
        let before = w.now;
        assert!(w.answer_connect());
        let at = w.core.poll_timeout().expect("a retry is planned");
        waits.push(at - before);
        w.advance(at - before);
    }
    let bounds = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0];
    for (wait, b) in waits.iter().zip(bounds) {
        let s = wait.as_secs_f64();
        assert!(s >= b * 0.8 - 1e-9 && s <= b * 1.2 + 1e-9, "{waits:?}");
    }
    assert_eq!(w.core.counters().reconnects, 8);
    w.heal();
    assert!(w.core.counters().connected);
}

#[test]
fn connect_attempt_that_never_answers_times_out() {
    let mut w = World::new(cfg());
    w.broker = Broker::Hung;
    w.advance(Duration::ZERO);
    assert!(!w.answer_connect());
    w.advance(Duration::from_secs(10));
    assert_eq!(
        w.core.counters().last_error.as_deref(),
        Some("connect timed out")
    );
    assert_eq!(w.link, LinkState::None);
}

#[test]
fn qos0_counts_a_written_publish_as_delivered() {
    let mut w = connected_world(CoreConfig { qos: 0, ..cfg() });
    for _ in 0..3 {
        w.append("d");
    }
    while w.transmit() {}
    assert!(w.wire.is_empty(), "nothing awaits a PUBACK");
    assert_eq!(w.outbox.floor, 4);
}

#[test]
fn replay_is_paced_by_replay_rate() {
    let mut w = World::new(CoreConfig {
        replay_rate: Some(20),
        window: 100,
        ..cfg()
    });
    for _ in 0..1000 {
        w.append("d");
    }
    w.advance(Duration::ZERO);
    assert!(w.answer_connect());
    let start = w.now;
    // Deliver everything it sends for 10 s of fake time.
    while w.now < start + Duration::from_secs(10) {
        while w.transmit() || w.puback(0) {}
        let next = w
            .core
            .poll_timeout()
            .map_or(Duration::from_millis(50), |at| {
                at.saturating_duration_since(w.now)
            });
        w.advance(next.clamp(Duration::from_millis(1), Duration::from_millis(50)));
    }
    let sent = w.delivered.len();
    assert!((195..=205).contains(&sent), "20/s for 10 s, sent {sent}");
}

#[test]
fn acked_position_is_saved_at_most_every_100ms_and_at_every_loss() {
    let mut w = connected_world(cfg());
    let saves = |w: &World| w.ios().iter().filter(|s| *s == "SaveFloor").count();
    w.append("d");
    assert!(w.transmit() && w.puback(0));
    assert_eq!(saves(&w), 0, "not at once");
    w.advance(Duration::from_millis(100));
    assert_eq!(saves(&w), 1);
    assert_eq!(w.outbox.saved_floor, 2);
    w.advance(Duration::from_secs(5));
    assert_eq!(saves(&w), 1, "only when it moved");
    w.append("d");
    assert!(w.transmit() && w.puback(0));
    w.cut();
    assert_eq!(saves(&w), 2, "when the connection ends");
    assert_eq!(w.outbox.saved_floor, 3);
}

#[test]
fn a_message_that_always_kills_the_connection_is_probed_then_quarantined() {
    let mut w = connected_world(cfg());
    for _ in 0..5 {
        w.append("d");
    }
    for loss in 1..=5 {
        // Everything it sends reaches the broker, which then drops us.
        while w.transmit() {}
        if loss > 2 {
            let on_this: Vec<u64> = w
                .delivered
                .iter()
                .filter(|d| d.connection == w.connection)
                .map(|d| d.id)
                .collect();
            assert_eq!(on_this, [1], "probing: the suspect alone (loss {loss})");
        }
        w.cut();
        w.advance(Duration::from_secs(10));
        assert!(w.answer_connect());
        assert!(w.transmit() && w.puback(0), "birth");
    }
    assert!(w.outbox.quarantined.contains(&1), "{:?}", w.ios());
    w.heal();
    assert_eq!(w.outbox.quarantined.len(), 1);
}

#[test]
fn graceful_stop_drains_then_goes_offline_and_disconnects() {
    let mut w = connected_world(cfg());
    for _ in 0..3 {
        w.append("d");
    }
    w.core.stop(w.now);
    w.pump();
    while w.transmit() || w.puback(0) {}
    assert_eq!(w.statuses, [true, false], "offline after the backlog");
    assert_eq!(w.outbox.floor, 4, "backlog delivered before going offline");
    assert!(w.core.is_stopped(), "{:?}", w.ios());
}

#[test]
fn graceful_stop_on_a_hung_link_gives_up_within_the_budget() {
    let mut w = connected_world(cfg());
    w.append("d");
    w.broker = Broker::Hung;
    w.core.stop(w.now);
    w.pump();
    w.advance(Duration::from_millis(2500));
    assert!(w.core.is_stopped(), "{:?}", w.ios());
}

#[test]
fn stop_while_down_is_immediate() {
    let mut w = World::new(cfg());
    w.broker = Broker::Down;
    w.advance(Duration::ZERO);
    assert!(w.answer_connect());
    w.core.stop(w.now);
    w.pump();
    assert!(w.core.is_stopped());
}

#[test]
fn kill_at_every_step_of_publish_and_ack_loses_nothing() {
    // Step k of a run of 3 records: kill -9 after k link events.
    for k in 0..12 {
        let mut w = connected_world(cfg());
        for _ in 0..3 {
            w.append("d");
        }
        let mut steps = 0;
        while steps < k && (w.transmit() || w.puback(0)) {
            steps += 1;
        }
        if k % 2 == 1 {
            w.advance(Duration::from_millis(150)); // the position was saved
        }
        w.kill();
        w.heal();
        let ids: HashSet<u64> = w.delivered_ids().into_iter().collect();
        assert_eq!(ids, HashSet::from([1, 2, 3]), "kill after step {k}");
    }
}

/// A small deterministic generator for the schedules.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Thousands of random schedules of appends, sends, (reordered) PUBACKs,
/// link cuts, hangs, broker outages, kills and time: afterwards nothing is
/// lost, each device's new messages arrive in order without gaps, and a
/// message reaches the broker at most once per connection.
#[test]
fn random_schedules_lose_nothing_and_keep_order() {
    for seed in 1..=2000u64 {
        let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let qos = if seed % 5 == 0 { 0 } else { 1 };
        let mut w = World::new(CoreConfig {
            qos,
            window: 1 + dice.roll(6) as usize,
            replay_rate: (seed % 7 == 0).then_some(50),
            seed,
            ..cfg()
        });
        w.advance(Duration::ZERO);
        for _ in 0..150 {
            match dice.roll(100) {
                0..=24 => {
                    let d = ["a", "b", "c"][dice.roll(3) as usize];
                    w.append(d);
                }
                25..=44 => {
                    w.transmit();
                }
                45..=59 => {
                    let nth = if dice.roll(4) == 0 {
                        dice.roll(8) as usize
                    } else {
                        0
                    };
                    w.puback(nth);
                }
                60..=69 => {
                    w.answer_connect();
                }
                70..=72 => w.cut(),
                73..=74 => {
                    w.broker = [Broker::Up, Broker::Down, Broker::Hung][dice.roll(3) as usize];
                }
                75..=76 => w.kill(),
                _ => w.advance(Duration::from_millis(dice.roll(3000))),
            }
        }
        w.heal();
        check_delivery(&w, seed);
    }
}

fn check_delivery(w: &World, seed: u64) {
    let by_id: BTreeMap<u64, &Record> = w.outbox.records.iter().map(|r| (r.id, r)).collect();
    let mut seen: HashSet<(u32, u64)> = HashSet::new();
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &w.delivered {
        assert!(
            seen.insert((d.connection, d.id)),
            "seed {seed}: record {} twice on connection {}",
            d.id,
            d.connection
        );
        let r = by_id[&d.id];
        let last = newest.entry(r.device.as_str()).or_default();
        if r.seq > *last {
            assert_eq!(
                r.seq,
                *last + 1,
                "seed {seed}: {} seq {} arrived after {} (reorder or gap)",
                r.device,
                r.seq,
                last
            );
            *last = r.seq;
        }
    }
    for r in &w.outbox.records {
        if w.outbox.quarantined.contains(&r.id) {
            continue;
        }
        assert!(
            w.delivered.iter().any(|d| d.id == r.id),
            "seed {seed}: record {} ({} seq {}) lost",
            r.id,
            r.device,
            r.seq
        );
    }
}
