//! On a clean stop (SIGTERM) the gateway publishes each of its devices
//! offline (retained, reason "gateway stopped") besides its own offline
//! status, so a consumer of `{root}/devices/+/status` never keeps seeing a
//! stopped gateway's devices as online (#19). Real mosquitto, real daemon.

mod common;
mod daemon;

use std::time::Duration;

use common::{Mosquitto, Subscriber};
use daemon::{ConfigDir, Daemon, simulated_device};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_publishes_every_device_offline() {
    let broker = Mosquitto::start();
    let devices = format!(
        "{}{}",
        simulated_device("pump", "1s"),
        simulated_device("valve", "1s")
    );
    let config = ConfigDir::new("gw-stop", broker.port, "5", &devices);
    let sub = Subscriber::start(broker.port, "ferrogate/gw-stop/#").await;
    let mut gw = Daemon::start(config.path());
    let wait = Duration::from_secs(20);
    for d in ["pump", "valve"] {
        let topic = format!("ferrogate/gw-stop/devices/{d}/status");
        sub.wait_for(&topic, wait, |m| m.json()["state"] == "online")
            .await;
    }
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(6)).is_some(),
        "no clean exit"
    );

    // What a consumer arriving later reads: the retained statuses.
    let late = Subscriber::start(broker.port, "ferrogate/gw-stop/devices/+/status").await;
    for d in ["pump", "valve"] {
        let topic = format!("ferrogate/gw-stop/devices/{d}/status");
        let st = late.wait_for(&topic, wait, |m| m.retain).await.json();
        assert_eq!(st["state"], "offline", "{d}: {st}");
        assert_eq!(st["reason"], "gateway stopped", "{d}: {st}");
    }
}
