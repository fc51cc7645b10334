//! CoAP ingest over DTLS 1.2 PSK against libcoap's own DTLS clients
//! (`coap-client-gnutls` and `coap-client-openssl`, Debian `libcoap3-bin`),
//! through the real daemon and a real mosquitto: a device that proves its
//! key publishes telemetry; over the plain listener the same device is
//! refused; a key for one device cannot publish for another; a wrong key
//! is a counted failed handshake.
//!
//! libcoap 4.3.1's `-k` takes the key as text: the credentials file holds
//! that text's bytes in hex.

mod common;
mod daemon;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Mosquitto, Subscriber, free_udp_port_below_ephemeral as udp_port};
use daemon::{ConfigDir, Daemon};
use serde_json::Value as Json;

const WAIT: Duration = Duration::from_secs(20);
const KEY_TEXT: &str = "meter-1-secret!!";

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// One POST with a libcoap client; its `-v` output names the answer.
fn post(client: &str, uri: &str, body: &str, psk: Option<(&str, &str)>) -> Output {
    let bin = common::require(client, "libcoap3-bin");
    let mut cmd = Command::new(bin);
    cmd.args(["-m", "post", "-B", "5", "-e", body]);
    if let Some((identity, key)) = psk {
        cmd.args(["-u", identity, "-k", key]);
    }
    cmd.arg(uri).output().expect("run the libcoap client")
}

struct Gateway {
    root: String,
    _broker: Mosquitto,
    config: ConfigDir,
    daemon: Daemon,
    sub: Subscriber,
    plain: u16,
    dtls: u16,
}

fn credentials(entries: &[(&str, &str, &str)]) -> String {
    entries
        .iter()
        .map(|(device, identity, key)| {
            format!(
                "[[psk]]\nendpoint = \"{device}\"\nidentity = \"{identity}\"\nkey_hex = \"{}\"\n",
                hex(key)
            )
        })
        .collect()
}

impl Gateway {
    async fn start(id: &str) -> Gateway {
        let broker = Mosquitto::start();
        let (plain, dtls) = (udp_port(), udp_port());
        let devices = format!(
            "[coap.server]\nbind = \"127.0.0.1:{plain}\"\ndtls_bind = \"127.0.0.1:{dtls}\"\ncredentials = \"../psk.toml\"\nallow = [\"lab-*\"]\n\n[[coap.device]]\nname = \"meter-1\"\n"
        );
        let config = ConfigDir::new(id, broker.port, "5", &devices);
        std::fs::write(
            config.path().join("psk.toml"),
            credentials(&[("meter-1", "meter-1-id", KEY_TEXT)]),
        )
        .expect("credentials");
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
            daemon,
            sub,
            plain,
            dtls,
        }
    }

    fn telemetry(&self, device: &str) -> Vec<Json> {
        self.sub
            .on(&format!("{}/devices/{device}/telemetry", self.root))
            .iter()
            .map(|m| m.json()["values"].clone())
            .collect()
    }

    fn refused(&self, reason: &str) -> u64 {
        let out = Command::new(daemon::binary())
            .arg("--socket")
            .arg(self.config.path().join("control.sock"))
            .args(["--json", "status"])
            .output()
            .expect("ferrogate status");
        let reply: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
        let refused = reply["result"]["adapters"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == "coap"))
            .map(|a| a["refused"].clone())
            .unwrap_or(Json::Null);
        match reason {
            "dtls_*" => refused
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.starts_with("dtls_"))
                        .filter_map(|(_, v)| v.as_u64())
                        .sum()
                })
                .unwrap_or(0),
            _ => refused[reason].as_u64().unwrap_or(0),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_publish_only_with_their_own_key() {
    let gw = Gateway::start("gw-coaps").await;
    let secure = format!("coaps://127.0.0.1:{}", gw.dtls);
    let topic = format!("{}/devices/meter-1/telemetry", gw.root);

    // GnuTLS and OpenSSL clients with the device's key
    for (client, value) in [
        ("coap-client-gnutls", "21.5"),
        ("coap-client-openssl", "22.5"),
    ] {
        let out = post(
            client,
            &format!("{secure}/meter-1/temp"),
            value,
            Some(("meter-1-id", KEY_TEXT)),
        );
        let want: f64 = value.parse().unwrap();
        gw.sub
            .wait_for(&topic, WAIT, |m| m.json()["values"]["temp"] == want)
            .await;
        assert!(out.status.success(), "{client}: {out:?}");
    }

    // the same device over the plain listener: 4.03, nothing published
    let out = post(
        "coap-client-notls",
        &format!("coap://127.0.0.1:{}/meter-1/temp", gw.plain),
        "99",
        None,
    );
    common::wait_until("the plain post refused", WAIT, || {
        gw.refused("needs_dtls") >= 1
    })
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4.03")
            || String::from_utf8_lossy(&out.stderr).contains("4.03"),
        "{out:?}"
    );

    // the device's key for another (allowed) name: 4.03
    post(
        "coap-client-gnutls",
        &format!("{secure}/lab-2/temp"),
        "7",
        Some(("meter-1-id", KEY_TEXT)),
    );
    common::wait_until("the other name refused", WAIT, || {
        gw.refused("credential_mismatch") >= 1
    })
    .await;

    // a wrong key: the handshake fails, counted (reported every 5 s)
    post(
        "coap-client-gnutls",
        &format!("{secure}/meter-1/temp"),
        "98",
        Some(("meter-1-id", "not-the-key-0000")),
    );
    common::wait_until("the wrong key counted", WAIT, || gw.refused("dtls_*") >= 1).await;

    // after all of it, the device still publishes, and nothing else did
    post(
        "coap-client-gnutls",
        &format!("{secure}/meter-1/temp"),
        "23.5",
        Some(("meter-1-id", KEY_TEXT)),
    );
    gw.sub
        .wait_for(&topic, WAIT, |m| m.json()["values"]["temp"] == 23.5)
        .await;
    let seen: Vec<Json> = gw
        .telemetry("meter-1")
        .iter()
        .map(|v| v["temp"].clone())
        .collect();
    assert_eq!(seen, [21.5, 22.5, 23.5], "{seen:?}");
    assert!(gw.telemetry("lab-2").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_reload_adds_and_revokes_devices() {
    let gw = Gateway::start("gw-coaps-reload").await;
    let secure = format!("coaps://127.0.0.1:{}", gw.dtls);
    let meter = format!("{}/devices/meter-1/telemetry", gw.root);
    post(
        "coap-client-gnutls",
        &format!("{secure}/meter-1/temp"),
        "1",
        Some(("meter-1-id", KEY_TEXT)),
    );
    gw.sub
        .wait_for(&meter, WAIT, |m| m.json()["values"]["temp"] == 1)
        .await;

    // meter-1's key revoked, lab-2's added; SIGHUP
    std::fs::write(
        gw.config.path().join("psk.toml"),
        credentials(&[("lab-2", "lab-2-id", "lab-2-secret-key")]),
    )
    .expect("credentials");
    gw.daemon.signal("HUP");
    let deadline = std::time::Instant::now() + WAIT;
    while gw.telemetry("lab-2").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "lab-2 never published with its new key"
        );
        post(
            "coap-client-gnutls",
            &format!("{secure}/lab-2/temp"),
            "2",
            Some(("lab-2-id", "lab-2-secret-key")),
        );
    }

    // the revoked key no longer gets a session
    let before = gw.refused("dtls_*");
    post(
        "coap-client-gnutls",
        &format!("{secure}/meter-1/temp"),
        "3",
        Some(("meter-1-id", KEY_TEXT)),
    );
    common::wait_until("the revoked key refused", WAIT, || {
        gw.refused("dtls_*") > before
    })
    .await;
    let seen: Vec<Json> = gw
        .telemetry("meter-1")
        .iter()
        .map(|v| v["temp"].clone())
        .collect();
    assert_eq!(seen, [1], "{seen:?}");
}
