//! libcoap's `coap-client` (an independent CoAP implementation, Debian
//! package libcoap3-bin) acting as a minimal LwM2M client from one fixed
//! port: it registers, Sends a SenML reading, updates and de-registers, and
//! the gateway sees each step.

mod support;

use std::process::Command;

use ferrogate_sdk::{DeviceState, Uplink, Value};
use support::*;

const CLIENT: &str = "coap-client-notls";

/// Run coap-client and return its verbose output (it exits 0 even on
/// 4.xx, so the code is read from the output).
async fn coap_client(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(CLIENT)
            .args(&args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {CLIENT} ({e}): install the Debian package libcoap3-bin")
            });
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
    .await
    .expect("coap-client task")
}

fn args(port: u16, method: &str, extra: &[&str], uri: String) -> Vec<String> {
    let mut a: Vec<String> = ["-m", method, "-p", &port.to_string(), "-v", "7", "-B", "5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push(uri);
    a
}

/// A free UDP port below the kernel's ephemeral range (32768 and up), so
/// no socket another test binds to port 0 can take it between our check
/// and coap-client's bind.
fn client_port() -> u16 {
    let start = 20_000 + (std::process::id() % 5_000) as u16;
    (start..30_000)
        .chain(20_000..start)
        .find(|p| std::net::UdpSocket::bind(("0.0.0.0", *p)).is_ok())
        .unwrap_or_else(|| panic!("no free UDP port between 20000 and 30000"))
}

/// The response code in coap-client's verbose output (`c:2.01`).
fn code(output: &str) -> Option<&str> {
    output
        .lines()
        .filter(|l| l.contains("t:ACK") || l.contains("t:CON") || l.contains("t:NON"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("c:")))
        .rfind(|c| c.starts_with('2') || c.starts_with('4') || c.starts_with('5'))
}

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
    let location = out
        .lines()
        .find(|l| l.contains("Location-Path"))
        .and_then(|l| {
            l.split("Location-Path:")
                .nth(2)
                .or_else(|| l.split("Location-Path:").nth(1))
        })
        .map(|s| {
            s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .unwrap_or_else(|| panic!("no Location-Path in:\n{out}"));
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
