//! The LwM2M server core fed raw datagrams from a few peers and clock
//! steps: never panics. Input records as in `coap_endpoint`: `[op, peer,
//! len_hi, len_lo, datagram...]`, `op % 8 == 0` advances the clock.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrogate_lwm2m::ObjectRegistry;
use ferrogate_lwm2m::server::{Lwm2mServer, ServerConfig};
use libfuzzer_sys::fuzz_target;

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n % 4], 56830 + u16::from(n % 2)))
}

/// The built-in object definitions, built once (they cost more than most
/// inputs).
fn builtin() -> &'static std::sync::Arc<ObjectRegistry> {
    static REGISTRY: std::sync::OnceLock<std::sync::Arc<ObjectRegistry>> =
        std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| std::sync::Arc::new(ObjectRegistry::builtin()))
}

fuzz_target!(|data: &[u8]| {
    let config = ServerConfig {
        auto_observe: vec![ferrogate_lwm2m::PathPattern::parse("/3303/*/5700").unwrap()],
        ..ServerConfig::default()
    };
    let mut server = Lwm2mServer::new(config, builtin().clone());
    let mut now = Instant::now();
    let mut rest = data;
    while let [op, who, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        if op % 8 == 0 {
            now += Duration::from_secs(u64::from(*who) * 10);
            server.handle_timeout(now);
        } else {
            server.handle(now, peer(*who), datagram);
        }
        while server.poll_transmit().is_some() {}
        while server.poll_output().is_some() {}
    }
});
