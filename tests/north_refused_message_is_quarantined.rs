//! A message the broker refuses by dropping the connection (mosquitto
//! closes it on a topic with a control character) must not block the
//! durable, ordered outbox forever: after a few losses in a row with it at
//! the head it goes to the dead-letter file, counted in status, and the
//! messages behind it are delivered (#17 item 2).

mod common;

use std::time::Duration;

use common::*;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_keeps_refusing_is_quarantined() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwq/devices/+/telemetry").await;
    let state = tempfile::tempdir().unwrap();
    let north = start_north("gwq", &broker.url(), state.path(), |_, _| {}).await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    up.send(telemetry("good", &[("x", Value::Int(1))]))
        .await
        .unwrap();
    // Not a name any adapter admits any more (they validate), but the
    // outbox must survive whatever a future bug lets through.
    up.send(telemetry("bad\u{1}name", &[("x", Value::Int(2))]))
        .await
        .unwrap();
    for i in 3..=10 {
        up.send(telemetry("good", &[("x", Value::Int(i))]))
            .await
            .unwrap();
    }
    wait_until("the messages behind it delivered", WAIT, || {
        seqs_by_device(&sub.all())
            .get("good")
            .is_some_and(|v| v.contains(&9))
    })
    .await;
    let st = north.status();
    assert_eq!(st.outbox.quarantined, 1, "{:?}", st.outbox);
    assert_eq!(
        st.outbox.last_quarantined.as_deref(),
        Some("ferrogate/gwq/devices/bad\u{1}name/telemetry")
    );
    let mut got = seqs_by_device(&sub.all()).remove("good").unwrap();
    got.dedup();
    assert_eq!(got, (1..=9).collect::<Vec<u64>>());
    wait_until("the outbox drained", WAIT, || {
        north.status().outbox.depth == 0
    })
    .await;
    north.shutdown().await;

    // Kept (and counted) across a restart, never replayed.
    let dead = std::fs::read(state.path().join("outbox/dead-letter")).unwrap();
    assert!(
        dead.windows(8).any(|w| w == b"bad\x01name"),
        "the refused message is in the dead-letter file"
    );
    let north = start_north("gwq", &broker.url(), state.path(), |_, _| {}).await;
    assert_eq!(north.status().outbox.quarantined, 1);
    north.shutdown().await;
}
