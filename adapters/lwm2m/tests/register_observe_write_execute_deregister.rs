//! The whole life of a client: it registers, its temperature is observed
//! automatically and every notification becomes telemetry named from the
//! object registry; commands write, execute, read, discover and set
//! attributes on it; it de-registers and goes offline.

mod support;

use std::collections::BTreeMap;

use ferrogate_coap::Code;
use ferrogate_lwm2m::ResourceValue;
use ferrogate_sdk::{DeviceState, ErrorCode, Operation, Uplink, Value};
use serde_json::json;
use support::*;

const OBJECTS: &str = "</>;rt=\"oma.lwm2m\";ct=110,</1>;ver=1.1,</1/0>,</3/0>,</3303/0>,</3311/0>";

fn values() -> Vec<(&'static str, ResourceValue)> {
    vec![
        ("/3/0/0", ResourceValue::String("ACME".into())),
        ("/3/0/9", ResourceValue::Integer(87)),
        ("/3303/0/5700", ResourceValue::Float(21.5)),
        ("/3303/0/5701", ResourceValue::String("Cel".into())),
        ("/3311/0/5850", ResourceValue::Boolean(false)),
        ("/3311/0/5851", ResourceValue::Integer(0)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_observe_notify_write_execute_deregister() {
    let (mut h, server) =
        start_server("device_prefix = \"lw-\"\nauto_observe = [\"/3303/*/5700\"]").await;
    let mut client = TestClient::start(server, &values()).await;
    let response = client
        .register("sensor-1", &["lwm2m=1.1", "lt=300", "b=U"], OBJECTS)
        .await;
    assert_eq!(response.code, Code::CREATED);
    assert_eq!(
        response.location_path.first().map(String::as_str),
        Some("rd")
    );

    let status = uplink(
        &mut h,
        "online status",
        |u| matches!(u, Uplink::Status(s) if s.device == "lw-sensor-1"),
    )
    .await;
    let Uplink::Status(status) = status else {
        unreachable!()
    };
    assert_eq!(status.state, DeviceState::Online);
    let event = uplink(
        &mut h,
        "registered event",
        |u| matches!(u, Uplink::Event(e) if e.event == "registered"),
    )
    .await;
    let Uplink::Event(event) = event else {
        unreachable!()
    };
    assert_eq!(event.data["endpoint"], json!("sensor-1"));
    assert_eq!(event.data["lwm2m_version"], json!("1.1"));
    let meta = uplink(&mut h, "meta", |u| matches!(u, Uplink::Meta(_))).await;
    let Uplink::Meta(meta) = meta else {
        unreachable!()
    };
    assert!(
        meta.points
            .iter()
            .any(|p| p.name == "temperature" && p.unit.as_deref() == Some("Cel") && !p.writable)
    );
    assert!(
        meta.points
            .iter()
            .any(|p| p.name == "light_control.on_off" && p.writable)
    );
    let objects = meta.attributes["objects"]
        .as_array()
        .expect("objects")
        .len();
    assert_eq!(objects, 5);

    // auto-observe: the first answer is telemetry, then every notification
    let first = uplink(&mut h, "initial temperature", |u| {
        reading(u, "lw-sensor-1", "temperature").is_some()
    })
    .await;
    assert_eq!(
        reading(&first, "lw-sensor-1", "temperature"),
        Some(Value::Float(21.5))
    );
    client
        .wait_for("observation of /3303/0/5700", |s| !s.relations.is_empty())
        .await;
    assert_eq!(
        client.observed(),
        [ferrogate_lwm2m::Path::parse("/3303/0/5700").expect("path")]
    );
    client
        .change("/3303/0/5700", ResourceValue::Float(23.25))
        .await;
    let note = uplink(&mut h, "notified temperature", |u| {
        reading(u, "lw-sensor-1", "temperature") == Some(Value::Float(23.25))
    })
    .await;
    assert!(matches!(note, Uplink::Telemetry(_)));

    // write by point name: confirmed only by the client's 2.04
    let write = Operation::Write {
        values: BTreeMap::from([
            ("light_control.on_off".to_string(), Value::Bool(true)),
            ("light_control.dimmer".to_string(), Value::Int(40)),
        ]),
    };
    let done = run_command(&h, command("lw-sensor-1", write))
        .await
        .expect("write ok");
    assert_eq!(done.get("light_control.on_off"), Some(&Value::Bool(true)));
    assert_eq!(
        client.value("/3311/0/5850"),
        Some(ResourceValue::Boolean(true))
    );
    assert_eq!(
        client.value("/3311/0/5851"),
        Some(ResourceValue::Integer(40))
    );

    // the registry refuses what the model forbids, before sending
    let refused = Operation::Write {
        values: BTreeMap::from([("device.manufacturer".to_string(), Value::String("x".into()))]),
    };
    assert_eq!(
        run_command(&h, command("lw-sensor-1", refused))
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotWritable
    );
    let out_of_range = Operation::Write {
        values: BTreeMap::from([("light_control.dimmer".to_string(), Value::Int(250))]),
    };
    assert_eq!(
        run_command(&h, command("lw-sensor-1", out_of_range))
            .await
            .unwrap_err()
            .code,
        ErrorCode::OutOfRange
    );

    // execute with arguments
    let exec = protocol("execute", "/3/0/4", None, json!({"0": "soon"}));
    run_command(&h, command("lw-sensor-1", exec))
        .await
        .expect("execute ok");
    let executed = client.store.lock().expect("store").executed.clone();
    assert_eq!(
        executed,
        [(
            ferrogate_lwm2m::Path::parse("/3/0/4").expect("path"),
            "0='soon'".to_string()
        )]
    );

    // read several points at once: a composite read for a 1.1 client
    let read = Operation::Read {
        points: vec!["device.battery_level".into(), "device.manufacturer".into()],
    };
    let got = run_command(&h, command("lw-sensor-1", read))
        .await
        .expect("read ok");
    assert_eq!(got.get("device.battery_level"), Some(&Value::Int(87)));
    assert_eq!(
        got.get("device.manufacturer"),
        Some(&Value::String("ACME".into()))
    );
    assert!(
        client.log_lines().iter().any(|l| l == "got FETCH /"),
        "{:?}",
        client.log_lines()
    );

    // partial update of an instance, in the client's format (SenML JSON)
    let partial = protocol(
        "write",
        "/3311/0",
        Some(json!({"5851": 75})),
        json!({"mode": "partial"}),
    );
    run_command(&h, command("lw-sensor-1", partial))
        .await
        .expect("partial write ok");
    assert_eq!(
        client.value("/3311/0/5851"),
        Some(ResourceValue::Integer(75))
    );

    // discover and write-attributes
    let links = run_command(
        &h,
        command(
            "lw-sensor-1",
            protocol("discover", "/3303/0", None, json!(null)),
        ),
    )
    .await
    .expect("discover ok");
    assert!(links.contains_key("/3303/0/5700"), "{links:?}");
    run_command(
        &h,
        command(
            "lw-sensor-1",
            protocol(
                "write-attr",
                "/3303/0/5700",
                None,
                json!({"pmin": 1, "pmax": 30}),
            ),
        ),
    )
    .await
    .expect("write-attr ok");
    let attrs = client.store.lock().expect("store").attributes.clone();
    assert_eq!(attrs[0].1, ["pmax=30", "pmin=1"]);

    // create and delete an instance
    let created = run_command(
        &h,
        command(
            "lw-sensor-1",
            protocol(
                "create",
                "/3303",
                Some(json!({"5700": 5.0})),
                json!({"instance": 7}),
            ),
        ),
    )
    .await
    .expect("create ok");
    assert_eq!(
        created.get("location"),
        Some(&Value::String("/3303/7".into()))
    );
    assert_eq!(
        client.value("/3303/7/5700"),
        Some(ResourceValue::Float(5.0))
    );
    run_command(
        &h,
        command(
            "lw-sensor-1",
            protocol("delete", "/3303/7", None, json!(null)),
        ),
    )
    .await
    .expect("delete ok");
    assert_eq!(client.value("/3303/7/5700"), None);

    // a path the client does not have
    let missing = run_command(
        &h,
        command(
            "lw-sensor-1",
            Operation::Read {
                points: vec!["/3304/0".into()],
            },
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code, ErrorCode::UnknownPoint);

    // observe by command: the current value answers it, then notifications
    // become telemetry
    let observed = run_command(
        &h,
        command(
            "lw-sensor-1",
            protocol("observe", "/3/0/9", None, json!(null)),
        ),
    )
    .await
    .expect("observe ok");
    assert_eq!(observed.get("device.battery_level"), Some(&Value::Int(87)));
    client
        .wait_for("observation of /3/0/9", |s| s.relations.len() == 2)
        .await;
    client.change("/3/0/9", ResourceValue::Integer(80)).await;
    uplink(&mut h, "battery notification", |u| {
        reading(u, "lw-sensor-1", "device.battery_level") == Some(Value::Int(80))
    })
    .await;
    run_command(
        &h,
        command(
            "lw-sensor-1",
            protocol("cancel-observe", "/3/0/9", None, json!(null)),
        ),
    )
    .await
    .expect("cancel ok");

    // cancel-observe: no more telemetry from it
    run_command(
        &h,
        command(
            "lw-sensor-1",
            protocol("cancel-observe", "/3303/0/5700", None, json!(null)),
        ),
    )
    .await
    .expect("cancel ok");
    client
        .wait_for("observation cancelled", |s| s.relations.is_empty())
        .await;

    // de-register: offline, and commands are refused as offline
    assert_eq!(client.deregister().await.code, Code::DELETED);
    let offline = uplink(
        &mut h,
        "offline status",
        |u| matches!(u, Uplink::Status(s) if s.state == DeviceState::Offline),
    )
    .await;
    let Uplink::Status(offline) = offline else {
        unreachable!()
    };
    assert_eq!(offline.reason.as_deref(), Some("deregistered"));
    uplink(
        &mut h,
        "deregistered event",
        |u| matches!(u, Uplink::Event(e) if e.event == "deregistered"),
    )
    .await;
    let after = run_command(
        &h,
        command("lw-sensor-1", Operation::Read { points: vec![] }),
    )
    .await
    .unwrap_err();
    assert_eq!(after.code, ErrorCode::DeviceOffline);
    h.shutdown.cancel();
}
