//! A gateway that dies (SIGKILL, no DISCONNECT) is announced offline by its
//! last will; restarted, it is online again; device status and meta stay
//! retained throughout.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
#[ignore = "child process body, started by the tests in this file"]
async fn child_writer() {
    child_writer_main().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_then_online_again() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwk/#").await;
    let state = tempfile::tempdir().unwrap();
    let env = vec![
        ("NORTH_CHILD_URL", broker.url()),
        ("NORTH_CHILD_STATE", state.path().display().to_string()),
        ("NORTH_CHILD_GATEWAY", "gwk".to_string()),
        ("NORTH_CHILD_META", "1".to_string()),
    ];
    let status = "ferrogate/gwk/status";
    let state_of = |m: &Received| m.json()["state"].clone();

    let gw = ChildGateway::spawn(&env);
    sub.wait_for(status, WAIT, |m| state_of(m) == json!("online"))
        .await;
    sub.wait_for("ferrogate/gwk/devices/d0/meta", WAIT, |_| true)
        .await;
    gw.kill();

    let will = sub
        .wait_for(status, WAIT, |m| state_of(m) == json!("offline"))
        .await;
    assert_eq!(will.json(), json!({"gateway":"gwk","state":"offline"}));
    let offline_at = sub.on(status).len();

    let gw = ChildGateway::spawn(&env);
    wait_until("online again after restart", WAIT, || {
        sub.on(status)[offline_at..]
            .iter()
            .any(|m| state_of(m) == json!("online"))
    })
    .await;

    // A newcomer sees the retained gateway status and device status and meta.
    let late = Subscriber::start(broker.port, "ferrogate/gwk/#").await;
    let s = late.wait_for(status, WAIT, |m| m.retain).await;
    assert_eq!(s.json()["state"], json!("online"));
    let ds = late
        .wait_for("ferrogate/gwk/devices/d0/status", WAIT, |m| m.retain)
        .await;
    assert_eq!(ds.json()["state"], json!("online"));
    let meta = late
        .wait_for("ferrogate/gwk/devices/d0/meta", WAIT, |m| m.retain)
        .await;
    assert_eq!(meta.json()["device"], json!("d0"));
    drop(gw);
}
