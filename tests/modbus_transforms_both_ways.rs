//! Value transforms from `[[report]]` on a real Modbus device (pymodbus),
//! through the daemon and mosquitto: the register is published scaled and
//! converted (and the meta says the new unit), a write in the published
//! unit reaches the register inverted, outside the clamp range it is
//! refused before the device sees it.

mod common;
mod daemon;

use std::time::Duration;

use common::{Mosquitto, Subscriber};
use daemon::{ConfigDir, Daemon, pymodbus_slave};

const ROOT: &str = "ferrogate/gw-xf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_is_published_converted_and_written_back_inverted() {
    let mut slave = pymodbus_slave(serde_json::json!({"tcp": 0, "units": {"1": {"hr": [250]}}}));
    let broker = Mosquitto::start();
    let devices = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\n\n\
         [[modbus.device]]\nname = \"oven\"\nconnection = \"plc\"\nunit = 1\npoll = \"100ms\"\n\n\
         [[modbus.device.point]]\nname = \"temp\"\naddress = 0\ntype = \"i16\"\nunit = \"degC\"\nwritable = true\n\n\
         [[report]]\ndevice = \"oven\"\n\n\
         [[report.point]]\nname = \"temp\"\nscale = 0.1\nconvert = \"degC -> degF\"\nclamp_max = 400.0\n",
        slave.port
    );
    let config = ConfigDir::new("gw-xf", broker.port, "5", &devices);
    let sub = Subscriber::start(broker.port, &format!("{ROOT}/#")).await;
    let _gw = Daemon::start(config.path());

    let meta = sub
        .wait_for(
            &format!("{ROOT}/devices/oven/meta"),
            Duration::from_secs(20),
            |m| !m.payload.is_empty(),
        )
        .await
        .json();
    let point = &meta["points"][0];
    assert_eq!(point["unit"], "degF", "{meta}");
    assert_eq!(point["type"], "f64");
    assert_eq!(point["max"], 400.0);

    // 250 × 0.1 = 25 °C = 77 °F.
    let t = sub
        .wait_for(
            &format!("{ROOT}/devices/oven/telemetry"),
            Duration::from_secs(20),
            |_| true,
        )
        .await
        .json();
    let f = t["values"]["temp"].as_f64().expect("a number");
    assert!((f - 77.0).abs() < 1e-9, "{t}");

    // 86 °F = 30 °C = register 300.
    let cmd = format!("{ROOT}/devices/oven/cmd");
    sub.publish(
        &cmd,
        br#"{"id":"w1","op":"write","point":"temp","value":86}"#,
        None,
    )
    .await;
    let result = sub
        .wait_for(
            &format!("{ROOT}/devices/oven/cmd/result"),
            Duration::from_secs(20),
            |m| m.json()["id"] == "w1",
        )
        .await
        .json();
    assert_eq!(result["ok"], true, "{result}");
    let confirmed = result["values"]["temp"].as_f64().expect("a number");
    assert!((confirmed - 86.0).abs() < 1e-9, "{result}");
    assert_eq!(slave.get(1, 3, 0, 1), [300]);

    // Above the clamp: refused, the register keeps 300.
    sub.publish(
        &cmd,
        br#"{"id":"w2","op":"write","point":"temp","value":450}"#,
        None,
    )
    .await;
    let result = sub
        .wait_for(
            &format!("{ROOT}/devices/oven/cmd/result"),
            Duration::from_secs(20),
            |m| m.json()["id"] == "w2",
        )
        .await
        .json();
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["error"]["code"], "out_of_range", "{result}");
    assert_eq!(slave.get(1, 3, 0, 1), [300]);
}
