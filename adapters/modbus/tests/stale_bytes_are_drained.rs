//! A reply that arrives after its request timed out stays on an RTU line;
//! the adapter drains it before the next request instead of taking it for
//! the next answer. The slave here is scripted byte by byte, to put a late
//! reply on the line exactly when the test wants it.

mod common;

use common::{PtyPair, start};
use ferrogate_modbus::frame;
use ferrogate_sdk::{Operation, PointErrorKind, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialPortBuilderExt;

fn reply(value: u16) -> Vec<u8> {
    reply_from(5, value)
}

fn reply_from(unit: u8, value: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let [hi, lo] = value.to_be_bytes();
    frame::emit_rtu(unit, &[3, 2, hi, lo], &mut out);
    out
}

#[tokio::test]
async fn a_late_reply_is_not_taken_for_the_next_answer() {
    let pty = PtyPair::open().await;
    let mut line = tokio_serial::new(pty.slave.to_string_lossy(), 115_200)
        .open_native_async()
        .expect("open the slave side of the pty");
    let toml = format!(
        "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu\"\nport = \"{}\"\nbaud = 115200\ntimeout = \"200ms\"\n\n\
         [[modbus.device]]\nname = \"d\"\nconnection = \"bus\"\nunit = 5\npoll = \"1h\"\n\
         [[modbus.device.point]]\nname = \"v\"\naddress = 0\n",
        pty.master.display()
    );
    let mut running = start(&toml);

    // First poll: hear it, do not answer; the adapter reports a timeout.
    let mut request = [0u8; 8];
    line.read_exact(&mut request).await.unwrap();
    assert_eq!(
        frame::parse_rtu(&request).unwrap(),
        (5, &[3u8, 0, 0, 0, 1][..])
    );
    let t = running.telemetry("d").await;
    assert_eq!(
        t.readings[0].value.as_ref().unwrap_err().kind,
        PointErrorKind::Timeout
    );

    // Now the late reply (value 111) lands on the line, and is waiting
    // at the adapter's end before it is asked again.
    line.write_all(&reply(111)).await.unwrap();
    line.flush().await.unwrap();
    pty.wait_for_input_at_master(reply(111).len()).await;

    // A fresh read: the adapter must drain 111 and take 222, the real answer.
    let answer = async {
        let mut request = [0u8; 8];
        line.read_exact(&mut request).await.unwrap();
        line.write_all(&reply(222)).await.unwrap();
    };
    let read = running.command("d", Operation::Read { points: vec![] });
    let (outcome, ()) = tokio::join!(read, answer);
    assert_eq!(outcome.unwrap()["v"], Value::UInt(222));
    running.stop().await;
}

#[tokio::test]
async fn another_units_late_reply_during_a_transaction_is_skipped() {
    let pty = PtyPair::open().await;
    let mut line = tokio_serial::new(pty.slave.to_string_lossy(), 115_200)
        .open_native_async()
        .expect("open the slave side of the pty");
    let toml = format!(
        "[[modbus.connection]]\nname = \"bus\"\ntransport = \"rtu\"\nport = \"{}\"\nbaud = 115200\ntimeout = \"2s\"\n\n\
         [[modbus.device]]\nname = \"d\"\nconnection = \"bus\"\nunit = 5\npoll = \"1h\"\n\
         [[modbus.device.point]]\nname = \"v\"\naddress = 0\n",
        pty.master.display()
    );
    let mut running = start(&toml);
    // Unit 9's late answer lands while unit 5's request is in flight, then
    // unit 5 answers: the adapter takes 5's value.
    let mut request = [0u8; 8];
    line.read_exact(&mut request).await.unwrap();
    let mut both = reply_from(9, 999);
    both.extend_from_slice(&reply(333));
    line.write_all(&both).await.unwrap();
    let t = running.telemetry("d").await;
    assert_eq!(t.readings[0].value, Ok(Value::UInt(333)));
    running.stop().await;
}
