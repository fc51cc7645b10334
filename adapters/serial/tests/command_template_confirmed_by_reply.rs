//! A setpoint written through a command template is ok only when the
//! instrument's reply confirms it; a refusal is device_exception, silence
//! is timeout, and invalid values never reach the line.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use ferrogate_sdk::{Command, ErrorCode, Operation, Outcome, Uplink, Value};

fn write(values: &[(&str, Value)]) -> Command {
    Command {
        id: "w".into(),
        device: "oven".into(),
        op: Operation::Write {
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        },
        deadline: tokio::time::Instant::now() + Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setpoint_write_needs_the_confirming_reply() {
    let pair = PtyPair::new("command");
    let mut oven = pair.instrument();
    let toml = format!(
        r#"
[[serial.device]]
name = "oven"
port = "{}"
allow_raw_send = true

[serial.device.framing]
delimiter = '\r'

[serial.device.parser]
kind = "regex"
pattern = '^PV=(?P<pv>[-0-9.]+)$'

[[serial.device.point]]
name = "pv"
unit = "°C"

[[serial.device.command]]
name = "setpoint"
template = "SET {{value:.1}}\r"
type = "f64"
min = 0.0
max = 100.0
reply = '^OK$'
error_reply = '^ERR'
timeout = "1s"

[[serial.device.command]]
name = "heater"
template = 'HEAT {{value}}\r'
type = "bool"
reply = '^OK$'
"#,
        pair.adapter_end().display()
    );
    let mut running = start(&toml);
    let meta = running
        .expect("meta", |u| matches!(u, Uplink::Meta(_)))
        .await;
    let Uplink::Meta(meta) = meta else {
        unreachable!()
    };
    let sp = meta.points.iter().find(|p| p.name == "setpoint").unwrap();
    assert!(sp.writable);
    assert_eq!((sp.min, sp.max), (Some(0.0), Some(100.0)));
    assert_eq!(
        meta.operations.as_deref(),
        Some(&["read".to_string(), "write".into(), "send".into()][..])
    );

    // Confirmed: the oven reports a reading first, then OK.
    let (outcome, ()) = tokio::join!(
        running
            .harness
            .command(write(&[("setpoint", Value::Float(21.5))])),
        async {
            assert_eq!(oven.receive(b"\r").await, b"SET 21.5");
            oven.send(b"PV=20.0\rOK\r").await;
        }
    );
    assert_eq!(outcome.unwrap().get("setpoint"), Some(&Value::Float(21.5)));
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&t).unwrap(), "pv"),
        Some(&Value::Float(20.0))
    );

    // Refused by the device.
    let (outcome, ()) = tokio::join!(
        running
            .harness
            .command(write(&[("setpoint", Value::Int(30))])),
        async {
            assert_eq!(oven.receive(b"\r").await, b"SET 30.0");
            oven.send(b"ERR 3\r").await;
        }
    );
    let err = outcome.unwrap_err();
    assert_eq!(err.code, ErrorCode::DeviceException);
    assert!(err.message.contains("ERR 3"), "{}", err.message);

    // Never answered.
    let (outcome, ()) = tokio::join!(
        running
            .harness
            .command(write(&[("setpoint", Value::Float(40.0))])),
        async {
            assert_eq!(oven.receive(b"\r").await, b"SET 40.0");
        }
    );
    assert_eq!(outcome.unwrap_err().code, ErrorCode::Timeout);

    // Refused before anything is sent.
    let cases: [(&str, Value, ErrorCode); 4] = [
        ("setpoint", Value::Float(150.0), ErrorCode::OutOfRange),
        (
            "setpoint",
            Value::String("warm".into()),
            ErrorCode::InvalidValue,
        ),
        ("pv", Value::Float(1.0), ErrorCode::NotWritable),
        ("door", Value::Bool(true), ErrorCode::UnknownPoint),
    ];
    for (point, value, code) in cases {
        let outcome: Outcome = running.harness.command(write(&[(point, value)])).await;
        assert_eq!(outcome.unwrap_err().code, code, "{point}");
    }

    // Two values (in name order): each is sent only after the previous one
    // was confirmed. Nothing of the refused commands above reached the line.
    let (outcome, ()) = tokio::join!(
        running.harness.command(write(&[
            ("setpoint", Value::Float(10.0)),
            ("heater", Value::Bool(true))
        ])),
        async {
            assert_eq!(oven.receive(b"\r").await, b"HEAT 1");
            oven.send(b"OK\r").await;
            assert_eq!(oven.receive(b"\r").await, b"SET 10.0");
            oven.send(b"OK\r").await;
        }
    );
    let values = outcome.unwrap();
    assert_eq!(values.get("heater"), Some(&Value::Bool(true)));
    assert_eq!(values.get("setpoint"), Some(&Value::Float(10.0)));

    // A raw send, allowed on this device, returning the reply frame.
    let send = Command {
        id: "s".into(),
        device: "oven".into(),
        op: Operation::Protocol {
            op: "send".into(),
            path: None,
            value: Some(serde_json::json!("VER?\r")),
            args: serde_json::json!({ "reply": true }),
        },
        deadline: tokio::time::Instant::now() + Duration::from_secs(5),
    };
    let (outcome, ()) = tokio::join!(running.harness.command(send), async {
        assert_eq!(oven.receive(b"\r").await, b"VER?");
        oven.send(b"V1.2\r").await;
    });
    assert_eq!(
        outcome.unwrap().get("reply"),
        Some(&Value::String("V1.2".into()))
    );
    running.stop().await;
}
