//! Direct diagnostics that need no daemon, against real devices: libcoap's
//! `coap-server` for `ferrogate coap get|observe`.

mod common;

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
