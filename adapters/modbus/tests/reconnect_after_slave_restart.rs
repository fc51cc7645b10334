//! When the TCP slave goes away the device goes offline with the reason,
//! points carry errors (never stale values), and once the slave is back
//! the adapter reconnects by itself and reports fresh values.

mod common;

use common::{Slave, start, value};
use ferrogate_sdk::{DeviceState, Uplink, Value};
use serde_json::json;

#[tokio::test]
async fn reconnects_after_the_slave_restarts() {
    let slave = Slave::start(json!({"tcp": 0, "units": {"1": {"hr": [41]}}})).await;
    let port = slave.port;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"300ms\"\n\
         reconnect_min = \"100ms\"\nreconnect_max = \"400ms\"\n\n\
         [[modbus.device]]\nname = \"meter\"\nconnection = \"plc\"\nunit = 1\npoll = \"100ms\"\noffline_after = 2\n\
         [[modbus.device.point]]\nname = \"v\"\naddress = 0\n"
    );
    let mut running = start(&toml);
    running.status("meter", DeviceState::Online).await;
    assert_eq!(
        value(&running.good_telemetry("meter").await, "v"),
        Value::UInt(41)
    );

    slave.stop().await;
    let reason = running.status("meter", DeviceState::Offline).await;
    assert!(reason.is_some(), "offline needs a reason");
    // Every reading after the outage is an error, not the old value.
    let t = running
        .wait_for("failed telemetry", |u| match u {
            Uplink::Telemetry(t) if t.readings.iter().all(|r| r.value.is_err()) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!(t.readings.len(), 1);

    let slave = Slave::start(json!({"tcp": port, "units": {"1": {"hr": [42]}}})).await;
    running.status("meter", DeviceState::Online).await;
    assert_eq!(
        value(&running.good_telemetry("meter").await, "v"),
        Value::UInt(42)
    );
    running.stop().await;
    slave.stop().await;
}
