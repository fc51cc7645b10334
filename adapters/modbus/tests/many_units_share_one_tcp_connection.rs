//! Several unit ids behind one TCP endpoint (a serial-to-Ethernet
//! converter that takes one connection): every unit is polled over the
//! one connection by the one line scheduler, and a silent unit is backed
//! off on its own while the others keep their values. The peer is a
//! pymodbus server that closes any second connection while one is open.

mod common;

use common::{Slave, start, value};
use ferrogate_sdk::{DeviceState, Value};
use serde_json::json;

async fn many_units(rtu_over_tcp: bool) {
    let mut slave = Slave::start(json!({
        "tcp": 0,
        "rtu_over_tcp": rtu_over_tcp,
        "refuse_second": true,
        "units": {"1": {"hr": [11]}, "2": {"hr": [22]}, "3": {"hr": [33]}},
    }))
    .await;
    let transport = if rtu_over_tcp { "rtu-over-tcp" } else { "tcp" };
    let mut toml = format!(
        "[[modbus.connection]]\nname = \"converter\"\ntransport = \"{transport}\"\naddress = \"127.0.0.1:{}\"\n\
         timeout = \"200ms\"\nbackoff_after = 2\nbackoff_max = \"10s\"\n",
        slave.port
    );
    for unit in 1..=3 {
        toml.push_str(&format!(
            "\n[[modbus.device]]\nname = \"u{unit}\"\nconnection = \"converter\"\nunit = {unit}\npoll = \"50ms\"\noffline_after = 2\n\
             [[modbus.device.point]]\nname = \"v\"\naddress = 0\n"
        ));
    }
    let mut running = start(&toml);
    for unit in 1..=3u64 {
        let t = running.good_telemetry(&format!("u{unit}")).await;
        assert_eq!(value(&t, "v"), Value::UInt(unit * 11));
    }
    // Unit 2 goes silent: it is offline and backed off, units 1 and 3
    // still answer on the same line.
    slave.silent(2, true).await;
    running.status("u2", DeviceState::Offline).await;
    slave.set(1, 3, 0, &[111]).await;
    slave.set(3, 3, 0, &[333]).await;
    running
        .wait_for("u1 and u3 with their new values", {
            let mut seen = [false, false];
            move |u| {
                if let ferrogate_sdk::Uplink::Telemetry(t) = u {
                    let v = t.readings.first().and_then(|r| r.value.clone().ok());
                    match (t.device.as_str(), v) {
                        ("u1", Some(Value::UInt(111))) => seen[0] = true,
                        ("u3", Some(Value::UInt(333))) => seen[1] = true,
                        _ => {}
                    }
                }
                (seen[0] && seen[1]).then_some(())
            }
        })
        .await;
    slave.silent(2, false).await;
    running.status("u2", DeviceState::Online).await;
    let (accepted, refused) = slave.connections().await;
    assert_eq!(refused, 0, "the gateway never opened a second connection");
    if rtu_over_tcp {
        // RTU framing survives a timeout on the same connection.
        assert_eq!(accepted, 1);
    } else {
        // Modbus TCP re-opens after a timeout (a late answer would be
        // read as the next one's), one connection at a time.
        assert!(accepted >= 1);
    }
    running.stop().await;
    slave.stop().await;
}

#[tokio::test]
async fn units_behind_a_modbus_tcp_converter_share_its_connection() {
    many_units(false).await;
}

#[tokio::test]
async fn units_behind_an_rtu_over_tcp_converter_share_its_connection() {
    many_units(true).await;
}
