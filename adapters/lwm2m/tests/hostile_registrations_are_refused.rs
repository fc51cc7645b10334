//! Registrations an attacker on the network can send, from libcoap's
//! `coap-client-notls` against the running LwM2M server: each is refused
//! with a clear code, counted, and the server keeps serving everyone else.

mod support;

use ferrogate_sdk::{DeviceState, Uplink};
use support::libcoap::*;
use support::*;

async fn register_ok(
    h: &mut ferrogate_sdk::testing::TestHarness,
    server: &str,
    port: u16,
    ep: &str,
) -> String {
    let out = coap_client(args(
        port,
        "post",
        &["-t", "40", "-e", "</3/0>"],
        format!("coap://{server}/rd?ep={ep}&lt=120"),
    ))
    .await;
    assert_eq!(code(&out), Some("2.01"), "register {ep}:\n{out}");
    let ep = ep.to_string();
    uplink(
        h,
        "online",
        move |u| matches!(u, Uplink::Status(s) if s.device == ep && s.state == DeviceState::Online),
    )
    .await;
    location(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_past_32_bits_is_refused_and_the_server_lives_on() {
    let (mut h, server) = start_server("").await;
    let server = server.to_string();
    let port = client_port();
    // 2^64-1 seconds once overflowed `Instant + lifetime` and aborted the
    // whole gateway
    for lt in ["18446744073709551615", "4294967296"] {
        let out = coap_client(args(
            port,
            "post",
            &["-t", "40", "-e", "</3/0>"],
            format!("coap://{server}/rd?ep=huge&lt={lt}"),
        ))
        .await;
        assert_eq!(code(&out), Some("4.00"), "register lt={lt}:\n{out}");
    }
    refused(&h, "bad_register", 2).await;

    let location = register_ok(&mut h, &server, port, "steady").await;
    let out = coap_client(args(
        port,
        "post",
        &[],
        format!("coap://{server}/rd/{location}?lt=18446744073709551615"),
    ))
    .await;
    assert_eq!(code(&out), Some("4.00"), "update:\n{out}");
    refused(&h, "bad_update", 1).await;
    // the longest lawful lifetime is taken, and the server still answers
    let out = coap_client(args(
        port,
        "post",
        &[],
        format!("coap://{server}/rd/{location}?lt=4294967295"),
    ))
    .await;
    assert_eq!(code(&out), Some("2.04"), "update lt=2^32-1:\n{out}");
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_names_that_cannot_be_topics_are_refused_and_counted() {
    let (mut h, server) = start_server("").await;
    let server = server.to_string();
    let port = client_port();
    // a C0 control character in a topic made mosquitto drop the gateway,
    // and the record blocked the outbox for good
    for ep in ["x%01y", "a%2Fb", "a%2Bb", "%23", "a%20b"] {
        let out = coap_client(args(
            port,
            "post",
            &["-t", "40", "-e", "</3/0>"],
            format!("coap://{server}/rd?ep={ep}&lt=60"),
        ))
        .await;
        assert_eq!(code(&out), Some("4.00"), "ep={ep}:\n{out}");
    }
    refused(&h, "bad_name", 5).await;
    // nothing of them went north: every uplink up to the good client's
    // online status is the good client's
    let good = "urn:dev:ops:0004A3-good";
    let out = coap_client(args(
        port,
        "post",
        &["-t", "40", "-e", "</3/0>"],
        format!("coap://{server}/rd?ep={good}&lt=60"),
    ))
    .await;
    assert_eq!(code(&out), Some("2.01"), "register {good}:\n{out}");
    loop {
        let env = tokio::time::timeout(WAIT, h.uplinks.recv())
            .await
            .expect("the good client's uplinks")
            .expect("uplink channel open");
        assert_eq!(env.uplink.device(), good, "{:?}", env.uplink);
        if matches!(&env.uplink, Uplink::Status(s) if s.state == DeviceState::Online) {
            break;
        }
    }
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_cannot_take_a_device_another_adapter_owns() {
    // an LwM2M client `ep=mb-good` once took over the Modbus device
    // `mb-good`, and kept it after its registration expired
    let owners = ferrogate_sdk::DeviceOwners::new([("mb-good".to_string(), "modbus".to_string())]);
    let (mut h, server) = start_server_with_owners("", owners).await;
    let server = server.to_string();
    let port = client_port();
    let out = coap_client(args(
        port,
        "post",
        &["-t", "40", "-e", "</3/0>"],
        format!("coap://{server}/rd?ep=mb-good&lt=60"),
    ))
    .await;
    assert_eq!(code(&out), Some("4.03"), "ep=mb-good:\n{out}");
    assert!(out.contains("modbus"), "the answer names the owner:\n{out}");
    refused(&h, "name_owned", 1).await;
    // a free name registers
    register_ok(&mut h, &server, port, "lw-free").await;
    h.shutdown.cancel();
}
