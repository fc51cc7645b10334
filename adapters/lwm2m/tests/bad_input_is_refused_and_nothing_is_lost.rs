//! Malformed datagrams, broken registrations, undecodable Sends and bad
//! commands each get a clear error; the server keeps serving the clients
//! that behave.

mod support;

use ferrogate_coap::{Code, Request};
use ferrogate_lwm2m::ResourceValue;
use ferrogate_sdk::{ErrorCode, Operation, Uplink, Value};
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let (mut h, server) = start_server("").await;

    // garbage datagrams: no answer needed, and no harm
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for junk in [
        &b""[..],
        &[0xff; 3][..],
        &[0x40, 0x02, 0x00][..],
        &[0x44, 0x02, 0x12, 0x34, 0xff][..],
    ] {
        raw.send_to(junk, server).await.expect("send");
    }

    let mut client =
        TestClient::start(server, &[("/3303/0/5700", ResourceValue::Float(1.0))]).await;
    // no endpoint name
    let mut no_ep = Request::post("/rd").with_payload(40, b"</3/0>".to_vec());
    no_ep.query.push("lt=60".into());
    let refused = client.request(no_ep).await;
    assert_eq!(refused.code, Code::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&refused.payload).contains("ep"),
        "diagnostic names the problem"
    );
    // broken object list, unknown version, zero lifetime
    assert_eq!(
        client.register("x", &[], "</3/0").await.code,
        Code::BAD_REQUEST
    );
    assert_eq!(
        client.register("x", &["lwm2m=9.9"], "</3/0>").await.code,
        Code::BAD_REQUEST
    );
    assert_eq!(
        client.register("x", &["lt=0"], "</3/0>").await.code,
        Code::BAD_REQUEST
    );
    // Send before registering, update of an unknown location
    assert_eq!(client.send(&["/3303/0/5700"]).await.code, Code::NOT_FOUND);
    assert_eq!(
        client.request(Request::post("/rd/999")).await.code,
        Code::NOT_FOUND
    );
    assert_eq!(
        client.request(Request::get("/nothing")).await.code,
        Code::NOT_FOUND
    );

    // the same client registers properly and is served
    assert_eq!(
        client
            .register("good", &["lwm2m=1.1"], "</3303/0>")
            .await
            .code,
        Code::CREATED
    );
    uplink(
        &mut h,
        "registered",
        |u| matches!(u, Uplink::Event(e) if e.event == "registered" && e.device == "good"),
    )
    .await;

    // an undecodable Send: 4.00 to the client, a decode_error event north
    let bad_send = client
        .request(
            Request::post("/dp")
                .with_payload(110, b"[{\"n\":\"/3303/0/5700\",\"vs\":\"hot\"}]".to_vec()),
        )
        .await;
    assert_eq!(bad_send.code, Code::BAD_REQUEST);
    let event = uplink(
        &mut h,
        "decode_error event",
        |u| matches!(u, Uplink::Event(e) if e.event == "decode_error"),
    )
    .await;
    let Uplink::Event(event) = event else {
        unreachable!()
    };
    assert!(
        event.data["error"]
            .as_str()
            .expect("error text")
            .contains("/3303/0/5700"),
        "{event:?}"
    );
    let wrong_format = client
        .request(Request::post("/dp").with_payload(0, b"1".to_vec()))
        .await;
    assert_eq!(wrong_format.code, Code::UNSUPPORTED_CONTENT_FORMAT);
    assert_eq!(client.send(&["/3303/0/5700"]).await.code, Code::CHANGED);
    uplink(&mut h, "good Send", |u| {
        reading(u, "good", "temperature") == Some(Value::Float(1.0))
    })
    .await;

    // bad commands
    let cases = [
        (
            command("nobody", Operation::Read { points: vec![] }),
            ErrorCode::DeviceOffline,
        ),
        (
            command(
                "good",
                Operation::Read {
                    points: vec!["no_such_point".into()],
                },
            ),
            ErrorCode::UnknownPoint,
        ),
        (
            command("good", protocol("execute", "/3303", None, json!(null))),
            ErrorCode::BadRequest,
        ),
        (
            command(
                "good",
                protocol("write-attr", "/3303/0/5700", None, json!({"fast": 1})),
            ),
            ErrorCode::BadRequest,
        ),
        (
            command("good", protocol("teleport", "/3303/0", None, json!(null))),
            ErrorCode::BadRequest,
        ),
        (
            command(
                "good",
                protocol("write", "/3303/0/5700", Some(json!(5)), json!(null)),
            ),
            ErrorCode::NotWritable,
        ),
        (
            command(
                "good",
                protocol("cancel-observe", "/3303/0/5700", None, json!(null)),
            ),
            ErrorCode::BadRequest,
        ),
        (
            command(
                "good",
                Operation::Protocol {
                    op: "write".into(),
                    path: None,
                    value: Some(json!(5)),
                    args: json!(null),
                },
            ),
            ErrorCode::BadRequest,
        ),
    ];
    for (cmd, code) in cases {
        let what = format!("{:?}", cmd.op);
        let err = run_command(&h, cmd).await.expect_err(&what);
        assert_eq!(err.code, code, "{what}: {}", err.message);
    }
    // and the client still works
    let got = run_command(
        &h,
        command(
            "good",
            Operation::Read {
                points: vec!["temperature".into()],
            },
        ),
    )
    .await
    .expect("read ok");
    assert_eq!(got.get("temperature"), Some(&Value::Float(1.0)));
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refusing_senml_cbor_is_read_in_senml_json() {
    // like Wakaama's default build: 4.06 to an Accept of SenML CBOR
    let (mut h, server) = start_server("auto_observe = [\"/3303/0/5700\"]").await;
    let mut client =
        TestClient::start(server, &[("/3303/0/5700", ResourceValue::Float(19.0))]).await;
    client.store.lock().expect("store").accepts = vec![
        ferrogate_lwm2m::ContentFormat::SenmlJson,
        ferrogate_lwm2m::ContentFormat::Tlv,
    ];
    // a 1.1 client that announces no ct: the server first asks for CBOR
    assert_eq!(
        client
            .register("picky", &["lwm2m=1.1"], "</3303/0>")
            .await
            .code,
        Code::CREATED
    );
    uplink(&mut h, "observed value after fallback", |u| {
        reading(u, "picky", "temperature") == Some(Value::Float(19.0))
    })
    .await;
    let got = run_command(
        &h,
        command(
            "picky",
            Operation::Read {
                points: vec!["temperature".into()],
            },
        ),
    )
    .await
    .expect("read ok");
    assert_eq!(got.get("temperature"), Some(&Value::Float(19.0)));
    h.shutdown.cancel();
}
