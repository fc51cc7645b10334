//! The daemon's life on a real broker: telemetry with the documented topic
//! and JSON and `seq` +1; retained status and meta; the last will when the
//! process dies; online again after a restart with `seq` continuing; a clean
//! exit within 5 s on SIGTERM and SIGINT.

mod common;
mod daemon;

use std::time::{Duration, Instant};

use common::{Mosquitto, Subscriber};
use daemon::{ConfigDir, Daemon, simulated_device};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_status_meta_will_and_restart() {
    let broker = Mosquitto::start();
    let config = ConfigDir::new(
        "gw-life",
        broker.port,
        "5",
        &simulated_device("pump-1", "50ms"),
    );
    let sub = Subscriber::start(broker.port, "ferrogate/gw-life/#").await;
    let mut gw = Daemon::start(config.path());

    let root = "ferrogate/gw-life";
    let telemetry = format!("{root}/devices/pump-1/telemetry");
    sub.wait_for(&telemetry, Duration::from_secs(20), |m| {
        m.json()["seq"] == 3
    })
    .await;
    let msgs = sub.on(&telemetry);
    let first = msgs[0].json();
    assert_eq!(first["gateway"], "gw-life");
    assert_eq!(first["device"], "pump-1");
    assert_eq!(first["adapter"], "simulator");
    assert!(first["ts"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(first["values"]["count"], 1);
    assert_eq!(first["errors"], serde_json::json!({}));
    let seqs: Vec<u64> = msgs
        .iter()
        .map(|m| m.json()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(&seqs[..3], &[1, 2, 3]);
    assert!(!msgs[0].retain);

    let status = sub
        .wait_for(&format!("{root}/status"), Duration::from_secs(5), |m| {
            m.json()["state"] == "online"
        })
        .await;
    assert!(status.json()["version"].is_string());

    // SIGKILL: no goodbye, the broker publishes the last will.
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    sub.wait_for(&format!("{root}/status"), Duration::from_secs(30), |m| {
        m.json()["state"] == "offline"
    })
    .await;

    // Restart: online again, seq continues where it stopped (never back to 1).
    let last_seq = sub
        .on(&telemetry)
        .iter()
        .map(|m| m.json()["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    let _gw = Daemon::start(config.path());
    let online_count = sub
        .on(&format!("{root}/status"))
        .iter()
        .filter(|m| m.json()["state"] == "online")
        .count();
    common::wait_until("online again", Duration::from_secs(20), || {
        sub.on(&format!("{root}/status"))
            .iter()
            .filter(|m| m.json()["state"] == "online")
            .count()
            > online_count
    })
    .await;
    sub.wait_for(&telemetry, Duration::from_secs(20), |m| {
        m.json()["seq"].as_u64().unwrap() > last_seq
    })
    .await;
    // Unacknowledged messages may be sent again after the kill (duplicates
    // are allowed), but a seq never names two different messages.
    let mut by_seq = std::collections::BTreeMap::new();
    for m in sub.on(&telemetry) {
        let json = m.json();
        let seq = json["seq"].as_u64().unwrap();
        if let Some(previous) = by_seq.insert(seq, json.clone()) {
            assert_eq!(previous, json, "seq {seq} reused for a different message");
        }
    }
    let seqs: Vec<u64> = by_seq.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap in {seqs:?}"
    );

    // A new subscriber sees retained device status and meta.
    let late = Subscriber::start(broker.port, "ferrogate/gw-life/devices/+/+").await;
    let meta = late
        .wait_for(
            &format!("{root}/devices/pump-1/meta"),
            Duration::from_secs(10),
            |m| m.retain,
        )
        .await;
    let points = meta.json()["points"].as_array().unwrap().clone();
    assert!(
        points
            .iter()
            .any(|p| p["name"] == "setpoint" && p["writable"] == true)
    );
    let st = late
        .wait_for(
            &format!("{root}/devices/pump-1/status"),
            Duration::from_secs(10),
            |m| m.retain,
        )
        .await;
    assert_eq!(st.json()["state"], "online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_exit_cleanly_within_5_seconds() {
    let broker = Mosquitto::start();
    for signal in ["TERM", "INT"] {
        let config = ConfigDir::new(
            "gw-sig",
            broker.port,
            "3.1.1",
            &simulated_device("d", "20ms"),
        );
        let sub = Subscriber::start(broker.port, "ferrogate/gw-sig/devices/d/telemetry").await;
        let mut gw = Daemon::start(config.path());
        sub.wait_for(
            "ferrogate/gw-sig/devices/d/telemetry",
            Duration::from_secs(20),
            |_| true,
        )
        .await;
        let sent = Instant::now();
        gw.signal(signal);
        let status = gw
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("still running 5 s after SIG{signal}"));
        assert!(status.success(), "SIG{signal}: exit status {status}");
        assert!(sent.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_refuses_to_start() {
    let config = ConfigDir::new("gw/bad", 1, "5", "");
    let mut gw = Daemon::start(config.path());
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(1));
}
