//! When the TCP slave goes away the device goes offline with the reason,
//! points carry errors (never stale values), and once the slave is back
//! the adapter reconnects by itself and reports fresh values. After a
//! timeout the TCP connection is replaced, so a late reply cannot be taken
//! for the next answer.

mod common;

use common::{Slave, start, value};
use ferrogate_modbus::frame;
use ferrogate_sdk::{DeviceState, Operation, PointErrorKind, Uplink, Value};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn reconnects_after_the_slave_restarts() {
    let slave = Slave::start(json!({"tcp": 0, "units": {"1": {"hr": [41]}}})).await;
    let port = slave.port;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"300ms\"\n\
         reconnect_min = \"100ms\"\nreconnect_max = \"400ms\"\n\n\
         [[modbus.device]]\nname = \"meter\"\nconnection = \"plc\"\nunit = 1\npoll = \"100ms\"\noffline_after = 2\n\
         [[modbus.device.point]]\nname = \"v\"\naddress = 0\n"
    );
    let mut running = start(&toml);
    running.status("meter", DeviceState::Online).await;
    assert_eq!(
        value(&running.good_telemetry("meter").await, "v"),
        Value::UInt(41)
    );

    slave.stop().await;
    let reason = running.status("meter", DeviceState::Offline).await;
    assert!(reason.is_some(), "offline needs a reason");
    // Every reading after the outage is an error, not the old value.
    let t = running
        .wait_for("failed telemetry", |u| match u {
            Uplink::Telemetry(t) if t.readings.iter().all(|r| r.value.is_err()) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!(t.readings.len(), 1);

    let slave = Slave::start(json!({"tcp": port, "units": {"1": {"hr": [42]}}})).await;
    running.status("meter", DeviceState::Online).await;
    assert_eq!(
        value(&running.good_telemetry("meter").await, "v"),
        Value::UInt(42)
    );
    running.stop().await;
    slave.stop().await;
}

#[tokio::test]
async fn a_timeout_replaces_the_tcp_connection() {
    // A scripted slave, to see the connections themselves.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"200ms\"\n\n\
         [[modbus.device]]\nname = \"meter\"\nconnection = \"plc\"\nunit = 1\npoll = \"1h\"\n\
         [[modbus.device.point]]\nname = \"v\"\naddress = 0\n"
    );
    let mut running = start(&toml);
    let (mut first, _) = listener.accept().await.unwrap();
    let mut request = [0u8; 12];
    first.read_exact(&mut request).await.unwrap();
    // No answer: the poll times out.
    let t = running.telemetry("meter").await;
    assert_eq!(
        t.readings[0].value.as_ref().unwrap_err().kind,
        PointErrorKind::Timeout
    );

    // The next transaction comes on a new connection; the old one is closed.
    let answer = async {
        let (mut second, _) = listener.accept().await.unwrap();
        second.read_exact(&mut request).await.unwrap();
        let mut reply = Vec::new();
        frame::emit_tcp(
            u16::from_be_bytes([request[0], request[1]]),
            1,
            &[3, 2, 0, 42],
            &mut reply,
        );
        second.write_all(&reply).await.unwrap();
        second
    };
    let (outcome, _second) = tokio::join!(
        running.command("meter", Operation::Read { points: vec![] }),
        answer
    );
    assert_eq!(outcome.unwrap()["v"], Value::UInt(42));
    let mut rest = Vec::new();
    assert_eq!(
        first.read_to_end(&mut rest).await.unwrap(),
        0,
        "the timed-out connection is closed"
    );
    running.stop().await;
}
