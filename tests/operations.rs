//! Operating the daemon: Prometheus metrics scraped during a real run; live
//! reload adds and removes devices and rejects a broken file while
//! telemetry keeps flowing with no seq gap.

mod common;
mod daemon;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Mosquitto, Subscriber};
use daemon::{ConfigDir, Daemon, simulated_device};

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of the first sample of `series` whose labels contain `labels`.
fn sample(text: &str, series: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(series) && l[series.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Turn the metrics endpoint on, on a free port, and return the port.
fn serve_metrics(config: &ConfigDir) -> u16 {
    let port = common::free_port();
    let path = config.path().join("gateway.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("bind = \"\"", &format!("bind = \"127.0.0.1:{port}\""));
    std::fs::write(path, text).unwrap();
    port
}

fn cli(config: &ConfigDir, args: &[&str]) -> std::process::Output {
    std::process::Command::new(daemon::binary())
        .arg("--socket")
        .arg(config.path().join("control.sock"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_a_running_gateway() {
    let broker = Mosquitto::start();
    let config = ConfigDir::new(
        "gw-metrics",
        broker.port,
        "5",
        &simulated_device("m-1", "50ms"),
    );
    let metrics_port = serve_metrics(&config);
    let sub = Subscriber::start(broker.port, "ferrogate/gw-metrics/devices/m-1/telemetry").await;
    let _gw = Daemon::start(config.path());
    sub.wait_for(
        "ferrogate/gw-metrics/devices/m-1/telemetry",
        Duration::from_secs(20),
        |m| m.json()["seq"] == 5,
    )
    .await;
    let out = cli(&config, &["write", "m-1", "setpoint", "500"]);
    assert_eq!(out.status.code(), Some(1));

    let text = scrape(metrics_port);
    assert_eq!(sample(&text, "ferrogate_up", ""), Some(1.0));
    assert_eq!(sample(&text, "ferrogate_mqtt_connected", ""), Some(1.0));
    assert!(sample(&text, "ferrogate_mqtt_acks_total", "").unwrap() >= 5.0);
    assert!(sample(&text, "ferrogate_outbox_depth", "").is_some());
    assert_eq!(
        sample(&text, "ferrogate_outbox_dropped_total", ""),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "ferrogate_adapter_up", "adapter=\"simulator\""),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "ferrogate_adapter_stalled", "adapter=\"simulator\""),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "ferrogate_device_online", "device=\"m-1\""),
        Some(1.0)
    );
    assert!(sample(&text, "ferrogate_device_readings_total", "device=\"m-1\"").unwrap() >= 10.0);
    assert!(sample(&text, "ferrogate_device_telemetry_total", "device=\"m-1\"").unwrap() >= 5.0);
    assert_eq!(
        sample(&text, "ferrogate_commands_total", "result=\"out_of_range\""),
        Some(1.0)
    );
    assert!(sample(&text, "ferrogate_uplink_latency_seconds_count", "").unwrap() >= 5.0);
    assert!(sample(&text, "ferrogate_process_resident_memory_bytes", "").unwrap() > 1e6);
    assert!(text.contains("# TYPE ferrogate_commands_total counter"));

    let mut s = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_removes_and_rejects_without_a_seq_gap() {
    let broker = Mosquitto::start();
    let config = ConfigDir::new(
        "gw-reload",
        broker.port,
        "5",
        &simulated_device("keep", "20ms"),
    );
    std::fs::write(
        config.path().join("conf.d/extra.toml"),
        simulated_device("gone", "20ms"),
    )
    .unwrap();
    let sub = Subscriber::start(broker.port, "ferrogate/gw-reload/devices/+/telemetry").await;
    let retained = Subscriber::start(broker.port, "ferrogate/gw-reload/devices/gone/+").await;
    let gw = Daemon::start(config.path());
    let keep = "ferrogate/gw-reload/devices/keep/telemetry";
    sub.wait_for(keep, Duration::from_secs(20), |_| true).await;
    sub.wait_for(
        "ferrogate/gw-reload/devices/gone/telemetry",
        Duration::from_secs(20),
        |_| true,
    )
    .await;

    // Remove `gone`, add `new`, by editing files and sending SIGHUP.
    std::fs::write(
        config.path().join("conf.d/extra.toml"),
        simulated_device("new", "20ms"),
    )
    .unwrap();
    gw.signal("HUP");
    sub.wait_for(
        "ferrogate/gw-reload/devices/new/telemetry",
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    let devices: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["--json", "devices"]).stdout).unwrap();
    let names: Vec<&str> = devices["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["keep", "new"]);

    // `gone`'s retained status and meta are cleared (an empty retained
    // payload each), so a consumer subscribing later no longer sees it.
    for leaf in ["status", "meta"] {
        let topic = format!("ferrogate/gw-reload/devices/gone/{leaf}");
        retained
            .wait_for(&topic, Duration::from_secs(20), |m| m.payload.is_empty())
            .await;
    }
    let later = Subscriber::start(broker.port, "ferrogate/gw-reload/devices/+/status").await;
    for device in ["keep", "new"] {
        let topic = format!("ferrogate/gw-reload/devices/{device}/status");
        later
            .wait_for(&topic, Duration::from_secs(20), |m| m.retain)
            .await;
    }
    assert!(
        later
            .on("ferrogate/gw-reload/devices/gone/status")
            .is_empty(),
        "a removed device's status is still retained"
    );

    // A reload with nothing changed restarts nothing and says so.
    let out = cli(&config, &["--json", "reload"]);
    assert!(out.status.success(), "{out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        reply["result"]["unchanged"],
        serde_json::json!(["simulator"]),
        "{reply}"
    );
    assert_eq!(reply["result"]["changed"], serde_json::json!([]), "{reply}");

    // A broken file is rejected with its position; the old config keeps running.
    std::fs::write(
        config.path().join("conf.d/broken.toml"),
        "[[simulator.device]]\nname = 5\n",
    )
    .unwrap();
    let out = cli(&config, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml:2:8"), "{err}");
    assert!(err.contains("old one keeps running"), "{err}");
    let before = sub.on(keep).len();
    common::wait_until("keep still flowing", Duration::from_secs(20), || {
        sub.on(keep).len() > before + 5
    })
    .await;

    // Through both reloads `keep`'s seq has no gap.
    let mut seqs: Vec<u64> = sub
        .on(keep)
        .iter()
        .map(|m| m.json()["seq"].as_u64().unwrap())
        .collect();
    seqs.dedup();
    let first = seqs[0];
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, first + i as u64, "gap or reorder in {seqs:?}");
    }
}

/// A Modbus TCP meter on a pymodbus slave: a holding register `setpoint`
/// (writable, 0..=500) and an input register `flow`.
fn modbus_device(port: u16) -> String {
    format!(
        r#"
[[modbus.connection]]
name = "plant"
transport = "tcp"
address = "127.0.0.1:{port}"
timeout = "500ms"

[[modbus.device]]
name = "meter"
connection = "plant"
unit = 1
poll = "100ms"

[[modbus.device.point]]
name = "setpoint"
area = "holding"
address = 0
type = "u16"
writable = true
min = 0
max = 500

[[modbus.device.point]]
name = "flow"
area = "input"
address = 0
type = "u16"

# A device with a point the slave does not have (exception 2).
[[modbus.device]]
name = "gauge"
connection = "plant"
unit = 1
poll = "1s"

[[modbus.device.point]]
name = "level"
area = "input"
address = 0
type = "u16"

[[modbus.device.point]]
name = "missing"
area = "holding"
address = 50
type = "u16"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_device_through_the_daemon_cli_and_metrics() {
    let mut slave = daemon::pymodbus_slave(
        serde_json::json!({"tcp": 0, "units": {"1": {"hr": [10], "ir": [77]}}}),
    );
    let broker = Mosquitto::start();
    let config = ConfigDir::new("gw-modbus", broker.port, "5", &modbus_device(slave.port));
    let metrics_port = serve_metrics(&config);
    let sub = Subscriber::start(broker.port, "ferrogate/gw-modbus/devices/meter/#").await;
    let _gw = Daemon::start(config.path());
    let telemetry = "ferrogate/gw-modbus/devices/meter/telemetry";
    let first = sub
        .wait_for(telemetry, Duration::from_secs(20), |_| true)
        .await
        .json();
    assert_eq!(first["values"]["flow"], 77);
    assert_eq!(first["values"]["setpoint"], 10);

    // A fresh read and a write the slave confirms, through the CLI.
    let read: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["--json", "read", "meter", "flow"]).stdout).unwrap();
    assert_eq!(read["result"]["values"]["flow"], 77);
    // `read DEVICE` shows every point: the good ones and, beside them, the
    // one that failed with its error; exit 1.
    let out = cli(&config, &["--json", "read", "gauge"]);
    assert_eq!(out.status.code(), Some(1));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["result"]["values"]["level"], 77, "{read}");
    assert_eq!(
        read["result"]["errors"]["missing"]["code"], "device_exception",
        "{read}"
    );
    let text = String::from_utf8_lossy(&cli(&config, &["read", "gauge"]).stdout).into_owned();
    assert!(text.contains("level") && text.contains("77"), "{text}");
    assert!(
        text.contains("missing") && text.contains("exception 2"),
        "{text}"
    );
    // `devices --adapter modbus` matches the `modbus/plant` instance;
    // `points` gives the point map from meta.
    let devices: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["--json", "devices", "--adapter", "modbus"]).stdout)
            .unwrap();
    let names: Vec<&str> = devices["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gauge", "meter"], "{devices}");
    let points: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["--json", "points", "meter"]).stdout).unwrap();
    let setpoint = &points["result"]["points"][0];
    assert_eq!(
        (
            &setpoint["name"],
            &setpoint["type"],
            &setpoint["writable"],
            &setpoint["max"],
            &setpoint["address"]
        ),
        (
            &"setpoint".into(),
            &"u16".into(),
            &true.into(),
            &500.0.into(),
            &"holding register 0".into()
        ),
        "{points}"
    );
    let out = cli(&config, &["tail", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown_device"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cli(&config, &["--json", "write", "meter", "setpoint", "321"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(slave.get(1, 3, 0, 1), [321], "the slave's register changed");
    let out = cli(&config, &["--json", "write", "meter", "flow", "1"]);
    let refused: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refused["error"]["code"], "not_writable");
    let out = cli(&config, &["--json", "write", "meter", "setpoint", "501"]);
    let refused: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refused["error"]["code"], "out_of_range");
    assert_eq!(
        slave.get(1, 3, 0, 1),
        [321],
        "refused writes never reached the slave"
    );

    let text = scrape(metrics_port);
    assert_eq!(
        sample(&text, "ferrogate_adapter_up", "adapter=\"modbus/plant\""),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "ferrogate_device_online", "device=\"meter\""),
        Some(1.0)
    );
    assert!(sample(&text, "ferrogate_device_readings_total", "device=\"meter\"").unwrap() >= 2.0);
    assert_eq!(
        sample(&text, "ferrogate_commands_total", "result=\"ok\""),
        // read flow, `level` read on its own twice (JSON and text), the write
        Some(4.0)
    );
    assert_eq!(
        sample(&text, "ferrogate_commands_total", "result=\"not_writable\""),
        Some(1.0)
    );

    // The slave goes away: read errors are counted by kind and the device
    // goes offline, on the status topic and in metrics.
    drop(slave);
    sub.wait_for(
        "ferrogate/gw-modbus/devices/meter/status",
        Duration::from_secs(30),
        |m| m.json()["state"] == "offline",
    )
    .await;
    // The endpoint renders at most once a second: wait for a fresh body.
    let mut text = String::new();
    common::wait_until(
        "metrics show the meter offline",
        Duration::from_secs(10),
        || {
            text = scrape(metrics_port);
            sample(&text, "ferrogate_device_online", "device=\"meter\"") == Some(0.0)
        },
    )
    .await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("ferrogate_device_read_errors_total")
                && l.contains("device=\"meter\""))
    );
}

/// A second daemon on the same state directory refuses to start (it would
/// share the outbox and the MQTT client id), names the holder's pid, and —
/// its stderr being a pipe — logs without colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_refuses() {
    let broker = Mosquitto::start();
    let config = ConfigDir::new("gw-lock", broker.port, "5", &simulated_device("d", "1s"));
    let first = Daemon::start(config.path());
    let lock = config.path().join("state/ferrogate.lock");
    let pid = first.child.id().to_string();
    common::wait_until(
        "the first daemon holds the lock",
        Duration::from_secs(20),
        || std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid),
    )
    .await;

    let mut second = std::process::Command::new(daemon::binary())
        .args(["run", "--config"])
        .arg(config.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = second.stderr.take().unwrap();
    let status = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = second.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = second.kill();
                panic!("a second daemon on the same state_dir kept running");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("in use by another ferrogate"), "{err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains("ERROR"), "the refusal is logged: {err}");
    assert!(
        !err.contains('\x1b'),
        "colour codes off a terminal: {err:?}"
    );
    // The first one is unaffected: the lock is still its own.
    assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), pid);
}

/// A fresh install (`run --wait-for-config` with an invalid configuration)
/// joins no broker: it says what is wrong and waits; once the file is
/// fixed, SIGHUP (or the periodic check) starts the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_install_waits_for_its_configuration() {
    use std::io::BufRead;
    let broker = Mosquitto::start();
    let config = ConfigDir::new("gw-wait", broker.port, "5", &simulated_device("d", "1s"));
    let gateway = config.path().join("gateway.toml");
    let valid = std::fs::read_to_string(&gateway).unwrap();
    std::fs::write(&gateway, valid.replace("gateway_id = \"gw-wait\"\n", "")).unwrap();
    let mut child = std::process::Command::new(daemon::binary())
        .env("RUST_LOG", "warn")
        .args(["run", "--wait-for-config", "--config"])
        .arg(config.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let guard = Daemon { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut said = String::new();
    while !said.contains("waiting for a valid configuration") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        said += &rx.recv_timeout(left).expect("the daemon says it waits");
        said.push('\n');
    }
    assert!(said.contains("missing `gateway_id`"), "{said}");
    let socket = config.path().join("control.sock");
    assert!(!socket.exists(), "nothing started while waiting");

    std::fs::write(&gateway, &valid).unwrap();
    guard.signal("HUP");
    common::wait_until("the gateway started", Duration::from_secs(20), || {
        cli(&config, &["status"]).status.success()
    })
    .await;
}

/// `config check --connect` tries the configuration once: the broker, and
/// one poll of every device (the good values, the failed points), without
/// starting a gateway: nothing is published and no socket is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_connect_tries_the_broker_and_each_device_once() {
    let slave = daemon::pymodbus_slave(
        serde_json::json!({"tcp": 0, "units": {"1": {"hr": [10], "ir": [77]}}}),
    );
    let broker = Mosquitto::start();
    let config = ConfigDir::new("gw-try", broker.port, "5", &modbus_device(slave.port));
    let sub = Subscriber::start(broker.port, "ferrogate/gw-try/#").await;
    let try_it = |config: &ConfigDir| {
        let out = std::process::Command::new(daemon::binary())
            .args(["--json", "config", "check", "--connect", "--config"])
            .arg(config.path())
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        (out.status.code(), json)
    };
    let (code, json) = try_it(&config);
    // `gauge` has a point the slave lacks: reported, exit 1.
    assert_eq!(code, Some(1), "{json}");
    let result = &json["error"]["result"];
    assert_eq!(result["broker"]["ok"], true, "{json}");
    let device = |name: &str| {
        result["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(device("meter")["ok"], true, "{json}");
    assert_eq!(device("meter")["values"]["flow"], 77, "{json}");
    assert_eq!(device("gauge")["values"]["level"], 77, "{json}");
    assert!(
        device("gauge")["errors"]["missing"]
            .as_str()
            .unwrap()
            .contains("exception 2"),
        "{json}"
    );
    assert!(!config.path().join("control.sock").exists());
    assert!(
        sub.on("ferrogate/gw-try/status").is_empty(),
        "nothing published"
    );

    // No broker there: said so.
    let down = ConfigDir::new(
        "gw-try",
        common::free_port(),
        "5",
        &modbus_device(slave.port),
    );
    let (code, json) = try_it(&down);
    assert_eq!(code, Some(1));
    assert_eq!(json["error"]["result"]["broker"]["ok"], false, "{json}");
}
