//! RTU over a serial line (a socat pseudo-terminal pair) with several
//! units on it, and RTU framing over TCP (a serial device server), both
//! against a real pymodbus slave.

mod common;

use common::{PtyPair, Slave, start, value, words};
use ferrogate_sdk::Value;
use serde_json::json;

fn device(name: &str, unit: u8) -> String {
    format!(
        "[[modbus.device]]\nname = \"{name}\"\nconnection = \"bus\"\nunit = {unit}\npoll = \"300ms\"\n\
         [[modbus.device.point]]\nname = \"id\"\naddress = 0\n\
         [[modbus.device.point]]\nname = \"energy\"\naddress = 1\ntype = \"u32\"\norder = \"CDAB\"\n\
         [[modbus.device.point]]\nname = \"tag\"\naddress = 3\ntype = \"string\"\nlength = 2\n\
         [[modbus.device.point]]\nname = \"alarm\"\narea = \"coil\"\naddress = 0\n\
         [[modbus.device.point]]\nname = \"power\"\narea = \"input\"\naddress = 0\ntype = \"f32\"\n"
    )
}

fn unit(id: i64) -> serde_json::Value {
    let energy = 1_000_000u32 + id as u32;
    let mut hr = vec![id, i64::from(energy & 0xFFFF), i64::from(energy >> 16)];
    hr.extend(words(format!("U{id:03}").as_bytes()));
    let power = words(&(100.25f32 * id as f32).to_be_bytes());
    json!({"hr": hr, "ir": power, "co": [id % 2]})
}

fn check(t: &ferrogate_sdk::Telemetry, id: u64) {
    assert_eq!(value(t, "id"), Value::UInt(id));
    assert_eq!(value(t, "energy"), Value::UInt(1_000_000 + id));
    assert_eq!(value(t, "tag"), Value::String(format!("U{id:03}")));
    assert_eq!(value(t, "alarm"), Value::Bool(id % 2 == 1));
    assert_eq!(
        value(t, "power"),
        Value::Float(f64::from(100.25f32 * id as f32))
    );
}

#[tokio::test]
async fn three_units_on_one_serial_line() {
    let pty = PtyPair::open().await;
    let slave = Slave::start(json!({
        "serial": pty.slave,
        "units": {"1": unit(1), "2": unit(2), "7": unit(7)}
    }))
    .await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu\"\nport = \"{}\"\nbaud = 115200\nparity = \"none\"\ntimeout = \"500ms\"\n\n{}{}{}",
        pty.master.display(),
        device("m1", 1),
        device("m2", 2),
        device("m7", 7)
    );
    let mut running = start(&toml);
    assert!(
        running
            .notes
            .iter()
            .any(|n| n.contains("line bus: 115200 baud 8N1, 3 device(s)")),
        "{:?}",
        running.notes
    );
    for (name, id) in [("m1", 1), ("m2", 2), ("m7", 7)] {
        let t = running.good_telemetry(name).await;
        check(&t, id);
    }
    running.stop().await;
    slave.stop().await;
}

#[tokio::test]
async fn rtu_framing_over_tcp() {
    let slave = Slave::start(json!({
        "tcp": 0,
        "rtu_over_tcp": true,
        "units": {"3": unit(3), "4": unit(4)}
    }))
    .await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu-over-tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"500ms\"\n\n{}{}",
        slave.port,
        device("d3", 3),
        device("d4", 4)
    );
    let mut running = start(&toml);
    check(&running.good_telemetry("d3").await, 3);
    check(&running.good_telemetry("d4").await, 4);
    running.stop().await;
    slave.stop().await;
}
