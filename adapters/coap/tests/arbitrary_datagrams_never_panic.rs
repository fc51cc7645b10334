//! Property tests: no sequence of datagrams (random bytes, or valid
//! messages with random fields) panics the engine or grows its state past
//! its caps, whatever exchanges it has open.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrogate_coap::block::BlockOption;
use ferrogate_coap::message::option;
use ferrogate_coap::{Code, Endpoint, EndpointConfig, Event, Frame, Kind, Request, Response};
use proptest::prelude::*;

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n % 4], 5683))
}

fn endpoint() -> (Endpoint, Instant) {
    let mut ep = Endpoint::new(EndpointConfig {
        max_block_transfers: 4,
        max_observe_relations: 4,
        max_pending_requests: 8,
        max_dedup_entries: 64,
        max_body: 4096,
        ..Default::default()
    });
    let now = Instant::now();
    // open state of every kind: a request, an observation, an upload
    let _ = ep.request(now, peer(1), Request::get("/a"));
    let _ = ep.observe(now, peer(2), Request::get("/b"));
    let _ = ep.request(
        now,
        peer(3),
        Request::put("/c").with_payload(0, vec![1; 3000]),
    );
    while ep.poll_transmit().is_some() {}
    (ep, now)
}

/// Answer whatever the engine asks of its user, like an application would.
fn serve(ep: &mut Endpoint, now: Instant) {
    while let Some(event) = ep.poll_event() {
        if let Event::Request(r) = event {
            let big = r.request.path.first().is_some_and(|p| p == "big");
            let body = if big { vec![7; 2000] } else { b"ok".to_vec() };
            let response = Response::new(Code::CONTENT).with_payload(0, body);
            if r.request.observe == Some(0) {
                if let Ok(Some(rel)) = ep.accept_observe(now, r.handle, response) {
                    let _ = ep.notify(now, rel, Response::new(Code::CONTENT), true);
                }
            } else {
                let _ = ep.respond(now, r.handle, response);
            }
        }
    }
    while ep.poll_transmit().is_some() {}
}

fn frame() -> impl Strategy<Value = Frame> {
    let kind = prop_oneof![
        Just(Kind::Con),
        Just(Kind::Non),
        Just(Kind::Ack),
        Just(Kind::Rst)
    ];
    let code = prop_oneof![
        Just(0u8),
        1u8..8,
        Just(0x45),
        Just(0x5f),
        Just(0x84),
        any::<u8>()
    ];
    let opt_number = prop_oneof![
        Just(option::OBSERVE),
        Just(option::URI_PATH),
        Just(option::BLOCK1),
        Just(option::BLOCK2),
        Just(option::SIZE1),
        Just(option::CONTENT_FORMAT),
        any::<u16>(),
    ];
    let block = (0u32..8, any::<bool>(), 0u8..8).prop_map(|(num, more, szx)| {
        BlockOption {
            num,
            more,
            szx: szx.min(6),
        }
        .encode()
    });
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..6),
        block,
        Just(b"big".to_vec())
    ];
    (
        kind,
        code,
        0u16..32,
        proptest::collection::vec(any::<u8>(), 0..9),
        proptest::collection::vec((opt_number, value), 0..5),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(kind, code, mid, token, options, payload)| Frame {
            kind,
            code: Code(code),
            mid,
            token,
            options,
            payload,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(datagrams in proptest::collection::vec(
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)), 1..40)) {
        let (mut ep, mut now) = endpoint();
        for (from, bytes) in datagrams {
            ep.handle(now, peer(from), &bytes);
            serve(&mut ep, now);
            now += Duration::from_millis(300);
            ep.handle_timeout(now);
        }
    }

    #[test]
    fn structured_messages(frames in proptest::collection::vec((any::<u8>(), frame()), 1..60)) {
        let (mut ep, mut now) = endpoint();
        for (from, frame) in frames {
            ep.handle(now, peer(from), &frame.emit());
            serve(&mut ep, now);
            prop_assert!(ep.block_transfers() <= 4);
            prop_assert!(ep.relation_count() <= 4);
            now += Duration::from_millis(700);
            ep.handle_timeout(now);
            if let Some(at) = ep.poll_timeout() {
                prop_assert!(at >= now - Duration::from_secs(1));
            }
        }
        // everything settles: given time, every exchange ends
        for _ in 0..200 {
            match ep.poll_timeout() {
                Some(at) => {
                    now = now.max(at);
                    ep.handle_timeout(now);
                    serve(&mut ep, now);
                }
                None => break,
            }
        }
        prop_assert!(ep.exchanges_in_progress() <= 1, "only an observation may remain");
    }
}
