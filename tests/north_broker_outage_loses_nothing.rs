//! The broker goes down for a while under continuous telemetry from several
//! devices, then comes back: every `seq` of every device arrives, in order
//! per device; duplicates are allowed and counted.

mod common;

use std::time::Duration;

use common::*;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_under_continuous_telemetry() {
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwo/devices/+/telemetry").await;
    let state = tempfile::tempdir().unwrap();
    let north = start_north("gwo", &broker.url(), state.path(), |_, _| {}).await;
    let devices = ["pump", "meter", "valve"];
    let producer = {
        let up = UplinkSender::new("sim", north.uplink_tx());
        tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                for d in devices {
                    if up
                        .send(telemetry(d, &[("x", Value::Int(1))]))
                        .await
                        .is_err()
                    {
                        return sent;
                    }
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
                if sent == 1500 {
                    return sent;
                }
            }
        })
    };
    wait_until("data flowing", WAIT, || sub.all().len() > 100).await;
    broker.stop();
    wait_until("a backlog while the broker is down", WAIT, || {
        north.status().outbox.depth > 300
    })
    .await;
    assert!(!north.status().live.connected);
    broker.restart();
    let sent = producer.await.unwrap();
    wait_until("every message delivered", WAIT, || {
        let seqs = seqs_by_device(&sub.all());
        devices
            .iter()
            .all(|d| seqs.get(*d).is_some_and(|v| v.contains(&sent)))
    })
    .await;
    let seqs = seqs_by_device(&sub.all());
    let mut dups = 0;
    for d in devices {
        dups += assert_complete_in_order(d, &seqs[d], sent);
    }
    let st = north.status();
    wait_until("outbox drained", WAIT, || north.status().outbox.depth == 0).await;
    assert!(st.live.reconnects >= 1);
    assert_eq!(st.outbox.dropped, 0);
    eprintln!(
        "sent {sent} per device; duplicates seen {dups}; resent {}",
        st.outbox.resent
    );
    north.shutdown().await;
}
