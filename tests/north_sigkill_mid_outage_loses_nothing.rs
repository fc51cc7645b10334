//! With `fsync = "always"`, a gateway killed with SIGKILL while the broker
//! is down, then restarted after the broker is back, delivers every `seq`
//! of every device, in order per device (duplicates allowed).

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
#[ignore = "child process body, started by the tests in this file"]
async fn child_writer() {
    child_writer_main().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_outage() {
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gws/devices/+/telemetry").await;
    let state = tempfile::tempdir().unwrap();
    let env = vec![
        ("NORTH_CHILD_URL", broker.url()),
        ("NORTH_CHILD_STATE", state.path().display().to_string()),
        ("NORTH_CHILD_GATEWAY", "gws".to_string()),
        ("NORTH_CHILD_DEVICES", "3".to_string()),
        ("NORTH_CHILD_FSYNC", "always".to_string()),
    ];
    let devices = ["d0", "d1", "d2"];

    // Some data flows, then the broker goes away and data piles up.
    let gw = ChildGateway::spawn(&env);
    wait_until("first telemetry", WAIT, || sub.all().len() > 30).await;
    broker.stop();
    let before = devices.map(|d| gw.stored(d));
    wait_for("a backlog during the outage", WAIT, || {
        devices
            .iter()
            .zip(before)
            .all(|(d, b)| gw.stored(d) >= b + 300)
    });
    let stored = devices.map(|d| gw.stored(d));
    gw.kill();

    broker.restart();
    wait_until("subscriber back", WAIT, || sub.connected()).await;
    let gw = ChildGateway::spawn(&env);
    wait_until("everything stored before the kill, and more", WAIT, || {
        let seqs = seqs_by_device(&sub.all());
        devices.iter().zip(stored).all(|(d, s)| {
            seqs.get(*d)
                .is_some_and(|v| v.iter().max().copied().unwrap_or(0) >= s + 50)
        })
    })
    .await;
    drop(gw);
    let seqs = seqs_by_device(&sub.all());
    let mut dups = 0;
    for (d, s) in devices.iter().zip(stored) {
        dups += assert_complete_in_order(d, &seqs[*d], s + 50);
    }
    eprintln!("stored before kill: {stored:?}; duplicates: {dups}");
}
