//! The gateway against a live Eclipse Wakaama `lwm2mclient` (the most
//! deployed open LwM2M client), over MQTT through a real mosquitto and the
//! real daemon binary: every LwM2M operation a user would try, end to end.
//!
//! The client is built from the source snapshot by
//! `shared/peers/build-wakaama` (scripts/test does it once per run, into
//! `target/peers`); `FERROGATE_LWM2MCLIENT` may name the binary instead.
//! Without it the tests skip with the reason, and fail in CI (`CI=true`).

mod common;
mod daemon;
mod wakaama;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Mosquitto, Subscriber, free_udp_port_below_ephemeral as udp_port};
use daemon::{ConfigDir, Daemon};
use serde_json::{Value as Json, json};
use wakaama::Wakaama;

const WAIT: Duration = Duration::from_secs(20);

/// The Wakaama client binary: `FERROGATE_LWM2MCLIENT`, or
/// `target/peers/lwm2mclient`.
fn lwm2mclient() -> Option<PathBuf> {
    wakaama::peer("lwm2mclient", "FERROGATE_LWM2MCLIENT")
}

struct Gateway {
    root: String,
    _broker: Mosquitto,
    config: ConfigDir,
    _daemon: Daemon,
    sub: Subscriber,
    lwm2m_port: u16,
}

/// `extra` is appended to the `[lwm2m]` configuration, with `{dm_port}`
/// replaced by the LwM2M server's port.
async fn gateway(id: &str, extra: &str) -> Gateway {
    let broker = Mosquitto::start();
    let lwm2m_port = udp_port();
    let extra = extra.replace("{dm_port}", &lwm2m_port.to_string());
    let devices = format!("[lwm2m.server]\nbind = \"127.0.0.1:{lwm2m_port}\"\n{extra}\n");
    let config = ConfigDir::new(id, broker.port, "5", &devices);
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
        lwm2m_port,
    }
}

impl Gateway {
    fn topic(&self, device: &str, leaf: &str) -> String {
        format!("{}/devices/{device}/{leaf}", self.root)
    }

    /// Publish a command and wait for its result.
    async fn command(&self, device: &str, request: Json) -> Json {
        let id = request["id"].as_str().expect("id").to_string();
        self.sub
            .publish(
                &self.topic(device, "cmd"),
                request.to_string().as_bytes(),
                None,
            )
            .await;
        self.sub
            .wait_for(&self.topic(device, "cmd/result"), WAIT, |m| {
                m.json()["id"] == id.as_str()
            })
            .await
            .json()
    }

    async fn ok(&self, device: &str, request: Json) -> Json {
        let result = self.command(device, request.clone()).await;
        assert_eq!(result["ok"], true, "{request} -> {result}");
        result["values"].clone()
    }

    async fn event(&self, device: &str, event: &str) -> Json {
        self.sub
            .wait_for(&self.topic(device, "event"), WAIT, |m| {
                m.json()["event"] == event
            })
            .await
            .json()
    }

    async fn status(&self, device: &str, state: &str, within: Duration) -> Json {
        self.sub
            .wait_for(&self.topic(device, "status"), within, |m| {
                m.json()["state"] == state
            })
            .await
            .json()
    }

    async fn telemetry(&self, device: &str, point: &str, value: Json) -> Json {
        self.sub
            .wait_for(&self.topic(device, "telemetry"), WAIT, |m| {
                m.json()["values"][point] == value
            })
            .await
            .json()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_against_a_live_wakaama_client() {
    let Some(bin) = lwm2mclient() else {
        return;
    };
    let gw = gateway("gw-wk", "").await;
    let ep = "wakaama-live";
    let mut client = Wakaama::start(&bin, gw.config.path(), ep, gw.lwm2m_port, &["-t", "300"]);

    // register -> online + meta with the object list
    gw.status(ep, "online", WAIT).await;
    gw.event(ep, "registered").await;
    let meta = gw
        .sub
        .wait_for(&gw.topic(ep, "meta"), WAIT, |_| true)
        .await
        .json();
    let objects = meta.to_string();
    assert!(
        objects.contains("/3/0") && objects.contains("/31024"),
        "meta lists the client's objects: {meta}"
    );

    // read by path: an instance, a resource; then every point
    let values = gw
        .ok(ep, json!({"id": "r1", "op": "read", "path": "/3/0"}))
        .await;
    assert_eq!(
        values["device.manufacturer"], "Open Mobile Alliance",
        "{values}"
    );
    assert!(values.as_object().is_some_and(|v| v.len() > 5), "{values}");
    let values = gw
        .ok(ep, json!({"id": "r2", "op": "read", "path": "/3/0/0"}))
        .await;
    assert_eq!(
        values,
        json!({"device.manufacturer": "Open Mobile Alliance"})
    );
    // Wakaama answers FETCH with an empty ACK only: GETs within 2 s
    let asked = Instant::now();
    let all = gw
        .ok(ep, json!({"id": "r3", "op": "read", "timeout_ms": 2000}))
        .await;
    assert!(asked.elapsed() < Duration::from_secs(2) + Duration::from_millis(500));
    assert_eq!(all["device.manufacturer"], "Open Mobile Alliance", "{all}");
    assert!(all.get("lwm2m_server.lifetime").is_some(), "{all}");
    // remembered: the next read-all goes straight to GETs
    let asked = Instant::now();
    gw.ok(ep, json!({"id": "r4", "op": "read", "timeout_ms": 2000}))
        .await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    // write by path and by point name, read back
    gw.ok(
        ep,
        json!({"id": "w1", "op": "write", "path": "/1/0/1", "value": 120}),
    )
    .await;
    let values = gw
        .ok(ep, json!({"id": "w2", "op": "read", "path": "/1/0/1"}))
        .await;
    assert_eq!(values["lwm2m_server.lifetime"], 120, "{values}");
    gw.ok(
        ep,
        json!({"id": "w3", "op": "write", "point": "device.utc_offset", "value": "+02:00"}),
    )
    .await;
    let values = gw
        .ok(
            ep,
            json!({"id": "w4", "op": "read", "points": ["device.utc_offset"]}),
        )
        .await;
    assert_eq!(values["device.utc_offset"], "+02:00", "{values}");
    // a path-style point whatever point_naming is
    let values = gw
        .ok(ep, json!({"id": "w5", "op": "read", "points": ["3/0/0"]}))
        .await;
    assert_eq!(values["device.manufacturer"], "Open Mobile Alliance");

    // discover, write-attributes, observe + a change on the client
    let links = gw
        .ok(ep, json!({"id": "d1", "op": "discover", "path": "/3/0"}))
        .await;
    assert!(links.get("/3/0/9").is_some(), "{links}");
    gw.ok(
        ep,
        json!({"id": "a1", "op": "write-attr", "path": "/3/0/9", "args": {"pmin": 1, "pmax": 5}}),
    )
    .await;
    gw.ok(ep, json!({"id": "o1", "op": "observe", "path": "/3/0/9"}))
        .await;
    client.say("change /3/0/9 50");
    gw.telemetry(ep, "device.battery_level", json!(50)).await;
    // pmax = 5 s: the client notifies again with nothing changed
    let seen = gw.sub.on(&gw.topic(ep, "telemetry")).len();
    common::wait_until("a notification at pmax", WAIT, || {
        gw.sub.on(&gw.topic(ep, "telemetry")).len() > seen
    })
    .await;

    // the client's Send
    client.say("change /3/0/9 42");
    gw.telemetry(ep, "device.battery_level", json!(42)).await;
    client.say("send 123 /3/0/13");
    gw.sub
        .wait_for(&gw.topic(ep, "telemetry"), WAIT, |m| {
            m.json()["values"].get("device.current_time").is_some()
        })
        .await;

    // the CLI reads a path through the daemon
    let socket = gw.config.path().join("control.sock");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(daemon::binary())
            .arg("--socket")
            .arg(&socket)
            .args(["--json", "lwm2m", "read", "wakaama-live", "/3/0/0"])
            .output()
            .expect("ferrogate lwm2m read")
    })
    .await
    .expect("cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Open Mobile Alliance"), "{text}");

    // update, execute, then quit: deregistered and offline
    client.say("update 123");
    gw.event(ep, "updated").await;
    gw.ok(ep, json!({"id": "x1", "op": "execute", "path": "/3/0/4"}))
        .await;
    client.say("quit");
    gw.event(ep, "deregistered").await;
    gw.status(ep, "offline", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_wakaama_client_goes_offline_when_its_lifetime_runs_out_and_is_forgotten() {
    let Some(bin) = lwm2mclient() else {
        return;
    };
    let gw = gateway("gw-wk-kill", "forget_after = \"2s\"").await;
    let ep = "wakaama-killed";
    let mut client = Wakaama::start(&bin, gw.config.path(), ep, gw.lwm2m_port, &["-t", "5"]);
    gw.status(ep, "online", WAIT).await;
    let killed = Instant::now();
    client.kill();
    let status = gw.status(ep, "offline", WAIT).await;
    assert_eq!(status["reason"], "lifetime expired", "{status}");
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    // forget_after later the device is forgotten: its retained status and
    // meta are cleared (empty retained payloads)
    for leaf in ["status", "meta"] {
        gw.sub
            .wait_for(&gw.topic(ep, leaf), WAIT, |m| m.payload.is_empty())
            .await;
    }
    let socket = gw.config.path().join("control.sock");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(daemon::binary())
            .arg("--socket")
            .arg(&socket)
            .args(["--json", "devices"])
            .output()
            .expect("ferrogate devices")
    })
    .await
    .expect("cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(ep), "forgotten, not listed: {text}");
}

/// libcoap's coap-client as the attacker: its answer code (`c:4.00`).
fn coap_post(uri: &str) -> String {
    let out = Command::new(common::require("coap-client-notls", "libcoap3-bin"))
        .args([
            "-m", "post", "-B", "5", "-v", "7", "-t", "40", "-e", "</3/0>",
        ])
        .arg(uri)
        .output()
        .expect("coap-client-notls");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.contains("t:ACK") || l.contains("t:CON") || l.contains("t:NON"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("c:")))
        .rfind(|c| c.starts_with('2') || c.starts_with('4') || c.starts_with('5'))
        .unwrap_or("none")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_registers_leave_the_gateway_serving() {
    let Some(bin) = lwm2mclient() else {
        return;
    };
    let gw = gateway("gw-wk-hostile", "").await;
    let port = gw.lwm2m_port;
    // a lifetime that once overflowed Instant + Duration and aborted the
    // daemon; a control character that once made mosquitto drop the
    // gateway for good
    for query in ["ep=x&lt=18446744073709551615", "ep=x%01y&lt=60"] {
        let uri = format!("coap://127.0.0.1:{port}/rd?{query}");
        let code = tokio::task::spawn_blocking(move || coap_post(&uri))
            .await
            .expect("coap-client");
        assert_eq!(code, "4.00", "{query}");
    }
    // the gateway is alive and its MQTT line flows: a real client registers
    let ep = "wakaama-after";
    let _client = Wakaama::start(&bin, gw.config.path(), ep, port, &["-t", "300"]);
    gw.status(ep, "online", WAIT).await;
    assert!(
        gw.sub.all().iter().all(|m| !m.topic.contains("x\u{1}y")),
        "the refused name never became a topic"
    );
}

/// Wakaama in bootstrap mode (`-b`, the address it is given is a bootstrap
/// server) against the gateway's bootstrap server: it is given an account
/// for the gateway's LwM2M server, registers there, and reads back the
/// lifetime and short server id it was given; an endpoint with no account
/// is refused and never registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wakaama_client_bootstraps_then_registers_where_it_was_sent() {
    let Some(bin) = lwm2mclient() else {
        return;
    };
    let bs_port = udp_port();
    let gw = gateway(
        "gw-bs",
        &format!(
            "[lwm2m.bootstrap]\nbind = \"127.0.0.1:{bs_port}\"\n\
             [[lwm2m.bootstrap.endpoint]]\nname = \"bs-client\"\n\
             server_uri = \"coap://127.0.0.1:{{dm_port}}\"\n\
             short_server_id = 5\nlifetime = \"77s\"\n"
        ),
    )
    .await;
    let dir = gw.config.path().to_path_buf();
    let _stranger = Wakaama::start(&bin, &dir, "stranger", bs_port, &["-b"]);
    let _client = Wakaama::start(&bin, &dir, "bs-client", bs_port, &["-b"]);

    gw.status("bs-client", "online", WAIT).await;
    let values = gw
        .ok(
            "bs-client",
            json!({"id": "b1", "op": "read", "path": "/1/0"}),
        )
        .await;
    assert_eq!(values["lwm2m_server.lifetime"], 77, "{values}");
    assert_eq!(values["lwm2m_server.short_server_id"], 5, "{values}");

    // the stranger asked too (it starts first) and was refused, counted
    let socket = dir.join("control.sock");
    common::wait_for("the refusal counted", WAIT, || {
        let out = Command::new(daemon::binary())
            .arg("--socket")
            .arg(&socket)
            .args(["--json", "status"])
            .output()
            .expect("ferrogate status");
        let reply: Json = serde_json::from_slice(&out.stdout).unwrap_or_default();
        reply["result"]["adapters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| {
                a["name"] == "lwm2m/bootstrap"
                    && a["refused"]["unknown_endpoint"].as_u64() >= Some(1)
            })
    });
    assert!(
        gw.sub.on(&gw.topic("stranger", "status")).is_empty(),
        "an endpoint without an account never reaches the server"
    );
}
