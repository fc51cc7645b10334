//! A free-running instrument that stops talking while its port stays open
//! (a cut cable behind the USB adapter) is reported offline after
//! `silence_timeout`, and online again with its next frame.

mod common;

use common::*;
use ferrogate_sdk::{DeviceState, Uplink, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_instrument_goes_offline_and_returns() {
    let pair = PtyPair::new("silence");
    let mut sensor = pair.instrument();
    let toml = format!(
        r#"
[[serial.device]]
name = "anemometer"
port = "{}"
silence_timeout = "300ms"

[serial.device.framing]
delimiter = "\n"

[serial.device.parser]
kind = "key_value"

[[serial.device.point]]
name = "wind"
source = "WS"
"#,
        pair.adapter_end().display()
    );
    let mut running = start(&toml);
    running
        .expect("online", |u| is_status(u, DeviceState::Online))
        .await;
    sensor.send(b"WS=3.5 WD=270\n").await;
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&t).unwrap(), "wind"),
        Some(&Value::Float(3.5))
    );

    let offline = running
        .expect("offline", |u| is_status(u, DeviceState::Offline))
        .await;
    let Uplink::Status(offline) = offline else {
        unreachable!()
    };
    assert!(offline.reason.unwrap().contains("no data for 300 ms"));

    sensor.send(b"WS=4.0\n").await;
    running
        .expect("online again", |u| is_status(u, DeviceState::Online))
        .await;
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&t).unwrap(), "wind"),
        Some(&Value::Float(4.0))
    );
    running.stop().await;
}
