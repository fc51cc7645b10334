//! `ferrogate modbus plan`: the requests each poll cycle sends, from the
//! configuration alone (no device, no daemon): function, unit, start,
//! count, the points served, bridged gaps and a serial line's time per
//! cycle; one device on its own; an unknown device and a broken
//! configuration are errors.

mod daemon;

use std::process::Command;

use daemon::{ConfigDir, binary};

const DEVICES: &str = "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu\"\nport = \"/dev/ttyUSB9\"\nbaud = 9600\n\n\
    [[modbus.device]]\nname = \"meter\"\nconnection = \"bus\"\nunit = 7\npoll = \"1s\"\nmax_gap = 4\n\
    [[modbus.device.point]]\nname = \"a\"\naddress = 0\n\
    [[modbus.device.point]]\nname = \"b\"\naddress = 3\ntype = \"u32\"\n\
    [[modbus.device.point]]\nname = \"far\"\naddress = 100\n\n\
    [[modbus.device]]\nname = \"drive\"\nconnection = \"bus\"\nunit = 9\npoll = \"500ms\"\n\
    [[modbus.device.point]]\nname = \"run\"\narea = \"coil\"\naddress = 0\n";

fn plan(config: &ConfigDir, args: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .args(["--json", "modbus", "plan", "--config"])
        .arg(config.path())
        .args(args)
        .output()
        .expect("run ferrogate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_plan_of_a_serial_line_and_of_one_device() {
    let config = ConfigDir::new("gw-plan", 1883, "5", DEVICES);
    let (code, out) = plan(&config, &[]);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON envelope");
    let line = &json["result"]["connections"][0];
    assert_eq!(line["transport"], "rtu /dev/ttyUSB9 9600 8E1");
    let meter = &line["devices"][0];
    assert_eq!(meter["device"], "meter");
    let requests = &meter["groups"][0]["requests"];
    assert_eq!(requests[0]["function"], 3);
    assert_eq!(requests[0]["unit"], 7);
    assert_eq!(
        (requests[0]["start"].as_u64(), requests[0]["count"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(requests[0]["points"], serde_json::json!(["a", "b"]));
    assert_eq!(requests[0]["bridged"], serde_json::json!([[1, 2]]));
    assert_eq!(requests[1]["start"], 100);
    let line_time = meter["groups"][0]["line_time_ms"].as_f64().expect("serial");
    assert!(line_time > 20.0 && line_time < 1000.0, "{line_time}");
    let load = line["load"].as_f64().expect("serial");
    assert!(load > 0.0 && load < 1.0, "{load}");

    let (code, out) = plan(&config, &["drive"]);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let devices = &json["result"]["connections"][0]["devices"];
    assert_eq!(devices.as_array().map(Vec::len), Some(1));
    assert_eq!(devices[0]["groups"][0]["requests"][0]["function"], 1);
}

#[test]
fn an_unknown_device_and_a_broken_config_are_errors() {
    let config = ConfigDir::new("gw-plan", 1883, "5", DEVICES);
    let (code, out) = plan(&config, &["nope"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown_device"), "{out}");
    let broken = ConfigDir::new(
        "gw-plan",
        1883,
        "5",
        &DEVICES.replace("baud = 9600", "baud = 9"),
    );
    let (code, out) = plan(&broken, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid_config") && out.contains("baud rate 9 is out of range"),
        "{out}"
    );
}
