//! A client behind a NAT comes back from a new source port. Its Update is
//! refused with 4.03 (a location is no credential: anyone could send it),
//! so it registers again, as Core 1.1 §6.2.2 has it do; that keeps the same
//! device (re_registration = "allow", the default), the server observes its
//! paths at the new address, and commands reach it there.

mod support;

use std::collections::BTreeMap;

use ferrogate_coap::Code;
use ferrogate_lwm2m::ResourceValue;
use ferrogate_sdk::{Operation, Uplink, Value};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_a_new_address_registers_again_and_keeps_its_device() {
    let (mut h, server) = start_server("auto_observe = [\"/3303/*/5700\"]").await;
    let values = [
        ("/3303/0/5700", ResourceValue::Float(10.0)),
        ("/3311/0/5850", ResourceValue::Boolean(false)),
    ];
    let mut client = TestClient::start(server, &values).await;
    assert_eq!(
        client
            .register("nat-1", &["lwm2m=1.1", "lt=600"], "</3303/0>,</3311/0>")
            .await
            .code,
        Code::CREATED
    );
    uplink(
        &mut h,
        "registered",
        |u| matches!(u, Uplink::Event(e) if e.event == "registered"),
    )
    .await;
    client
        .wait_for("first observation", |s| !s.relations.is_empty())
        .await;
    let old_addr = client.local_addr();

    let mut client = client.rebind().await;
    assert_ne!(client.local_addr(), old_addr);
    assert_eq!(client.update(&[]).await.code, Code::FORBIDDEN);
    refused(&h, "wrong_source", 1).await;
    assert_eq!(
        client
            .register("nat-1", &["lwm2m=1.1", "lt=600"], "</3303/0>,</3311/0>")
            .await
            .code,
        Code::CREATED
    );
    let updated = uplink(
        &mut h,
        "registered event",
        |u| matches!(u, Uplink::Event(e) if e.event == "registered"),
    )
    .await;
    let Uplink::Event(updated) = updated else {
        unreachable!()
    };
    assert_eq!(updated.device, "nat-1");
    assert_eq!(
        updated.data["moved_from"],
        serde_json::json!(old_addr.to_string())
    );
    assert_eq!(
        updated.data["address"],
        serde_json::json!(client.local_addr().to_string())
    );

    // the observation is re-established at the new address
    client
        .wait_for("observation at the new address", |s| {
            !s.relations.is_empty()
        })
        .await;
    client
        .change("/3303/0/5700", ResourceValue::Float(12.5))
        .await;
    uplink(&mut h, "notification after the move", |u| {
        reading(u, "nat-1", "temperature") == Some(Value::Float(12.5))
    })
    .await;

    // commands go to the new address
    let write = Operation::Write {
        values: BTreeMap::from([("light_control.on_off".to_string(), Value::Bool(true))]),
    };
    run_command(&h, command("nat-1", write))
        .await
        .expect("write reaches the moved client");
    assert_eq!(
        client.value("/3311/0/5850"),
        Some(ResourceValue::Boolean(true))
    );

    // a Send from the new address is attributed to the same device
    assert_eq!(client.send(&["/3303/0/5700"]).await.code, Code::CHANGED);
    uplink(&mut h, "Send telemetry", |u| {
        reading(u, "nat-1", "temperature") == Some(Value::Float(12.5))
    })
    .await;
    h.shutdown.cancel();
}
