//! When the outbox is full, exactly the oldest messages are dropped and
//! counted, and the downstream `seq` gap equals the dropped count.

mod common;

use std::time::Duration;

use common::*;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_dropped_and_counted() {
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwf/devices/+/telemetry").await;
    broker.stop();
    let state = tempfile::tempdir().unwrap();
    let north = start_north("gwf", &broker.url(), state.path(), |_, o| {
        o.segment_bytes = 64 * 1024;
        o.max_bytes = 4 * 64 * 1024;
    })
    .await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    let n = 5000;
    for i in 0..n {
        up.send(telemetry("d", &[("x", Value::Int(i))]))
            .await
            .unwrap();
    }
    wait_until("all stored", WAIT, || north.last_seq("d") == Some(n as u64)).await;
    let st = north.status().outbox;
    assert!(st.dropped > 0, "nothing dropped: {st:?}");
    assert!(st.bytes <= 4 * 64 * 1024, "{st:?}");
    assert_eq!(st.depth + st.dropped, n as u64, "{st:?}");

    broker.restart();
    wait_until("the newest delivered", WAIT, || {
        seqs_by_device(&sub.all())
            .get("d")
            .is_some_and(|v| v.contains(&(n as u64)))
    })
    .await;
    let mut got = seqs_by_device(&sub.all()).remove("d").unwrap();
    got.dedup();
    let want: Vec<u64> = (st.dropped + 1..=n as u64).collect();
    assert_eq!(got, want, "exactly the oldest {} are missing", st.dropped);
    assert_eq!(north.status().outbox.dropped, st.dropped);
    north.shutdown().await;
}
