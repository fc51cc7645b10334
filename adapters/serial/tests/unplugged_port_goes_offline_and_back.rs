//! A USB serial adapter pulled out: the device goes offline with a reason;
//! plugged back in (same stable path), the port is reopened with backoff and
//! data flows again, without restarting anything. A port missing at start
//! is the same story.

mod common;

use std::time::Duration;

use common::*;
use ferrogate_sdk::{Command, DeviceState, ErrorCode, Operation, Uplink, Value};

fn config(port: &std::path::Path) -> String {
    format!(
        r#"
[[serial.device]]
name = "probe"
port = "{}"
reopen_min = "50ms"
reopen_max = "200ms"

[serial.device.parser]
kind = "json"

[[serial.device.point]]
name = "level"
source = "/level/mm"
type = "i64"
"#,
        port.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_and_replug_the_port() {
    let mut pair = PtyPair::new("hotplug");
    let mut probe = pair.instrument();
    let mut running = start(&config(&pair.adapter_end()));
    running
        .expect("online", |u| is_status(u, DeviceState::Online))
        .await;
    probe.send(b"{\"level\":{\"mm\":120}}\r\n").await;
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&t).unwrap(), "level"),
        Some(&Value::Int(120))
    );

    drop(probe);
    pair.unplug();
    let offline = running
        .expect("offline", |u| is_status(u, DeviceState::Offline))
        .await;
    let Uplink::Status(offline) = offline else {
        unreachable!()
    };
    let reason = offline.reason.unwrap_or_default();
    assert!(!reason.is_empty());

    // While unplugged, commands are answered at once with device_offline.
    let outcome = running
        .harness
        .command(Command {
            id: "r".into(),
            device: "probe".into(),
            op: Operation::Read { points: vec![] },
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
        })
        .await;
    assert_eq!(outcome.unwrap_err().code, ErrorCode::DeviceOffline);

    pair.start();
    let mut probe = pair.instrument();
    running
        .expect("online again", |u| is_status(u, DeviceState::Online))
        .await;
    probe.send(b"{\"level\":{\"mm\":121}}\r\n").await;
    let t = running
        .expect("telemetry after replug", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&t).unwrap(), "level"),
        Some(&Value::Int(121))
    );
    assert!(
        !running.task.is_finished(),
        "the adapter kept running throughout"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_missing_at_start_is_offline_until_it_appears() {
    let mut pair = PtyPair::new("late-plug");
    pair.unplug();
    let mut running = start(&config(&pair.adapter_end()));
    let offline = running
        .expect("offline", |u| is_status(u, DeviceState::Offline))
        .await;
    let Uplink::Status(offline) = offline else {
        unreachable!()
    };
    assert!(offline.reason.unwrap().contains("cannot open"));

    pair.start();
    let mut probe = pair.instrument();
    running
        .expect("online", |u| is_status(u, DeviceState::Online))
        .await;
    probe.send(b"{\"level\":{\"mm\":-3}}\r\n").await;
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&t).unwrap(), "level"),
        Some(&Value::Int(-3))
    );
    running.stop().await;
}
