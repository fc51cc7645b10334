//! A hung uplink (TCP stays open, nothing gets through, no PUBACK) is
//! detected within the configured ack timeout, the connection is replaced,
//! and nothing is lost.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferrogate_sdk::config::ConfigDuration;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_link_detected_and_replaced() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwh/devices/+/telemetry").await;
    let proxy = Proxy::start(broker.port).await;
    let state = tempfile::tempdir().unwrap();
    let ack_timeout = Duration::from_secs(1);
    let north = start_north(
        "gwh",
        &format!("mqtt://127.0.0.1:{}", proxy.port),
        state.path(),
        |m, _| {
            m.ack_timeout = ConfigDuration(ack_timeout);
            // Long keep-alive: detection must come from the missing PUBACKs.
            m.keep_alive = ConfigDuration(Duration::from_secs(60));
        },
    )
    .await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    for _ in 0..20 {
        up.send(telemetry("d", &[("x", Value::Int(1))]))
            .await
            .unwrap();
    }
    wait_until("first messages", WAIT, || sub.all().len() >= 20).await;
    let reconnects = north.status().live.reconnects;

    proxy.freeze(true);
    let frozen_at = Instant::now();
    for _ in 0..50 {
        up.send(telemetry("d", &[("x", Value::Int(1))]))
            .await
            .unwrap();
    }
    wait_until("hang detected", WAIT, || {
        north.status().live.reconnects > reconnects
    })
    .await;
    let detected_after = frozen_at.elapsed();
    let why = north.status().live.last_error.unwrap_or_default();
    assert!(why.contains("no PUBACK"), "reason: {why}");
    assert!(
        detected_after < ack_timeout + Duration::from_secs(5),
        "hang detected only after {detected_after:?}"
    );
    proxy.freeze(false);
    for _ in 0..30 {
        up.send(telemetry("d", &[("x", Value::Int(1))]))
            .await
            .unwrap();
    }
    wait_until("everything delivered after the hang", WAIT, || {
        seqs_by_device(&sub.all())
            .get("d")
            .is_some_and(|v| v.contains(&100))
    })
    .await;
    assert_complete_in_order("d", &seqs_by_device(&sub.all())["d"], 100);
    eprintln!("hang detected after {detected_after:?}");
    north.shutdown().await;
}
