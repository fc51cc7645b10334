//! Dial-in devices (4G DTUs): the gateway listens, the device connects
//! out, sends its registration packet, and is then polled over that
//! connection (the gateway is still the master). A connection with
//! another registration is closed; after the device reconnects it is the
//! same device again. The device is a Python client answering with
//! pymodbus' RTU framer and datastore (`tests/peers/dtu.py`).

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{WAIT, start, value};
use ferrogate_sdk::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

struct Dtu {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Dtu {
    fn start(port: u16, registration: &str, units: serde_json::Value, heartbeat: bool) -> Dtu {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dtu.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(registration)
            .arg(units.to_string())
            .args(heartbeat.then_some("heartbeat"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with pymodbus");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Dtu {
            _child: child,
            stdin,
            stdout,
        }
    }

    async fn line(&mut self) -> String {
        timeout(WAIT, self.stdout.next_line())
            .await
            .expect("the DTU said something in time")
            .expect("stdout")
            .expect("the DTU exited (is pymodbus installed?)")
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the DTU");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn a_dial_in_device_is_polled_and_keeps_its_identity_across_reconnects() {
    let port = free_port();
    let toml = format!(
        "[[modbus.connection]]\nname = \"dtu\"\ntransport = \"dial-in\"\nlisten = \"127.0.0.1:{port}\"\n\
         registration = \"IMEI860000000000042\"\ntimeout = \"500ms\"\nconnect_timeout = \"1s\"\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\n\n\
         [[modbus.device]]\nname = \"well-7\"\nconnection = \"dtu\"\nunit = 7\npoll = \"100ms\"\n\
         [[modbus.device.point]]\nname = \"level\"\naddress = 0\n"
    );
    let mut running = start(&toml);
    // Someone else dials in first: closed, never polled.
    let mut impostor = Dtu::start(
        port,
        "IMEI999",
        serde_json::json!({"7": {"hr": [666]}}),
        false,
    );
    assert_eq!(impostor.line().await, "CONNECTED");
    assert_eq!(impostor.line().await, "CLOSED");

    let mut dtu = Dtu::start(
        port,
        "IMEI860000000000042",
        serde_json::json!({"7": {"hr": [42]}}),
        false,
    );
    assert_eq!(dtu.line().await, "CONNECTED");
    let t = running.good_telemetry("well-7").await;
    assert_eq!(value(&t, "level"), Value::UInt(42));

    // The modem drops the link and dials in again with a new value.
    dtu.send("set 7 3 0 43").await;
    assert_eq!(dtu.line().await, "OK");
    dtu.send("reconnect").await;
    assert_eq!(dtu.line().await, "CONNECTED");
    running
        .wait_for("level 43 after the reconnect", |u| match u {
            ferrogate_sdk::Uplink::Telemetry(t)
                if t.device == "well-7"
                    && t.readings.iter().any(|r| r.value == Ok(Value::UInt(43))) =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    running.stop().await;
}

/// A modem that repeats its registration as a heartbeat, here just before
/// every answer: the repeats are dropped, the answers read.
#[tokio::test]
async fn a_repeated_registration_between_frames_is_a_heartbeat() {
    let port = free_port();
    let toml = format!(
        "[[modbus.connection]]\nname = \"dtu\"\ntransport = \"dial-in\"\nlisten = \"127.0.0.1:{port}\"\n\
         registration = \"HB-860000000000042\"\ntimeout = \"500ms\"\n\n\
         [[modbus.device]]\nname = \"well-8\"\nconnection = \"dtu\"\nunit = 8\npoll = \"100ms\"\n\
         [[modbus.device.point]]\nname = \"level\"\naddress = 0\n"
    );
    let mut running = start(&toml);
    let mut dtu = Dtu::start(
        port,
        "HB-860000000000042",
        serde_json::json!({"8": {"hr": [8]}}),
        true,
    );
    assert_eq!(dtu.line().await, "CONNECTED");
    for _ in 0..3 {
        let t = running.good_telemetry("well-8").await;
        assert_eq!(value(&t, "level"), Value::UInt(8));
    }
    running.stop().await;
}
