//! Requests we receive: delivery to the application, piggybacked and
//! separate responses, Block1 reassembly (RFC 7959 §2.5), Block2 serving
//! (§2.4), and the observe relations we serve (RFC 7641 server role).

use std::net::SocketAddr;
use std::time::Instant;

use ferrogate_sdk::time::saturating_add as later;

use super::{
    Endpoint, EndpointError, Event, IncomingRequest, Owner, RelationEnd, RelationId, RequestHandle,
    Timer,
};
use crate::block::{BlockOption, size_of_szx};
use crate::message::{Code, Frame, Kind, Method, Response, encode_uint, option};

/// What identifies one block-wise transfer: the peer and the request
/// without its block options and token (RFC 7959 §2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct TransferKey {
    peer: SocketAddr,
    method: Method,
    path: Vec<String>,
    query: Vec<String>,
}

/// A Block1 body being reassembled.
#[derive(Debug)]
pub(super) struct Upload {
    body: Vec<u8>,
    pub(super) expires: Instant,
}

/// A Block2 body being served, kept so follow-up requests are answered
/// without the application.
#[derive(Debug)]
pub(super) struct Download {
    response: Response,
    pub(super) expires: Instant,
}

/// A request handed to the application and not answered yet.
#[derive(Debug)]
pub(super) struct Incoming {
    peer: SocketAddr,
    token: Vec<u8>,
    mid: u16,
    kind: Kind,
    acked: bool,
    key: TransferKey,
    block1: Option<BlockOption>,
    block2: Option<BlockOption>,
    observe: Option<u32>,
    /// Its piggyback and expiry timers, removed once it is answered.
    timers: Vec<(Instant, u64)>,
}

/// An observe relation: a peer observing one of our resources.
#[derive(Debug)]
pub(super) struct Relation {
    peer: SocketAddr,
    token: Vec<u8>,
    key: TransferKey,
    seq: u32,
    last_mid: Option<u16>,
    /// When the observer last acknowledged (or registered): RFC 7641 §4.5
    /// wants a CON at least every 24 hours to learn it is still there.
    last_confirmed: Instant,
}

/// RFC 7641 §4.5: the longest a server goes without a CON notification.
const CONFIRM_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

enum Block1Step {
    Complete(Vec<u8>),
    Answered,
}

impl Endpoint {
    pub(super) fn on_request(&mut self, now: Instant, peer: SocketAddr, frame: Frame) {
        if let Some((number, _)) = frame
            .options
            .iter()
            .find(|(n, _)| option::is_critical(*n) && !option::is_known(*n))
        {
            let text = format!("unrecognized critical option {number}");
            self.reject(peer, &frame, Code::BAD_OPTION, &text);
            return;
        }
        let Some(mut request) = frame.to_request() else {
            self.reject(peer, &frame, Code::METHOD_NOT_ALLOWED, "unknown method");
            return;
        };
        if frame.option(option::PROXY_URI).is_some() || frame.option(option::PROXY_SCHEME).is_some()
        {
            self.reject(peer, &frame, Code::PROXYING_NOT_SUPPORTED, "no proxy here");
            return;
        }
        let key = TransferKey {
            peer,
            method: request.method,
            path: request.path.clone(),
            query: request.query.clone(),
        };
        let block2 = match frame.option(option::BLOCK2) {
            None => None,
            Some(raw) => match BlockOption::decode(raw) {
                Some(b) => Some(b),
                None => {
                    self.reject(peer, &frame, Code::BAD_OPTION, "invalid Block2");
                    return;
                }
            },
        };
        let block1 = match frame.option(option::BLOCK1) {
            None => None,
            Some(raw) => {
                let Some(block) = BlockOption::decode(raw) else {
                    self.reject(peer, &frame, Code::BAD_OPTION, "invalid Block1");
                    return;
                };
                match self.on_block1(now, peer, &frame, &key, block) {
                    Block1Step::Answered => return,
                    Block1Step::Complete(body) => request.payload = body,
                }
                Some(block)
            }
        };
        if let Some(b2) = block2.filter(|b| b.num > 0) {
            if self.downloads.contains_key(&key) {
                self.serve_cached_block(now, peer, &frame, &key, b2);
                return;
            }
        }
        if request.observe == Some(1) {
            if let Some(rel) = self
                .relation_tokens
                .get(&(peer, frame.token.clone()))
                .copied()
            {
                self.end_relation(rel, RelationEnd::Deregistered);
            }
        }
        if self.incoming.len() >= self.config.max_pending_requests {
            self.reject(
                peer,
                &frame,
                Code::SERVICE_UNAVAILABLE,
                "too many requests in progress",
            );
            return;
        }
        let handle = self.next_id();
        self.incoming.insert(
            handle,
            Incoming {
                peer,
                token: frame.token.clone(),
                mid: frame.mid,
                kind: frame.kind,
                acked: false,
                key,
                block1,
                block2,
                observe: request.observe,
                timers: Vec::new(),
            },
        );
        let mut timers = Vec::new();
        if frame.kind == Kind::Con {
            timers.push(self.set_timer(
                later(now, self.config.piggyback_window),
                Timer::Piggyback(handle),
            ));
        }
        timers.push(self.set_timer(
            later(now, self.config.server_response_timeout),
            Timer::IncomingExpiry(handle),
        ));
        if let Some(incoming) = self.incoming.get_mut(&handle) {
            incoming.timers = timers;
        }
        self.events.push_back(Event::Request(IncomingRequest {
            handle: RequestHandle(handle),
            peer,
            request,
        }));
    }

    /// Answer a request directly from the engine with an error code and a
    /// diagnostic payload.
    fn reject(&mut self, peer: SocketAddr, frame: &Frame, code: Code, text: &str) {
        self.stats.rejected_requests += 1;
        tracing::debug!(%peer, %code, reason = text, "rejecting CoAP request");
        let response = Response::new(code).with_diagnostic(text);
        self.reply_directly(peer, frame, &response, Vec::new());
    }

    /// Reply to `frame` at once: piggybacked on the ACK for a CON, as a NON
    /// for a NON.
    fn reply_directly(
        &mut self,
        peer: SocketAddr,
        frame: &Frame,
        response: &Response,
        extra: Vec<(u16, Vec<u8>)>,
    ) {
        let mut options = Frame::response_options(response);
        options.extend(extra);
        let (kind, mid) = if frame.kind == Kind::Con {
            (Kind::Ack, frame.mid)
        } else {
            (Kind::Non, self.next_mid())
        };
        let reply = Frame {
            kind,
            code: response.code,
            mid,
            token: frame.token.clone(),
            options,
            payload: response.payload.clone(),
        };
        self.send_reply(peer, frame.mid, &reply);
    }

    fn on_block1(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        frame: &Frame,
        key: &TransferKey,
        block: BlockOption,
    ) -> Block1Step {
        let max_body = self.config.max_body;
        let too_large = |this: &mut Endpoint| {
            this.uploads.remove(key);
            let response = Response::new(Code::REQUEST_ENTITY_TOO_LARGE)
                .with_diagnostic(format!("body larger than {max_body} bytes"));
            this.stats.rejected_requests += 1;
            this.reply_directly(
                peer,
                frame,
                &response,
                vec![(option::SIZE1, encode_uint(max_body as u32))],
            );
            Block1Step::Answered
        };
        if frame
            .uint_option(option::SIZE1)
            .is_some_and(|s| s as usize > max_body)
        {
            return too_large(self);
        }
        if block.more && frame.payload.len() != block.size() {
            self.uploads.remove(key);
            self.reject(
                peer,
                frame,
                Code::BAD_REQUEST,
                "Block1 payload does not match its size",
            );
            return Block1Step::Answered;
        }
        if block.num == 0 && !self.uploads.contains_key(key) {
            if let Some(refusal) = self.block_transfer_refusal(peer) {
                self.reject(peer, frame, Code::SERVICE_UNAVAILABLE, refusal);
                return Block1Step::Answered;
            }
            self.uploads.insert(
                key.clone(),
                Upload {
                    body: Vec::new(),
                    expires: now,
                },
            );
        }
        let idle = self.config.transmission.block1_idle_timeout();
        let Some(upload) = self.uploads.get_mut(key) else {
            self.reject(
                peer,
                frame,
                Code::REQUEST_ENTITY_INCOMPLETE,
                "Block1 block without its first block",
            );
            return Block1Step::Answered;
        };
        if block.offset() != upload.body.len() {
            self.uploads.remove(key);
            self.reject(
                peer,
                frame,
                Code::REQUEST_ENTITY_INCOMPLETE,
                "Block1 block out of sequence",
            );
            return Block1Step::Answered;
        }
        if upload.body.len() + frame.payload.len() > max_body {
            return too_large(self);
        }
        upload.body.extend_from_slice(&frame.payload);
        upload.expires = later(now, idle);
        if block.more {
            let ack = BlockOption {
                num: block.num,
                more: true,
                szx: block.szx,
            };
            self.reply_directly(
                peer,
                frame,
                &Response::new(Code::CONTINUE),
                vec![(option::BLOCK1, ack.encode())],
            );
            return Block1Step::Answered;
        }
        match self.uploads.remove(key) {
            Some(upload) => Block1Step::Complete(upload.body),
            None => Block1Step::Answered,
        }
    }

    /// Why a new block-wise transfer from `peer` is refused, if it is: the
    /// total cap, or the cap per source address.
    fn block_transfer_refusal(&self, peer: SocketAddr) -> Option<&'static str> {
        if self.uploads.len() + self.downloads.len() >= self.config.max_block_transfers {
            return Some("too many block-wise transfers");
        }
        let from_peer = self
            .uploads
            .keys()
            .chain(self.downloads.keys())
            .filter(|k| k.peer.ip() == peer.ip())
            .count();
        (from_peer >= self.config.max_block_transfers_per_source)
            .then_some("too many block-wise transfers from this address")
    }

    fn serve_cached_block(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        frame: &Frame,
        key: &TransferKey,
        block: BlockOption,
    ) {
        let lifetime = self.config.transmission.exchange_lifetime();
        let Some(download) = self.downloads.get_mut(key) else {
            return;
        };
        download.expires = later(now, lifetime);
        let response = download.response.clone();
        match slice_block(&response.payload, block) {
            Some((payload, block)) => {
                let extra = vec![(option::BLOCK2, block.encode())];
                let part = Response {
                    payload,
                    ..response
                };
                if !block.more {
                    self.downloads.remove(key);
                }
                self.reply_directly(peer, frame, &part, extra);
            }
            None => self.reject(
                peer,
                frame,
                Code::BAD_OPTION,
                "Block2 beyond the end of the body",
            ),
        }
    }

    /// Answer a request received as [`Event::Request`]. A CON still within
    /// the piggyback window gets the response on its ACK; later, it goes as
    /// a separate CON response. A body larger than `max_payload` (or a
    /// request that asked for Block2) is served block-wise.
    pub fn respond(
        &mut self,
        now: Instant,
        handle: RequestHandle,
        response: Response,
    ) -> Result<(), EndpointError> {
        let incoming = self.take_incoming(handle)?;
        self.send_response(now, incoming, response, None);
        Ok(())
    }

    /// Answer an observe registration (a request whose `observe` is
    /// `Some(0)`) and start serving notifications to it with
    /// [`Endpoint::notify`]. Returns `None` (and answers as a plain
    /// response) when the request was not a registration, the response is
    /// not 2.xx, or the relation cap is reached (RFC 7641 §4.1).
    pub fn accept_observe(
        &mut self,
        now: Instant,
        handle: RequestHandle,
        response: Response,
    ) -> Result<Option<RelationId>, EndpointError> {
        let incoming = self.take_incoming(handle)?;
        if incoming.observe != Some(0) || !response.code.is_success() {
            self.send_response(now, incoming, response, None);
            return Ok(None);
        }
        let existing = self
            .relation_tokens
            .get(&(incoming.peer, incoming.token.clone()))
            .copied();
        let id = match existing {
            Some(id) => id,
            None if self.relations.len() >= self.config.max_observe_relations => {
                self.stats.observe_relations_refused += 1;
                self.send_response(now, incoming, response, None);
                return Ok(None);
            }
            None => {
                let id = self.next_id();
                self.relation_tokens
                    .insert((incoming.peer, incoming.token.clone()), id);
                self.relations.insert(
                    id,
                    Relation {
                        peer: incoming.peer,
                        token: incoming.token.clone(),
                        key: incoming.key.clone(),
                        seq: (self.rng.next() as u32) & 0xffff,
                        last_mid: None,
                        last_confirmed: now,
                    },
                );
                id
            }
        };
        let seq = self.bump_seq(id);
        self.send_response(now, incoming, response, Some(seq));
        Ok(Some(RelationId(id)))
    }

    fn take_incoming(&mut self, handle: RequestHandle) -> Result<Incoming, EndpointError> {
        let incoming = self
            .incoming
            .remove(&handle.0)
            .ok_or(EndpointError::UnknownHandle)?;
        for key in &incoming.timers {
            self.timers.remove(key);
        }
        Ok(incoming)
    }

    fn bump_seq(&mut self, id: u64) -> u32 {
        match self.relations.get_mut(&id) {
            Some(rel) => {
                rel.seq = (rel.seq + 1) & 0x00ff_ffff;
                rel.seq
            }
            None => 0,
        }
    }

    /// Send a notification to an observer. A CON notification that is
    /// never acknowledged, or a RST, ends the relation
    /// ([`Event::RelationEnded`]). A NON becomes a CON when none was sent
    /// for 24 hours (RFC 7641 §4.5).
    pub fn notify(
        &mut self,
        now: Instant,
        relation: RelationId,
        response: Response,
        confirmable: bool,
    ) -> Result<(), EndpointError> {
        if !self.relations.contains_key(&relation.0) {
            return Err(EndpointError::UnknownRelation);
        }
        let seq = self.bump_seq(relation.0);
        let mid = self.next_mid();
        let Some(rel) = self.relations.get_mut(&relation.0) else {
            return Err(EndpointError::UnknownRelation);
        };
        rel.last_mid = Some(mid);
        let confirmable = confirmable
            || now.saturating_duration_since(rel.last_confirmed) >= CONFIRM_AT_LEAST_EVERY;
        if confirmable {
            // Counted from the attempt: a timeout ends the relation anyway.
            rel.last_confirmed = now;
        }
        let (peer, token, key) = (rel.peer, rel.token.clone(), rel.key.clone());
        let (payload, mut options) = self.prepare_body(now, &key, &response, None);
        options.push((option::OBSERVE, encode_uint(seq)));
        let frame = Frame {
            kind: if confirmable { Kind::Con } else { Kind::Non },
            code: response.code,
            mid,
            token,
            options,
            payload,
        };
        if confirmable {
            self.send_confirmable(now, peer, &frame, Owner::Notification(relation.0));
        } else {
            self.push_transmit(peer, frame.emit());
        }
        Ok(())
    }

    /// Stop serving a relation, sending `last` (e.g. 4.04 when the resource
    /// is gone) without an Observe option so the observer knows.
    pub fn end_observe(
        &mut self,
        now: Instant,
        relation: RelationId,
        last: Option<Response>,
    ) -> Result<(), EndpointError> {
        let rel = self
            .relations
            .remove(&relation.0)
            .ok_or(EndpointError::UnknownRelation)?;
        self.relation_tokens.remove(&(rel.peer, rel.token.clone()));
        self.pending_con
            .retain(|_, out| out.owner != Owner::Notification(relation.0));
        if let Some(response) = last {
            let frame = Frame {
                kind: Kind::Con,
                code: response.code,
                mid: self.next_mid(),
                token: rel.token,
                options: Frame::response_options(&response),
                payload: response.payload,
            };
            self.send_confirmable(now, rel.peer, &frame, Owner::SeparateResponse);
        }
        Ok(())
    }

    pub(super) fn end_relation(&mut self, id: u64, reason: RelationEnd) {
        let Some(rel) = self.relations.remove(&id) else {
            return;
        };
        self.relation_tokens.remove(&(rel.peer, rel.token.clone()));
        self.pending_con
            .retain(|_, out| out.owner != Owner::Notification(id));
        self.events.push_back(Event::RelationEnded {
            relation: RelationId(id),
            peer: rel.peer,
            reason,
        });
    }

    /// A RST that matches no CON of ours may answer a NON notification.
    pub(super) fn on_reset_of_non(&mut self, peer: SocketAddr, mid: u16) {
        let found = self
            .relations
            .iter()
            .find(|(_, rel)| rel.peer == peer && rel.last_mid == Some(mid))
            .map(|(id, _)| *id);
        if let Some(id) = found {
            self.end_relation(id, RelationEnd::Reset);
        }
    }

    /// The body of a response: whole, or the requested Block2 block with
    /// the rest cached for the follow-up requests.
    fn prepare_body(
        &mut self,
        now: Instant,
        key: &TransferKey,
        response: &Response,
        requested: Option<BlockOption>,
    ) -> (Vec<u8>, Vec<(u16, Vec<u8>)>) {
        let mut options = Frame::response_options(response);
        let blockwise = response.payload.len() > self.config.max_payload || requested.is_some();
        if !blockwise || !response.code.is_success() {
            return (response.payload.clone(), options);
        }
        let szx = requested
            .map(|b| b.szx)
            .unwrap_or(6)
            .min(self.config.block_szx.min(6));
        let num = match requested {
            // Re-scale a block number asked for at another size.
            Some(b) => (b.offset() / size_of_szx(szx)) as u32,
            None => 0,
        };
        let want = BlockOption {
            num,
            more: false,
            szx,
        };
        let Some((payload, block)) = slice_block(&response.payload, want) else {
            return (Vec::new(), options);
        };
        if num == 0 {
            options.push((option::SIZE2, encode_uint(response.payload.len() as u32)));
        }
        if block.more {
            let room =
                self.downloads.contains_key(key) || self.block_transfer_refusal(key.peer).is_none();
            if room {
                self.downloads.insert(
                    key.clone(),
                    Download {
                        response: response.clone(),
                        expires: later(now, self.config.transmission.exchange_lifetime()),
                    },
                );
            }
        }
        options.push((option::BLOCK2, block.encode()));
        (payload, options)
    }

    fn send_response(
        &mut self,
        now: Instant,
        incoming: Incoming,
        response: Response,
        observe: Option<u32>,
    ) {
        let (payload, mut options) =
            self.prepare_body(now, &incoming.key, &response, incoming.block2);
        if let Some(seq) = observe {
            options.push((option::OBSERVE, encode_uint(seq)));
        }
        if let Some(b1) = incoming.block1 {
            options.push((option::BLOCK1, b1.encode()));
        }
        let peer = incoming.peer;
        match (incoming.kind, incoming.acked) {
            (Kind::Con, false) => {
                let frame = Frame {
                    kind: Kind::Ack,
                    code: response.code,
                    mid: incoming.mid,
                    token: incoming.token,
                    options,
                    payload,
                };
                self.send_reply(peer, incoming.mid, &frame);
            }
            (Kind::Con, true) => {
                let frame = Frame {
                    kind: Kind::Con,
                    code: response.code,
                    mid: self.next_mid(),
                    token: incoming.token,
                    options,
                    payload,
                };
                self.send_confirmable(now, peer, &frame, Owner::SeparateResponse);
            }
            _ => {
                let frame = Frame {
                    kind: Kind::Non,
                    code: response.code,
                    mid: self.next_mid(),
                    token: incoming.token,
                    options,
                    payload,
                };
                self.push_transmit(peer, frame.emit());
            }
        }
    }

    pub(super) fn on_piggyback_timer(&mut self, handle: u64) {
        let Some(incoming) = self.incoming.get_mut(&handle) else {
            return;
        };
        if incoming.kind != Kind::Con || incoming.acked {
            return;
        }
        incoming.acked = true;
        let (peer, mid) = (incoming.peer, incoming.mid);
        self.send_empty(peer, Kind::Ack, mid);
    }

    pub(super) fn on_incoming_expiry(&mut self, _now: Instant, handle: u64) {
        if let Some(incoming) = self.incoming.remove(&handle) {
            self.stats.unanswered_requests += 1;
            tracing::debug!(peer = %incoming.peer, "request never answered by the application");
        }
    }
}

/// Block `want` of `body` (RFC 7959 §2.4), with the M bit set; `None` when
/// the block starts past the end.
fn slice_block(body: &[u8], want: BlockOption) -> Option<(Vec<u8>, BlockOption)> {
    let size = size_of_szx(want.szx);
    let start = want.offset();
    if start > body.len() || (start == body.len() && start != 0) {
        return None;
    }
    let end = (start + size).min(body.len());
    Some((
        body.get(start..end)?.to_vec(),
        BlockOption {
            num: want.num,
            more: end < body.len(),
            szx: want.szx,
        },
    ))
}
