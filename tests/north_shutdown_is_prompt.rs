//! Graceful shutdown fits in the daemon's 5 s budget whether the broker is
//! up with a large backlog draining or down, and loses nothing: after a
//! restart the backlog continues where it stopped.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(60);
const BUDGET: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_within_budget_and_nothing_lost() {
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwq/devices/+/telemetry").await;
    broker.stop();
    let state = tempfile::tempdir().unwrap();
    let n = 20_000u64;

    // Broker down: shutdown must not wait for it.
    let north = start_north("gwq", &broker.url(), state.path(), |_, _| {}).await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    for _ in 0..n {
        up.send(telemetry("d", &[("x", Value::Int(1))]))
            .await
            .unwrap();
    }
    drop(up);
    let t = Instant::now();
    north.shutdown().await;
    assert!(
        t.elapsed() < BUDGET,
        "shutdown with broker down took {:?}",
        t.elapsed()
    );

    // Broker up, backlog replaying (slowly): shutdown mid-replay.
    broker.restart();
    let north = start_north("gwq", &broker.url(), state.path(), |_, o| {
        o.replay_rate = Some(2000);
    })
    .await;
    assert_eq!(
        north.last_seq("d"),
        Some(n),
        "every accepted message was stored"
    );
    wait_until("replay under way", WAIT, || !sub.all().is_empty()).await;
    let t = Instant::now();
    north.shutdown().await;
    assert!(
        t.elapsed() < BUDGET,
        "shutdown mid-replay took {:?}",
        t.elapsed()
    );

    // Restart: the rest arrives, in order.
    let north = start_north("gwq", &broker.url(), state.path(), |_, _| {}).await;
    wait_until("the whole backlog", WAIT, || {
        seqs_by_device(&sub.all())
            .get("d")
            .is_some_and(|v| v.contains(&n))
    })
    .await;
    assert_complete_in_order("d", &seqs_by_device(&sub.all())["d"], n);
    north.shutdown().await;
}
