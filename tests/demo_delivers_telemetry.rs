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

/// The banner gives the exact commands for the port in use, including the
/// control socket for the CLI, and that socket answers `status`.
#[test]
fn demo_banner_names_the_port_and_the_control_socket() {
    use std::io::BufRead;
    let port = common::free_port();
    let mut demo = common::Reaped(
        Command::new(env!("CARGO_BIN_EXE_ferrogate"))
            .args(["demo", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = demo.0.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut banner = String::new();
    let socket = loop {
        let line = lines.next().expect("banner line").unwrap();
        banner += &line;
        banner.push('\n');
        if let Some(cmd) = line.split("ferrogate status --socket ").nth(1) {
            break cmd.trim().to_string();
        }
    };
    assert!(
        banner.contains(&format!("mosquitto_sub -h 127.0.0.1 -p {port} ")),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("mosquitto_pub -h 127.0.0.1 -p {port} ")),
        "{banner}"
    );
    assert!(banner.contains("$(date +%s%N)"), "a fresh id: {banner}");
    common::wait_for(
        "the demo's control socket",
        std::time::Duration::from_secs(20),
        || {
            Command::new(env!("CARGO_BIN_EXE_ferrogate"))
                .args(["status", "--socket", &socket])
                .output()
                .is_ok_and(|o| o.status.success())
        },
    );
}

/// Port taken: a clear error, and no scratch directory left behind.
#[test]
fn demo_on_a_taken_port_says_so_and_leaves_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["demo", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is another MQTT broker running there"),
        "{err}"
    );
    let scratch = std::env::temp_dir().join(format!("ferrogate-demo-{pid}"));
    assert!(!scratch.exists(), "{scratch:?} left behind");
}
