//! Running libcoap's `coap-client-notls` (Debian package libcoap3-bin), an
//! independent CoAP implementation, as a minimal LwM2M client.

use std::process::Command;

pub const CLIENT: &str = "coap-client-notls";

/// Run coap-client and return its verbose output (it exits 0 even on
/// 4.xx, so the code is read from the output).
pub async fn coap_client(args: Vec<String>) -> String {
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

pub fn args(port: u16, method: &str, extra: &[&str], uri: String) -> Vec<String> {
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
pub fn client_port() -> u16 {
    let start = 20_000 + (std::process::id() % 5_000) as u16;
    (start..30_000)
        .chain(20_000..start)
        .find(|p| std::net::UdpSocket::bind(("0.0.0.0", *p)).is_ok())
        .unwrap_or_else(|| panic!("no free UDP port between 20000 and 30000"))
}

/// The response code in coap-client's verbose output (`c:2.01`).
pub fn code(output: &str) -> Option<&str> {
    output
        .lines()
        .filter(|l| l.contains("t:ACK") || l.contains("t:CON") || l.contains("t:NON"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("c:")))
        .rfind(|c| c.starts_with('2') || c.starts_with('4') || c.starts_with('5'))
}

/// The registration id in the Location-Path `rd/<id>` of a Register's
/// answer.
pub fn location(output: &str) -> String {
    output
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
        .unwrap_or_else(|| panic!("no Location-Path in:\n{output}"))
}
