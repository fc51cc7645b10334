//! Modbus ASCII (`:`, hex pairs, LRC, CR LF) on a serial line (a socat
//! pseudo-terminal pair) and over TCP, against pymodbus' ASCII framer:
//! several units read with every kind of area, a write confirmed, and the
//! slave's own view of the register checked.

mod common;

use std::collections::BTreeMap;

use common::{PtyPair, Slave, start, value, words};
use ferrogate_sdk::{Operation, Value};
use serde_json::json;

fn device(name: &str, unit: u8) -> String {
    format!(
        "[[modbus.device]]\nname = \"{name}\"\nconnection = \"bus\"\nunit = {unit}\npoll = \"200ms\"\n\
         [[modbus.device.point]]\nname = \"id\"\naddress = 0\nwritable = true\n\
         [[modbus.device.point]]\nname = \"power\"\narea = \"input\"\naddress = 0\ntype = \"f32\"\n\
         [[modbus.device.point]]\nname = \"alarm\"\narea = \"coil\"\naddress = 0\n"
    )
}

fn unit(id: i64) -> serde_json::Value {
    json!({"hr": [id], "ir": words(&(12.5f32 * id as f32).to_be_bytes()), "co": [id % 2]})
}

async fn check(running: &mut common::Running, slave: &mut Slave) {
    for id in [1u64, 9] {
        let t = running.good_telemetry(&format!("m{id}")).await;
        assert_eq!(value(&t, "id"), Value::UInt(id));
        assert_eq!(value(&t, "power"), Value::from_f32(12.5 * id as f32));
        assert_eq!(value(&t, "alarm"), Value::Bool(id % 2 == 1));
    }
    let outcome = running
        .command(
            "m9",
            Operation::Write {
                values: BTreeMap::from([("id".to_string(), Value::UInt(4242))]),
            },
        )
        .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(slave.get(9, 3, 0, 1).await, [4242]);
}

#[tokio::test]
async fn ascii_on_a_serial_line() {
    let pty = PtyPair::open().await;
    let mut slave = Slave::start(json!({
        "serial": pty.slave,
        "ascii": true,
        "units": {"1": unit(1), "9": unit(9)}
    }))
    .await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"bus\"\ntransport = \"ascii\"\nport = \"{}\"\nbaud = 19200\ntimeout = \"500ms\"\n\n{}{}",
        pty.master.display(),
        device("m1", 1),
        device("m9", 9),
    );
    let mut running = start(&toml);
    assert!(
        running.notes.iter().any(|n| n.contains("line")),
        "the serial line's load is estimated: {:?}",
        running.notes
    );
    check(&mut running, &mut slave).await;
    running.stop().await;
    slave.stop().await;
}

#[tokio::test]
async fn ascii_over_tcp() {
    let mut slave = Slave::start(json!({
        "tcp": 0,
        "ascii": true,
        "units": {"1": unit(1), "9": unit(9)}
    }))
    .await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"bus\"\ntransport = \"ascii-over-tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"500ms\"\n\n{}{}",
        slave.port,
        device("m1", 1),
        device("m9", 9),
    );
    let mut running = start(&toml);
    check(&mut running, &mut slave).await;
    running.stop().await;
    slave.stop().await;
}
