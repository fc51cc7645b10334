//! With report-on-change, a poll cycle sends only the points that moved
//! more than their deadband since they were last sent.

mod common;

use common::{Slave, start, value};
use ferrogate_sdk::Value;
use serde_json::json;

#[tokio::test]
async fn only_changes_beyond_the_deadband_are_sent() {
    let mut slave = Slave::start(json!({"tcp": 0, "units": {"1": {"hr": [100, 7]}}})).await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"500ms\"\n\n\
         [[modbus.device]]\nname = \"tank\"\nconnection = \"plc\"\nunit = 1\npoll = \"50ms\"\n\
         report_on_change = true\ndeadband = 5.0\nmax_interval = \"1h\"\n\
         [[modbus.device.point]]\nname = \"level\"\naddress = 0\ntype = \"i16\"\n\
         [[modbus.device.point]]\nname = \"mode\"\naddress = 1\ndeadband = 0.0\n",
        slave.port
    );
    let mut running = start(&toml);
    let first = running.telemetry("tank").await;
    assert_eq!(first.readings.len(), 2);
    assert_eq!(value(&first, "level"), Value::Int(100));

    // level moves by 3 (inside its deadband), then mode changes: the next
    // message carries mode only.
    slave.set(1, 3, 0, &[103]).await;
    slave.set(1, 3, 1, &[8]).await;
    let t = running.telemetry("tank").await;
    assert_eq!(t.readings.len(), 1, "{t:?}");
    assert_eq!(value(&t, "mode"), Value::UInt(8));

    // level drifts to 106: 6 away from the 100 last sent.
    slave.set(1, 3, 0, &[106]).await;
    let t = running.telemetry("tank").await;
    assert_eq!(t.readings.len(), 1, "{t:?}");
    assert_eq!(value(&t, "level"), Value::Int(106));
    running.stop().await;
    slave.stop().await;
}
