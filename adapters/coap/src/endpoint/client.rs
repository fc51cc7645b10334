//! Our requests: tokens, piggybacked and separate responses, Block1
//! uploads, Block2 downloads, and observations (RFC 7641 client role:
//! registration, notification ordering, re-registration, cancellation).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrogate_sdk::time::saturating_add as later;

use super::{Endpoint, EndpointError, Event, Owner, RequestError, RequestId, Timer, Token};
use crate::block::{BlockOption, size_of_szx};
use crate::message::{Code, Frame, Kind, Request, Response, encode_uint, join_path, option};

/// RFC 7641 §3.4: a notification older than this is fresh whatever its
/// sequence number.
const OBSERVE_REORDER_WINDOW: Duration = Duration::from_secs(128);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Observe {
    /// A plain request.
    No,
    /// Observe=0 sent, no response yet.
    Registering,
    /// Accepted; last notification's sequence number and arrival.
    Established { seq: u32, at: Instant },
}

#[derive(Debug)]
pub(super) struct Exchange {
    peer: SocketAddr,
    /// The request encoded once, with no message id and no token: every
    /// message of the exchange is made from it. A fraction of the size of
    /// the [`Request`], and there is one per observation.
    message: Box<[u8]>,
    observe: Observe,
    /// The token of the request (of the observation, for an observe).
    token: Token,
    /// The token of the latest block-wise follow-up request.
    follow: Option<Token>,
    /// Block1 upload: the block size exponent in use and the next offset.
    upload: Option<(u8, usize)>,
    /// Boxed: rare, and every observation is an exchange.
    download: Option<Box<Download>>,
    /// The timer that gives up waiting for a response (separate responses,
    /// NON requests); disarmed when one comes.
    deadline: Option<(Instant, u64)>,
    /// The timer that re-registers an established observation when its
    /// Max-Age runs out, replaced on each notification.
    fresh_timer: Option<(Instant, u64)>,
}

impl Exchange {
    /// Encode `request` to keep it; `None` when it cannot be encoded.
    fn encode(request: &Request) -> Option<Box<[u8]>> {
        let message = Frame {
            kind: if request.confirmable {
                Kind::Con
            } else {
                Kind::Non
            },
            code: request.method.code(),
            mid: 0,
            token: Vec::new(),
            options: Frame::request_options(request),
            payload: request.payload.clone(),
        }
        .emit();
        Frame::parse(&message)
            .is_ok()
            .then(|| message.into_boxed_slice())
    }

    /// The request as a frame: its method, options and payload, to send
    /// with a message id and a token.
    fn request(&self) -> Frame {
        Frame::parse(&self.message).expect("an exchange keeps only requests that parse back")
    }

    fn confirmable(&self) -> bool {
        // the type is the two bits after the version (RFC 7252 §3)
        self.message.first().is_some_and(|b0| (b0 >> 4) & 0x3 == 0)
    }

    /// The request's path, for logs.
    fn path(&self) -> String {
        join_path(&self.request().strings(option::URI_PATH))
    }
}

#[derive(Debug)]
struct Download {
    first: Response,
    body: Vec<u8>,
    etag: Option<Vec<u8>>,
}

impl Endpoint {
    /// Send a request to `peer`. Its response arrives as
    /// [`Event::Response`] (or [`Event::Failed`]) with the returned id.
    /// A payload larger than `max_payload` is sent block-wise (Block1), and
    /// a block-wise response is reassembled (Block2) before it is delivered.
    pub fn request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: Request,
    ) -> Result<RequestId, EndpointError> {
        self.start(now, peer, request, Observe::No)
    }

    /// Register an observation (GET with Observe=0, RFC 7641 §3.1). The
    /// first response comes as [`Event::Response`] (its `observe` is `Some`
    /// when the peer accepted), then every notification as
    /// [`Event::Notification`], until [`Event::Failed`] or
    /// [`Endpoint::cancel`]. The engine re-registers when a notification's
    /// Max-Age runs out.
    pub fn observe(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: Request,
    ) -> Result<RequestId, EndpointError> {
        self.start(now, peer, request, Observe::Registering)
    }

    fn start(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: Request,
        observe: Observe,
    ) -> Result<RequestId, EndpointError> {
        if self.exchanges.len() >= self.config.max_exchanges {
            return Err(EndpointError::TooManyExchanges(self.exchanges.len()));
        }
        if request.payload.len() > self.config.max_body {
            return Err(EndpointError::PayloadTooLarge {
                size: request.payload.len(),
                limit: self.config.max_body,
            });
        }
        let Some(message) = Exchange::encode(&request) else {
            return Err(EndpointError::Unencodable);
        };
        let id = self.next_id();
        let token = self.new_token(peer);
        self.tokens.insert((peer, token), id);
        let upload = (request.payload.len() > self.config.max_payload)
            .then_some((self.config.block_szx.min(6), 0));
        self.exchanges.insert(
            id,
            Box::new(Exchange {
                peer,
                message,
                observe,
                token,
                follow: None,
                upload,
                download: None,
                deadline: None,
                fresh_timer: None,
            }),
        );
        self.send_request_message(now, id, token, None);
        Ok(RequestId(id))
    }

    /// Re-register an observation now (RFC 7641 §3.3.1).
    pub fn reregister(&mut self, now: Instant, id: RequestId) -> Result<(), EndpointError> {
        let ex = self
            .exchanges
            .get(&id.0)
            .ok_or(EndpointError::UnknownRequest)?;
        if ex.observe == Observe::No {
            return Err(EndpointError::UnknownRequest);
        }
        let token = ex.token;
        self.send_request_message(now, id.0, token, None);
        Ok(())
    }

    /// Stop a request or an observation. An established observation is
    /// cancelled actively with a GET Observe=1 (RFC 7641 §3.6); later
    /// notifications are answered with RST. No further event comes for `id`.
    pub fn cancel(&mut self, now: Instant, id: RequestId) -> Result<(), EndpointError> {
        let ex = self
            .exchanges
            .remove(&id.0)
            .ok_or(EndpointError::UnknownRequest)?;
        self.forget_exchange(id.0, &ex);
        if matches!(ex.observe, Observe::Established { .. }) {
            let mut frame = ex.request();
            frame.options.push((option::OBSERVE, encode_uint(1)));
            let frame = Frame {
                kind: Kind::Con,
                mid: self.next_mid(),
                token: ex.token.to_bytes(),
                payload: Vec::new(),
                ..frame
            };
            self.send_confirmable(now, ex.peer, &frame, Owner::Deregistration);
        }
        self.release_queued(now);
        Ok(())
    }

    pub(super) fn forget_exchange(&mut self, id: u64, ex: &Exchange) {
        self.tokens.remove(&(ex.peer, ex.token));
        if let Some(follow) = ex.follow {
            self.tokens.remove(&(ex.peer, follow));
        }
        self.pending_con
            .retain(|_, out| out.owner != Owner::Exchange(id));
    }

    pub(super) fn fail(&mut self, id: u64, error: RequestError) {
        let Some(ex) = self.exchanges.remove(&id) else {
            return;
        };
        self.forget_exchange(id, &ex);
        tracing::debug!(peer = %ex.peer, path = %ex.path(), %error, "CoAP request failed");
        self.events.push_back(Event::Failed {
            id: RequestId(id),
            peer: ex.peer,
            error,
        });
    }

    /// Send the next message of exchange `id` now, or queue it while NSTART
    /// CONs to the same peer are unacknowledged (RFC 7252 §4.7).
    fn send_request_message(
        &mut self,
        now: Instant,
        id: u64,
        token: Token,
        block2: Option<BlockOption>,
    ) {
        let Some(ex) = self.exchanges.get(&id) else {
            return;
        };
        let peer = ex.peer;
        if ex.confirmable() && self.outstanding(peer) >= self.config.nstart.max(1) {
            self.queued
                .entry(peer)
                .or_default()
                .push_back((id, token, block2));
            return;
        }
        self.transmit_request_message(now, id, token, block2);
    }

    /// Our CON requests to `peer` not acknowledged yet.
    fn outstanding(&self, peer: SocketAddr) -> usize {
        self.pending_con
            .iter()
            .filter(|((p, _), out)| *p == peer && matches!(out.owner, Owner::Exchange(_)))
            .count()
    }

    /// Send queued requests whose peer has room again.
    pub(super) fn release_queued(&mut self, now: Instant) {
        if self.queued.is_empty() {
            return;
        }
        let nstart = self.config.nstart.max(1);
        let peers: Vec<SocketAddr> = self.queued.keys().copied().collect();
        for peer in peers {
            while self.outstanding(peer) < nstart {
                let Some(next) = self.queued.get_mut(&peer).and_then(|q| q.pop_front()) else {
                    break;
                };
                let (id, token, block2) = next;
                if self.exchanges.contains_key(&id) {
                    self.transmit_request_message(now, id, token, block2);
                }
            }
            if self.queued.get(&peer).is_some_and(|q| q.is_empty()) {
                self.queued.remove(&peer);
            }
        }
    }

    /// Send the next message of exchange `id`: the request itself (or its
    /// next Block1 block), or a Block2 follow-up when `block2` is given.
    fn transmit_request_message(
        &mut self,
        now: Instant,
        id: u64,
        token: Token,
        block2: Option<BlockOption>,
    ) {
        let max_payload = self.config.max_payload;
        let Some(ex) = self.exchanges.get_mut(&id) else {
            return;
        };
        let request = ex.request();
        let mut options = request.options;
        let mut payload = Vec::new();
        if block2.is_none() {
            if ex.observe != Observe::No {
                options.push((option::OBSERVE, encode_uint(0)));
            }
            match ex.upload {
                Some((szx, offset)) => {
                    let size = size_of_szx(szx);
                    let total = request.payload.len();
                    let end = (offset + size).min(total);
                    payload = request
                        .payload
                        .get(offset..end)
                        .unwrap_or_default()
                        .to_vec();
                    let block = BlockOption {
                        num: (offset / size) as u32,
                        more: end < total,
                        szx,
                    };
                    options.push((option::BLOCK1, block.encode()));
                    if offset == 0 {
                        options.push((option::SIZE1, encode_uint(total as u32)));
                    }
                }
                None => {
                    payload = request.payload;
                    debug_assert!(payload.len() <= max_payload);
                }
            }
        }
        if let Some(block) = block2 {
            options.push((option::BLOCK2, block.encode()));
        }
        let peer = ex.peer;
        let confirmable = request.kind == Kind::Con;
        if let Some(key) = ex.deadline.take() {
            self.timers.remove(&key);
        }
        let frame = Frame {
            kind: request.kind,
            code: request.code,
            mid: self.next_mid(),
            token: token.to_bytes(),
            options,
            payload,
        };
        if confirmable {
            self.send_confirmable(now, peer, &frame, Owner::Exchange(id));
        } else {
            self.arm_deadline(now, id);
            self.push_transmit(peer, frame.emit());
        }
    }

    fn arm_deadline(&mut self, now: Instant, id: u64) {
        let at = later(now, self.config.response_timeout);
        let Some(old) = self.exchanges.get_mut(&id).map(|ex| ex.deadline.take()) else {
            return;
        };
        if let Some(key) = old {
            self.timers.remove(&key);
        }
        let key = self.set_timer(at, Timer::ExchangeDeadline(id));
        if let Some(ex) = self.exchanges.get_mut(&id) {
            ex.deadline = Some(key);
        }
    }

    /// Our CON was acknowledged without a response: a separate response
    /// follows (RFC 7252 §5.2.2).
    pub(super) fn on_empty_ack(&mut self, now: Instant, id: u64) {
        self.arm_deadline(now, id);
    }

    pub(super) fn on_exchange_deadline(&mut self, now: Instant, id: u64) {
        let due = self
            .exchanges
            .get(&id)
            .and_then(|ex| ex.deadline)
            .is_some_and(|(at, _)| at <= now);
        if due {
            self.fail(id, RequestError::Timeout);
        }
    }

    pub(super) fn on_reregister_timer(&mut self, now: Instant, id: u64) {
        let Some(ex) = self.exchanges.get_mut(&id) else {
            return;
        };
        if ex.fresh_timer.is_none_or(|(at, _)| at > now) {
            return;
        }
        ex.fresh_timer = None;
        let token = ex.token;
        tracing::debug!(peer = %ex.peer, path = %ex.path(), "re-registering observation");
        self.send_request_message(now, id, token, None);
    }

    /// A response (piggybacked, separate, or a notification) arrived.
    pub(super) fn on_response(&mut self, now: Instant, peer: SocketAddr, frame: Frame) {
        let id = Token::of(&frame.token).and_then(|t| self.tokens.get(&(peer, t)).copied());
        if matches!(frame.kind, Kind::Con) {
            // Acknowledge before anything else; a response we do not want
            // is rejected with RST instead (RFC 7252 §4.2, RFC 7641 §3.6).
            if id.is_some() {
                self.send_empty(peer, Kind::Ack, frame.mid);
            }
        }
        let Some(id) = id else {
            if frame.kind != Kind::Ack {
                self.stats.unknown_tokens += 1;
                self.send_empty(peer, Kind::Rst, frame.mid);
            }
            return;
        };
        if frame.kind != Kind::Ack {
            // A separate response also acknowledges our CON implicitly.
            self.pending_con
                .retain(|(p, _), out| !(*p == peer && out.owner == Owner::Exchange(id)));
        }
        self.on_exchange_response(now, id, frame);
    }

    fn on_exchange_response(&mut self, now: Instant, id: u64, frame: Frame) {
        let max_body = self.config.max_body;
        let Some(ex) = self.exchanges.get_mut(&id) else {
            return;
        };
        let on_primary = Token::of(&frame.token) == Some(ex.token);
        if let Some(key) = ex.deadline.take() {
            self.timers.remove(&key);
        }

        // Block1: the peer asks for the next block.
        if let Some((szx, offset)) = ex.upload {
            if frame.code == Code::CONTINUE {
                let Some(ack) = frame.option(option::BLOCK1).and_then(BlockOption::decode) else {
                    self.fail(id, RequestError::Block("2.31 Continue without Block1"));
                    return;
                };
                let szx = szx.min(ack.szx);
                let next = (ack.num as usize + 1) * size_of_szx(szx);
                if next <= offset || next >= ex.request().payload.len() {
                    self.fail(
                        id,
                        RequestError::Block("Block1 acknowledgement out of sequence"),
                    );
                    return;
                }
                ex.upload = Some((szx, next));
                let token = self.new_follow_token(id);
                self.send_request_message(now, id, token, None);
                return;
            }
            ex.upload = None;
        }

        // Block2: collect the body.
        let block2 = frame.option(option::BLOCK2).and_then(BlockOption::decode);
        let response = match block2 {
            Some(block) if frame.code.is_success() => {
                if block.num == 0 {
                    if !on_primary && ex.observe != Observe::No {
                        // A follow-up may only continue, never restart.
                        self.fail(id, RequestError::Block("Block2 restarted on a follow-up"));
                        return;
                    }
                    ex.download = Some(Box::new(Download {
                        first: frame.to_response(),
                        body: Vec::new(),
                        etag: frame.option(option::ETAG).map(<[u8]>::to_vec),
                    }));
                }
                let Some(download) = ex.download.as_mut() else {
                    self.fail(
                        id,
                        RequestError::Block("Block2 block without its first block"),
                    );
                    return;
                };
                if block.offset() != download.body.len() {
                    self.fail(id, RequestError::Block("Block2 block out of sequence"));
                    return;
                }
                if download.etag.as_deref() != frame.option(option::ETAG) {
                    self.fail(
                        id,
                        RequestError::Block("representation changed during Block2"),
                    );
                    return;
                }
                if download.body.len() + frame.payload.len() > max_body {
                    self.fail(id, RequestError::TooLarge(max_body));
                    return;
                }
                download.body.extend_from_slice(&frame.payload);
                if block.more {
                    let next = BlockOption {
                        num: block.num + 1,
                        more: false,
                        szx: block.szx,
                    };
                    if next.num > BlockOption::MAX_NUM {
                        self.fail(id, RequestError::TooLarge(max_body));
                        return;
                    }
                    let token = self.new_follow_token(id);
                    self.send_request_message(now, id, token, Some(next));
                    return;
                }
                let Some(download) = ex.download.take().map(|d| *d) else {
                    return;
                };
                Response {
                    payload: download.body,
                    ..download.first
                }
            }
            _ => {
                if !on_primary && ex.download.is_some() {
                    // An error in the middle of a Block2 transfer.
                    ex.download = None;
                }
                frame.to_response()
            }
        };
        self.deliver(now, id, response);
    }

    fn new_follow_token(&mut self, id: u64) -> Token {
        let Some(peer) = self.exchanges.get(&id).map(|ex| ex.peer) else {
            return Token(0);
        };
        let token = self.new_token(peer);
        self.tokens.insert((peer, token), id);
        if let Some(ex) = self.exchanges.get_mut(&id) {
            if let Some(old) = ex.follow.replace(token) {
                self.tokens.remove(&(peer, old));
            }
        }
        token
    }

    /// Hand a complete response to the user, and keep or end the exchange.
    fn deliver(&mut self, now: Instant, id: u64, response: Response) {
        let margin = self.config.reregister_margin;
        let Some(ex) = self.exchanges.get_mut(&id) else {
            return;
        };
        let peer = ex.peer;
        let still_observed = response.code.is_success() && response.observe.is_some();
        match ex.observe {
            Observe::No => {
                self.finish(id);
                self.events.push_back(Event::Response {
                    id: RequestId(id),
                    peer,
                    response,
                });
            }
            Observe::Registering => {
                if let (true, Some(seq)) = (still_observed, response.observe) {
                    ex.observe = Observe::Established { seq, at: now };
                    self.refresh(now, id, response.max_age, margin);
                } else {
                    self.finish(id);
                }
                self.events.push_back(Event::Response {
                    id: RequestId(id),
                    peer,
                    response,
                });
            }
            Observe::Established { seq, at } => {
                let Some(new_seq) = response.observe.filter(|_| still_observed) else {
                    // The peer ended the observation (RFC 7641 §3.2).
                    let code = response.code;
                    self.events.push_back(Event::Notification {
                        id: RequestId(id),
                        peer,
                        response,
                    });
                    self.fail(id, RequestError::ObservationEnded(code));
                    return;
                };
                if !is_newer(seq, at, new_seq, now) {
                    tracing::trace!(%peer, seq, new_seq, "dropping reordered notification");
                    return;
                }
                ex.observe = Observe::Established {
                    seq: new_seq,
                    at: now,
                };
                self.refresh(now, id, response.max_age, margin);
                self.events.push_back(Event::Notification {
                    id: RequestId(id),
                    peer,
                    response,
                });
            }
        }
    }

    /// Arm re-registration after Max-Age (default 60 s, RFC 7252 §5.10.5).
    fn refresh(&mut self, now: Instant, id: u64, max_age: Option<u32>, margin: Duration) {
        // Max-Age is from the network: added without overflow.
        let wait = Duration::from_secs(u64::from(max_age.unwrap_or(60))).saturating_add(margin);
        let at = later(now, wait);
        let Some(old) = self.exchanges.get_mut(&id).map(|ex| ex.fresh_timer.take()) else {
            return;
        };
        if let Some(key) = old {
            self.timers.remove(&key);
        }
        let key = self.set_timer(at, Timer::Reregister(id));
        if let Some(ex) = self.exchanges.get_mut(&id) {
            ex.fresh_timer = Some(key);
        }
    }

    fn finish(&mut self, id: u64) {
        if let Some(ex) = self.exchanges.remove(&id) {
            self.forget_exchange(id, &ex);
        }
    }
}

/// RFC 7641 §3.4: is notification (`v2`, `t2`) newer than (`v1`, `t1`)?
fn is_newer(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || t2.saturating_duration_since(t1) > OBSERVE_REORDER_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_ordering_rfc7641_3_4() {
        let t = Instant::now();
        assert!(is_newer(3, t, 4, t));
        assert!(!is_newer(4, t, 3, t));
        assert!(!is_newer(4, t, 4, t));
        // wrap-around of the 24-bit sequence
        assert!(is_newer((1 << 24) - 1, t, 0, t));
        // old enough: anything is fresh
        assert!(is_newer(9, t, 1, t + Duration::from_secs(129)));
    }
}
