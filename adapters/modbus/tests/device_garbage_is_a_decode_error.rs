//! Garbage from a device (a corrupted CRC, a wrong byte count) becomes a
//! decode error on the points concerned, the line recovers on the next
//! good answer, and a serial port that does not exist is reported with
//! its path. The slave is scripted byte by byte to send exactly that
//! garbage.

mod common;

use common::{PtyPair, start};
use ferrogate_modbus::frame;
use ferrogate_sdk::{DeviceState, ErrorCode, Operation, PointErrorKind, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialPortBuilderExt;

#[tokio::test]
async fn corrupted_and_malformed_answers_are_decode_errors() {
    let pty = PtyPair::open().await;
    let mut line = tokio_serial::new(pty.slave.to_string_lossy(), 115_200)
        .open_native_async()
        .expect("open the slave side of the pty");
    let toml = format!(
        "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu\"\nport = \"{}\"\nbaud = 115200\ntimeout = \"300ms\"\n\n\
         [[modbus.device]]\nname = \"d\"\nconnection = \"bus\"\nunit = 4\npoll = \"1h\"\n\
         [[modbus.device.point]]\nname = \"v\"\naddress = 0\n",
        pty.master.display()
    );
    let mut running = start(&toml);
    let mut request = [0u8; 8];

    // 1. The poll gets a frame whose CRC is wrong.
    line.read_exact(&mut request).await.unwrap();
    let mut bad_crc = Vec::new();
    frame::emit_rtu(4, &[3, 2, 0, 7], &mut bad_crc);
    bad_crc[4] ^= 0xFF;
    line.write_all(&bad_crc).await.unwrap();
    let t = running.telemetry("d").await;
    let e = t.readings[0].value.as_ref().unwrap_err();
    assert_eq!(e.kind, PointErrorKind::Decode);
    assert!(e.message.contains("CRC mismatch"), "{e}");

    // 2. A fresh read gets a valid frame with the wrong byte count.
    let wrong_count = async {
        line.read_exact(&mut request).await.unwrap();
        let mut frame_out = Vec::new();
        frame::emit_rtu(4, &[3, 4, 0, 7, 0, 8], &mut frame_out);
        line.write_all(&frame_out).await.unwrap();
    };
    let (outcome, ()) = tokio::join!(
        running.command("d", Operation::Read { points: vec![] }),
        wrong_count
    );
    let e = outcome.unwrap_err();
    assert_eq!(e.code, ErrorCode::DeviceException, "{e}");
    assert!(
        e.message
            .contains("invalid response: 6 bytes in the answer to function code 3, expected 4"),
        "{e}"
    );

    // 3. A good answer is read normally: nothing is stuck.
    let good = async {
        line.read_exact(&mut request).await.unwrap();
        let mut frame_out = Vec::new();
        frame::emit_rtu(4, &[3, 2, 0, 9], &mut frame_out);
        line.write_all(&frame_out).await.unwrap();
    };
    let (outcome, ()) = tokio::join!(
        running.command("d", Operation::Read { points: vec![] }),
        good
    );
    assert_eq!(outcome.unwrap()["v"], Value::UInt(9));
    running.stop().await;
}

#[tokio::test]
async fn a_missing_serial_port_is_reported_with_its_path() {
    let toml = "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu\"\nport = \"/nonexistent/ttyFG0\"\n\
                reconnect_min = \"50ms\"\n\n\
                [[modbus.device]]\nname = \"d\"\nconnection = \"bus\"\nunit = 1\npoll = \"100ms\"\noffline_after = 1\n\
                [[modbus.device.point]]\nname = \"v\"\naddress = 0\n";
    let mut running = start(toml);
    let reason = running
        .status("d", DeviceState::Offline)
        .await
        .unwrap_or_default();
    assert!(
        reason.contains("cannot connect to /nonexistent/ttyFG0"),
        "{reason}"
    );
    let t = running.telemetry("d").await;
    assert_eq!(
        t.readings[0].value.as_ref().unwrap_err().kind,
        PointErrorKind::Io
    );
    running.stop().await;
}
