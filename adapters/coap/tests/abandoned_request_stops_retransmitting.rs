//! A request whose caller gave up (its future was dropped by a timeout) is
//! not retransmitted any more: a dead device gets one datagram per attempt
//! the caller made, not MAX_RETRANSMIT more for each.

use std::time::Duration;

use ferrogate_coap::driver;
use ferrogate_coap::{EndpointConfig, Request};
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn abandoned_request_stops_retransmitting() {
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer = silent.local_addr().unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let (coap, _incoming) = driver::spawn(socket, EndpointConfig::default(), stop.clone());

    let gave_up = tokio::time::timeout(
        Duration::from_millis(500),
        coap.request(peer, Request::get("/x")),
    )
    .await;
    assert!(gave_up.is_err(), "the silent peer cannot have answered");

    // Far beyond MAX_TRANSMIT_WAIT (93 s) on the paused clock.
    let mut buf = [0u8; 1500];
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, silent.recv_from(&mut buf)).await {
        received += 1;
    }
    assert_eq!(received, 1, "retransmitted after the caller gave up");
    let stats = coap.stats().await.unwrap();
    assert_eq!(stats.retransmissions, 0);
    stop.cancel();
}
