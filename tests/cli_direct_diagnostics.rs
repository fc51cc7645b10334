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
    assert_eq!(json["ok"], true);
    assert_eq!(json["result"]["code"], "2.05 Content");
    assert!(!json["result"]["payload"].as_str().unwrap().is_empty());

    let out = ferrogate(&[
        "--json",
        "coap",
        "get",
        &format!("coap://127.0.0.1:{port}/no-such"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["error"]["message"], "4.04 Not Found");
    assert_eq!(json["error"]["response"]["code"], "4.04 Not Found");

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
        .map(|l| l["result"]["observe"].as_u64().unwrap())
        .collect();
    assert!(observe.windows(2).all(|w| w[1] > w[0]), "{observe:?}");
}

#[test]
fn coap_errors_are_clear() {
    let out = ferrogate(&["coap", "get", "http://x/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("coap:// or coaps://"));
    let out = ferrogate(&["coap", "get", "coaps://127.0.0.1/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --psk-identity and --psk-key"));
    let out = ferrogate(&[
        "coap",
        "get",
        "coaps://127.0.0.1/x",
        "--psk-identity",
        "a",
        "--psk-key",
        "xyz",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hex"),
        "{out:?}"
    );
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
    let probe = &probe["result"];
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
    let read = &read["result"];
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
        "--units",
        "1-2",
        "--timeout",
        "500ms",
    ]);
    let scan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let units: Vec<u64> = scan["result"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_u64().unwrap())
        .collect();
    assert_eq!(units, [1, 2]);
}

#[test]
fn modbus_write_registers_and_coils_and_poll() {
    let mut slave = daemon::pymodbus_slave(
        serde_json::json!({"tcp": 0, "units": {"1": {"hr": [0, 0, 0, 0], "co": [false, false, false]}}}),
    );
    let tcp = format!("127.0.0.1:{}", slave.port);
    let modbus = |args: &[&str]| {
        let mut all = vec!["--json", "modbus"];
        all.extend_from_slice(args);
        let out = ferrogate(&all);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        (out.status.code(), json)
    };
    // One register (FC 6), several (FC 16), a typed value, coils (FC 5, 15).
    let (code, w) = modbus(&["write", "--tcp", &tcp, "--address", "0", "7"]);
    assert_eq!(
        (code, &w["result"]["function"]),
        (Some(0), &6.into()),
        "{w}"
    );
    let (_, w) = modbus(&["write", "--tcp", &tcp, "--address", "1", "8", "-1"]);
    assert_eq!(w["result"]["function"], 16, "{w}");
    assert_eq!(slave.get(1, 3, 0, 3), [7, 8, 65535]);
    modbus(&[
        "write",
        "--tcp",
        &tcp,
        "--address",
        "40003",
        "--type",
        "f32",
        "229.8",
    ]);
    let (_, r) = modbus(&["read", "--tcp", &tcp, "--address", "2", "--type", "f32"]);
    assert_eq!(
        r["result"]["values"][0]["value"], 229.8,
        "shortest f32: {r}"
    );
    let (_, w) = modbus(&[
        "write",
        "--tcp",
        &tcp,
        "--area",
        "coil",
        "--address",
        "0",
        "on",
    ]);
    assert_eq!(w["result"]["function"], 5, "{w}");
    let (_, w) = modbus(&[
        "write",
        "--tcp",
        &tcp,
        "--area",
        "coil",
        "--address",
        "1",
        "1",
        "true",
    ]);
    assert_eq!(w["result"]["function"], 15, "{w}");
    assert_eq!(slave.get(1, 1, 0, 3), [1, 1, 1]);

    // Over the protocol limit: refused before anything is sent, exit 1.
    let (code, e) = modbus(&["read", "--tcp", &tcp, "--address", "0", "--count", "126"]);
    assert_eq!(code, Some(1));
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 125"),
        "{e}"
    );

    // --poll repeats the read, one envelope per line, each with its time.
    let out = ferrogate(&[
        "--json",
        "modbus",
        "read",
        "--tcp",
        &tcp,
        "--address",
        "0",
        "--poll",
        "50ms",
        "--polls",
        "3",
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l["ok"] == true && l["result"]["ts"].is_u64())
    );
    assert_eq!(lines[2]["result"]["values"][0]["value"], 7);
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
        "--units",
        "2-6",
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
    let answered: Vec<u64> = scan["result"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["result"] == "answered")
        .map(|u| u["unit"].as_u64().unwrap())
        .collect();
    assert_eq!(answered, [3, 5], "{scan}");
}

/// `ferrogate ... | head`: a reader that goes away ends the command
/// quietly, never with a panic.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["completions", "bash"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "nothing said about the closed pipe: {err}");
}
