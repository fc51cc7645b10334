//! A queue-mode client sleeps between its updates: commands for it wait
//! until it next updates (several at once, each within its own deadline),
//! and one whose deadline passes first is answered `timeout`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ferrogate_coap::Code;
use ferrogate_lwm2m::ResourceValue;
use ferrogate_sdk::{ErrorCode, Operation, Uplink, Value};
use support::*;

/// Hand a command to the adapter without waiting for its answer.
async fn submit(
    h: &ferrogate_sdk::testing::TestHarness,
    cmd: ferrogate_sdk::Command,
) -> tokio::sync::oneshot::Receiver<ferrogate_sdk::Outcome> {
    let (request, rx) = ferrogate_sdk::CommandRequest::new(cmd);
    h.commands
        .send(request)
        .await
        .expect("adapter receives commands");
    rx
}

fn write_dimmer(v: i64) -> Operation {
    Operation::Write {
        values: BTreeMap::from([("light_control.dimmer".to_string(), Value::Int(v))]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_wait_for_the_next_update() {
    // the client is considered asleep 1 ms after it was last heard from
    let (mut h, server) = start_server("queue_awake = \"1ms\"").await;
    let values = [
        ("/3311/0/5851", ResourceValue::Integer(0)),
        ("/3/0/9", ResourceValue::Integer(50)),
    ];
    let mut client = TestClient::start(server, &values).await;
    // LwM2M 1.0 spelling of queue mode: b=UQ
    assert_eq!(
        client
            .register("sleepy", &["b=UQ", "lt=600"], "</3/0>,</3311/0>")
            .await
            .code,
        Code::CREATED
    );
    uplink(
        &mut h,
        "registered",
        |u| matches!(u, Uplink::Event(e) if e.event == "registered" && e.data["binding"] == "UQ"),
    )
    .await;

    // let the 1 ms awake window pass (time only moves forward: this is not
    // synchronisation, the client is asleep after it whatever the timing)
    tokio::time::sleep(Duration::from_millis(20)).await;
    // two commands in flight for one sleeping client, and one that expires
    let first = submit(&h, command("sleepy", write_dimmer(30))).await;
    let second = submit(
        &h,
        command(
            "sleepy",
            Operation::Read {
                points: vec!["device.battery_level".into()],
            },
        ),
    )
    .await;
    let expiring = run_command(
        &h,
        command_within("sleepy", write_dimmer(99), Duration::from_millis(300)),
    )
    .await;
    assert_eq!(expiring.unwrap_err().code, ErrorCode::Timeout);
    // held, not sent: the client has received nothing since it registered
    assert!(
        !client.log_lines().iter().any(|l| l.starts_with("got")),
        "{:?}",
        client.log_lines()
    );

    // the client wakes up with an Update: the held commands go out now
    assert_eq!(client.update(&[]).await.code, Code::CHANGED);
    let written = first.await.expect("answered").expect("held write ok");
    assert_eq!(written.get("light_control.dimmer"), Some(&Value::Int(30)));
    let read = second.await.expect("answered").expect("held read ok");
    assert_eq!(read.get("device.battery_level"), Some(&Value::Int(50)));
    assert_eq!(
        client.value("/3311/0/5851"),
        Some(ResourceValue::Integer(30))
    );
    let log = client.log_lines();
    let update_at = log
        .iter()
        .position(|l| l.starts_with("sent POST /rd/"))
        .expect("update logged");
    let put_at = log
        .iter()
        .position(|l| l == "got PUT /3311/0/5851")
        .expect("write received");
    assert!(
        update_at < put_at,
        "the write reached the client only after its update: {log:?}"
    );
    // the expired command never reached the client
    assert!(client.value("/3311/0/5851") != Some(ResourceValue::Integer(99)));
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lwm2m_1_1_queue_parameter_and_deregistration_fails_held_commands() {
    let (mut h, server) = start_server("queue_awake = \"1ms\"").await;
    let mut client =
        TestClient::start(server, &[("/3311/0/5851", ResourceValue::Integer(0))]).await;
    assert_eq!(
        client
            .register("sleepy-11", &["lwm2m=1.1", "b=U", "Q"], "</3311/0>")
            .await
            .code,
        Code::CREATED
    );
    uplink(
        &mut h,
        "registered",
        |u| matches!(u, Uplink::Event(e) if e.event == "registered" && e.data["binding"] == "UQ"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let held = submit(&h, command("sleepy-11", write_dimmer(5))).await;
    // a second, short command is held too and expires
    let probe = run_command(
        &h,
        command_within("sleepy-11", write_dimmer(6), Duration::from_millis(200)),
    )
    .await;
    assert_eq!(probe.unwrap_err().code, ErrorCode::Timeout);
    assert_eq!(client.deregister().await.code, Code::DELETED);
    let outcome = held.await.expect("answered");
    assert_eq!(outcome.unwrap_err().code, ErrorCode::DeviceOffline);
    h.shutdown.cancel();
}
