//! Username and password from a file or an environment variable reach the
//! broker (mosquitto with a password file); a wrong password is refused and
//! reported without ever showing the secret.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use ferrogate::north::config::MqttVersion;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(20);

fn secured_broker() -> (Mosquitto, u16, tempfile::TempDir) {
    let passwd = require("mosquitto_passwd", "mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let ok = Command::new(passwd)
        .args(["-b", "-c"])
        .arg(&file)
        .args(["gateway", "s3cret-pw"])
        .status()
        .unwrap();
    assert!(ok.success());
    let secured = free_port();
    let extra = format!(
        "listener {secured} 127.0.0.1\nper_listener_settings false\npassword_file {}\n",
        file.display()
    );
    (Mosquitto::start_with(free_port(), &extra), secured, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_from_file_and_from_env() {
    let (broker, secured, _dir) = secured_broker();
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = secrets.path().join("pw");
    std::fs::write(&pw_file, "s3cret-pw\n").unwrap();
    // SAFETY: set before any thread of this test reads the environment;
    // the variable name is unique to this test.
    unsafe { std::env::set_var("NORTH_TEST_MQTT_PW", "s3cret-pw") };
    let sub = Subscriber::start_auth(
        broker.port,
        "ferrogate/+/devices/+/telemetry",
        "gateway",
        "s3cret-pw",
    )
    .await;
    for (gw, from_file, version) in [
        ("gwa", true, MqttVersion::V5),
        ("gwb", false, MqttVersion::V311),
    ] {
        let state = tempfile::tempdir().unwrap();
        let north = start_north(
            gw,
            &format!("mqtt://127.0.0.1:{secured}"),
            state.path(),
            |m, _| {
                m.version = version;
                m.username = Some("gateway".into());
                if from_file {
                    m.password_file = Some(pw_file.clone());
                } else {
                    m.password_env = Some("NORTH_TEST_MQTT_PW".into());
                }
            },
        )
        .await;
        UplinkSender::new("sim", north.uplink_tx())
            .send(telemetry("d", &[("x", Value::Int(1))]))
            .await
            .unwrap();
        sub.wait_for(&format!("ferrogate/{gw}/devices/d/telemetry"), WAIT, |_| {
            true
        })
        .await;
        north.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_and_reported() {
    let (_broker, secured, _dir) = secured_broker();
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = secrets.path().join("pw");
    std::fs::write(&pw_file, "not-the-password").unwrap();
    let state = tempfile::tempdir().unwrap();
    let north = start_north(
        "gwc",
        &format!("mqtt://127.0.0.1:{secured}"),
        state.path(),
        |m, _| {
            m.username = Some("gateway".into());
            m.password_file = Some(pw_file.clone());
        },
    )
    .await;
    wait_until("refusal reported", WAIT, || {
        north.status().live.last_error.is_some()
    })
    .await;
    let st = north.status();
    assert!(!st.live.connected);
    let err = st.live.last_error.clone().unwrap();
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(!format!("{st:?}").contains("not-the-password"));
    north.shutdown().await;
}
