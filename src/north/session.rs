//! The MQTT session driver: moves things between the delivery state
//! machine ([`NorthCore`]), the outbox and rumqttc, and hands incoming
//! commands to the router. Every decision (when to connect, what to
//! publish, which record a PUBACK is for, when the link is hung) is the
//! core's; this task only performs what it hands out and feeds back what
//! happened, with the time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrogate_sdk::Timestamp;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::codec::{self, Topics};
use super::core::{CoreConfig, Io, NorthCore};
use super::intake::{Incoming, Intake, hand_over};
use super::link::{Link, LinkEvent, LinkOptions};
use super::outbox::Outbox;
use super::{CommandResultMsg, InboundCommand, Live, lock};

/// Link events taken in one go before the core hands out more publishes,
/// so that the acknowledgements that arrived meanwhile refill the window.
const EVENTS_PER_TURN: usize = 1024;
/// How often the session's own answers (`busy`) are offered again to a
/// full result queue.
const ANSWERS_RETRY: Duration = Duration::from_millis(100);

pub(crate) struct Session {
    pub link: LinkOptions,
    pub topics: Topics,
    pub gateway: String,
    pub core: CoreConfig,
    pub outbox: Arc<Mutex<Outbox>>,
    pub wake: Arc<Notify>,
    pub live: Arc<Mutex<Live>>,
    pub commands: mpsc::Sender<InboundCommand>,
    pub intake: Intake,
    /// Where the session answers a command itself (`busy`).
    pub results: mpsc::Sender<CommandResultMsg>,
    /// Answers not yet taken by `results` (it was full): never dropped.
    pub unsent_answers: VecDeque<CommandResultMsg>,
}

async fn next_event(link: &mut Option<Link>) -> LinkEvent {
    match link {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Session {
    pub async fn run(mut self, stop: CancellationToken) {
        let mut core = NorthCore::new(self.core.clone(), Instant::now());
        let mut link: Option<Link> = None;
        let mut answers = tokio::time::interval(ANSWERS_RETRY);
        let mut stopping = false;
        loop {
            while let Some(io) = core.poll_io(Instant::now()) {
                self.perform(io, &mut core, &mut link).await;
            }
            self.show(&core);
            if core.is_stopped() {
                return;
            }
            tokio::select! {
                ev = next_event(&mut link) => {
                    self.handle(ev, &mut core);
                    for _ in 0..EVENTS_PER_TURN {
                        let Some(ev) = link.as_mut().and_then(Link::try_next) else { break };
                        self.handle(ev, &mut core);
                    }
                }
                _ = self.wake.notified() => core.backlog_grew(),
                _ = sleep_until(core.poll_timeout()) => core.handle_timeout(Instant::now()),
                _ = answers.tick() => self.send_answers(),
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    core.stop(Instant::now());
                }
            }
        }
    }

    /// Does one thing the core handed out.
    async fn perform(&mut self, io: Io, core: &mut NorthCore, link: &mut Option<Link>) {
        let failed = match io {
            Io::Connect => {
                *link = Some(Link::open(&self.link));
                None
            }
            Io::Drop { reason, retry_in } => {
                *link = None;
                if let Some(delay) = retry_in {
                    tracing::warn!(broker = %self.link.addr.host, port = self.link.addr.port, %reason, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                }
                None
            }
            Io::Subscribe => match link {
                Some(l) => l.subscribe(&self.topics.command_filter()).await.err(),
                None => None,
            },
            Io::PublishStatus { online } => {
                let payload = if online {
                    codec::birth(&self.gateway, Timestamp::now())
                } else {
                    codec::will(&self.gateway)
                };
                match link {
                    Some(l) => l
                        .publish_parts(&self.topics.gateway_status(), 1, true, payload, None)
                        .await
                        .err(),
                    None => None,
                }
            }
            Io::Publish(record) => match link {
                Some(l) => l.publish(record).await.err(),
                None => None,
            },
            Io::Rewind => {
                let records = lock(&self.outbox).rewind();
                core.rewound(records);
                None
            }
            Io::Read(n) => {
                let records = lock(&self.outbox).next_unsent(n);
                core.read_back(records, n);
                None
            }
            Io::Ack(id) => {
                lock(&self.outbox).ack(id);
                None
            }
            Io::SaveFloor => {
                if let Err(e) = lock(&self.outbox).save_floor() {
                    tracing::warn!(error = %e, "cannot save the outbox cursor");
                }
                None
            }
            Io::Quarantine(id) => {
                if let Err(e) = lock(&self.outbox).quarantine(id) {
                    tracing::error!(error = %e, "cannot quarantine a message the broker refuses");
                }
                None
            }
            Io::Disconnect => {
                if let Some(l) = link {
                    l.disconnect().await;
                }
                None
            }
        };
        if let Some(reason) = failed {
            core.link_closed(&reason, Instant::now());
        }
    }

    /// Feeds one link event to the core (commands go to the router).
    fn handle(&mut self, ev: LinkEvent, core: &mut NorthCore) {
        match ev {
            LinkEvent::Connected => {
                tracing::info!(broker = %self.link.addr.host, port = self.link.addr.port, "MQTT connected");
                core.connected(Instant::now());
            }
            LinkEvent::Sent(pkid) => core.sent(pkid),
            LinkEvent::Acked { pkid, rejected } => core.acked(pkid, rejected.as_deref()),
            LinkEvent::Closed(reason) => core.link_closed(&reason, Instant::now()),
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
                    return;
                };
                let incoming = Incoming {
                    device,
                    payload: &payload,
                    retain,
                    response_topic,
                    correlation,
                    ack: Some(ack),
                };
                let Some(cmd) = self.intake.take(incoming, tokio::time::Instant::now()) else {
                    return;
                };
                self.hand_over(cmd, retain);
            }
        }
    }

    /// Shows the core's link counters in the status API.
    fn show(&self, core: &NorthCore) {
        let c = core.counters();
        let mut live = lock(&self.live);
        if live.connected != c.connected {
            live.connected = c.connected;
            live.since_ms = Some(Timestamp::now().0);
        }
        if live.last_error != c.last_error {
            live.last_error.clone_from(&c.last_error);
        }
        live.published = c.published;
        live.acked = c.acked;
        live.rejected = c.rejected;
        live.reconnects = c.reconnects;
    }

    /// Gives a command to the router; when the router's queue is full (or
    /// closed, at shutdown) the command is answered `busy` instead: every
    /// command gets exactly one answer.
    fn hand_over(&mut self, cmd: InboundCommand, retain: bool) {
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
        self.unsent_answers.push_back(busy);
        self.send_answers();
    }

    /// Passes the session's own answers on, as far as `results` takes them.
    fn send_answers(&mut self) {
        while let Some(answer) = self.unsent_answers.pop_front() {
            if let Err(e) = self.results.try_send(answer) {
                if let mpsc::error::TrySendError::Full(answer) = e {
                    self.unsent_answers.push_front(answer);
                }
                break;
            }
        }
    }
}
