//! `qos = 0`, only when configured: messages are published at QoS 0 and
//! leave the outbox once written to the socket.

mod common;

use std::time::Duration;

use common::*;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_publishes_and_drains() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwz/devices/+/telemetry").await;
    let state = tempfile::tempdir().unwrap();
    let north = start_north("gwz", &broker.url(), state.path(), |m, _| m.qos = 0).await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    for _ in 0..50 {
        up.send(telemetry("d", &[("x", Value::Int(1))]))
            .await
            .unwrap();
    }
    wait_until("50 delivered", WAIT, || sub.all().len() >= 50).await;
    wait_until("outbox drained", WAIT, || north.status().outbox.depth == 0).await;
    assert_eq!(
        seqs_by_device(&sub.all())["d"],
        (1..=50).collect::<Vec<u64>>()
    );
    north.shutdown().await;
}
