//! The MQTT session: connects with backoff, publishes the birth message,
//! replays the outbox in order, maps each PUBACK back to its record, hands
//! incoming commands to the router, and replaces a hung connection.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrogate_sdk::Timestamp;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::codec::{self, Topics};
use super::intake::{Incoming, Intake, hand_over};
use super::link::{Link, LinkEvent, LinkOptions};
use super::outbox::Outbox;
use super::record::Record;
use super::{CommandResultMsg, InboundCommand, Live, lock};

/// How long a connection attempt may take before it is abandoned.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the acknowledged position is saved (when it moved): a crash
/// re-sends at most what was acknowledged in this time.
pub(crate) const SAVE_FLOOR_EVERY: Duration = Duration::from_millis(100);
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

pub(crate) struct Session {
    pub link: LinkOptions,
    pub topics: Topics,
    pub gateway: String,
    pub qos: u8,
    pub ack_timeout: Duration,
    pub window: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub replay_rate: Option<u32>,
    pub outbox: Arc<Mutex<Outbox>>,
    pub wake: Arc<Notify>,
    pub live: Arc<Mutex<Live>>,
    pub commands: mpsc::Sender<InboundCommand>,
    pub intake: Mutex<Intake>,
    /// Where the session answers a command itself (`busy`).
    pub results: mpsc::Sender<CommandResultMsg>,
    /// Answers not yet taken by `results` (it was full): never dropped.
    pub unsent_answers: Mutex<VecDeque<CommandResultMsg>>,
}

enum End {
    Stopped,
    Lost { reason: String, was_up: bool },
}

/// Publishes of one connection, in the order rumqttc reports them.
#[derive(Default)]
struct Tracking {
    /// Record id of each requested publish not yet seen on the wire
    /// (`None` for gateway status messages, which are not in the outbox).
    awaiting_pkid: VecDeque<Option<u64>>,
    by_pkid: HashMap<u16, Option<u64>>,
}

/// A token bucket for `replay_rate`.
struct Pace {
    rate: Option<f64>,
    tokens: f64,
    last: Instant,
}

impl Pace {
    fn new(rate: Option<u32>) -> Self {
        Pace {
            rate: rate.map(f64::from),
            tokens: rate.map_or(0.0, |r| (f64::from(r) / 10.0).max(1.0)),
            last: Instant::now(),
        }
    }

    fn allowance(&mut self, want: usize) -> usize {
        let Some(rate) = self.rate else { return want };
        let now = Instant::now();
        let burst = (rate / 10.0).max(1.0);
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(burst);
        self.last = now;
        (self.tokens.floor() as usize).min(want)
    }

    fn spend(&mut self, n: usize) {
        if self.rate.is_some() {
            self.tokens -= n as f64;
        }
    }
}

fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    // ±20%
    let factor = 0.8 + f64::from(nanos % 1000) / 1000.0 * 0.4;
    d.mul_f64(factor)
}

impl Session {
    pub async fn run(self, stop: CancellationToken) {
        let mut failures: u32 = 0;
        let mut suspect = None;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let probe = suspect.is_some_and(|(_, losses)| losses >= PROBE_AFTER);
            let end = self.connection(&stop, probe).await;
            if let End::Lost { was_up: true, .. } = &end {
                self.watch_head(&mut suspect);
            }
            if let Err(e) = lock(&self.outbox).save_floor() {
                tracing::warn!(error = %e, "cannot save the outbox cursor");
            }
            {
                let mut live = lock(&self.live);
                live.connected = false;
                live.since_ms = Some(Timestamp::now().0);
                if let End::Lost { reason, .. } = &end {
                    live.last_error = Some(reason.clone());
                    live.reconnects += 1;
                }
            }
            match end {
                End::Stopped => return,
                End::Lost { reason, was_up } => {
                    if was_up {
                        failures = 0;
                    }
                    let delay = self
                        .backoff_min
                        .saturating_mul(2u32.saturating_pow(failures.min(16)))
                        .min(self.backoff_max);
                    let delay = jitter(delay);
                    failures = failures.saturating_add(1);
                    tracing::warn!(broker = %self.link.addr.host, port = self.link.addr.port, %reason, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                    tokio::select! {
                        _ = sleep(delay) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// After a connection that was up ended: if the same message headed
    /// the unacknowledged window, freshly sent, at [`QUARANTINE_AFTER`]
    /// losses in a row (the last ones with it alone on the wire), the
    /// broker is refusing it (a topic it rejects drops the connection):
    /// quarantine it so the rest of the line flows.
    fn watch_head(&self, suspect: &mut Option<(u64, u32)>) {
        let mut ob = lock(&self.outbox);
        let head = ob
            .oldest_unacked()
            .filter(|(_, _, sent)| sent.elapsed() <= SUSPECT_WITHIN)
            .map(|(id, _, _)| id);
        let Some(id) = head else {
            *suspect = None;
            return;
        };
        let losses = match *suspect {
            Some((s, n)) if s == id => n + 1,
            _ => 1,
        };
        if losses < QUARANTINE_AFTER {
            *suspect = Some((id, losses));
            return;
        }
        *suspect = None;
        if let Err(e) = ob.quarantine(id) {
            tracing::error!(error = %e, "cannot quarantine a message the broker refuses");
        }
    }

    /// One connection. `probe`: resend the oldest unacknowledged message
    /// alone and wait for its PUBACK before the rest.
    async fn connection(&self, stop: &CancellationToken, probe: bool) -> End {
        let mut link = Link::open(&self.link);
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            tokio::select! {
                ev = link.next() => match ev {
                    LinkEvent::Connected => break,
                    LinkEvent::Closed(reason) => return End::Lost { reason, was_up: false },
                    _ => {}
                },
                _ = sleep_until(deadline) => return End::Lost { reason: "connect timed out".into(), was_up: false },
                _ = stop.cancelled() => return End::Stopped,
            }
        }
        tracing::info!(broker = %self.link.addr.host, port = self.link.addr.port, "MQTT connected");
        {
            let mut live = lock(&self.live);
            live.connected = true;
            live.since_ms = Some(Timestamp::now().0);
            live.last_error = None;
        }
        let mut t = Tracking::default();
        let up = |reason: String| End::Lost {
            reason,
            was_up: true,
        };
        if let Err(e) = link.subscribe(&self.topics.command_filter()).await {
            return up(e);
        }
        let birth = codec::birth(&self.gateway, Timestamp::now());
        if let Err(e) = link
            .publish_parts(&self.topics.gateway_status(), 1, true, birth, None)
            .await
        {
            return up(e);
        }
        t.awaiting_pkid.push_back(None);
        let mut resend = lock(&self.outbox).rewind();
        if probe && resend.len() > 1 {
            // The same message headed the window at the last losses: send
            // it alone first. If the broker drops us now, it is that one.
            let rest = resend.split_off(1);
            let head = resend[0].id;
            if let Err(e) = self.publish_records(&link, resend, &mut t).await {
                return up(e);
            }
            let deadline = Instant::now() + self.ack_timeout;
            while lock(&self.outbox)
                .oldest_unacked()
                .is_some_and(|(id, _, _)| id == head)
            {
                tokio::select! {
                    ev = link.next() => {
                        if let Err(reason) = self.handle(ev, &mut t) {
                            return up(reason);
                        }
                    }
                    _ = sleep_until(deadline) => return up(format!("no PUBACK within {:?}: uplink hung, reconnecting", self.ack_timeout)),
                    _ = stop.cancelled() => {
                        self.close(&mut link, &mut t).await;
                        return End::Stopped;
                    }
                }
            }
            resend = rest;
        }
        if let Err(e) = self.publish_records(&link, resend, &mut t).await {
            return up(e);
        }
        let mut pace = Pace::new(self.replay_rate);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut floor_saved = Instant::now();
        loop {
            if let Err(e) = self.fill(&link, &mut t, &mut pace).await {
                return up(e);
            }
            tokio::select! {
                ev = link.next() => {
                    if let Err(reason) = self.handle(ev, &mut t) {
                        return up(reason);
                    }
                    // Take the acknowledgements that arrived meanwhile before
                    // refilling the window.
                    for _ in 0..1024 {
                        let Some(ev) = link.try_next() else { break };
                        if let Err(reason) = self.handle(ev, &mut t) {
                            return up(reason);
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = tick.tick() => {
                    self.send_answers();
                    let oldest = lock(&self.outbox).oldest_unacked_sent();
                    if let Some(sent) = oldest {
                        if sent.elapsed() > self.ack_timeout {
                            return up(format!("no PUBACK within {:?}: uplink hung, reconnecting", self.ack_timeout));
                        }
                    }
                    if floor_saved.elapsed() >= SAVE_FLOOR_EVERY {
                        floor_saved = Instant::now();
                        let mut ob = lock(&self.outbox);
                        if let Err(e) = ob.save_floor() {
                            tracing::warn!(error = %e, "cannot save the outbox cursor");
                        }
                    }
                }
                _ = stop.cancelled() => {
                    self.close(&mut link, &mut t).await;
                    return End::Stopped;
                }
            }
        }
    }

    /// Publishes unsent records while the window and the pace allow.
    async fn fill(&self, link: &Link, t: &mut Tracking, pace: &mut Pace) -> Result<(), String> {
        loop {
            let batch = {
                let mut ob = lock(&self.outbox);
                let room = self.window.saturating_sub(ob.inflight_unacked());
                let n = pace.allowance(room.min(256));
                if n == 0 {
                    return Ok(());
                }
                ob.next_unsent(n)
            };
            if batch.is_empty() {
                return Ok(());
            }
            pace.spend(batch.len());
            self.publish_records(link, batch, t).await?;
        }
    }

    /// Publishes stored records in order, expecting their packet ids.
    async fn publish_records(
        &self,
        link: &Link,
        records: Vec<Record>,
        t: &mut Tracking,
    ) -> Result<(), String> {
        let published = records.len();
        for r in records {
            let id = r.id;
            link.publish(r).await?;
            t.awaiting_pkid.push_back(Some(id));
        }
        lock(&self.live).published += published as u64;
        Ok(())
    }

    fn handle(&self, ev: LinkEvent, t: &mut Tracking) -> Result<(), String> {
        match ev {
            LinkEvent::Sent(pkid) => {
                let id = t.awaiting_pkid.pop_front().flatten();
                if pkid == 0 || self.qos == 0 {
                    // QoS 0: written to the socket is all the confirmation there is.
                    if let Some(id) = id {
                        lock(&self.outbox).ack(id);
                        lock(&self.live).acked += 1;
                    }
                } else {
                    t.by_pkid.insert(pkid, id);
                }
            }
            LinkEvent::Acked { pkid, rejected } => {
                if let Some(entry) = t.by_pkid.remove(&pkid) {
                    if let Some(id) = entry {
                        lock(&self.outbox).ack(id);
                    }
                    let mut live = lock(&self.live);
                    live.acked += 1;
                    if let Some(reason) = rejected {
                        live.rejected += 1;
                        tracing::warn!(pkid, %reason, "broker refused a publish; not retried");
                    }
                }
            }
            LinkEvent::Message {
                topic,
                payload,
                retain,
                response_topic,
                correlation,
                ack,
            } => {
                let Some(device) = self.topics.command_device(&topic) else {
                    tokio::spawn(ack.send());
                    return Ok(());
                };
                let incoming = Incoming {
                    device,
                    payload: &payload,
                    retain,
                    response_topic,
                    correlation,
                    ack: Some(ack),
                };
                let Some(cmd) = lock(&self.intake).take(incoming, Instant::now()) else {
                    return Ok(());
                };
                self.hand_over(cmd, retain);
            }
            LinkEvent::Connected => {}
            LinkEvent::Closed(reason) => return Err(reason),
        }
        Ok(())
    }

    /// Gives a command to the router; when the router's queue is full (or
    /// closed, at shutdown) the command is answered `busy` instead: every
    /// command gets exactly one answer.
    fn hand_over(&self, cmd: InboundCommand, retain: bool) {
        {
            let mut live = lock(&self.live);
            live.commands_received += 1;
            if retain {
                live.commands_retained += 1;
            }
        }
        let persistent = !self.link.session_expiry.is_zero();
        let Some(busy) = hand_over(&self.commands, cmd, persistent) else {
            return;
        };
        lock(&self.live).commands_busy += 1;
        tracing::warn!(device = %busy.device, "command answered busy: the router is not keeping up");
        lock(&self.unsent_answers).push_back(busy);
        self.send_answers();
    }

    /// Passes the session's own answers on, as far as `results` takes them.
    fn send_answers(&self) {
        let mut unsent = lock(&self.unsent_answers);
        while let Some(answer) = unsent.pop_front() {
            if let Err(e) = self.results.try_send(answer) {
                if let mpsc::error::TrySendError::Full(answer) = e {
                    unsent.push_front(answer);
                }
                break;
            }
        }
    }

    /// Graceful end: wait briefly for outstanding PUBACKs, publish the
    /// offline status (the broker drops the will on DISCONNECT), disconnect.
    async fn close(&self, link: &mut Link, t: &mut Tracking) {
        let deadline = Instant::now() + DRAIN_ON_SHUTDOWN;
        let mut pace = Pace::new(None);
        while Instant::now() < deadline {
            let _ = self.fill(link, t, &mut pace).await;
            if lock(&self.outbox).inflight_unacked() == 0 {
                break;
            }
            tokio::select! {
                ev = link.next() => if self.handle(ev, t).is_err() { return },
                _ = sleep_until(deadline) => break,
            }
        }
        let offline = codec::will(&self.gateway);
        if link
            .publish_parts(&self.topics.gateway_status(), 1, true, offline, None)
            .await
            .is_ok()
        {
            t.awaiting_pkid.push_back(None);
            let until = Instant::now() + Duration::from_millis(500);
            while !t.awaiting_pkid.is_empty() || !t.by_pkid.is_empty() {
                tokio::select! {
                    ev = link.next() => if self.handle(ev, t).is_err() { return },
                    _ = sleep_until(until) => break,
                }
            }
        }
        link.disconnect().await;
        let until = Instant::now() + Duration::from_millis(500);
        loop {
            tokio::select! {
                ev = link.next() => if let LinkEvent::Closed(_) = ev { break },
                _ = sleep_until(until) => break,
            }
        }
        let mut live = lock(&self.live);
        live.connected = false;
    }
}
