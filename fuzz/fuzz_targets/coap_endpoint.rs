//! The CoAP engine fed a sequence of datagrams from many peers and clock
//! steps, answering requests as an application would, with state of every
//! kind open: it never panics and never grows past its caps.
//!
//! Input: records of `[op, peer, len_hi, len_lo, datagram...]`; `op % 8 ==
//! 0` advances the clock by `peer * 100 ms` instead of delivering.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrogate_coap::{Code, Endpoint, EndpointConfig, Event, Request, Response};
use libfuzzer_sys::fuzz_target;

const MAX_BLOCKS: usize = 4;
const MAX_RELATIONS: usize = 4;

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, n % 8, n / 8 % 4], 5683 + u16::from(n % 3)))
}

fuzz_target!(|data: &[u8]| {
    let mut ep = Endpoint::new(EndpointConfig {
        max_block_transfers: MAX_BLOCKS,
        max_block_transfers_per_source: 2,
        max_observe_relations: MAX_RELATIONS,
        max_pending_requests: 8,
        max_dedup_entries: 64,
        max_body: 4096,
        ..Default::default()
    });
    let mut now = Instant::now();
    let _ = ep.request(now, peer(1), Request::get("/a"));
    let _ = ep.observe(now, peer(2), Request::get("/b"));
    let _ = ep.request(
        now,
        peer(3),
        Request::put("/c").with_payload(0, vec![1; 3000]),
    );
    let mut rest = data;
    while let [op, who, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        if op % 8 == 0 {
            now += Duration::from_millis(u64::from(*who) * 100);
            ep.handle_timeout(now);
        } else {
            ep.handle(now, peer(*who), datagram);
        }
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
        assert!(ep.block_transfers() <= MAX_BLOCKS);
        assert!(ep.relation_count() <= MAX_RELATIONS);
    }
});
