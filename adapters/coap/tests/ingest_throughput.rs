//! Measurements, not pass/fail checks (run with `--ignored --nocapture`):
//! how many readings per second the ingest server takes from one client
//! with 32 CON requests in flight through UDP loopback, and how many
//! request/response round trips two drivers make.

mod common;

use std::time::{Duration, Instant};

use common::{next_uplink, start_adapter};
use ferrogate_coap::driver;
use ferrogate_coap::{EndpointConfig, Request};
use ferrogate_sdk::Uplink;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn ingest_throughput() {
    const N: usize = 20_000;
    let port = common::free_udp_port();
    let toml = format!(
        "[coap.server]\nbind = \"127.0.0.1:{port}\"\nrate_limit = 1000000\n\n[[coap.device]]\nname = \"m\"\n"
    );
    let (mut h, _task) = start_adapter(&toml);
    next_uplink(&mut h, |u| matches!(u, Uplink::Meta(_)).then_some(())).await;
    let gw = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = CancellationToken::new();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (coap, _in) = driver::spawn(socket, EndpointConfig::default(), stop.clone());

    let drain = tokio::spawn(async move {
        let mut readings = 0;
        while readings < N {
            match tokio::time::timeout(Duration::from_secs(30), h.uplinks.recv()).await {
                Ok(Some(e)) => {
                    if let Uplink::Telemetry(t) = e.uplink {
                        readings += t.readings.len();
                    }
                }
                _ => break,
            }
        }
        readings
    });
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..32 {
        let coap = coap.clone();
        workers.push(tokio::spawn(async move {
            for i in (w..N).step_by(32) {
                let body = format!("{i}.5").into_bytes();
                let r = coap
                    .request(gw, Request::post("/m/v").with_payload(0, body))
                    .await;
                assert!(r.is_ok_and(|r| r.code.is_success()));
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let readings = drain.await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(readings, N);
    println!(
        "{N} CON POSTs, 32 in flight: {:.2} s, {:.0} readings/s",
        elapsed.as_secs_f64(),
        N as f64 / elapsed.as_secs_f64()
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn driver_round_trips() {
    const N: usize = 4000;
    let stop = CancellationToken::new();
    let s1 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let s2 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (a, _ain) = driver::spawn(s1, EndpointConfig::default(), stop.clone());
    // no per-source limit on the serving side: this measures the driver
    let unlimited = EndpointConfig {
        rate_limit: None,
        ..EndpointConfig::default()
    };
    let (b, mut bin) = driver::spawn(s2, unlimited, stop.clone());
    tokio::spawn(async move {
        while let Some(r) = bin.recv().await {
            r.responder
                .respond(ferrogate_coap::Response::new(ferrogate_coap::Code::CHANGED));
        }
    });
    let peer = b.local_addr();
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..32 {
        let a = a.clone();
        workers.push(tokio::spawn(async move {
            for _ in (w..N).step_by(32) {
                a.request(peer, Request::post("/x")).await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "driver: {N} round trips, 32 in flight: {:.0}/s",
        N as f64 / elapsed.as_secs_f64()
    );
    stop.cancel();
}
