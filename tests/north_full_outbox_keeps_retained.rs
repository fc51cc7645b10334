//! A full outbox drops the oldest telemetry, never the current retained
//! state: a device's latest status and meta survive a registration storm
//! (carried forward when their segment is dropped), the dropped counts are
//! per kind, telemetry's equals the `seq` gap, and they survive a restart.

mod common;

use std::time::Duration;

use common::*;
use ferrogate_sdk::{
    DeviceMeta, DeviceState, DeviceStatus, Timestamp, Uplink, UplinkSender, Value,
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_survives_a_full_outbox() {
    let mut broker = Mosquitto::start();
    broker.stop();
    let state = tempfile::tempdir().unwrap();
    let tweak = |_: &mut _, o: &mut ferrogate::north::config::OutboxConfig| {
        o.segment_bytes = 64 * 1024;
        o.max_bytes = 16 * 64 * 1024;
    };
    let north = start_north("gwr", &broker.url(), state.path(), tweak).await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    // A registration storm: 200 devices announce themselves first ...
    let devices = 200;
    for d in 0..devices {
        let device = format!("dev-{d}");
        up.send(Uplink::Meta(DeviceMeta {
            device: device.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
        up.send(Uplink::Status(DeviceStatus {
            device,
            state: DeviceState::Online,
            reason: None,
            ts: Timestamp::now(),
        }))
        .await
        .unwrap();
    }
    // ... then telemetry overflows the outbox several times over.
    let n = 20_000u64;
    for i in 0..n {
        up.send(telemetry("busy", &[("x", Value::UInt(i))]))
            .await
            .unwrap();
    }
    wait_until("all stored", WAIT, || north.last_seq("busy") == Some(n)).await;
    let st = north.status().outbox;
    assert!(st.dropped > 0, "the test must overflow the outbox: {st:?}");
    assert_eq!(st.dropped_retained, 0, "{st:?}");
    north.shutdown().await;

    // Counts survive a restart.
    let north = start_north("gwr", &broker.url(), state.path(), tweak).await;
    let again = north.status().outbox;
    assert_eq!(
        (again.dropped, again.dropped_retained),
        (st.dropped, 0),
        "{again:?}"
    );

    broker.restart();
    let late = Subscriber::start(broker.port, "ferrogate/gwr/devices/+/+").await;
    wait_until("every device's status and meta retained", WAIT, || {
        let all = late.all();
        (0..devices).all(|d| {
            ["status", "meta"].iter().all(|leaf| {
                let topic = format!("ferrogate/gwr/devices/dev-{d}/{leaf}");
                all.iter().any(|m| m.topic == topic)
            })
        })
    })
    .await;
    wait_until("the newest telemetry delivered", WAIT, || {
        seqs_by_device(&late.all())
            .get("busy")
            .is_some_and(|v| v.contains(&n))
    })
    .await;
    let mut got = seqs_by_device(&late.all()).remove("busy").unwrap();
    got.dedup();
    let first = *got.first().unwrap();
    assert_eq!(
        first,
        st.dropped + 1,
        "the seq gap equals the dropped count"
    );
    north.shutdown().await;
}
