//! Floods against the CoAP ingest server, as an unauthenticated peer on
//! the same network would send them: thousands of made-up device names,
//! first Block1 blocks from many source addresses that never finish, and
//! datagrams that are not CoAP. Each is bounded (a cap answered 5.03,
//! counted refusals, bounded memory), and a configured device keeps
//! delivering readings throughout.
//!
//! Sources are addresses of 127.0.0.0/8, which Linux routes to loopback.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::start_adapter;
use ferrogate_coap::block::BlockOption;
use ferrogate_coap::message::option;
use ferrogate_coap::{Code, Frame, Kind, Method};
use ferrogate_sdk::Uplink;
use tokio::net::UdpSocket;

/// Most distinct unknown devices the ingest server remembers.
const MAX_UNKNOWN: usize = 1_000;

fn post(mid: u16, path: &[&[u8]], block1: Option<BlockOption>, body: &[u8]) -> Vec<u8> {
    let mut options: Vec<(u16, Vec<u8>)> = path
        .iter()
        .map(|p| (option::URI_PATH, p.to_vec()))
        .collect();
    options.push((option::CONTENT_FORMAT, vec![50]));
    if let Some(b) = block1 {
        options.push((option::BLOCK1, b.encode()));
    }
    Frame {
        kind: Kind::Con,
        code: Method::Post.code(),
        mid,
        token: mid.to_be_bytes().to_vec(),
        options,
        payload: body.to_vec(),
    }
    .emit()
}

/// Send every datagram, then collect the answers' codes (by message id)
/// until all came or the line is quiet for a second.
async fn exchange(socket: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) -> Vec<Code> {
    for d in datagrams {
        socket.send_to(d, to).await.unwrap();
    }
    let mut codes = Vec::new();
    let mut buf = [0u8; 1500];
    while codes.len() < datagrams.len() {
        match tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                if let Ok(f) = Frame::parse(&buf[..n]) {
                    if f.kind == Kind::Ack && f.code != Code::EMPTY {
                        codes.push(f.code);
                    }
                }
            }
            _ => break,
        }
    }
    codes
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// The configured device posts a reading: answered 2.04, and it arrives.
struct Meter {
    socket: UdpSocket,
    gw: SocketAddr,
    mid: u16,
    telemetry: tokio::sync::mpsc::UnboundedReceiver<ferrogate_sdk::Telemetry>,
}

impl Meter {
    async fn reading_works(&mut self, after: &str) {
        self.mid = self.mid.wrapping_add(1);
        let request = post(self.mid, &[b"meter-1"], None, b"{\"t\":1}");
        // A CON is sent again when unanswered, as a device would: a flood
        // may fill the server's receive buffer and the first copy be lost.
        let mut codes = Vec::new();
        for _ in 0..5 {
            codes = exchange(&self.socket, self.gw, std::slice::from_ref(&request)).await;
            if !codes.is_empty() {
                break;
            }
        }
        assert_eq!(codes, [Code::CHANGED], "meter-1 after {after}");
        let t = self.next_telemetry().await;
        assert_eq!(t.readings.len(), 1, "after {after}");
    }

    async fn next_telemetry(&mut self) -> ferrogate_sdk::Telemetry {
        tokio::time::timeout(Duration::from_secs(10), self.telemetry.recv())
            .await
            .expect("meter-1 telemetry in time")
            .expect("uplinks open")
    }
}

async fn source(n: u8) -> UdpSocket {
    UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 1, n), 0))
        .await
        .expect("bind a 127/8 source address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_bounded_and_configured_devices_keep_working() {
    let port = common::free_udp_port();
    let toml = format!(
        r#"
[coap.server]
bind = "127.0.0.1:{port}"
allow = ["lab-*"]
rate_limit = 1000000
max_allowed_devices = 1000

[coap.protocol]
ack_timeout = "500ms"

[[coap.device]]
name = "meter-1"
"#
    );
    let (h, _task) = start_adapter(&toml);
    let refusals = h.refusals.clone();
    let _keep = (h.commands, h.shutdown);
    // Drain uplinks as the runtime would; count the devices announced
    // and pass on meter-1's telemetry.
    let (meter_tx, meter_rx) = tokio::sync::mpsc::unbounded_channel();
    let announced = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let announced = announced.clone();
        let mut uplinks = h.uplinks;
        tokio::spawn(async move {
            while let Some(e) = uplinks.recv().await {
                match e.uplink {
                    Uplink::Meta(m) if m.device != "meter-1" => {
                        announced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Uplink::Telemetry(t) if t.device == "meter-1" => {
                        let _ = meter_tx.send(t);
                    }
                    _ => {}
                }
            }
        });
    }
    let gw: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut meter = Meter {
        socket: source(1).await,
        gw,
        mid: 0,
        telemetry: meter_rx,
    };
    let mut mid = 1000u16;
    meter.reading_works("start").await;
    let before = rss_bytes();

    // 1. Made-up names, from 16 sources: at most MAX_UNKNOWN become
    // devices, the rest get 5.03; names no topic can carry get 4.00.
    let mut codes = Vec::new();
    let mut n = 0u32;
    for round in 0..((MAX_UNKNOWN as u32 + 1_000) / 100) {
        let socket = source(10 + (round % 16) as u8).await;
        let batch: Vec<Vec<u8>> = (0..100)
            .map(|i| {
                n += 1;
                let name = if i == 0 {
                    format!("lab-\u{1}{n}")
                } else {
                    format!("lab-{n:08x}")
                };
                post(i as u16, &[name.as_bytes(), b"t"], None, b"1")
            })
            .collect();
        codes.extend(exchange(&socket, gw, &batch).await);
    }
    let count = |c: Code| codes.iter().filter(|x| **x == c).count();
    assert!(
        count(Code::CHANGED) <= MAX_UNKNOWN,
        "{}",
        count(Code::CHANGED)
    );
    assert!(
        count(Code::SERVICE_UNAVAILABLE) > 0,
        "the device cap was never reached"
    );
    assert_eq!(count(Code::BAD_REQUEST) as u64, refusals.get("bad_name"));
    assert!(refusals.get("bad_name") > 0 && refusals.get("too_many") > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while announced.load(std::sync::atomic::Ordering::Relaxed) < count(Code::CHANGED) {
        assert!(tokio::time::Instant::now() < deadline, "announcements lag");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(announced.load(std::sync::atomic::Ordering::Relaxed) <= MAX_UNKNOWN);
    meter.reading_works("the name flood").await;

    // 2. First Block1 blocks that never finish, 8 paths from each of 32
    // sources: each source holds at most its share of the slots.
    let first = BlockOption {
        num: 0,
        more: true,
        szx: 2,
    };
    for s in 0..32u8 {
        let socket = source(100 + s).await;
        let batch: Vec<Vec<u8>> = (0..8u16)
            .map(|i| {
                post(
                    i,
                    &[b"lab-up", format!("p{i}").as_bytes()],
                    Some(first),
                    &[b' '; 64],
                )
            })
            .collect();
        let got = exchange(&socket, gw, &batch).await;
        let kept = got.iter().filter(|c| **c == Code::CONTINUE).count();
        assert!(kept <= 4, "source {s} holds {kept} uploads");
    }
    meter.reading_works("the Block1 flood").await;
    // A whole upload from another source succeeds once the abandoned ones
    // time out (four ACK timeouts).
    let body = format!("{{\"t\":1,\"pad\":\"{}\"}}", "x".repeat(120));
    let blocks: Vec<&[u8]> = body.as_bytes().chunks(64).collect();
    let uploader = source(250).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'upload: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never got a slot"
        );
        for (num, chunk) in blocks.iter().enumerate() {
            let more = num + 1 < blocks.len();
            mid = mid.wrapping_add(1);
            let block = BlockOption {
                num: num as u32,
                more,
                szx: 2,
            };
            let got = exchange(
                &uploader,
                gw,
                &[post(mid, &[b"meter-1"], Some(block), chunk)],
            )
            .await;
            match (more, got.as_slice()) {
                (true, [Code::CONTINUE]) => {}
                (false, [Code::CHANGED]) => break 'upload,
                _ => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'upload;
                }
            }
        }
    }
    let t = meter.next_telemetry().await;
    assert_eq!(t.readings.len(), 2, "the uploaded reading");

    // 3. Datagrams that are not CoAP, from 8 sources.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for s in 0..8u8 {
        let socket = source(200 + s).await;
        for _ in 0..500 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 200) as usize;
            let junk: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            socket.send_to(&junk, gw).await.unwrap();
        }
    }
    meter.reading_works("the garbage flood").await;
    // The engine's refusals reach the adapter's counters (status, metrics).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while refusals.get("malformed") == 0 || refusals.get("rejected") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "engine refusals not counted: {:?}",
            refusals.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "resident memory grew by {} MB",
        grown / (1024 * 1024)
    );
}
