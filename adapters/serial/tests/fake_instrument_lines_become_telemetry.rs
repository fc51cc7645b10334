//! A free-running scale prints weight lines on its own; each line becomes a
//! telemetry message with typed, scaled values.

mod common;

use common::*;
use ferrogate_sdk::{DeviceState, Uplink, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_running_scale_lines_become_telemetry() {
    let pair = PtyPair::new("free-running");
    let mut instrument = pair.instrument();
    let toml = format!(
        r#"
[[serial.device]]
name = "scale-1"
port = "{}"
baud = 9600
parity = "none"

[serial.device.framing]
kind = "delimiter"
delimiter = '\r\n'

[serial.device.parser]
kind = "regex"
pattern = '^(?P<status>ST|US),(?P<weight>[-+][0-9.]+) ?kg$'

[[serial.device.point]]
name = "weight_g"
source = "weight"
scale = 1000.0
unit = "g"

[[serial.device.point]]
name = "stable"
source = "status"
type = "string"
"#,
        pair.adapter_end().display()
    );
    let mut running = start(&toml);

    let meta = running
        .expect("meta", |u| matches!(u, Uplink::Meta(_)))
        .await;
    let Uplink::Meta(meta) = meta else {
        unreachable!()
    };
    assert_eq!(meta.device, "scale-1");
    assert_eq!(meta.points.len(), 2);
    assert_eq!(meta.points[0].unit.as_deref(), Some("g"));
    assert_eq!(meta.attributes["mode"], "free_running");
    running
        .expect("online status", |u| is_status(u, DeviceState::Online))
        .await;

    instrument
        .send(b"ST,+0012.50kg\r\nUS,-0000.25 kg\r\n")
        .await;
    let first = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    let first = telemetry(&first).unwrap();
    assert_eq!(first.device, "scale-1");
    assert_eq!(value_of(first, "weight_g"), Some(&Value::Float(12500.0)));
    assert_eq!(value_of(first, "stable"), Some(&Value::String("ST".into())));
    let second = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&second).unwrap(), "weight_g"),
        Some(&Value::Float(-250.0))
    );

    // Split across writes, as a slow line delivers it.
    instrument.send(b"ST,+0001.0").await;
    instrument.send(b"0kg\r\n").await;
    let third = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&third).unwrap(), "weight_g"),
        Some(&Value::Float(1000.0))
    );

    let before = running.harness.health.since_last_beat();
    assert!(
        before < std::time::Duration::from_secs(5),
        "health was beaten"
    );
    running.stop().await;
}
