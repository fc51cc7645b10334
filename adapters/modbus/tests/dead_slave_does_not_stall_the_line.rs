//! A unit that stops answering on a shared RTU line is backed off and
//! reported offline, while the other units on the line keep their poll
//! rate; it comes back online on its first answer.

mod common;

use common::{PtyPair, Slave, start, value};
use ferrogate_sdk::{DeviceState, ErrorCode, Operation, PointErrorKind, Uplink, Value};
use serde_json::json;

fn device(name: &str, unit: u8) -> String {
    format!(
        "[[modbus.device]]\nname = \"{name}\"\nconnection = \"bus\"\nunit = {unit}\npoll = \"100ms\"\noffline_after = 2\n\
         [[modbus.device.point]]\nname = \"id\"\naddress = 0\n\
         [[modbus.device.point]]\nname = \"other\"\narea = \"input\"\naddress = 0\n"
    )
}

#[tokio::test]
async fn silent_unit_is_backed_off_and_the_others_keep_polling() {
    let pty = PtyPair::open().await;
    let mut slave = Slave::start(json!({
        "serial": pty.slave,
        "units": {"1": {"hr": [1]}, "2": {"hr": [2]}, "3": {"hr": [3]}},
        "silent": [3]
    }))
    .await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu\"\nport = \"{}\"\nbaud = 115200\n\
         timeout = \"300ms\"\nbackoff_after = 2\nbackoff_max = \"3s\"\n\n{}{}{}",
        pty.master.display(),
        device("m1", 1),
        device("m2", 2),
        device("m3", 3)
    );
    let mut running = start(&toml);
    let reason = running.status("m3", DeviceState::Offline).await;
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("no response from unit 3")),
        "{reason:?}"
    );
    // A command for it is not reported as done: refused as offline while
    // the unit is backed off, or a timeout if it falls on a retry.
    let e = running
        .command("m3", Operation::Read { points: vec![] })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code, ErrorCode::DeviceOffline | ErrorCode::Timeout),
        "{e}"
    );

    // While m1 delivers 20 cycles, m3 is tried far less often than once per
    // cycle (it is backed off), and m2 keeps pace with m1.
    let (mut m1, mut m2, mut m3_failures) = (0, 0, 0);
    while m1 < 20 {
        let uplink = running
            .wait_for("telemetry", |u| match u {
                Uplink::Telemetry(t) => Some(t.clone()),
                _ => None,
            })
            .await;
        match uplink.device.as_str() {
            "m1" => {
                assert_eq!(value(&uplink, "id"), Value::UInt(1));
                m1 += 1;
            }
            "m2" => {
                assert_eq!(value(&uplink, "id"), Value::UInt(2));
                m2 += 1;
            }
            "m3" => {
                for r in &uplink.readings {
                    let e = r.value.as_ref().expect_err("m3 is silent");
                    assert_eq!(e.kind, PointErrorKind::Timeout, "{e}");
                }
                m3_failures += 1;
            }
            other => panic!("unexpected device {other}"),
        }
    }
    assert!(
        m2 >= 18,
        "m2 polled {m2} times while m1 was polled 20 times"
    );
    assert!(
        m3_failures <= 6,
        "the silent unit was tried {m3_failures} times in 20 cycles"
    );

    slave.silent(3, false).await;
    running.status("m3", DeviceState::Online).await;
    let t = running.good_telemetry("m3").await;
    assert_eq!(value(&t, "id"), Value::UInt(3));
    running.stop().await;
    slave.stop().await;
}
