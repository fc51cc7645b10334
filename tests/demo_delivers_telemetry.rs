//! `ferrogate demo`, started as a newcomer would, runs its own broker and
//! simulated devices; a plain `mosquitto_sub` sees their telemetry.

mod common;

use std::process::{Command, Stdio};

#[test]
fn demo_telemetry_reaches_mosquitto_sub() {
    let sub_bin = common::require("mosquitto_sub", "mosquitto-clients");
    let port = common::free_port();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["demo", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    common::wait_for(
        "the embedded broker to listen",
        std::time::Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let out = Command::new(sub_bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "311"])
        .args([
            "-t",
            "ferrogate/demo/devices/meter-1/telemetry",
            "-C",
            "2",
            "-W",
            "30",
            "-v",
        ])
        .output()
        .unwrap();
    let _ = demo.kill();
    let _ = demo.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "mosquitto_sub saw: {text}");
    for line in lines {
        let (topic, payload) = line.split_once(' ').unwrap();
        assert_eq!(topic, "ferrogate/demo/devices/meter-1/telemetry");
        let json: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert!(json["values"]["voltage_l1"].as_f64().is_some(), "{json}");
        assert!(json["seq"].as_u64().unwrap() >= 1);
    }
}
