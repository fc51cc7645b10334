//! LwM2M over DTLS 1.2 PSK against a live Eclipse Wakaama
//! `lwm2mclient_tinydtls` (tinydtls offers TLS_PSK_WITH_AES_128_CCM_8
//! only), through the real daemon and a real mosquitto: the client
//! registers over DTLS and is read, written and observed over MQTT; its
//! endpoint cannot be claimed over the plain listener; a wrong key never
//! registers; the right key with another endpoint name is refused.
//!
//! The client is built by `shared/peers/build-wakaama` into `target/peers`
//! (scripts/test does it); `FERROGATE_LWM2MCLIENT_TINYDTLS` may name it.
//! Without it the test skips with the reason, and fails in CI.

mod common;
mod daemon;
mod wakaama;

use std::process::Command;
use std::time::Duration;

use common::{Mosquitto, Subscriber, free_udp_port_below_ephemeral as udp_port};
use daemon::{ConfigDir, Daemon};
use serde_json::{Value as Json, json};
use wakaama::{Wakaama, peer};

const WAIT: Duration = Duration::from_secs(20);
const KEY_A: &str = "000102030405060708090a0b0c0d0e0f";
const KEY_C: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";

struct Gateway {
    root: String,
    _broker: Mosquitto,
    config: ConfigDir,
    _daemon: Daemon,
    sub: Subscriber,
    plain_port: u16,
    dtls_port: u16,
}

impl Gateway {
    async fn start(id: &str) -> Gateway {
        let broker = Mosquitto::start();
        let plain_port = udp_port();
        let dtls_port = udp_port();
        let devices = format!(
            "[lwm2m.server]\nbind = \"127.0.0.1:{plain_port}\"\ndtls_bind = \"127.0.0.1:{dtls_port}\"\ncredentials = \"../psk.toml\"\nmax_dtls_handshakes = 8\n"
        );
        let config = ConfigDir::new(id, broker.port, "5", &devices);
        let psk = config.path().join("psk.toml");
        std::fs::write(
            &psk,
            format!(
                "[[psk]]\nendpoint = \"wk-a\"\nidentity = \"id-a\"\nkey_hex = \"{KEY_A}\"\n\n\
                 [[psk]]\nendpoint = \"wk-c\"\nidentity = \"id-c\"\nkey_hex = \"{KEY_C}\"\n"
            ),
        )
        .expect("credentials");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let sub = Subscriber::start(broker.port, "#").await;
        let daemon = Daemon::start(config.path());
        sub.wait_for(&format!("ferrogate/{id}/status"), WAIT, |m| {
            m.json()["state"] == "online"
        })
        .await;
        Gateway {
            root: format!("ferrogate/{id}"),
            _broker: broker,
            config,
            _daemon: daemon,
            sub,
            plain_port,
            dtls_port,
        }
    }

    fn topic(&self, device: &str, leaf: &str) -> String {
        format!("{}/devices/{device}/{leaf}", self.root)
    }

    async fn ok(&self, device: &str, request: Json) -> Json {
        let id = request["id"].as_str().expect("id").to_string();
        self.sub
            .publish(
                &self.topic(device, "cmd"),
                request.to_string().as_bytes(),
                None,
            )
            .await;
        let result = self
            .sub
            .wait_for(&self.topic(device, "cmd/result"), WAIT, |m| {
                m.json()["id"] == id.as_str()
            })
            .await
            .json();
        assert_eq!(result["ok"], true, "{request} -> {result}");
        result["values"].clone()
    }

    fn registrations(&self, device: &str) -> Vec<Json> {
        self.sub
            .on(&self.topic(device, "event"))
            .iter()
            .map(|m| m.json())
            .filter(|e| e["event"] == "registered")
            .collect()
    }

    /// The LwM2M adapter's refusal counts, from `ferrogate status`.
    fn refused(&self) -> Json {
        let out = Command::new(daemon::binary())
            .arg("--socket")
            .arg(self.config.path().join("control.sock"))
            .args(["--json", "status"])
            .output()
            .expect("ferrogate status");
        let reply: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
        reply["result"]["adapters"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == "lwm2m"))
            .map(|a| a["refused"].clone())
            .unwrap_or(Json::Null)
    }

    fn dtls_failures(&self) -> u64 {
        self.refused()
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("dtls_"))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psk_clients_are_bound_to_their_endpoint() {
    let (Some(secure), Some(plain)) = (
        peer("lwm2mclient_tinydtls", "FERROGATE_LWM2MCLIENT_TINYDTLS"),
        peer("lwm2mclient", "FERROGATE_LWM2MCLIENT"),
    ) else {
        return;
    };
    let gw = Gateway::start("gw-dtls").await;
    let dir = gw.config.path().to_path_buf();

    // the right key: registered over DTLS, read, written, observed
    let mut a = Wakaama::start(
        &secure,
        &dir,
        "wk-a",
        gw.dtls_port,
        &["-t", "300", "-i", "id-a", "-s", KEY_A],
    );
    let event = gw
        .sub
        .wait_for(&gw.topic("wk-a", "event"), WAIT, |m| {
            m.json()["event"] == "registered"
        })
        .await
        .json();
    assert_eq!(event["security"], "psk", "{event}");
    assert_eq!(event["address"], format!("127.0.0.1:{}", a.port), "{event}");
    let values = gw
        .ok("wk-a", json!({"id": "r1", "op": "read", "path": "/3/0/0"}))
        .await;
    assert_eq!(
        values,
        json!({"device.manufacturer": "Open Mobile Alliance"})
    );
    gw.ok(
        "wk-a",
        json!({"id": "w1", "op": "write", "path": "/1/0/1", "value": 120}),
    )
    .await;
    let values = gw
        .ok("wk-a", json!({"id": "r2", "op": "read", "path": "/1/0/1"}))
        .await;
    assert_eq!(values["lwm2m_server.lifetime"], 120, "{values}");
    gw.ok(
        "wk-a",
        json!({"id": "o1", "op": "observe", "path": "/3/0/9"}),
    )
    .await;
    a.say("change /3/0/9 57");
    gw.sub
        .wait_for(&gw.topic("wk-a", "telemetry"), WAIT, |m| {
            m.json()["values"]["device.battery_level"] == 57
        })
        .await;

    // a plain client claiming the protected endpoint: 4.03, and the DTLS
    // registration stays
    let _claim = Wakaama::start(&plain, &dir, "wk-a", gw.plain_port, &["-t", "300"]);
    common::wait_until("the plain claim refused", WAIT, || {
        gw.refused()["needs_dtls"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let values = gw
        .ok("wk-a", json!({"id": "r3", "op": "read", "path": "/3/0/0"}))
        .await;
    assert_eq!(
        values,
        json!({"device.manufacturer": "Open Mobile Alliance"})
    );

    // a wrong key: the handshake fails, counted
    let before = gw.dtls_failures();
    let _wrong = Wakaama::start(
        &secure,
        &dir,
        "wk-c",
        gw.dtls_port,
        &["-t", "300", "-i", "id-c", "-s", KEY_A],
    );
    common::wait_until("the wrong key refused", WAIT, || {
        gw.dtls_failures() > before
    })
    .await;

    // the right key for another endpoint name: 4.03
    let _other = Wakaama::start(
        &secure,
        &dir,
        "wk-x",
        gw.dtls_port,
        &["-t", "300", "-i", "id-c", "-s", KEY_C],
    );
    common::wait_until("the other name refused", WAIT, || {
        gw.refused()["credential_mismatch"].as_u64().unwrap_or(0) >= 1
    })
    .await;

    // after all of it: one registration of wk-a (over DTLS, from its
    // client), none for the others, and wk-a still answers
    let values = gw
        .ok("wk-a", json!({"id": "r4", "op": "read", "path": "/3/0/0"}))
        .await;
    assert_eq!(
        values,
        json!({"device.manufacturer": "Open Mobile Alliance"})
    );
    let regs = gw.registrations("wk-a");
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert!(gw.registrations("wk-c").is_empty());
    assert!(gw.registrations("wk-x").is_empty());

    // a flood of ClientHellos from 200 loopback addresses: handshakes are
    // evicted (8 at most), the established session is not
    let hello = {
        let mut client = ferrogate_dtls::SessionTable::new(
            ferrogate_dtls::SessionLimits::default(),
            std::sync::Arc::new(ferrogate_dtls::Credentials::default()),
        );
        let server = std::net::SocketAddr::from(([127, 0, 0, 1], gw.dtls_port));
        client.connect(
            std::time::Instant::now(),
            server,
            b"flood",
            ferrogate_dtls::PskKey::new(vec![0; 16]),
        );
        client.poll_transmit().expect("a ClientHello").bytes
    };
    let flooders: Vec<std::net::UdpSocket> = (2..202u8)
        .map(|i| {
            std::net::UdpSocket::bind(("127.0.0.".to_string() + &i.to_string(), 0)).expect("bind")
        })
        .collect();
    for s in &flooders {
        s.send_to(&hello, ("127.0.0.1", gw.dtls_port))
            .expect("send");
    }
    common::wait_until("the flood evicted handshakes", WAIT, || {
        gw.refused()["dtls_handshake_evicted"].as_u64().unwrap_or(0) >= 150
    })
    .await;
    let values = gw
        .ok("wk-a", json!({"id": "r5", "op": "read", "path": "/3/0/0"}))
        .await;
    assert_eq!(
        values,
        json!({"device.manufacturer": "Open Mobile Alliance"})
    );
    assert_eq!(gw.refused()["dtls_session_evicted"], Json::Null);

    // `ferrogate lwm2m clients` says how the client is secured
    let out = Command::new(daemon::binary())
        .arg("--socket")
        .arg(gw.config.path().join("control.sock"))
        .args(["lwm2m", "clients"])
        .output()
        .expect("ferrogate lwm2m clients");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("SECURITY"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("wk-a"))
        .unwrap_or_default();
    assert!(row.contains("psk") && row.contains("online"), "{table}");
}
