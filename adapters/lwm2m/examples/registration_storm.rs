//! Benchmark of the sans-IO server core: a registration storm, then
//! sustained notifications. Datagrams are built and fed in memory (no
//! sockets), so this measures the server's own cost: registrations per
//! second, resident memory per registered client (each with one
//! auto-observed resource), notifications per second, and the p99 time from
//! a notification datagram handed in to its telemetry handed out.
//!
//! cargo run --release -p ferrogate-lwm2m --example registration_storm -- 100000 400000

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ferrogate_coap::message::option;
use ferrogate_coap::{Code, Frame, Kind, Method};
use ferrogate_lwm2m::server::{Lwm2mServer, Output, ServerConfig};
use ferrogate_lwm2m::{ObjectRegistry, PathPattern};

/// Counts live heap bytes, to report memory per client exactly.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn peer(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5683))
}

fn uint(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let notifications: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400_000);

    // a third argument `no-observe` measures registrations alone
    let observe = args.next().as_deref() != Some("no-observe");
    let mut config = ServerConfig {
        auto_observe: if observe {
            vec![PathPattern::parse("/3303/*/5700").expect("pattern")]
        } else {
            Vec::new()
        },
        ..ServerConfig::default()
    };
    config.coap.max_exchanges = clients * 2 + 1024;
    config.coap.max_pending_requests = 4096;
    config.coap.max_sources = 256 * 1024;
    let mut server = Lwm2mServer::new(config, Arc::new(ObjectRegistry::builtin()));
    let mut tokens: Vec<Vec<u8>> = vec![Vec::new(); clients];
    let mut outputs = 0u64;
    let rss_before = rss_bytes();
    let heap_before = LIVE.load(Ordering::Relaxed);

    // --- registration storm: each client registers, the server observes
    // /3303/0/5700 on it, the client answers with the first value
    let start = Instant::now();
    for (i, token_slot) in tokens.iter_mut().enumerate() {
        let now = Instant::now();
        let p = peer(i);
        let register = Frame {
            kind: Kind::Con,
            code: Method::Post.code(),
            mid: i as u16,
            token: (i as u32).to_be_bytes().to_vec(),
            options: vec![
                (option::URI_PATH, b"rd".to_vec()),
                (option::CONTENT_FORMAT, uint(40)),
                (option::URI_QUERY, format!("ep=bench-{i}").into_bytes()),
                (option::URI_QUERY, b"lt=86400".to_vec()),
                (option::URI_QUERY, b"lwm2m=1.1".to_vec()),
            ],
            payload: b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>,</3303/0>".to_vec(),
        };
        server.handle(now, p, &register.emit());
        while let Some(t) = server.poll_transmit() {
            let Ok(f) = Frame::parse(&t.datagram) else {
                continue;
            };
            if f.kind == Kind::Con && f.code == Method::Get.code() {
                *token_slot = f.token.clone();
                let ack = Frame {
                    kind: Kind::Ack,
                    code: Code::CONTENT,
                    mid: f.mid,
                    token: f.token,
                    options: vec![
                        (option::OBSERVE, uint(1)),
                        (option::CONTENT_FORMAT, uint(0)),
                    ],
                    payload: b"21.5".to_vec(),
                };
                server.handle(now, p, &ack.emit());
            }
        }
        while server.poll_output().is_some() {
            outputs += 1;
        }
    }
    let storm = start.elapsed();
    let rss_after = rss_bytes();
    let heap_after = LIVE.load(Ordering::Relaxed);
    let registered = server.registrations().len();
    let observed = tokens.iter().filter(|t| !t.is_empty()).count();

    // --- sustained notifications (NON, as Wakaama sends them)
    let mut latencies: Vec<u32> = Vec::with_capacity(notifications);
    let start = Instant::now();
    for k in 0..notifications {
        let i = k % clients;
        let seq = 2 + (k / clients) as u32;
        let frame = Frame {
            kind: Kind::Non,
            code: Code::CONTENT,
            mid: (k as u16).wrapping_add(0x8000),
            token: tokens[i].clone(),
            options: vec![
                (option::OBSERVE, uint(seq)),
                (option::CONTENT_FORMAT, uint(0)),
            ],
            payload: format!("{}.5", 20 + k % 10).into_bytes(),
        };
        let bytes = frame.emit();
        let t_in = Instant::now();
        server.handle(t_in, peer(i), &bytes);
        let mut got = false;
        while let Some(out) = server.poll_output() {
            got |= matches!(out, Output::Uplink(ferrogate_sdk::Uplink::Telemetry(_)));
            outputs += 1;
        }
        if got {
            latencies.push(t_in.elapsed().as_nanos() as u32);
        }
        while server.poll_transmit().is_some() {}
    }
    let sustained = start.elapsed();
    latencies.sort_unstable();
    let p = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };

    println!("clients registered:      {registered} ({observed} observed)");
    println!(
        "registration storm:      {:.0} registrations/s ({:.2} s)",
        clients as f64 / storm.as_secs_f64(),
        storm.as_secs_f64()
    );
    println!(
        "memory per client:       {} bytes live heap, {} bytes RSS",
        heap_after.saturating_sub(heap_before) / clients.max(1),
        rss_after.saturating_sub(rss_before) / clients.max(1) as u64
    );
    println!(
        "notifications:           {:.0} /s ({} of {} became telemetry)",
        notifications as f64 / sustained.as_secs_f64(),
        latencies.len(),
        notifications
    );
    println!(
        "notification→telemetry:  p50 {} µs, p99 {} µs",
        p(0.50) / 1000,
        p(0.99) / 1000
    );
    println!("outputs handed out:      {outputs}");
}
