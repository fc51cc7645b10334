//! Helpers for tests that run libcoap's programs against the adapter.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ferrogate_coap::CoapKind;
use ferrogate_sdk::testing::{self, TestHarness};
use ferrogate_sdk::{DeviceStatus, Telemetry, Uplink};

/// Fail with a clear message when a peer program is missing.
pub fn require(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not on PATH: install the Debian package libcoap3-bin (apt-get install -y libcoap3-bin)")
        })
}

/// A UDP port free right now, below the kernel's ephemeral range (32768
/// and up): sockets other tests bind to port 0 cannot take it between this
/// check and the bind of the server that gets it.
pub fn free_udp_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 5_000) as u16;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        if std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// Run coap-client-notls with `args` and return every response code it
/// printed with `-v 7` (it exits 0 even on 4.xx).
pub async fn coap_client(args: &[&str]) -> Vec<String> {
    let program = require("coap-client-notls");
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(program)
            .args(["-v", "7", "-B", "10"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("coap-client did not finish in 30 s")
    .expect("coap-client failed to start");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let codes: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("v:1 "))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("c:")))
        .filter(|c| c.len() == 4 && matches!(c.as_bytes()[0], b'2'..=b'5'))
        .map(str::to_string)
        .collect();
    assert!(
        !codes.is_empty() || text.contains("timeout"),
        "no response seen:\n{text}"
    );
    codes
}

/// Build the CoAP adapter from `toml` and run it; returns the harness.
pub fn start_adapter(
    toml: &str,
) -> (
    TestHarness,
    tokio::task::JoinHandle<Result<(), ferrogate_sdk::AdapterError>>,
) {
    let mut built = match testing::build(&CoapKind, toml, &[]) {
        Ok(b) => b,
        Err(issues) => panic!("config rejected: {issues:?}"),
    };
    assert_eq!(built.len(), 1);
    let mut adapter = built.remove(0).adapter;
    let (ctx, harness) = testing::context("coap");
    let task = tokio::spawn(async move { adapter.run(ctx).await });
    (harness, task)
}

/// The next uplink matching `pick`, within 15 s.
pub async fn next_uplink<T>(h: &mut TestHarness, mut pick: impl FnMut(&Uplink) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let envelope = tokio::time::timeout_at(deadline, h.uplinks.recv())
            .await
            .expect("no matching uplink within 15 s")
            .expect("uplink channel closed");
        if let Some(t) = pick(&envelope.uplink) {
            return t;
        }
    }
}

pub async fn telemetry(h: &mut TestHarness, device: &str) -> Telemetry {
    next_uplink(h, |u| match u {
        Uplink::Telemetry(t) if t.device == device => Some(t.clone()),
        _ => None,
    })
    .await
}

pub async fn status(h: &mut TestHarness, device: &str) -> DeviceStatus {
    next_uplink(h, |u| match u {
        Uplink::Status(s) if s.device == device => Some(s.clone()),
        _ => None,
    })
    .await
}

/// A running coap-server-notls, killed on drop.
pub struct CoapServer {
    pub port: u16,
    child: tokio::process::Child,
}

impl CoapServer {
    pub async fn start() -> CoapServer {
        Self::start_on(free_udp_port()).await
    }

    pub async fn start_on(port: u16) -> CoapServer {
        let program = require("coap-server-notls");
        let child = tokio::process::Command::new(program)
            .args(["-A", "127.0.0.1", "-p", &port.to_string(), "-d", "10"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("coap-server-notls failed to start");
        // ready when it answers a GET of its index
        let url = format!("coap://127.0.0.1:{port}/");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = tokio::process::Command::new(require("coap-client-notls"))
                .args(["-B", "1", &url])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .expect("coap-client");
            if String::from_utf8_lossy(&out.stdout).contains("libcoap") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "coap-server-notls never answered"
            );
        }
        CoapServer { port, child }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
