//! The sans-IO CoAP endpoint: one struct that owns every piece of protocol
//! state for one socket, in both roles at once (client and server).
//!
//! It is fed datagrams ([`Endpoint::handle`]) and the passage of time
//! ([`Endpoint::handle_timeout`]), and hands out [`Event`]s
//! ([`Endpoint::poll_event`]), datagrams to send
//! ([`Endpoint::poll_transmit`]) and the next instant it needs to be woken
//! at ([`Endpoint::poll_timeout`]). It never touches a socket or a clock.
//!
//! This module owns the message layer (RFC 7252 §4): message ids, CON
//! retransmission, ACK/RST matching, duplicate detection, rate limiting and
//! timers. [`client`] owns our requests (tokens, separate responses,
//! observations, block-wise uploads and downloads); [`server`] owns the
//! requests we receive (piggybacked and separate responses, observe
//! relations, Block1 reassembly and Block2 serving).

mod client;
pub mod config;
mod server;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ferrogate_sdk::time::saturating_add as later;

pub use config::{EndpointConfig, RateLimit, TransmissionParams};

use crate::message::{Code, Frame, Kind, Request, Response};

/// One of our requests (or observations) in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A request we received and have not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestHandle(pub u64);

/// An observe relation we serve (a peer observing one of our resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelationId(pub u64);

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: SocketAddr,
    pub datagram: Vec<u8>,
}

/// A request received from a peer, to be answered with
/// [`Endpoint::respond`] (or [`Endpoint::accept_observe`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingRequest {
    pub handle: RequestHandle,
    pub peer: SocketAddr,
    /// The request with its Block1 body reassembled. `request.observe` is
    /// `Some(0)` for an observe registration.
    pub request: Request,
}

/// Why one of our requests ended without a (further) response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no response from the peer (timeout)")]
    Timeout,
    #[error("the peer reset the exchange (RST)")]
    Reset,
    #[error("the response body exceeds the reassembly limit of {0} bytes")]
    TooLarge(usize),
    #[error("block-wise transfer failed: {0}")]
    Block(&'static str),
    #[error("the peer ended the observation ({0})")]
    ObservationEnded(Code),
}

/// Why an observe relation we served ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationEnd {
    /// The observer sent a GET with Observe=1.
    Deregistered,
    /// The observer answered a notification with RST.
    Reset,
    /// A confirmable notification was never acknowledged.
    Timeout,
}

/// What the endpoint tells its user.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A peer sent us a request.
    Request(IncomingRequest),
    /// The response to one of our requests (the first one, for an
    /// observation: `response.observe` is `Some` when the peer accepted it).
    Response {
        id: RequestId,
        peer: SocketAddr,
        response: Response,
    },
    /// A further notification of an established observation.
    Notification {
        id: RequestId,
        peer: SocketAddr,
        response: Response,
    },
    /// One of our requests (or an established observation) failed; the id
    /// is finished.
    Failed {
        id: RequestId,
        peer: SocketAddr,
        error: RequestError,
    },
    /// An observe relation we served ended.
    RelationEnded {
        relation: RelationId,
        peer: SocketAddr,
        reason: RelationEnd,
    },
}

/// Errors from calls on the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("too many requests in progress ({0})")]
    TooManyExchanges(usize),
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("unknown or already answered request handle")]
    UnknownHandle,
    #[error("unknown request id")]
    UnknownRequest,
    #[error("unknown observe relation")]
    UnknownRelation,
    #[error("the request cannot be encoded as a CoAP message")]
    Unencodable,
}

/// Counters of what the endpoint did and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams that are not CoAP; CONs among them were answered with RST.
    pub malformed: u64,
    pub rate_limited: u64,
    /// Duplicate CON/NON messages (a CON got the cached reply again).
    pub duplicates: u64,
    pub retransmissions: u64,
    /// CONs of ours that were never acknowledged.
    pub transmit_timeouts: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    /// Responses with a token we do not know (answered with RST).
    pub unknown_tokens: u64,
    /// Requests answered by the engine itself with a 4.xx/5.xx (bad option,
    /// bad block, too large, too busy).
    pub rejected_requests: u64,
    /// Requests the application never answered.
    pub unanswered_requests: u64,
    pub observe_relations_refused: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Exchange(u64),
    Notification(u64),
    SeparateResponse,
    Deregistration,
}

/// A CON of ours waiting for its ACK.
#[derive(Debug)]
struct Outbound {
    datagram: Vec<u8>,
    retransmissions: u32,
    timeout: Duration,
    next_at: Instant,
    owner: Owner,
}

/// A message id we received, and the reply we gave to it (for duplicates).
/// There is one per client for a while after it registers: the reply is
/// kept as a boxed slice, a word smaller than a vector.
#[derive(Debug)]
struct Seen {
    reply: Option<Box<[u8]>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retransmit(SocketAddr, u16),
    Piggyback(u64),
    ExchangeDeadline(u64),
    Reregister(u64),
    IncomingExpiry(u64),
}

/// A request message waiting for NSTART room: exchange, token, Block2
/// follow-up.
type QueuedMessage = (u64, Token, Option<crate::block::BlockOption>);

/// The token of a request of ours: always 8 random bytes, kept as a number
/// (there is one per observation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Token(u64);

impl Token {
    /// The token of a received message, if it can be one of ours.
    fn of(bytes: &[u8]) -> Option<Token> {
        bytes.try_into().ok().map(|b| Token(u64::from_be_bytes(b)))
    }

    fn to_bytes(self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
}

/// xorshift64*: the message id start and retransmission jitter need no
/// secrecy, and tests need determinism. Tokens do need it (an observed one
/// must not predict the next): they come from the OS, see
/// [`Endpoint::new_token`].
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A sans-IO CoAP endpoint serving both roles on one socket. See the crate
/// documentation for an example.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: Rng,
    next_mid: u16,
    next_id: u64,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    stats: Stats,
    pending_con: HashMap<(SocketAddr, u16), Outbound>,
    seen: HashMap<(SocketAddr, u16), Seen>,
    seen_order: VecDeque<(Instant, SocketAddr, u16)>,
    sources: HashMap<IpAddr, Bucket>,
    /// Boxed: one per observation, so the table is mostly what it indexes.
    exchanges: HashMap<u64, Box<client::Exchange>>,
    tokens: HashMap<(SocketAddr, Token), u64>,
    incoming: HashMap<u64, server::Incoming>,
    relations: HashMap<u64, server::Relation>,
    relation_tokens: HashMap<(SocketAddr, Vec<u8>), u64>,
    uploads: HashMap<server::TransferKey, server::Upload>,
    downloads: HashMap<server::TransferKey, server::Download>,
    /// Requests waiting for NSTART room, per peer.
    queued: HashMap<SocketAddr, VecDeque<QueuedMessage>>,
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Self {
        let mut rng = Rng(config.seed | 1);
        let next_mid = rng.next() as u16;
        Endpoint {
            config,
            rng,
            next_mid,
            next_id: 1,
            timers: BTreeMap::new(),
            timer_seq: 0,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: Stats::default(),
            pending_con: HashMap::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            sources: HashMap::new(),
            exchanges: HashMap::new(),
            tokens: HashMap::new(),
            incoming: HashMap::new(),
            relations: HashMap::new(),
            relation_tokens: HashMap::new(),
            uploads: HashMap::new(),
            downloads: HashMap::new(),
            queued: HashMap::new(),
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Requests of ours in progress, including observations.
    pub fn exchanges_in_progress(&self) -> usize {
        self.exchanges.len()
    }

    /// Observe relations we serve.
    pub fn relation_count(&self) -> usize {
        self.relations.len()
    }

    /// Open Block1 reassemblies and cached Block2 bodies.
    pub fn block_transfers(&self) -> usize {
        self.uploads.len() + self.downloads.len()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next. May be early
    /// (a timer whose state is gone); never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Process one received datagram from `peer`.
    pub fn handle(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        self.expire(now);
        let parsed = Frame::parse(datagram);
        // Answers to what we asked are never rate limited: limiting the
        // device we are reading from would only cause retransmissions.
        let expected = parsed.as_ref().is_ok_and(|f| self.is_expected(peer, f));
        if !expected && !self.admit(now, peer.ip()) {
            self.stats.rate_limited += 1;
            return;
        }
        let frame = match parsed {
            Ok(frame) => frame,
            Err(error) => {
                self.stats.malformed += 1;
                tracing::debug!(%peer, %error, "dropping malformed CoAP datagram");
                if let Some((Kind::Con, mid)) = error.header {
                    self.send_empty(peer, Kind::Rst, mid);
                }
                return;
            }
        };
        match frame.kind {
            Kind::Ack | Kind::Rst => self.on_ack_or_rst(now, peer, frame),
            Kind::Con | Kind::Non => {
                if frame.code == Code::EMPTY {
                    // A CON ping is answered with RST (RFC 7252 §4.3); an
                    // empty NON is a format error.
                    if frame.kind == Kind::Con {
                        self.send_empty(peer, Kind::Rst, frame.mid);
                    } else {
                        self.stats.malformed += 1;
                    }
                    return;
                }
                if let Some(seen) = self.seen.get(&(peer, frame.mid)) {
                    self.stats.duplicates += 1;
                    if frame.kind == Kind::Con {
                        if let Some(reply) = seen.reply.as_deref().map(<[u8]>::to_vec) {
                            self.push_transmit(peer, reply);
                        }
                    }
                    return;
                }
                self.remember(now, peer, frame.mid);
                if frame.code.is_request() {
                    self.on_request(now, peer, frame);
                } else {
                    self.on_response(now, peer, frame);
                }
            }
        }
        self.release_queued(now);
    }

    /// An ACK/RST to one of our CONs, or a response with one of our tokens.
    fn is_expected(&self, peer: SocketAddr, frame: &Frame) -> bool {
        match frame.kind {
            Kind::Ack | Kind::Rst => self.pending_con.contains_key(&(peer, frame.mid)),
            Kind::Con | Kind::Non => {
                frame.code.is_response()
                    && Token::of(&frame.token).is_some_and(|t| self.tokens.contains_key(&(peer, t)))
            }
        }
    }

    /// Fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Timer::Retransmit(peer, mid) => self.on_retransmit_timer(now, peer, mid),
                Timer::Piggyback(handle) => self.on_piggyback_timer(handle),
                Timer::ExchangeDeadline(id) => self.on_exchange_deadline(now, id),
                Timer::Reregister(id) => self.on_reregister_timer(now, id),
                Timer::IncomingExpiry(handle) => self.on_incoming_expiry(now, handle),
            }
        }
        self.release_queued(now);
    }

    fn set_timer(&mut self, at: Instant, timer: Timer) -> (Instant, u64) {
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        self.timers.insert(key, timer);
        key
    }

    fn next_mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn push_transmit(&mut self, peer: SocketAddr, datagram: Vec<u8>) {
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit { peer, datagram });
    }

    fn send_empty(&mut self, peer: SocketAddr, kind: Kind, mid: u16) {
        if kind == Kind::Rst {
            self.stats.resets_sent += 1;
        }
        let bytes = Frame::empty(kind, mid).emit();
        if let Some(seen) = self.seen.get_mut(&(peer, mid)) {
            seen.reply = Some(bytes.as_slice().into());
        }
        self.push_transmit(peer, bytes);
    }

    /// Send a reply (ACK or RST) to received message `mid`, remembering it
    /// for duplicates.
    fn send_reply(&mut self, peer: SocketAddr, mid: u16, frame: &Frame) {
        let bytes = frame.emit();
        if let Some(seen) = self.seen.get_mut(&(peer, mid)) {
            seen.reply = Some(bytes.as_slice().into());
        }
        self.push_transmit(peer, bytes);
    }

    /// Send a CON of ours and start its retransmission timer.
    fn send_confirmable(&mut self, now: Instant, peer: SocketAddr, frame: &Frame, owner: Owner) {
        let datagram = frame.emit();
        let timeout = self.config.transmission.initial_timeout(self.rng.unit());
        let next_at = later(now, timeout);
        self.pending_con.insert(
            (peer, frame.mid),
            Outbound {
                datagram: datagram.clone(),
                retransmissions: 0,
                timeout,
                next_at,
                owner,
            },
        );
        self.set_timer(next_at, Timer::Retransmit(peer, frame.mid));
        self.push_transmit(peer, datagram);
    }

    fn on_retransmit_timer(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let max = self.config.transmission.max_retransmit;
        let Some(out) = self.pending_con.get_mut(&(peer, mid)) else {
            return;
        };
        if out.next_at > now {
            return;
        }
        if out.retransmissions >= max {
            let owner = out.owner;
            self.pending_con.remove(&(peer, mid));
            self.stats.transmit_timeouts += 1;
            tracing::debug!(%peer, mid, "CON never acknowledged");
            match owner {
                Owner::Exchange(id) => self.fail(id, RequestError::Timeout),
                Owner::Notification(rel) => self.end_relation(rel, RelationEnd::Timeout),
                Owner::SeparateResponse | Owner::Deregistration => {}
            }
            return;
        }
        out.retransmissions += 1;
        out.timeout *= 2;
        out.next_at = later(now, out.timeout);
        let (at, datagram) = (out.next_at, out.datagram.clone());
        self.stats.retransmissions += 1;
        self.set_timer(at, Timer::Retransmit(peer, mid));
        self.push_transmit(peer, datagram);
    }

    fn on_ack_or_rst(&mut self, now: Instant, peer: SocketAddr, frame: Frame) {
        if frame.kind == Kind::Rst {
            self.stats.resets_received += 1;
        }
        let Some(out) = self.pending_con.remove(&(peer, frame.mid)) else {
            if frame.kind == Kind::Rst {
                self.on_reset_of_non(peer, frame.mid);
            }
            return;
        };
        match (frame.kind, out.owner) {
            (Kind::Rst, Owner::Exchange(id)) => self.fail(id, RequestError::Reset),
            (Kind::Rst, Owner::Notification(rel)) => self.end_relation(rel, RelationEnd::Reset),
            (Kind::Ack, Owner::Exchange(id)) => {
                // Whatever the ACK carries, the exchange now waits for its
                // response with a deadline: a piggybacked response with a
                // foreign token must not leave it waiting forever.
                self.on_empty_ack(now, id);
                if frame.code != Code::EMPTY {
                    self.on_response(now, peer, frame);
                }
            }
            _ => {}
        }
    }

    /// Remember a received CON/NON message id for duplicate detection
    /// (EXCHANGE_LIFETIME; NON_LIFETIME is shorter, so one lifetime serves
    /// both and keeps the expiry queue ordered).
    fn remember(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        while self.seen.len() >= self.config.max_dedup_entries.max(1) {
            match self.seen_order.pop_front() {
                Some((_, p, m)) => {
                    self.seen.remove(&(p, m));
                }
                None => break,
            }
        }
        let expires = later(now, self.config.transmission.exchange_lifetime());
        self.seen.insert((peer, mid), Seen { reply: None });
        self.seen_order.push_back((expires, peer, mid));
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, peer, mid)) = self.seen_order.front() {
            if at > now {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&(peer, mid));
        }
        self.uploads.retain(|_, u| u.expires > now);
        self.downloads.retain(|_, d| d.expires > now);
    }

    /// Token bucket per source address.
    fn admit(&mut self, now: Instant, ip: IpAddr) -> bool {
        let Some(limit) = self.config.rate_limit.clone() else {
            return true;
        };
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.config.max_sources {
            let idle =
                Duration::from_secs_f64((limit.burst / limit.per_second.max(1e-9)).min(3600.0));
            self.sources
                .retain(|_, b| now.saturating_duration_since(b.last) < idle);
            if self.sources.len() >= self.config.max_sources {
                if let Some(victim) = self.sources.keys().next().copied() {
                    self.sources.remove(&victim);
                }
            }
        }
        let bucket = self.sources.entry(ip).or_insert(Bucket {
            tokens: limit.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(limit.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A token from the OS CSPRNG, as RFC 7252 §5.3.1 and RFC 9175 §4.2
    /// ask: an off-path attacker who saw one cannot guess the next. Should
    /// the OS ever fail to give randomness, the seeded generator stands in.
    fn new_token(&mut self, peer: SocketAddr) -> Token {
        loop {
            let token = Token(getrandom::u64().unwrap_or_else(|_| self.rng.next()));
            if !self.tokens.contains_key(&(peer, token)) {
                return token;
            }
        }
    }
}

#[cfg(test)]
mod tests;
