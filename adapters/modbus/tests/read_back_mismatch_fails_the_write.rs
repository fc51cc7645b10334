//! With `verify_writes`, a device that confirms a write but then holds a
//! different value (a clamped setpoint, a write-protected register that
//! echoes anyway) fails the write instead of reporting it done.

mod common;

use std::collections::BTreeMap;

use common::{PtyPair, start};
use ferrogate_modbus::frame;
use ferrogate_sdk::{ErrorCode, Operation, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialPortBuilderExt;

#[tokio::test]
async fn a_write_the_device_did_not_keep_is_an_error() {
    let pty = PtyPair::open().await;
    let mut line = tokio_serial::new(pty.slave.to_string_lossy(), 115_200)
        .open_native_async()
        .expect("open the slave side of the pty");
    let toml = format!(
        "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu\"\nport = \"{}\"\nbaud = 115200\ntimeout = \"300ms\"\n\n\
         [[modbus.device]]\nname = \"drive\"\nconnection = \"bus\"\nunit = 2\npoll = \"1h\"\nverify_writes = true\n\
         [[modbus.device.point]]\nname = \"speed\"\naddress = 10\nwritable = true\n",
        pty.master.display()
    );
    let running = start(&toml);
    // The first poll: answer 0.
    let mut request = [0u8; 8];
    line.read_exact(&mut request).await.unwrap();
    let mut out = Vec::new();
    frame::emit_rtu(2, &[3, 2, 0, 0], &mut out);
    line.write_all(&out).await.unwrap();

    let device = async {
        // FC06 to register 10 with 1500: echo it, as a device does...
        let mut write = [0u8; 8];
        line.read_exact(&mut write).await.unwrap();
        assert_eq!(
            frame::parse_rtu(&write).unwrap(),
            (2, &[6u8, 0, 10, 0x05, 0xDC][..])
        );
        line.write_all(&write).await.unwrap();
        // ...then the read-back finds 1000 (the device clamped it).
        let mut read = [0u8; 8];
        line.read_exact(&mut read).await.unwrap();
        assert_eq!(
            frame::parse_rtu(&read).unwrap(),
            (2, &[3u8, 0, 10, 0, 1][..])
        );
        let mut out = Vec::new();
        frame::emit_rtu(2, &[3, 2, 0x03, 0xE8], &mut out);
        line.write_all(&out).await.unwrap();
    };
    let command = running.command(
        "drive",
        Operation::Write {
            values: BTreeMap::from([("speed".to_string(), Value::Int(1500))]),
        },
    );
    let (outcome, ()) = tokio::join!(command, device);
    let e = outcome.unwrap_err();
    assert_eq!(e.code, ErrorCode::DeviceException, "{e}");
    assert!(
        e.message
            .contains("accepted 1500 but reads back a different value: 1000"),
        "{e}"
    );
    running.stop().await;
}
