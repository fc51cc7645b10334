//! State-machine tests on a fake clock: two endpoints wired back to back,
//! with a network that can lose datagrams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::block::BlockOption;
use crate::message::{Method, option};

const A: &str = "10.0.0.1:5683";
const B: &str = "10.0.0.2:5683";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Net {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    /// Every datagram sent, by direction, for assertions.
    log: Vec<(SocketAddr, Frame, Instant)>,
}

impl Net {
    fn new(config: EndpointConfig) -> Net {
        Net {
            now: Instant::now(),
            a: Endpoint::new(EndpointConfig {
                seed: 11,
                ..config.clone()
            }),
            b: Endpoint::new(EndpointConfig { seed: 22, ..config }),
            log: Vec::new(),
        }
    }

    /// Deliver every queued datagram (both ways) until quiet, dropping
    /// those `lose` picks.
    fn pump_lossy(&mut self, mut lose: impl FnMut(&SocketAddr, &Frame) -> bool) {
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                let frame = Frame::parse(&t.datagram).expect("a sent garbage");
                assert_eq!(t.peer, addr(B));
                self.log.push((addr(B), frame.clone(), self.now));
                if !lose(&addr(B), &frame) {
                    self.b.handle(self.now, addr(A), &t.datagram);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                let frame = Frame::parse(&t.datagram).expect("b sent garbage");
                self.log.push((addr(A), frame.clone(), self.now));
                if !lose(&addr(A), &frame) {
                    self.a.handle(self.now, addr(B), &t.datagram);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn pump(&mut self) {
        self.pump_lossy(|_, _| false);
    }

    /// Advance the clock to the earliest timer of either endpoint.
    fn advance(&mut self) -> bool {
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(at) => {
                self.now = self.now.max(at);
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
                true
            }
            None => false,
        }
    }

    fn advance_by(&mut self, d: Duration) {
        self.now += d;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
    }

    fn events_a(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.a.poll_event()).collect()
    }

    fn events_b(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.b.poll_event()).collect()
    }

    fn sent_to(&self, to: &str) -> Vec<&Frame> {
        self.log
            .iter()
            .filter(|(p, _, _)| *p == addr(to))
            .map(|(_, f, _)| f)
            .collect()
    }

    fn take_request(&mut self) -> IncomingRequest {
        let events = self.events_b();
        match events.as_slice() {
            [Event::Request(r)] => r.clone(),
            other => panic!("expected one request, got {other:?}"),
        }
    }
}

fn no_limits() -> EndpointConfig {
    EndpointConfig {
        rate_limit: None,
        ..Default::default()
    }
}

#[test]
fn piggybacked_response_completes_the_exchange() {
    let mut net = Net::new(no_limits());
    let id = net
        .a
        .request(net.now, addr(B), Request::get("/temp"))
        .unwrap();
    net.pump();
    let req = net.take_request();
    assert_eq!(req.request.path, vec!["temp"]);
    net.b
        .respond(
            net.now,
            req.handle,
            Response::new(Code::CONTENT).with_payload(0, b"21".to_vec()),
        )
        .unwrap();
    net.pump();
    let events = net.events_a();
    assert!(
        matches!(&events[..], [Event::Response { id: got, response, .. }]
        if *got == id && response.payload == b"21")
    );
    assert_eq!(net.sent_to(A)[0].kind, Kind::Ack);
    // nothing left to retransmit
    net.advance_by(Duration::from_secs(300));
    assert_eq!(net.sent_to(B).len(), 1);
    assert_eq!(net.a.exchanges_in_progress(), 0);
}

#[test]
fn con_is_retransmitted_with_exponential_backoff_then_times_out() {
    let mut net = Net::new(no_limits());
    let start = net.now;
    let id = net.a.request(net.now, addr(B), Request::get("/x")).unwrap();
    net.pump_lossy(|_, _| true);
    while net.advance() {
        net.pump_lossy(|_, _| true);
    }
    let sends: Vec<Instant> = net.log.iter().map(|(_, _, t)| *t).collect();
    assert_eq!(sends.len(), 5, "1 transmission + MAX_RETRANSMIT=4");
    let gaps: Vec<Duration> = sends.windows(2).map(|w| w[1] - w[0]).collect();
    let first = gaps[0];
    assert!(
        first >= Duration::from_secs(2) && first <= Duration::from_secs(3),
        "{gaps:?}"
    );
    for w in gaps.windows(2) {
        assert_eq!(w[1], w[0] * 2, "{gaps:?}");
    }
    // every retransmission is the same message
    let frames = net.sent_to(B);
    assert!(
        frames
            .iter()
            .all(|f| f.mid == frames[0].mid && f.token == frames[0].token)
    );
    let events = net.events_a();
    assert!(
        matches!(&events[..], [Event::Failed { id: got, error: RequestError::Timeout, .. }] if *got == id)
    );
    let waited = net.now - start;
    let wait = net.a.config().transmission.max_transmit_wait();
    assert!(
        waited >= Duration::from_secs(62) && waited <= wait,
        "{waited:?}"
    );
    assert_eq!(net.a.stats().retransmissions, 4);
}

#[test]
fn configured_transmission_parameters_are_used() {
    let config = EndpointConfig {
        transmission: TransmissionParams {
            ack_timeout: Duration::from_millis(100),
            ack_random_factor: 1.0,
            max_retransmit: 2,
            ..Default::default()
        },
        rate_limit: None,
        ..Default::default()
    };
    let mut net = Net::new(config);
    net.a.request(net.now, addr(B), Request::get("/x")).unwrap();
    let start = net.now;
    net.pump_lossy(|_, _| true);
    while net.advance() {
        net.pump_lossy(|_, _| true);
    }
    let sends: Vec<Duration> = net.log.iter().map(|(_, _, t)| *t - start).collect();
    assert_eq!(
        sends,
        vec![
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_millis(300)
        ]
    );
    assert_eq!(net.now - start, Duration::from_millis(700));
}

#[test]
fn lost_ack_is_recovered_by_retransmission_and_the_duplicate_gets_the_cached_response() {
    let mut net = Net::new(no_limits());
    let id = net
        .a
        .request(
            net.now,
            addr(B),
            Request::put("/sp").with_payload(0, b"5".to_vec()),
        )
        .unwrap();
    net.pump();
    let req = net.take_request();
    net.b
        .respond(net.now, req.handle, Response::new(Code::CHANGED))
        .unwrap();
    // the piggybacked response is lost
    net.pump_lossy(|to, _| *to == addr(A));
    assert!(net.events_a().is_empty());
    // the client retransmits; the server must not run the PUT again
    net.advance_by(Duration::from_secs(3));
    net.pump();
    assert!(
        net.events_b().is_empty(),
        "duplicate delivered to the application"
    );
    assert_eq!(net.b.stats().duplicates, 1);
    let events = net.events_a();
    assert!(
        matches!(&events[..], [Event::Response { id: got, response, .. }]
        if *got == id && response.code == Code::CHANGED)
    );
}

#[test]
fn duplicate_before_the_answer_is_not_delivered_twice() {
    let mut net = Net::new(no_limits());
    net.a
        .request(net.now, addr(B), Request::get("/slow"))
        .unwrap();
    let t = net.a.poll_transmit().unwrap();
    net.b.handle(net.now, addr(A), &t.datagram);
    net.b.handle(net.now, addr(A), &t.datagram);
    assert_eq!(net.events_b().len(), 1);
    assert!(net.b.poll_transmit().is_none());
}

#[test]
fn slow_answer_becomes_a_separate_response() {
    let mut net = Net::new(no_limits());
    let id = net
        .a
        .request(net.now, addr(B), Request::get("/slow"))
        .unwrap();
    net.pump();
    let req = net.take_request();
    // piggyback window passes: an empty ACK stops the client's retransmission
    net.advance();
    net.pump();
    let acks = net.sent_to(A);
    assert!(matches!(acks.as_slice(), [f] if f.kind == Kind::Ack && f.code == Code::EMPTY));
    net.advance_by(Duration::from_secs(30));
    net.pump();
    assert_eq!(
        net.sent_to(B).len(),
        1,
        "client retransmitted after the empty ACK"
    );
    net.b
        .respond(
            net.now,
            req.handle,
            Response::new(Code::CONTENT).with_payload(0, b"late".to_vec()),
        )
        .unwrap();
    net.pump();
    let sent = net.sent_to(A);
    assert_eq!(sent[1].kind, Kind::Con);
    assert_eq!(
        net.sent_to(B)[1].kind,
        Kind::Ack,
        "separate response acknowledged"
    );
    let events = net.events_a();
    assert!(
        matches!(&events[..], [Event::Response { id: got, response, .. }]
        if *got == id && response.payload == b"late")
    );
    assert!(
        !net.a
            .timers
            .values()
            .any(|t| matches!(t, Timer::ExchangeDeadline(_))),
        "the response deadline is disarmed when the response comes"
    );
    // the server's CON was acknowledged: no retransmission
    net.advance_by(Duration::from_secs(100));
    net.pump();
    assert_eq!(net.sent_to(A).len(), 2);
}

#[test]
fn separate_response_never_coming_times_out() {
    let config = EndpointConfig {
        response_timeout: Duration::from_secs(10),
        ..no_limits()
    };
    let mut net = Net::new(config);
    let id = net
        .a
        .request(net.now, addr(B), Request::get("/never"))
        .unwrap();
    net.pump();
    let _req = net.take_request();
    net.advance();
    net.pump();
    let acked_at = net.now;
    while net.advance() {
        net.pump();
        if !net.a.exchanges.is_empty() {
            continue;
        }
        break;
    }
    let events = net.events_a();
    assert!(
        matches!(&events[..], [Event::Failed { id: got, error: RequestError::Timeout, .. }] if *got == id)
    );
    assert_eq!(net.now - acked_at, Duration::from_secs(10));
}

#[test]
fn reset_fails_the_request_and_unknown_responses_get_reset() {
    let mut net = Net::new(no_limits());
    let id = net.a.request(net.now, addr(B), Request::get("/x")).unwrap();
    let t = net.a.poll_transmit().unwrap();
    let sent = Frame::parse(&t.datagram).unwrap();
    net.a
        .handle(net.now, addr(B), &Frame::empty(Kind::Rst, sent.mid).emit());
    let events = net.events_a();
    assert!(
        matches!(&events[..], [Event::Failed { id: got, error: RequestError::Reset, .. }] if *got == id)
    );

    // a CON response nobody asked for
    let stray = Frame {
        kind: Kind::Con,
        code: Code::CONTENT,
        mid: 77,
        token: vec![9, 9],
        options: vec![],
        payload: b"?".to_vec(),
    };
    net.a.handle(net.now, addr(B), &stray.emit());
    let reply = Frame::parse(&net.a.poll_transmit().unwrap().datagram).unwrap();
    assert_eq!(
        (reply.kind, reply.mid, reply.code),
        (Kind::Rst, 77, Code::EMPTY)
    );
    assert_eq!(net.a.stats().unknown_tokens, 1);
    assert!(net.events_a().is_empty());
}

#[test]
fn ping_gets_reset_and_malformed_con_gets_reset() {
    let mut ep = Endpoint::new(no_limits());
    let now = Instant::now();
    ep.handle(now, addr(A), &[0x40, 0x00, 0x12, 0x34]);
    let r = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
    assert_eq!((r.kind, r.mid), (Kind::Rst, 0x1234));
    // CON with an option length running past the end
    ep.handle(now, addr(A), &[0x40, 0x01, 0x00, 0x07, 0xb5, b'a']);
    let r = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
    assert_eq!((r.kind, r.mid), (Kind::Rst, 7));
    // garbage and a NON are dropped silently
    ep.handle(now, addr(A), &[1, 2]);
    ep.handle(now, addr(A), &[0x50, 0x01, 0x00, 0x08, 0xff]);
    assert!(ep.poll_transmit().is_none());
    assert_eq!(ep.stats().malformed, 3);
    assert!(ep.poll_event().is_none());
}

#[test]
fn unknown_critical_option_is_answered_bad_option() {
    let mut ep = Endpoint::new(no_limits());
    let now = Instant::now();
    let req = Frame {
        kind: Kind::Con,
        code: Method::Get.code(),
        mid: 5,
        token: vec![1],
        options: vec![(option::URI_PATH, b"a".to_vec()), (2049, vec![1])],
        payload: vec![],
    };
    ep.handle(now, addr(A), &req.emit());
    let r = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
    assert_eq!(
        (r.kind, r.code, r.token.as_slice()),
        (Kind::Ack, Code::BAD_OPTION, &[1u8][..])
    );
    // an unknown elective option is ignored
    let req = Frame {
        mid: 6,
        options: vec![(2048, vec![1])],
        ..req
    };
    ep.handle(now, addr(A), &req.emit());
    assert!(matches!(ep.poll_event(), Some(Event::Request(_))));
}

#[test]
fn non_request_gets_non_response() {
    let mut net = Net::new(no_limits());
    let id = net
        .a
        .request(net.now, addr(B), Request::post("/d").non_confirmable())
        .unwrap();
    net.pump();
    let req = net.take_request();
    assert!(!req.request.confirmable);
    net.b
        .respond(net.now, req.handle, Response::new(Code::CHANGED))
        .unwrap();
    net.pump();
    assert_eq!(net.sent_to(A)[0].kind, Kind::Non);
    assert!(matches!(&net.events_a()[..], [Event::Response { id: got, .. }] if *got == id));
}

#[test]
fn block1_upload_is_reassembled_and_acknowledged_per_block() {
    let mut net = Net::new(no_limits());
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let id = net
        .a
        .request(
            net.now,
            addr(B),
            Request::post("/dev/1").with_payload(60, body.clone()),
        )
        .unwrap();
    net.pump();
    let req = net.take_request();
    assert_eq!(req.request.payload, body);
    assert_eq!(req.request.content_format, Some(60));
    // two 2.31 Continue, one for each of the first blocks
    let continues = net
        .sent_to(A)
        .iter()
        .filter(|f| f.code == Code::CONTINUE)
        .count();
    assert_eq!(continues, 2);
    net.b
        .respond(net.now, req.handle, Response::new(Code::CHANGED))
        .unwrap();
    net.pump();
    let last = net.sent_to(A).last().cloned().cloned().unwrap();
    let b1 = BlockOption::decode(last.option(option::BLOCK1).unwrap()).unwrap();
    assert_eq!((b1.num, b1.more), (2, false));
    assert!(
        matches!(&net.events_a()[..], [Event::Response { id: got, response, .. }]
        if *got == id && response.code == Code::CHANGED)
    );
    assert_eq!(net.b.block_transfers(), 0);
}

#[test]
fn block1_beyond_the_reassembly_limit_is_refused_with_4_13() {
    let mut net = Net::new(no_limits());
    net.b.config.max_body = 2000;
    let id = net
        .a
        .request(
            net.now,
            addr(B),
            Request::post("/big").with_payload(0, vec![b'x'; 3000]),
        )
        .unwrap();
    net.pump();
    assert!(net.events_b().is_empty());
    let events = net.events_a();
    match &events[..] {
        [
            Event::Response {
                id: got, response, ..
            },
        ] => {
            assert_eq!(*got, id);
            assert_eq!(response.code, Code::REQUEST_ENTITY_TOO_LARGE);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(net.b.block_transfers(), 0);
}

#[test]
fn block1_out_of_sequence_is_refused_with_4_08() {
    let mut ep = Endpoint::new(no_limits());
    let now = Instant::now();
    let block = BlockOption {
        num: 3,
        more: true,
        szx: 2,
    };
    let req = Frame {
        kind: Kind::Con,
        code: Method::Put.code(),
        mid: 1,
        token: vec![1],
        options: vec![(option::BLOCK1, block.encode())],
        payload: vec![0; 64],
    };
    ep.handle(now, addr(A), &req.emit());
    let r = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
    assert_eq!(r.code, Code::REQUEST_ENTITY_INCOMPLETE);
}

#[test]
fn open_block_transfers_are_capped() {
    let mut ep = Endpoint::new(EndpointConfig {
        max_block_transfers: 2,
        ..no_limits()
    });
    let now = Instant::now();
    for i in 0..3u16 {
        let block = BlockOption {
            num: 0,
            more: true,
            szx: 2,
        };
        let req = Frame {
            kind: Kind::Con,
            code: Method::Put.code(),
            mid: i,
            token: vec![1],
            options: vec![
                (option::URI_PATH, format!("r{i}").into_bytes()),
                (option::BLOCK1, block.encode()),
            ],
            payload: vec![0; 64],
        };
        ep.handle(now, addr(A), &req.emit());
        let r = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
        let want = if i < 2 {
            Code::CONTINUE
        } else {
            Code::SERVICE_UNAVAILABLE
        };
        assert_eq!(r.code, want, "transfer {i}");
    }
    assert_eq!(ep.block_transfers(), 2);
    // abandoned uploads are forgotten after a few ACK timeouts
    ep.handle_timeout(now + TransmissionParams::default().block1_idle_timeout());
    assert_eq!(ep.block_transfers(), 0);
}

/// The first Block1 block (of a 3-block body) to `path`, as `peer` sends it.
fn first_block(mid: u16, path: &str) -> Vec<u8> {
    let block = BlockOption {
        num: 0,
        more: true,
        szx: 2,
    };
    Frame {
        kind: Kind::Con,
        code: Method::Put.code(),
        mid,
        token: vec![1],
        options: vec![
            (option::URI_PATH, path.as_bytes().to_vec()),
            (option::BLOCK1, block.encode()),
        ],
        payload: vec![0; 64],
    }
    .emit()
}

fn answer(ep: &mut Endpoint) -> Code {
    Frame::parse(&ep.poll_transmit().expect("an answer").datagram)
        .unwrap()
        .code
}

#[test]
fn one_source_cannot_take_every_block1_slot() {
    let mut ep = Endpoint::new(no_limits());
    let now = Instant::now();
    // 64 first blocks from one address (many ports, many paths): only the
    // per-source share is kept
    for i in 0..64u16 {
        let peer = SocketAddr::new(addr(A).ip(), 40_000 + i);
        ep.handle(now, peer, &first_block(i, &format!("r{i}")));
        let want = if i < 4 {
            Code::CONTINUE
        } else {
            Code::SERVICE_UNAVAILABLE
        };
        assert_eq!(answer(&mut ep), want, "first block {i}");
    }
    assert_eq!(ep.block_transfers(), 4);
    // another source uploads a whole body meanwhile
    for num in 0..3u32 {
        let block = BlockOption {
            num,
            more: num < 2,
            szx: 2,
        };
        let req = Frame {
            kind: Kind::Con,
            code: Method::Put.code(),
            mid: 500 + num as u16,
            token: vec![2],
            options: vec![
                (option::URI_PATH, b"fw".to_vec()),
                (option::BLOCK1, block.encode()),
            ],
            payload: vec![num as u8; 64],
        };
        ep.handle(now, addr(B), &req.emit());
        if num < 2 {
            assert_eq!(answer(&mut ep), Code::CONTINUE, "block {num}");
        }
    }
    let requests: Vec<_> = std::iter::from_fn(|| ep.poll_event())
        .filter_map(|e| match e {
            Event::Request(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].request.payload.len(), 192);
    // the flooding source's uploads are gone a few ACK timeouts later, and
    // it may start again
    let later = now + TransmissionParams::default().block1_idle_timeout();
    ep.handle_timeout(later);
    assert_eq!(ep.block_transfers(), 0);
    while ep.poll_transmit().is_some() {} // the unanswered request's empty ACK
    ep.handle(later, addr(A), &first_block(99, "again"));
    assert_eq!(answer(&mut ep), Code::CONTINUE);
}

#[test]
fn block2_download_is_reassembled() {
    let mut net = Net::new(no_limits());
    let body: Vec<u8> = (0..2500u32).map(|i| (i % 7) as u8).collect();
    let id = net
        .a
        .request(net.now, addr(B), Request::get("/fw"))
        .unwrap();
    net.pump();
    let req = net.take_request();
    net.b
        .respond(
            net.now,
            req.handle,
            Response::new(Code::CONTENT).with_payload(42, body.clone()),
        )
        .unwrap();
    net.pump();
    // the follow-ups were served from the cache, not the application
    assert!(net.events_b().is_empty());
    let blocks = net.sent_to(A).len();
    assert_eq!(blocks, 3);
    let events = net.events_a();
    match &events[..] {
        [
            Event::Response {
                id: got, response, ..
            },
        ] => {
            assert_eq!(*got, id);
            assert_eq!(response.payload, body);
            assert_eq!(response.content_format, Some(42));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(net.b.block_transfers(), 0);
}

#[test]
fn block2_download_beyond_the_limit_fails() {
    let mut net = Net::new(no_limits());
    net.a.config.max_body = 1500;
    let id = net
        .a
        .request(net.now, addr(B), Request::get("/fw"))
        .unwrap();
    net.pump();
    let req = net.take_request();
    net.b
        .respond(
            net.now,
            req.handle,
            Response::new(Code::CONTENT).with_payload(42, vec![1; 4000]),
        )
        .unwrap();
    net.pump();
    let events = net.events_a();
    assert!(
        matches!(&events[..], [Event::Failed { id: got, error: RequestError::TooLarge(1500), .. }] if *got == id)
    );
}

fn observe_setup(net: &mut Net) -> (RequestId, RelationId) {
    let id = net
        .a
        .observe(net.now, addr(B), Request::get("/temp"))
        .unwrap();
    net.pump();
    let req = net.take_request();
    assert_eq!(req.request.observe, Some(0));
    let rel = net
        .b
        .accept_observe(
            net.now,
            req.handle,
            Response::new(Code::CONTENT).with_payload(0, b"20".to_vec()),
        )
        .unwrap()
        .expect("relation");
    net.pump();
    let events = net.events_a();
    assert!(
        matches!(&events[..], [Event::Response { id: got, response, .. }]
        if *got == id && response.observe.is_some() && response.payload == b"20")
    );
    (id, rel)
}

#[test]
fn observation_receives_non_and_con_notifications() {
    let mut net = Net::new(no_limits());
    let (id, rel) = observe_setup(&mut net);
    net.b
        .notify(
            net.now,
            rel,
            Response::new(Code::CONTENT).with_payload(0, b"21".to_vec()),
            false,
        )
        .unwrap();
    net.b
        .notify(
            net.now,
            rel,
            Response::new(Code::CONTENT).with_payload(0, b"22".to_vec()),
            true,
        )
        .unwrap();
    net.pump();
    let payloads: Vec<Vec<u8>> = net
        .events_a()
        .into_iter()
        .map(|e| match e {
            Event::Notification {
                id: got, response, ..
            } if got == id => response.payload,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(payloads, vec![b"21".to_vec(), b"22".to_vec()]);
    let rereg_timers = net
        .a
        .timers
        .values()
        .filter(|t| matches!(t, Timer::Reregister(_)))
        .count();
    assert_eq!(
        rereg_timers, 1,
        "each notification replaces the re-registration timer"
    );
    // the CON notification was acknowledged: no retransmission follows
    let before = net.sent_to(A).len();
    net.advance_by(Duration::from_secs(10));
    net.pump();
    assert_eq!(net.sent_to(A).len(), before);
    assert_eq!(net.b.relation_count(), 1);
}

#[test]
fn reordered_notification_is_dropped() {
    let mut net = Net::new(no_limits());
    let (_id, rel) = observe_setup(&mut net);
    net.b
        .notify(net.now, rel, Response::new(Code::CONTENT), false)
        .unwrap();
    let older = net.b.poll_transmit().unwrap();
    net.b
        .notify(net.now, rel, Response::new(Code::CONTENT), false)
        .unwrap();
    let newer = net.b.poll_transmit().unwrap();
    net.a.handle(net.now, addr(B), &newer.datagram);
    net.a.handle(net.now, addr(B), &older.datagram);
    assert_eq!(net.events_a().len(), 1);
}

#[test]
fn cancel_deregisters_and_later_notifications_are_reset() {
    let mut net = Net::new(no_limits());
    let (id, rel) = observe_setup(&mut net);
    net.a.cancel(net.now, id).unwrap();
    net.pump();
    let events = net.events_b();
    assert!(
        matches!(&events[0], Event::RelationEnded { relation, reason: RelationEnd::Deregistered, .. } if *relation == rel)
    );
    let Event::Request(dereg) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(dereg.request.observe, Some(1));
    net.b
        .respond(net.now, dereg.handle, Response::new(Code::CONTENT))
        .unwrap();
    net.pump();
    assert!(net.events_a().is_empty());
    assert_eq!(net.b.relation_count(), 0);
    assert_eq!(net.a.exchanges_in_progress(), 0);
}

#[test]
fn reset_notification_ends_the_relation() {
    let mut net = Net::new(no_limits());
    let (id, rel) = observe_setup(&mut net);
    // the client forgets silently (e.g. it restarted)
    let ex = net.a.exchanges.remove(&id.0).unwrap();
    net.a.forget_exchange(id.0, &ex);
    net.b
        .notify(net.now, rel, Response::new(Code::CONTENT), false)
        .unwrap();
    net.pump();
    assert_eq!(net.sent_to(B).last().unwrap().kind, Kind::Rst);
    assert!(matches!(
        &net.events_b()[..],
        [Event::RelationEnded {
            reason: RelationEnd::Reset,
            ..
        }]
    ));
    assert_eq!(net.b.relation_count(), 0);
}

#[test]
fn unacknowledged_con_notification_ends_the_relation() {
    let mut net = Net::new(no_limits());
    let (_id, rel) = observe_setup(&mut net);
    net.b
        .notify(net.now, rel, Response::new(Code::CONTENT), true)
        .unwrap();
    net.pump_lossy(|_, _| true);
    let start = net.now;
    let events = loop {
        net.advance();
        net.pump_lossy(|_, _| true);
        let events = net.events_b();
        if !events.is_empty() {
            break events;
        }
        assert!(
            net.now - start < Duration::from_secs(100),
            "relation never ended"
        );
    };
    assert!(matches!(
        &events[..],
        [Event::RelationEnded {
            reason: RelationEnd::Timeout,
            ..
        }]
    ));
    assert!(net.now - start <= net.b.config().transmission.max_transmit_wait());
}

#[test]
fn observation_is_reregistered_after_max_age_and_lost_when_that_fails() {
    let mut net = Net::new(no_limits());
    let id = net
        .a
        .observe(net.now, addr(B), Request::get("/temp"))
        .unwrap();
    net.pump();
    let req = net.take_request();
    let first = Response {
        max_age: Some(10),
        ..Response::new(Code::CONTENT)
    };
    net.b.accept_observe(net.now, req.handle, first).unwrap();
    net.pump();
    net.events_a();
    let token = net.sent_to(B)[0].token.clone();
    // Max-Age (10 s) plus the margin (5 s) pass without a notification
    net.advance_by(Duration::from_secs(15));
    net.pump();
    let rereg = net.take_request();
    assert_eq!(rereg.request.observe, Some(0));
    assert_eq!(net.sent_to(B).last().unwrap().token, token, "same token");
    let again = Response {
        max_age: Some(10),
        ..Response::new(Code::CONTENT)
    };
    net.b.accept_observe(net.now, rereg.handle, again).unwrap();
    assert_eq!(
        net.b.relation_count(),
        1,
        "re-registration reuses the relation"
    );
    net.pump();
    assert!(matches!(&net.events_a()[..], [Event::Notification { .. }]));
    // now the server disappears: the next re-registration times out
    let start = net.now;
    loop {
        net.advance();
        net.pump_lossy(|_, _| true);
        let events = net.events_a();
        if let Some(e) = events.first() {
            assert!(
                matches!(e, Event::Failed { id: got, error: RequestError::Timeout, .. } if *got == id)
            );
            break;
        }
        assert!(net.now - start < Duration::from_secs(300));
    }
}

#[test]
fn observation_refused_by_the_server_is_a_plain_response() {
    let mut net = Net::new(no_limits());
    net.b.config.max_observe_relations = 0;
    let id = net
        .a
        .observe(net.now, addr(B), Request::get("/temp"))
        .unwrap();
    net.pump();
    let req = net.take_request();
    let rel = net
        .b
        .accept_observe(net.now, req.handle, Response::new(Code::CONTENT))
        .unwrap();
    assert_eq!(rel, None);
    assert_eq!(net.b.stats().observe_relations_refused, 1);
    net.pump();
    assert!(
        matches!(&net.events_a()[..], [Event::Response { id: got, response, .. }] if *got == id && response.observe.is_none())
    );
    assert_eq!(net.a.exchanges_in_progress(), 0);
}

#[test]
fn error_notification_ends_the_observation() {
    let mut net = Net::new(no_limits());
    let (id, rel) = observe_setup(&mut net);
    net.b
        .end_observe(net.now, rel, Some(Response::new(Code::NOT_FOUND)))
        .unwrap();
    net.pump();
    let events = net.events_a();
    assert!(
        matches!(events.last(), Some(Event::Failed { id: got, error: RequestError::ObservationEnded(Code::NOT_FOUND), .. }) if *got == id)
    );
}

#[test]
fn large_notification_is_fetched_block_wise() {
    let mut net = Net::new(no_limits());
    let (id, rel) = observe_setup(&mut net);
    let body = vec![7u8; 2100];
    net.b
        .notify(
            net.now,
            rel,
            Response::new(Code::CONTENT).with_payload(60, body.clone()),
            false,
        )
        .unwrap();
    net.pump();
    let events = net.events_a();
    match &events[..] {
        [
            Event::Notification {
                id: got, response, ..
            },
        ] => {
            assert_eq!(*got, id);
            assert_eq!(response.payload, body);
            assert!(response.observe.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        net.events_b().is_empty(),
        "follow-ups served from the cache"
    );
}

#[test]
fn rate_limit_drops_a_flooding_source_only() {
    let mut ep = Endpoint::new(EndpointConfig {
        rate_limit: Some(RateLimit {
            per_second: 10.0,
            burst: 5.0,
        }),
        ..Default::default()
    });
    let now = Instant::now();
    for mid in 0..20u16 {
        let req = Frame {
            kind: Kind::Non,
            code: Method::Post.code(),
            mid,
            token: vec![],
            options: vec![],
            payload: vec![],
        };
        ep.handle(now, addr(A), &req.emit());
    }
    assert_eq!(ep.stats().rate_limited, 15);
    let other = Frame {
        kind: Kind::Non,
        code: Method::Post.code(),
        mid: 1,
        token: vec![],
        options: vec![],
        payload: vec![],
    };
    ep.handle(now, addr(B), &other.emit());
    assert_eq!(ep.stats().rate_limited, 15);
    // tokens refill
    ep.handle(
        now + Duration::from_secs(1),
        addr(A),
        &Frame { mid: 100, ..other }.emit(),
    );
    assert_eq!(ep.stats().rate_limited, 15);
}

#[test]
fn dedup_memory_is_bounded() {
    let mut ep = Endpoint::new(EndpointConfig {
        max_dedup_entries: 100,
        ..no_limits()
    });
    let now = Instant::now();
    for mid in 0..1000u16 {
        let req = Frame {
            kind: Kind::Non,
            code: Method::Post.code(),
            mid,
            token: vec![],
            options: vec![],
            payload: vec![],
        };
        ep.handle(now, addr(A), &req.emit());
        while let Some(Event::Request(r)) = ep.poll_event() {
            ep.respond(now, r.handle, Response::new(Code::CHANGED))
                .unwrap();
        }
    }
    assert!(ep.seen.len() <= 100);
    assert!(ep.seen_order.len() <= 100);
    assert!(
        ep.timers.is_empty(),
        "answered requests leave no timers behind"
    );
}

#[test]
fn unanswered_requests_are_forgotten() {
    let mut ep = Endpoint::new(EndpointConfig {
        max_pending_requests: 2,
        ..no_limits()
    });
    let now = Instant::now();
    for mid in 0..3u16 {
        let req = Frame {
            kind: Kind::Con,
            code: Method::Get.code(),
            mid,
            token: vec![],
            options: vec![],
            payload: vec![],
        };
        ep.handle(now, addr(A), &req.emit());
    }
    let refused = std::iter::from_fn(|| ep.poll_transmit())
        .filter_map(|t| Frame::parse(&t.datagram).ok())
        .filter(|f| f.code == Code::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(refused, 1);
    ep.handle_timeout(now + Duration::from_secs(61));
    assert_eq!(ep.stats().unanswered_requests, 2);
    assert!(ep.incoming.is_empty());
}

#[test]
fn one_endpoint_serves_and_requests_at_the_same_time() {
    // Like an LwM2M server: B receives a Register from A while B reads
    // from A on the same socket; tokens and message ids never mix.
    let mut net = Net::new(no_limits());
    let register = net
        .a
        .request(
            net.now,
            addr(B),
            Request::post("/rd").with_query("ep=node1"),
        )
        .unwrap();
    let read = net
        .b
        .request(net.now, addr(A), Request::get("/3/0/0"))
        .unwrap();
    net.pump();
    let at_b = net.take_request();
    let at_a = match &net.events_a()[..] {
        [Event::Request(r)] => r.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(at_b.request.query_value("ep"), Some("node1"));
    assert_eq!(at_a.request.path_string(), "/3/0/0");
    // answer in the opposite order
    net.a
        .respond(
            net.now,
            at_a.handle,
            Response::new(Code::CONTENT).with_payload(0, b"ferrogate".to_vec()),
        )
        .unwrap();
    net.b
        .respond(
            net.now,
            at_b.handle,
            Response {
                location_path: vec!["rd".into(), "5a3f".into()],
                ..Response::new(Code::CREATED)
            },
        )
        .unwrap();
    net.pump();
    assert!(
        matches!(&net.events_a()[..], [Event::Response { id, response, .. }]
        if *id == register && response.location_path == vec!["rd", "5a3f"])
    );
    assert!(
        matches!(&net.events_b()[..], [Event::Response { id, response, .. }]
        if *id == read && response.payload == b"ferrogate")
    );
}

#[test]
fn piggybacked_response_with_a_foreign_token_does_not_hang_the_request() {
    let config = EndpointConfig {
        response_timeout: Duration::from_secs(5),
        ..no_limits()
    };
    let mut ep = Endpoint::new(config);
    let now = Instant::now();
    let id = ep.request(now, addr(B), Request::get("/x")).unwrap();
    let sent = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
    let wrong = Frame {
        kind: Kind::Ack,
        code: Code::CONTENT,
        mid: sent.mid,
        token: vec![0xde, 0xad],
        options: vec![],
        payload: b"not yours".to_vec(),
    };
    ep.handle(now, addr(B), &wrong.emit());
    assert!(ep.poll_event().is_none());
    ep.handle_timeout(now + Duration::from_secs(5));
    assert!(
        matches!(ep.poll_event(), Some(Event::Failed { id: got, error: RequestError::Timeout, .. }) if got == id)
    );
    assert_eq!(ep.exchanges_in_progress(), 0);
}

#[test]
fn nstart_limits_unacknowledged_requests_per_peer() {
    let mut net = Net::new(EndpointConfig {
        nstart: 1,
        ..no_limits()
    });
    let first = net.a.request(net.now, addr(B), Request::get("/1")).unwrap();
    let second = net.a.request(net.now, addr(B), Request::get("/2")).unwrap();
    // another peer is not held back
    let other: SocketAddr = "10.0.0.9:5683".parse().unwrap();
    net.a.request(net.now, other, Request::get("/3")).unwrap();
    let sent: Vec<Transmit> = std::iter::from_fn(|| net.a.poll_transmit()).collect();
    assert_eq!(
        sent.len(),
        2,
        "NSTART=1: one CON to B, one to the other peer"
    );
    assert_eq!(sent.iter().filter(|t| t.peer == addr(B)).count(), 1);
    let to_b = sent.iter().find(|t| t.peer == addr(B)).unwrap();
    net.b.handle(net.now, addr(A), &to_b.datagram);
    let req = net.take_request();
    assert_eq!(req.request.path, vec!["1"]);
    net.b
        .respond(net.now, req.handle, Response::new(Code::CONTENT))
        .unwrap();
    // the ACK frees the slot: the second request goes out
    net.pump();
    let req = net.take_request();
    assert_eq!(req.request.path, vec!["2"]);
    net.b
        .respond(net.now, req.handle, Response::new(Code::CONTENT))
        .unwrap();
    net.pump();
    let ids: Vec<RequestId> = net
        .events_a()
        .into_iter()
        .filter_map(|e| match e {
            Event::Response { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![first, second]);
}

#[test]
fn a_queued_request_follows_a_timed_out_one_and_nstart_is_configurable() {
    let mut net = Net::new(EndpointConfig {
        nstart: 2,
        ..no_limits()
    });
    for p in ["/1", "/2", "/3"] {
        net.a.request(net.now, addr(B), Request::get(p)).unwrap();
    }
    net.pump_lossy(|_, _| true);
    assert_eq!(net.log.len(), 2, "NSTART=2");
    // nothing answers: once one of the first two gives up, the third is sent
    while net.advance() {
        net.pump_lossy(|_, _| true);
        if net.log.iter().any(|(_, f, _)| {
            f.options
                .iter()
                .any(|(n, v)| *n == option::URI_PATH && v == b"3")
        }) {
            break;
        }
    }
    let failed = net
        .events_a()
        .iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .count();
    assert_eq!(failed, 1, "the third waited for a slot, not for both");
}

#[test]
fn answers_to_our_requests_are_not_rate_limited() {
    let limit = Some(RateLimit {
        per_second: 1.0,
        burst: 1.0,
    });
    let mut net = Net::new(EndpointConfig {
        rate_limit: None,
        ..Default::default()
    });
    net.a.config.rate_limit = limit;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            net.a
                .request(net.now, addr(B), Request::get(&format!("/{i}")))
                .unwrap(),
        );
    }
    net.pump();
    for e in net.events_b() {
        if let Event::Request(r) = e {
            net.b
                .respond(net.now, r.handle, Response::new(Code::CONTENT))
                .unwrap();
        }
    }
    net.pump();
    let answered = net
        .events_a()
        .iter()
        .filter(|e| matches!(e, Event::Response { .. }))
        .count();
    assert_eq!(answered, 20);
    assert_eq!(net.a.stats().rate_limited, 0);
    // unsolicited requests from the same source still are
    for i in 0..5 {
        net.b
            .request(net.now, addr(A), Request::get(&format!("/{i}")))
            .unwrap();
    }
    net.pump();
    assert_eq!(net.a.stats().rate_limited, 4);
}

#[test]
fn a_non_notification_becomes_con_once_a_day() {
    let mut net = Net::new(no_limits());
    let (_id, rel) = observe_setup(&mut net);
    net.b
        .notify(net.now, rel, Response::new(Code::CONTENT), false)
        .unwrap();
    net.pump();
    assert_eq!(net.sent_to(A).last().unwrap().kind, Kind::Non);
    net.advance_by(Duration::from_secs(24 * 3600));
    net.b
        .notify(net.now, rel, Response::new(Code::CONTENT), false)
        .unwrap();
    net.pump();
    assert_eq!(net.sent_to(A).last().unwrap().kind, Kind::Con);
    net.b
        .notify(net.now, rel, Response::new(Code::CONTENT), false)
        .unwrap();
    net.pump();
    assert_eq!(net.sent_to(A).last().unwrap().kind, Kind::Non);
}

/// Tokens an endpoint sends, with `seed`, for `n` requests to one peer.
fn tokens_sent(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut e = Endpoint::new(EndpointConfig {
        seed,
        ..no_limits()
    });
    let now = Instant::now();
    (0..n)
        .map(|i| {
            e.request(now, addr(B), Request::get(&format!("/{i}")))
                .unwrap();
            let t = e.poll_transmit().expect("the request is sent");
            Frame::parse(&t.datagram).unwrap().token
        })
        .collect()
}

#[test]
fn tokens_come_from_the_os_not_from_the_seed() {
    // The seed fixes message ids and jitter, so tokens drawn from it
    // would repeat across two endpoints seeded alike, and one token would
    // give away the generator's state and so every later token.
    let a = tokens_sent(7, 16);
    let b = tokens_sent(7, 16);
    assert!(a.iter().all(|t| t.len() == 8), "{a:?}");
    assert!(
        a.iter().zip(&b).all(|(x, y)| x != y),
        "same seed, same tokens: {a:?}"
    );
    let mut distinct = a.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), a.len());
}
