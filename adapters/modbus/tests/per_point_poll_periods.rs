//! A point with its own `poll` is read at its own period, in its own
//! telemetry messages, independently of the device's period.

mod common;

use common::{Slave, start, value};
use ferrogate_sdk::Value;
use serde_json::json;

#[tokio::test]
async fn a_fast_point_is_polled_on_its_own() {
    let slave = Slave::start(json!({"tcp": 0, "units": {"1": {"hr": [1, 2]}}})).await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"500ms\"\n\n\
         [[modbus.device]]\nname = \"d\"\nconnection = \"plc\"\nunit = 1\npoll = \"1h\"\n\
         [[modbus.device.point]]\nname = \"slow\"\naddress = 0\n\
         [[modbus.device.point]]\nname = \"fast\"\naddress = 1\npoll = \"50ms\"\n",
        slave.port
    );
    let mut running = start(&toml);
    let mut slow = 0;
    let mut fast = 0;
    while fast < 5 || slow == 0 {
        let t = running.telemetry("d").await;
        let names: Vec<&str> = t.readings.iter().map(|r| &*r.point).collect();
        match names.as_slice() {
            ["slow"] => {
                assert_eq!(value(&t, "slow"), Value::UInt(1));
                slow += 1;
            }
            ["fast"] => {
                assert_eq!(value(&t, "fast"), Value::UInt(2));
                fast += 1;
            }
            other => panic!("points of two poll groups in one message: {other:?}"),
        }
    }
    assert_eq!(slow, 1, "the 1h group ran more than once");
    running.stop().await;
    slave.stop().await;
}
