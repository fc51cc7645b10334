//! Commands published on `{root}/devices/{device}/cmd` reach the device and
//! come back on `cmd/result` (and, for MQTT 5 requests with a response topic
//! and correlation data, on that topic with that data); audited writes
//! appear as device events. Real mosquitto, real daemon binary.

mod common;
mod daemon;

use std::time::Duration;

use common::{Mosquitto, Subscriber};
use daemon::{ConfigDir, Daemon, simulated_device};
use rumqttc::v5::mqttbytes::v5::PublishProperties;

const ROOT: &str = "ferrogate/gw-cmd";

async fn start(version: &str) -> (Mosquitto, ConfigDir, Daemon, Subscriber) {
    let broker = Mosquitto::start();
    let config = ConfigDir::new(
        "gw-cmd",
        broker.port,
        version,
        &simulated_device("boiler", "1s"),
    );
    let sub = Subscriber::start(broker.port, "#").await;
    let gw = Daemon::start(config.path());
    // Meta is published once the adapter runs: the device is routable then.
    sub.wait_for(
        &format!("{ROOT}/devices/boiler/meta"),
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    (broker, config, gw, sub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_request_is_answered_on_its_response_topic_too() {
    let (_broker, _config, _gw, sub) = start("5").await;
    let props = PublishProperties {
        response_topic: Some("ferrogate/gw-cmd/responses/42".into()),
        correlation_data: Some(b"corr-42".to_vec().into()),
        ..Default::default()
    };
    sub.publish(
        &format!("{ROOT}/devices/boiler/cmd"),
        br#"{"id":"w1","op":"write","point":"setpoint","value":55}"#,
        Some(props),
    )
    .await;
    let result = sub
        .wait_for(
            &format!("{ROOT}/devices/boiler/cmd/result"),
            Duration::from_secs(20),
            |m| m.json()["id"] == "w1",
        )
        .await;
    let json = result.json();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["device"], "boiler");
    assert_eq!(json["values"]["setpoint"], 55.0);
    let reply = sub
        .wait_for(
            "ferrogate/gw-cmd/responses/42",
            Duration::from_secs(20),
            |_| true,
        )
        .await;
    assert_eq!(reply.correlation.as_deref(), Some(&b"corr-42"[..]));
    assert_eq!(reply.json()["id"], "w1");

    // Audited: the write shows up as a device event.
    let event = sub
        .wait_for(
            &format!("{ROOT}/devices/boiler/event"),
            Duration::from_secs(20),
            |m| m.json()["id"] == "w1",
        )
        .await;
    assert_eq!(event.json()["event"], "command");
    assert_eq!(event.json()["ok"], true);

    // The value the device confirmed is what a fresh read returns.
    sub.publish(
        &format!("{ROOT}/devices/boiler/cmd"),
        br#"{"id":"r1","op":"read","point":"setpoint"}"#,
        None,
    )
    .await;
    let read = sub
        .wait_for(
            &format!("{ROOT}/devices/boiler/cmd/result"),
            Duration::from_secs(20),
            |m| m.json()["id"] == "r1",
        )
        .await;
    assert_eq!(read.json()["values"]["setpoint"], 55.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_commands_and_bad_requests() {
    let (_broker, _config, _gw, sub) = start("3.1.1").await;
    let cmd = format!("{ROOT}/devices/boiler/cmd");
    let results = format!("{ROOT}/devices/boiler/cmd/result");
    sub.publish(
        &cmd,
        br#"{"id":"a","op":"write","point":"setpoint","value":500}"#,
        None,
    )
    .await;
    sub.publish(
        &cmd,
        br#"{"id":"b","op":"write","point":"count","value":1}"#,
        None,
    )
    .await;
    sub.publish(&cmd, b"{this is not json", None).await;
    sub.publish(&cmd, br#"{"id":"c","op":"explode"}"#, None)
        .await;
    sub.publish(
        &format!("{ROOT}/devices/ghost/cmd"),
        br#"{"id":"d","op":"read"}"#,
        None,
    )
    .await;
    let code = |id: &'static str, topic: String| {
        let sub = &sub;
        async move {
            sub.wait_for(&topic, Duration::from_secs(20), |m| m.json()["id"] == id)
                .await
                .json()["error"]["code"]
                .clone()
        }
    };
    assert_eq!(code("a", results.clone()).await, "out_of_range");
    assert_eq!(code("b", results.clone()).await, "not_writable");
    assert_eq!(code("c", results.clone()).await, "bad_request");
    assert_eq!(
        code("d", format!("{ROOT}/devices/ghost/cmd/result")).await,
        "unknown_device"
    );
    let malformed = sub
        .wait_for(&results, Duration::from_secs(20), |m| {
            m.json()["id"].is_null()
        })
        .await
        .json();
    assert_eq!(malformed["ok"], false);
    assert_eq!(malformed["error"]["code"], "bad_request");
    assert!(
        malformed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
}

/// Requests that must not execute what they seem to ask (#17 items 9-11,
/// #19): each is answered once with `bad_request` and the device keeps its
/// value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_answered_and_not_executed() {
    let (_broker, _config, _gw, sub) = start("5").await;
    let cmd = format!("{ROOT}/devices/boiler/cmd");
    let results = format!("{ROOT}/devices/boiler/cmd/result");
    let wait = Duration::from_secs(20);
    let answer = |id: &'static str| {
        let sub = &sub;
        let results = results.clone();
        async move {
            sub.wait_for(&results, wait, |m| m.json()["id"] == id)
                .await
                .json()
        }
    };
    let refused = |json: &serde_json::Value, text: &str| {
        assert_eq!(json["ok"], false, "{json}");
        assert_eq!(json["error"]["code"], "bad_request", "{json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(text), "{message}");
    };

    // Duplicate keys: serde_json alone would have run the write.
    sub.publish(
        &cmd,
        br#"{"id":"dup","op":"read","op":"write","point":"setpoint","value":77}"#,
        None,
    )
    .await;
    refused(&answer("dup").await, "duplicate key `op`");

    // A response topic outside `{root}/responses/` is not published on.
    let props = PublishProperties {
        response_topic: Some(format!("{ROOT}/devices/boiler/telemetry")),
        correlation_data: Some(b"x".to_vec().into()),
        ..Default::default()
    };
    sub.publish(
        &cmd,
        br#"{"id":"rt","op":"write","point":"setpoint","value":66}"#,
        Some(props),
    )
    .await;
    refused(&answer("rt").await, "not under");

    // A retained command: answered once, never executed.
    sub.publish_retained(
        &cmd,
        br#"{"id":"ret","op":"write","point":"setpoint","value":55}"#,
    )
    .await;
    refused(&answer("ret").await, "retained");

    // The same id with another body is refused; with the same body it
    // returns the first result.
    sub.publish(
        &cmd,
        br#"{"id":"same","op":"write","point":"setpoint","value":11}"#,
        None,
    )
    .await;
    assert_eq!(answer("same").await["ok"], true);
    sub.publish(
        &cmd,
        br#"{"id":"same","op":"write","point":"setpoint","value":12}"#,
        None,
    )
    .await;
    let same = format!("{ROOT}/devices/boiler/cmd/result");
    let count = |id: &str| {
        sub.on(&same)
            .iter()
            .filter(|m| m.json()["id"] == id)
            .count()
    };
    common::wait_until("two answers to `same`", wait, || count("same") >= 2).await;
    sub.publish(
        &cmd,
        br#"{"id":"same","op":"write","point":"setpoint","value":11}"#,
        None,
    )
    .await;
    let mut answers = Vec::new();
    common::wait_until("three answers to `same`", wait, || {
        answers = sub
            .on(&same)
            .iter()
            .map(|m| m.json())
            .filter(|j| j["id"] == "same")
            .collect();
        answers.len() >= 3
    })
    .await;
    refused(&answers[1], "reused with a different request");
    assert_eq!(answers[2]["ok"], true, "{}", answers[2]);
    assert_eq!(answers[2]["values"]["setpoint"], 11.0);

    // None of the refused writes reached the device.
    sub.publish(&cmd, br#"{"id":"r","op":"read","point":"setpoint"}"#, None)
        .await;
    assert_eq!(answer("r").await["values"]["setpoint"], 11.0);
    let events: Vec<_> = sub
        .on(&format!("{ROOT}/devices/boiler/event"))
        .iter()
        .map(|m| m.json()["id"].clone())
        .collect();
    for id in ["dup", "rt", "ret"] {
        assert!(
            !events.contains(&id.into()),
            "{id} was executed: {events:?}"
        );
    }
    assert!(
        sub.on(&format!("{ROOT}/devices/boiler/telemetry"))
            .iter()
            .all(|m| m.correlation.is_none()),
        "an answer went to a telemetry topic"
    );
}

/// MQTT 3.1.1 cannot tell the broker our packet limit: a command above
/// `max_packet_size` (here a retained one, which the broker hands over on
/// every connect) is refused with `bad_request` and the session stays up,
/// instead of a reconnect loop (#17 item 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_command_is_refused_without_dropping_the_session() {
    let (_broker, _config, _gw, sub) = start("3.1.1").await;
    let cmd = format!("{ROOT}/devices/boiler/cmd");
    let results = format!("{ROOT}/devices/boiler/cmd/result");
    let wait = Duration::from_secs(20);
    let big = format!(
        r#"{{"id":"big","op":"read","args":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    sub.publish_retained(&cmd, big.as_bytes()).await;
    let refused = sub
        .wait_for(&results, wait, |m| m.json()["id"].is_null())
        .await
        .json();
    assert_eq!(refused["error"]["code"], "bad_request", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_packet_size"),
        "{refused}"
    );
    sub.publish(&cmd, br#"{"id":"after","op":"read","point":"count"}"#, None)
        .await;
    let after = sub
        .wait_for(&results, wait, |m| m.json()["id"] == "after")
        .await
        .json();
    assert_eq!(after["ok"], true, "{after}");
    let births = sub
        .on(&format!("{ROOT}/status"))
        .iter()
        .filter(|m| m.json()["state"] == "online")
        .count();
    assert_eq!(births, 1, "the gateway reconnected");
}
