//! A polled analyser answers each query; unanswered queries become Timeout
//! point errors, a run of them takes the device offline, and the next answer
//! brings it back. A read command triggers a fresh query.

mod common;

use std::time::Duration;

use common::*;
use ferrogate_sdk::{Command, DeviceState, ErrorCode, Operation, PointErrorKind, Uplink, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_timeouts_offline_and_recovery() {
    let pair = PtyPair::new("poll");
    let mut instrument = pair.instrument();
    let toml = format!(
        r#"
[[serial.device]]
name = "analyser"
port = "{}"
baud = 19200
mode = "poll"
poll = "500ms"
query = "R\r\n"
timeout = "400ms"
offline_after = 2

[serial.device.framing]
max_frame = 64

[serial.device.parser]
kind = "key_value"
separator = ","

[[serial.device.point]]
name = "temp"
source = "T"
unit = "°C"

[[serial.device.point]]
name = "humidity"
source = "RH"
type = "u64"

[[serial.device.command]]
name = "humidity_limit"
type = "u64"
template = "LIM {{value}}\r\n"
max = 100
reply = '^OK$'
"#,
        pair.adapter_end().display()
    );
    let mut running = start(&toml);

    assert_eq!(instrument.receive(b"\r\n").await, b"R");
    instrument.send(b"T=21.5,RH=40\r\n").await;
    running
        .expect("online", |u| is_status(u, DeviceState::Online))
        .await;
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    let t = telemetry(&t).unwrap();
    assert_eq!(value_of(t, "temp"), Some(&Value::Float(21.5)));
    assert_eq!(value_of(t, "humidity"), Some(&Value::UInt(40)));

    // A reply missing a field is an error on that point, not a silent gap.
    assert_eq!(instrument.receive(b"\r\n").await, b"R");
    instrument.send(b"T=22.0\r\n").await;
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    let t = telemetry(&t).unwrap();
    assert_eq!(value_of(t, "temp"), Some(&Value::Float(22.0)));
    let rh = t.readings.iter().find(|r| &*r.point == "humidity").unwrap();
    assert_eq!(rh.value.as_ref().unwrap_err().kind, PointErrorKind::Decode);

    // The instrument goes quiet: each query times out, then the device is offline.
    let timeout = running
        .expect("timeout telemetry", |u| {
            telemetry(u).is_some_and(|t| {
                t.readings
                    .iter()
                    .all(|r| matches!(&r.value, Err(e) if e.kind == PointErrorKind::Timeout))
            })
        })
        .await;
    assert_eq!(telemetry(&timeout).unwrap().readings.len(), 2);
    let offline = running
        .expect("offline", |u| is_status(u, DeviceState::Offline))
        .await;
    let Uplink::Status(offline) = offline else {
        unreachable!()
    };
    assert!(offline.reason.unwrap().contains("no reply"));

    // It answers again: online, with values. From here a responder answers
    // every query it sees.
    let responder = tokio::spawn(async move {
        loop {
            let request = instrument.receive(b"\r\n").await;
            match request.as_slice() {
                b"R" => instrument.send(b"T=23.0,RH=41\r\n").await,
                b"LIM 45" => instrument.send(b"OK\r\n").await,
                other => panic!("unexpected request {other:?}"),
            }
        }
    });
    running
        .expect("back online", |u| is_status(u, DeviceState::Online))
        .await;
    running
        .expect("fresh values", |u| {
            telemetry(u).is_some_and(|t| value_of(t, "temp") == Some(&Value::Float(23.0)))
        })
        .await;

    // A read command sends a query of its own and returns the answer.
    let outcome = running
        .harness
        .command(Command {
            id: "r1".into(),
            device: "analyser".into(),
            op: Operation::Read {
                points: vec!["temp".into()],
            },
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
        })
        .await
        .expect("read ok");
    assert_eq!(outcome.get("temp"), Some(&Value::Float(23.0)));
    assert!(!outcome.contains_key("humidity"));

    let unknown = running
        .harness
        .command(Command {
            id: "r2".into(),
            device: "analyser".into(),
            op: Operation::Read {
                points: vec!["pressure".into()],
            },
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code, ErrorCode::UnknownPoint);

    // A write on a polled line is confirmed by its own reply, not taken
    // for a poll answer (and a poll answer is not taken for it).
    let confirmed = running
        .harness
        .command(Command {
            id: "w".into(),
            device: "analyser".into(),
            op: Operation::Write {
                values: [("humidity_limit".to_string(), Value::Int(45))].into(),
            },
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
        })
        .await
        .expect("write confirmed");
    assert_eq!(confirmed.get("humidity_limit"), Some(&Value::UInt(45)));

    // Raw sends are refused unless the device allows them; other protocol
    // operations do not exist on a serial line.
    for (op, value) in [
        ("send", Some(serde_json::json!("R\r\n"))),
        ("observe", None),
    ] {
        let refused = running
            .harness
            .command(Command {
                id: op.into(),
                device: "analyser".into(),
                op: Operation::Protocol {
                    op: op.into(),
                    path: None,
                    value,
                    args: serde_json::Value::Null,
                },
                deadline: tokio::time::Instant::now() + Duration::from_secs(5),
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code,
            ErrorCode::BadRequest,
            "{op}: {}",
            refused.message
        );
    }
    responder.abort();
    running.stop().await;
}
