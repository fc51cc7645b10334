//! A backlog is replayed no faster than `replay_rate`, while adapters keep
//! handing over live data without waiting, and every message still arrives
//! in order.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_replay_respects_the_rate() {
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwp/devices/+/telemetry").await;
    broker.stop();
    let state = tempfile::tempdir().unwrap();
    let north = start_north("gwp", &broker.url(), state.path(), |_, o| {
        o.replay_rate = Some(200);
    })
    .await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    for _ in 0..600 {
        up.send(telemetry("d", &[("x", Value::Int(1))]))
            .await
            .unwrap();
    }
    // Stored, and fsynced (with fsync = "always" a record is visible, and
    // has an age in status, only after the fsync that covers it).
    wait_until("backlog stored", WAIT, || {
        north.last_seq("d") == Some(600) && north.status().outbox.oldest_age_ms.is_some()
    })
    .await;
    let st = north.status().outbox;
    assert_eq!(st.depth, 600);
    assert!(st.oldest_age_ms.is_some(), "{st:?}");

    broker.restart();
    let replay_started = Instant::now();
    // Live data while the backlog drains: handed over at once.
    for _ in 0..100 {
        up.send(telemetry("d", &[("x", Value::Int(2))]))
            .await
            .unwrap();
    }
    assert!(
        north.status().outbox.depth > 100,
        "live data was accepted while the backlog was still draining"
    );
    wait_until("everything delivered", WAIT, || {
        seqs_by_device(&sub.all())
            .get("d")
            .is_some_and(|v| v.contains(&700))
    })
    .await;
    let took = replay_started.elapsed();
    // 700 messages at 200/s (burst 20) cannot take less than ~3.4 s.
    assert!(
        took >= Duration::from_millis(3300),
        "replay took only {took:?}"
    );
    assert_complete_in_order("d", &seqs_by_device(&sub.all())["d"], 700);
    north.shutdown().await;
}
