//! A client that stops updating goes offline when its lifetime runs out,
//! and its commands are refused as offline; registering again brings it
//! back.

mod support;

use ferrogate_coap::Code;
use ferrogate_sdk::{DeviceState, ErrorCode, Operation, Uplink};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_expiry() {
    let (mut h, server) = start_server("").await;
    let mut client = TestClient::start(server, &[]).await;
    assert_eq!(
        client
            .register("short-lived", &["lt=1"], "</3/0>")
            .await
            .code,
        Code::CREATED
    );
    uplink(
        &mut h,
        "online",
        |u| matches!(u, Uplink::Status(s) if s.state == DeviceState::Online),
    )
    .await;
    let offline = uplink(
        &mut h,
        "offline after lifetime",
        |u| matches!(u, Uplink::Status(s) if s.state == DeviceState::Offline),
    )
    .await;
    let Uplink::Status(offline) = offline else {
        unreachable!()
    };
    assert_eq!(offline.device, "short-lived");
    assert_eq!(offline.reason.as_deref(), Some("lifetime expired"));
    uplink(
        &mut h,
        "expired event",
        |u| matches!(u, Uplink::Event(e) if e.event == "expired"),
    )
    .await;
    let refused = run_command(
        &h,
        command("short-lived", Operation::Read { points: vec![] }),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code, ErrorCode::DeviceOffline);
    // an Update after expiry is refused (4.04), so the client registers again
    assert_eq!(client.update(&[]).await.code, Code::NOT_FOUND);
    assert_eq!(
        client
            .register("short-lived", &["lt=600"], "</3/0>")
            .await
            .code,
        Code::CREATED
    );
    uplink(
        &mut h,
        "online again",
        |u| matches!(u, Uplink::Status(s) if s.state == DeviceState::Online),
    )
    .await;
    h.shutdown.cancel();
}
