//! libcoap's coap-server as a device: the gateway observes `/time`, polls
//! a resource larger than one block (Block2) and one that does not exist
//! (a 4.04 error reading), writes and executes through commands, and marks
//! the device offline when the server dies, then online when it is back.
//! Needs `coap-server-notls` and `coap-client-notls` (libcoap3-bin).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{CoapServer, next_uplink, start_adapter, status, telemetry};
use ferrogate_coap::driver;
use ferrogate_coap::{EndpointConfig, Request};
use ferrogate_sdk::{Command, DeviceState, ErrorCode, Operation, PointErrorKind, Uplink, Value};
use tokio_util::sync::CancellationToken;

fn config(port: u16) -> String {
    format!(
        r#"
[coap.client]
bind = "127.0.0.1:0"

[coap.protocol]
ack_timeout = "200ms"
max_retransmit = 2

[[coap.device]]
name = "libcoap"
address = "127.0.0.1:{port}"
timeout = "3s"

[[coap.device.resource]]
path = "/time"
mode = "observe"
period = "300ms"

[[coap.device.resource]]
path = "/example_data"
point = "data"
period = "300ms"
writable = true
execute = true
encoding = "text"

[[coap.device.resource]]
path = "/missing"
period = "1s"
"#
    )
}

fn command(op: Operation) -> Command {
    Command {
        id: "c1".into(),
        device: "libcoap".into(),
        op,
        deadline: tokio::time::Instant::now() + Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_server_is_polled_and_observed() {
    let server = CoapServer::start().await;
    let peer = format!("127.0.0.1:{}", server.port).parse().unwrap();

    // Put a 3000-byte representation on the server with our own client
    // (Block1 against libcoap), so polling it needs Block2.
    let big: String = (0..3000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let stop = CancellationToken::new();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (coap, _incoming) = driver::spawn(socket, EndpointConfig::default(), stop.clone());
    let put = Request::put("/example_data").with_payload(0, big.clone().into_bytes());
    let response = coap.request(peer, put).await.unwrap();
    assert!(response.code.is_success(), "{}", response.code);
    let back = coap
        .request(peer, Request::get("/example_data"))
        .await
        .unwrap();
    assert_eq!(
        back.payload,
        big.as_bytes(),
        "Block2 reassembly from libcoap"
    );
    stop.cancel();

    let (mut h, _task) = start_adapter(&config(server.port));
    next_uplink(&mut h, |u| {
        matches!(u, Uplink::Meta(m) if m.device == "libcoap").then_some(())
    })
    .await;

    // the observed clock keeps notifying; the big resource arrives whole;
    // the missing one is an error reading carrying the code
    let mut times = Vec::new();
    let mut saw_data = false;
    let mut saw_missing = false;
    while times.len() < 3 || !saw_data || !saw_missing {
        let t = telemetry(&mut h, "libcoap").await;
        for r in &t.readings {
            match (&*r.point, &r.value) {
                ("time", Ok(Value::String(s))) => times.push(s.clone()),
                ("data", Ok(Value::String(s))) => {
                    assert_eq!(s.len(), 3000);
                    saw_data = true;
                }
                ("missing", Err(e)) => {
                    assert_eq!(e.kind, PointErrorKind::DeviceException);
                    assert!(e.message.contains("4.04"), "{}", e.message);
                    saw_missing = true;
                }
                other => panic!("unexpected reading {other:?}"),
            }
        }
    }
    times.dedup();
    assert!(
        times.len() >= 2,
        "the observation delivered changing values: {times:?}"
    );

    // write: PUT, confirmed by libcoap's 2.04
    let mut values = BTreeMap::new();
    values.insert("data".to_string(), Value::String("42".into()));
    let written = h
        .command(command(Operation::Write {
            values: values.clone(),
        }))
        .await;
    assert_eq!(written, Ok(values));
    let read = h
        .command(command(Operation::Read {
            points: vec!["data".into()],
        }))
        .await
        .unwrap();
    assert_eq!(
        read.get("data"),
        Some(&Value::Int(42)),
        "fresh GET sees the write"
    );

    // execute: libcoap's example_data refuses POST with 4.05
    let executed = h
        .command(command(Operation::Protocol {
            op: "execute".into(),
            path: Some("/example_data".into()),
            value: None,
            args: serde_json::Value::Null,
        }))
        .await
        .unwrap_err();
    assert_eq!(executed.code, ErrorCode::DeviceException);
    assert!(
        executed.message.contains("4.05 Method Not Allowed"),
        "{}",
        executed.message
    );
    // writing a point that is not writable
    let mut values = BTreeMap::new();
    values.insert("time".to_string(), Value::Int(1));
    let refused = h
        .command(command(Operation::Write { values }))
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::NotWritable);

    // the device dies: offline with a reason
    let port = server.port;
    server.stop().await;
    let s = loop {
        let s = status(&mut h, "libcoap").await;
        if s.state == DeviceState::Offline {
            break s;
        }
    };
    assert!(s.reason.is_some());
    // ...and comes back on the same port: online again, re-observed
    let _server = CoapServer::start_on(port).await;
    loop {
        let s = status(&mut h, "libcoap").await;
        if s.state == DeviceState::Online {
            break;
        }
    }
    let t = loop {
        let t = telemetry(&mut h, "libcoap").await;
        if t.readings
            .iter()
            .any(|r| &*r.point == "time" && r.value.is_ok())
        {
            break t;
        }
    };
    assert!(!t.readings.is_empty());

    h.shutdown.cancel();
}
