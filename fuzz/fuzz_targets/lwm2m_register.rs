//! Register and Update parsing into the registration table (where a
//! lifetime near `u64::MAX` once overflowed an `Instant`): a Register to
//! `/rd` with the input's queries and object list, an Update to the
//! location it got, then the clock run past every lifetime. Never panics.
//!
//! Input (text, lines): register queries (`&`-separated), register
//! payload (link format), update queries, update payload.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrogate_coap::message::option;
use ferrogate_coap::{Frame, Kind, Method};
use ferrogate_lwm2m::ObjectRegistry;
use ferrogate_lwm2m::server::{Lwm2mServer, ServerConfig};
use libfuzzer_sys::fuzz_target;

fn post(mid: u16, path: &[&[u8]], queries: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut options: Vec<(u16, Vec<u8>)> = path
        .iter()
        .map(|p| (option::URI_PATH, p.to_vec()))
        .collect();
    if !payload.is_empty() {
        options.push((option::CONTENT_FORMAT, vec![40]));
    }
    options.extend(
        queries
            .split(|&b| b == b'&')
            .filter(|q| !q.is_empty())
            .map(|q| (option::URI_QUERY, q.to_vec())),
    );
    Frame {
        kind: Kind::Con,
        code: Method::Post.code(),
        mid,
        token: mid.to_be_bytes().to_vec(),
        options,
        payload: payload.to_vec(),
    }
    .emit()
}

/// The built-in object definitions, built once (they cost more than most
/// inputs).
fn builtin() -> &'static std::sync::Arc<ObjectRegistry> {
    static REGISTRY: std::sync::OnceLock<std::sync::Arc<ObjectRegistry>> =
        std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| std::sync::Arc::new(ObjectRegistry::builtin()))
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(4, |&b| b == b'\n');
    let (reg_q, reg_p, upd_q, upd_p) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    let mut server = Lwm2mServer::new(ServerConfig::default(), builtin().clone());
    let peer: SocketAddr = "192.0.2.7:56830".parse().unwrap();
    let now = Instant::now();
    server.handle(now, peer, &post(1, &[b"rd"], reg_q, reg_p));
    let mut location: Vec<Vec<u8>> = Vec::new();
    while let Some(t) = server.poll_transmit() {
        if let Ok(frame) = Frame::parse(&t.datagram) {
            let found: Vec<Vec<u8>> = frame
                .options
                .iter()
                .filter(|(n, _)| *n == option::LOCATION_PATH)
                .map(|(_, v)| v.clone())
                .collect();
            if !found.is_empty() {
                location = found;
            }
        }
    }
    while server.poll_output().is_some() {}
    if !location.is_empty() {
        let path: Vec<&[u8]> = location.iter().map(Vec::as_slice).collect();
        server.handle(now, peer, &post(2, &path, upd_q, upd_p));
    }
    for step in [
        1u64,
        60,
        3600,
        86_400 * 400,
        u64::from(u32::MAX),
        u64::MAX / 4,
    ] {
        if let Some(later) = now.checked_add(Duration::from_secs(step)) {
            server.handle_timeout(later);
            while server.poll_transmit().is_some() {}
            while server.poll_output().is_some() {}
        }
    }
});
