//! Modbus exceptions are reported on the points they concern, with code and
//! name; a merged read refused for one bad address is split so that its
//! neighbours still get values.

mod common;

use common::{Slave, start, value};
use ferrogate_sdk::{DeviceState, PointErrorKind, Value};
use serde_json::json;

#[tokio::test]
async fn illegal_address_hits_only_its_point_and_other_exceptions_are_named() {
    let slave = Slave::start(json!({
        "tcp": 0,
        "units": {"1": {"hr": [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]}}
    }))
    .await;
    // Addresses 0, 2, 5 exist; 12 does not. With max_gap = 8 all four are
    // merged into one read of 0..=12, which the slave refuses.
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"500ms\"\n\n\
         [[modbus.device]]\nname = \"meter\"\nconnection = \"plc\"\nunit = 1\npoll = \"100ms\"\nmax_gap = 8\n\
         [[modbus.device.point]]\nname = \"a\"\naddress = 0\n\
         [[modbus.device.point]]\nname = \"b\"\naddress = 2\n\
         [[modbus.device.point]]\nname = \"d\"\naddress = 5\n\
         [[modbus.device.point]]\nname = \"missing\"\naddress = 12\n\n\
         [[modbus.device]]\nname = \"ghost\"\nconnection = \"plc\"\nunit = 9\npoll = \"100ms\"\n\
         [[modbus.device.point]]\nname = \"x\"\naddress = 0\n",
        slave.port
    );
    let mut running = start(&toml);
    // A device that answers with exceptions is there: online, not offline.
    running.status("ghost", DeviceState::Online).await;
    for _ in 0..2 {
        // The first cycle learns the split; the second uses it directly.
        let t = running.telemetry("meter").await;
        assert_eq!(value(&t, "a"), Value::UInt(10));
        assert_eq!(value(&t, "b"), Value::UInt(12));
        assert_eq!(value(&t, "d"), Value::UInt(15));
        let missing = t.readings.iter().find(|r| &*r.point == "missing").unwrap();
        let e = missing.value.as_ref().unwrap_err();
        assert_eq!(e.kind, PointErrorKind::DeviceException);
        assert_eq!(e.message, "exception 2 (illegal data address)");
    }
    // pymodbus answers an unknown unit with exception 4.
    let t = running.telemetry("ghost").await;
    let e = t.readings[0].value.as_ref().unwrap_err();
    assert_eq!(e.kind, PointErrorKind::DeviceException);
    assert_eq!(e.message, "exception 4 (server device failure)");
    running.stop().await;
    slave.stop().await;
}
