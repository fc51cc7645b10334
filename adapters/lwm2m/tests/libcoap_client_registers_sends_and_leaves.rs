//! libcoap's `coap-client` (an independent CoAP implementation, Debian
//! package libcoap3-bin) acting as a minimal LwM2M client from one fixed
//! port: it registers, Sends a SenML reading, updates and de-registers, and
//! the gateway sees each step.

mod support;

use ferrogate_sdk::{DeviceState, Uplink, Value};
use support::libcoap::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_client_lifecycle() {
    let (mut h, server) = start_server("").await;
    let port = client_port();

    let out = coap_client(args(
        port,
        "post",
        &["-t", "40", "-e", "</3/0>,</3303/0>"],
        format!("coap://{server}/rd?ep=libcoap-1&lt=120&lwm2m=1.1"),
    ))
    .await;
    assert_eq!(code(&out), Some("2.01"), "register:\n{out}");
    let location = location(&out);
    let online = uplink(
        &mut h,
        "online",
        |u| matches!(u, Uplink::Status(s) if s.device == "libcoap-1"),
    )
    .await;
    assert!(matches!(online, Uplink::Status(s) if s.state == DeviceState::Online));

    let senml = r#"[{"bn":"/3303/0/","n":"5700","v":21.5}]"#;
    let out = coap_client(args(
        port,
        "post",
        &["-t", "110", "-e", senml],
        format!("coap://{server}/dp"),
    ))
    .await;
    assert_eq!(code(&out), Some("2.04"), "send:\n{out}");
    uplink(&mut h, "Send telemetry", |u| {
        reading(u, "libcoap-1", "temperature") == Some(Value::Float(21.5))
    })
    .await;

    let out = coap_client(args(
        port,
        "post",
        &[],
        format!("coap://{server}/rd/{location}"),
    ))
    .await;
    assert_eq!(code(&out), Some("2.04"), "update:\n{out}");
    uplink(
        &mut h,
        "updated event",
        |u| matches!(u, Uplink::Event(e) if e.event == "updated"),
    )
    .await;

    let out = coap_client(args(
        port,
        "delete",
        &[],
        format!("coap://{server}/rd/{location}"),
    ))
    .await;
    assert_eq!(code(&out), Some("2.02"), "de-register:\n{out}");
    uplink(
        &mut h,
        "offline",
        |u| matches!(u, Uplink::Status(s) if s.state == DeviceState::Offline),
    )
    .await;

    // and a registration without an endpoint name is refused with 4.00
    let out = coap_client(args(
        port,
        "post",
        &["-t", "40", "-e", "</3/0>"],
        format!("coap://{server}/rd?lt=60"),
    ))
    .await;
    assert_eq!(code(&out), Some("4.00"), "no ep:\n{out}");
    h.shutdown.cancel();
}
