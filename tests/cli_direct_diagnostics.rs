//! Direct diagnostics that need no daemon, against real devices: libcoap's
//! `coap-server` for `ferrogate coap get|observe`.

mod common;
mod daemon;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ferrogate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(args)
        .output()
        .unwrap()
}

fn coap_server() -> (Peer, u16) {
    let bin = common::require("coap-server-notls", "libcoap3-bin");
    let port = common::free_port();
    let child = Command::new(bin)
        .args(["-A", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peer = Peer(child);
    common::wait_for("coap-server answering", Duration::from_secs(10), || {
        ferrogate(&[
            "coap",
            "get",
            &format!("coap://127.0.0.1:{port}/"),
            "--timeout",
            "500ms",
        ])
        .status
        .success()
    });
    (peer, port)
}

#[test]
fn coap_get_and_observe_a_libcoap_server() {
    let (_server, port) = coap_server();
    let out = ferrogate(&[
        "--json",
        "coap",
        "get",
        &format!("coap://127.0.0.1:{port}/time"),
    ]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["code"], "2.05 Content");
    assert!(!json["payload"].as_str().unwrap().is_empty());

    let out = ferrogate(&[
        "--json",
        "coap",
        "get",
        &format!("coap://127.0.0.1:{port}/no-such"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["code"], "4.04 Not Found");

    let out = ferrogate(&[
        "--json",
        "coap",
        "observe",
        &format!("coap://127.0.0.1:{port}/time"),
        "--count",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "the first response and two notifications");
    let observe: Vec<u64> = lines
        .iter()
        .map(|l| l["observe"].as_u64().unwrap())
        .collect();
    assert!(observe.windows(2).all(|w| w[1] > w[0]), "{observe:?}");
}

#[test]
fn coap_errors_are_clear() {
    let out = ferrogate(&["coap", "get", "http://x/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only coap://"));
    // Nobody listens: a timeout, said as such.
    let port = common::free_port();
    let out = ferrogate(&[
        "coap",
        "get",
        &format!("coap://127.0.0.1:{port}/x"),
        "--timeout",
        "300ms",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no response"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 1234.5 as f32 is 0x449A5000; stored here in each byte order in turn.
const F32_IN_EACH_ORDER: [u16; 8] = [
    0x449A, 0x5000, 0x5000, 0x449A, 0x9A44, 0x0050, 0x0050, 0x9A44,
];

#[test]
fn modbus_probe_finds_each_byte_order() {
    let slave = daemon::pymodbus_slave(
        serde_json::json!({"tcp": 0, "units": {"1": {"hr": F32_IN_EACH_ORDER}, "2": {"hr": [7]}}}),
    );
    let tcp = format!("127.0.0.1:{}", slave.port);
    let out = ferrogate(&[
        "--json",
        "modbus",
        "probe",
        "--tcp",
        &tcp,
        "--address",
        "0",
        "--count",
        "8",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(probe["registers"][4]["hex"], "9a44");
    assert_eq!(probe["registers"][4]["one_based"], 5);
    let f32_at = |address: u64, order: &str| {
        probe["interpretations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["address"] == address && i["type"] == "f32")
            .unwrap()["orders"][order]
            .as_f64()
            .unwrap()
    };
    for (address, order) in [(0, "ABCD"), (2, "CDAB"), (4, "BADC"), (6, "DCBA")] {
        assert_eq!(f32_at(address, order), 1234.5, "{order} at {address}");
        assert_ne!(
            f32_at(address, if order == "ABCD" { "DCBA" } else { "ABCD" }),
            1234.5
        );
    }

    // `read` with the order the probe revealed, by Modicon reference 40003.
    let out = ferrogate(&[
        "--json",
        "modbus",
        "read",
        "--tcp",
        &tcp,
        "--address",
        "40003",
        "--type",
        "f32",
        "--order",
        "CDAB",
    ]);
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["area"], "holding register");
    assert_eq!(read["values"][0]["address"], 2);
    assert_eq!(read["values"][0]["value"], 1234.5);

    // An exception is reported with its code and name, exit 1.
    let out = ferrogate(&[
        "--json",
        "modbus",
        "read",
        "--tcp",
        &tcp,
        "--address",
        "500",
        "--count",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["code"], "device_exception");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exception 2"),
        "{err}"
    );

    // Scan: both configured units answer.
    let out = ferrogate(&[
        "--json",
        "modbus",
        "scan",
        "--tcp",
        &tcp,
        "--from",
        "1",
        "--to",
        "2",
        "--timeout",
        "500ms",
    ]);
    let scan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let units: Vec<u64> = scan["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_u64().unwrap())
        .collect();
    assert_eq!(units, [1, 2]);
}

#[test]
fn modbus_scan_over_an_rtu_line_skips_silent_units() {
    let socat = common::require("socat", "socat");
    let dir = tempfile::tempdir().unwrap();
    let (gw_end, slave_end) = (dir.path().join("gw"), dir.path().join("slave"));
    let pty = common::Reaped(
        Command::new(socat)
            .arg(format!("pty,raw,echo=0,link={}", gw_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", slave_end.display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_for("socat ptys", Duration::from_secs(10), || {
        gw_end.exists() && slave_end.exists()
    });
    let _slave = daemon::pymodbus_slave(serde_json::json!({
        "serial": slave_end.to_str().unwrap(),
        "units": {"3": {"hr": [1]}, "5": {"hr": [2]}, "6": {"hr": [3]}},
        "silent": [6],
    }));
    let out = ferrogate(&[
        "--json",
        "modbus",
        "scan",
        "--rtu",
        gw_end.to_str().unwrap(),
        "--baud",
        "19200",
        "--from",
        "2",
        "--to",
        "6",
        "--timeout",
        "300ms",
    ]);
    drop(pty);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answered: Vec<u64> = scan["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["result"] == "answered")
        .map(|u| u["unit"].as_u64().unwrap())
        .collect();
    assert_eq!(answered, [3, 5], "{scan}");
}
