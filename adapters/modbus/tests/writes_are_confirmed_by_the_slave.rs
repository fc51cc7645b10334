//! Writes reach the slave's registers (checked on the slave side) and are
//! reported ok only after the device's answer; bad writes are refused
//! before anything is sent; on-demand reads are fresh.

mod common;

use std::collections::BTreeMap;

use common::{Slave, start, words};
use ferrogate_sdk::{ErrorCode, Operation, Value};
use serde_json::json;

fn write(point: &str, value: Value) -> Operation {
    Operation::Write {
        values: BTreeMap::from([(point.to_string(), value)]),
    }
}

#[tokio::test]
async fn writes_change_the_slave_and_bad_writes_are_refused() {
    let mut slave = Slave::start(json!({
        "tcp": 0,
        "units": {
            "1": {"hr": vec![0; 20], "co": [0, 0]},
            "2": {"hr": vec![0; 4]},
            "3": {"hr": [5]},
            "4": {"hr": [0]}
        },
        "silent": [4]
    }))
    .await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"300ms\"\n\n\
         [[modbus.device]]\nname = \"ctl\"\nconnection = \"plc\"\nunit = 1\npoll = \"200ms\"\nverify_writes = true\n\
         [[modbus.device.point]]\nname = \"setpoint\"\naddress = 0\nwritable = true\nmin = 0\nmax = 1000\n\
         [[modbus.device.point]]\nname = \"gain\"\naddress = 2\ntype = \"f32\"\norder = \"CDAB\"\nwritable = true\n\
         [[modbus.device.point]]\nname = \"temp\"\naddress = 4\ntype = \"i16\"\nscale = 0.1\nwritable = true\n\
         [[modbus.device.point]]\nname = \"counter\"\naddress = 5\nwritable = false\n\
         [[modbus.device.point]]\nname = \"label\"\naddress = 6\ntype = \"string\"\nlength = 2\nwritable = true\n\
         [[modbus.device.point]]\nname = \"pump\"\narea = \"coil\"\naddress = 1\nwritable = true\n\
         [[modbus.device.point]]\nname = \"fan\"\narea = \"coil\"\naddress = 0\nwritable = true\n\
         [[modbus.device.point]]\nname = \"far\"\naddress = 900\nwritable = true\npoll = \"1h\"\n\n\
         [[modbus.device]]\nname = \"old\"\nconnection = \"plc\"\nunit = 2\npoll = \"200ms\"\nsingle_register_writes = true\n\
         [[modbus.device.point]]\nname = \"total\"\naddress = 0\ntype = \"i32\"\nwritable = true\n\n\
         [[modbus.device]]\nname = \"locked\"\nconnection = \"plc\"\nunit = 3\noperations = [\"read\"]\n\
         [[modbus.device.point]]\nname = \"v\"\naddress = 0\nwritable = true\n\n\
         [[modbus.device]]\nname = \"mute\"\nconnection = \"plc\"\nunit = 4\npoll = \"1h\"\n\
         [[modbus.device.point]]\nname = \"v\"\naddress = 0\nwritable = true\n",
        slave.port
    );
    let running = start(&toml);

    // FC06 with read-back.
    let ok = running
        .command("ctl", write("setpoint", Value::Int(500)))
        .await
        .unwrap();
    assert_eq!(ok["setpoint"], Value::UInt(500));
    assert_eq!(slave.get(1, 3, 0, 1).await, vec![500]);
    // FC16, word-swapped float.
    running
        .command("ctl", write("gain", Value::Float(12.5)))
        .await
        .unwrap();
    let mut expected = words(&12.5f32.to_be_bytes());
    expected.reverse();
    assert_eq!(slave.get(1, 3, 2, 2).await, expected);
    // Scaled: 21.5 with scale 0.1 is raw 215.
    let ok = running
        .command("ctl", write("temp", Value::Float(21.5)))
        .await
        .unwrap();
    assert_eq!(ok["temp"], Value::Float(21.5));
    assert_eq!(slave.get(1, 3, 4, 1).await, vec![215]);
    // A string, NUL padded.
    running
        .command("ctl", write("label", Value::String("AB".into())))
        .await
        .unwrap();
    assert_eq!(slave.get(1, 3, 6, 2).await, words(b"AB\0\0"));
    // FC05.
    running
        .command("ctl", write("pump", Value::Bool(true)))
        .await
        .unwrap();
    assert_eq!(slave.get(1, 1, 1, 1).await, vec![1]);
    // Two coils at consecutive addresses in one command: FC15, read back.
    let ok = running
        .command(
            "ctl",
            Operation::Write {
                values: BTreeMap::from([
                    ("fan".to_string(), Value::Bool(true)),
                    ("pump".to_string(), Value::Bool(false)),
                ]),
            },
        )
        .await
        .unwrap();
    assert_eq!(ok["fan"], Value::Bool(true));
    assert_eq!(ok["pump"], Value::Bool(false));
    assert_eq!(slave.get(1, 1, 0, 2).await, vec![1, 0]);
    running
        .command("ctl", write("pump", Value::Bool(true)))
        .await
        .unwrap();
    // FC06 per register when FC16 is not allowed.
    running
        .command("old", write("total", Value::Int(-2)))
        .await
        .unwrap();
    assert_eq!(slave.get(2, 3, 0, 2).await, vec![0xFFFF, 0xFFFE]);

    // Refusals: nothing reaches the slave.
    let e = running
        .command("ctl", write("counter", Value::Int(1)))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotWritable, "{e}");
    let e = running
        .command("ctl", write("setpoint", Value::Int(5000)))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::OutOfRange, "{e}");
    let e = running
        .command("ctl", write("temp", Value::Float(5000.0)))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::OutOfRange, "{e}");
    let e = running
        .command("ctl", write("setpoint", Value::String("high".into())))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidValue, "{e}");
    let e = running
        .command("ctl", write("label", Value::String("too long".into())))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::OutOfRange, "{e}");
    let e = running
        .command("ctl", write("nope", Value::Int(1)))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownPoint, "{e}");
    let e = running
        .command("locked", write("v", Value::Int(1)))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
    assert_eq!(slave.get(1, 3, 0, 1).await, vec![500]);
    assert_eq!(slave.get(1, 3, 5, 1).await, vec![0]);
    assert_eq!(slave.get(3, 3, 0, 1).await, vec![5]);

    // The device refuses: the write is not reported as done.
    let e = running
        .command("ctl", write("far", Value::Int(1)))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::DeviceException, "{e}");
    assert!(
        e.message.contains("exception 2 (illegal data address)"),
        "{e}"
    );
    // The device does not answer: timeout, never ok.
    let e = running
        .command("mute", write("v", Value::Int(1)))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");

    // A fresh read sees what the slave holds now.
    slave.set(1, 3, 0, &[777]).await;
    let values = running
        .command(
            "ctl",
            Operation::Read {
                points: vec!["setpoint".into(), "pump".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(values["setpoint"], Value::UInt(777));
    assert_eq!(values["pump"], Value::Bool(true));
    assert_eq!(values.len(), 2);
    let e = running
        .command(
            "ctl",
            Operation::Read {
                points: vec!["nope".into()],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownPoint);
    let e = running
        .command("nobody", Operation::Read { points: vec![] })
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownDevice);
    running.stop().await;
    slave.stop().await;
}

/// A bit of a holding register is writable: the register is read, the
/// bit changed, the register written back; the other 15 bits keep what
/// the device had, and read-back confirms it.
#[tokio::test]
async fn a_register_bit_is_written_without_touching_its_neighbours() {
    let mut slave = Slave::start(json!({"tcp": 0, "units": {"1": {"hr": [0xA001]}}})).await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"300ms\"\n\n\
         [[modbus.device]]\nname = \"ctl\"\nconnection = \"plc\"\nunit = 1\npoll = \"1h\"\nverify_writes = true\n\
         [[modbus.device.point]]\nname = \"run\"\naddress = 0\ntype = \"bool\"\nbit = 4\nwritable = true\n\
         [[modbus.device.point]]\nname = \"ready\"\naddress = 0\ntype = \"bool\"\nbit = 0\nwritable = true\n",
        slave.port
    );
    let running = start(&toml);
    let outcome = running
        .command("ctl", write("run", Value::Bool(true)))
        .await;
    assert_eq!(
        outcome,
        Ok(BTreeMap::from([("run".into(), Value::Bool(true))]))
    );
    assert_eq!(slave.get(1, 3, 0, 1).await, [0xA011]);
    // The device changes another bit meanwhile: the next write keeps it.
    slave.set(1, 3, 0, &[0xA013]).await;
    let outcome = running
        .command("ctl", write("ready", Value::Bool(false)))
        .await;
    assert_eq!(
        outcome,
        Ok(BTreeMap::from([("ready".into(), Value::Bool(false))]))
    );
    assert_eq!(slave.get(1, 3, 0, 1).await, [0xA012]);
    let refused = running.command("ctl", write("run", Value::UInt(7))).await;
    assert_eq!(refused.unwrap_err().code, ErrorCode::InvalidValue);
    assert_eq!(slave.get(1, 3, 0, 1).await, [0xA012]);
    running.stop().await;
    slave.stop().await;
}
