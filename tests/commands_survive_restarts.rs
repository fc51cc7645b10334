//! Commands are as durable as telemetry (#18): a command published while
//! the gateway is down is delivered by the broker's persistent session and
//! answered once the gateway is back; a command the gateway took but had
//! not finished when it was killed is executed after the restart; a
//! repeated id is answered from the journal, not executed again. Real
//! mosquitto, real daemon binary, kill -9.

mod common;
mod daemon;

use std::time::Duration;

use common::{Mosquitto, Subscriber};
use daemon::{ConfigDir, Daemon, simulated_device};
use ferrogate::north::codec::decode_request;
use serde_json::json;

const ROOT: &str = "ferrogate/gw-dur";
const WAIT: Duration = Duration::from_secs(20);

async fn wait_ready(sub: &Subscriber, since: usize) {
    // The device's meta is published once its adapter runs (each start).
    let topic = format!("{ROOT}/devices/boiler/meta");
    common::wait_until("the device's meta", WAIT, || sub.on(&topic).len() > since).await;
}

fn result<'a>(sub: &'a Subscriber, id: &'a str) -> impl Fn() -> Vec<serde_json::Value> + 'a {
    move || {
        sub.on(&format!("{ROOT}/devices/boiler/cmd/result"))
            .iter()
            .map(|m| m.json())
            .filter(|j| j["id"] == id)
            .collect()
    }
}

async fn read_setpoint(sub: &Subscriber, id: &'static str) -> serde_json::Value {
    sub.publish(
        &format!("{ROOT}/devices/boiler/cmd"),
        format!(r#"{{"id":"{id}","op":"read","point":"setpoint"}}"#).as_bytes(),
        None,
    )
    .await;
    let r = sub
        .wait_for(&format!("{ROOT}/devices/boiler/cmd/result"), WAIT, |m| {
            m.json()["id"] == id
        })
        .await
        .json();
    r["values"]["setpoint"].clone()
}

async fn published_while_down_is_answered_after_restart(version: &str) {
    let broker = Mosquitto::start();
    let config = ConfigDir::new(
        "gw-dur",
        broker.port,
        version,
        &simulated_device("boiler", "1s"),
    );
    let sub = Subscriber::start(broker.port, &format!("{ROOT}/#")).await;
    let mut gw = Daemon::start(config.path());
    wait_ready(&sub, 0).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(6)).is_some());
    let metas = sub.on(&format!("{ROOT}/devices/boiler/meta")).len();

    // Published while no gateway is connected: the broker keeps it for the
    // gateway's session (a clean session would discard it).
    sub.publish(
        &format!("{ROOT}/devices/boiler/cmd"),
        br#"{"id":"offline-1","op":"write","point":"setpoint","value":33,"timeout_ms":60000}"#,
        None,
    )
    .await;
    let _gw = Daemon::start(config.path());
    wait_ready(&sub, metas).await;
    let answers = result(&sub, "offline-1");
    common::wait_until("the answer to offline-1", WAIT, || !answers().is_empty()).await;
    assert_eq!(answers()[0]["ok"], true, "{}", answers()[0]);
    assert_eq!(read_setpoint(&sub, "r1").await, json!(33.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_published_while_the_gateway_is_down_is_answered_mqtt5() {
    published_while_down_is_answered_after_restart("5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_published_while_the_gateway_is_down_is_answered_mqtt311() {
    published_while_down_is_answered_after_restart("3.1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_pending_commands_run_once_and_answered_ids_are_not_rerun() {
    let broker = Mosquitto::start();
    let config = ConfigDir::new(
        "gw-dur",
        broker.port,
        "5",
        &simulated_device("boiler", "1s"),
    );
    let sub = Subscriber::start(broker.port, &format!("{ROOT}/#")).await;
    let gw = Daemon::start(config.path());
    wait_ready(&sub, 0).await;
    let metas = sub.on(&format!("{ROOT}/devices/boiler/meta")).len();
    drop(gw); // kill -9

    // What the journal holds when the gateway dies between taking a
    // command (journalled, PUBACK sent) and answering it, plus one command
    // answered before: the file format is the journal's own, written here
    // as the dead gateway left it.
    let now = ferrogate_sdk::Timestamp::now().0;
    let answered = br#"{"id":"done-1","op":"write","point":"setpoint","value":77}"#;
    let fingerprint = decode_request(answered).unwrap().fingerprint;
    let lines = [
        json!({"k":"p","device":"boiler","id":"done-1","body":std::str::from_utf8(answered).unwrap(),
               "received_ms":now - 2000,"reply_to":null}),
        json!({"k":"d","device":"boiler","id":"done-1","fingerprint":fingerprint.to_string(),
               "outcome":{"ok":true,"values":{"setpoint":77.0}},"at_ms":now - 1000}),
        json!({"k":"p","device":"boiler","id":"pending-1",
               "body":r#"{"id":"pending-1","op":"write","point":"setpoint","value":42,"timeout_ms":60000}"#,
               "received_ms":now - 500,"reply_to":null}),
        json!({"k":"p","device":"boiler","id":"late-1",
               "body":r#"{"id":"late-1","op":"write","point":"setpoint","value":99,"timeout_ms":1000}"#,
               "received_ms":now - 30_000,"reply_to":null}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(config.path().join("state/commands.journal"), text).unwrap();

    let _gw = Daemon::start(config.path());
    wait_ready(&sub, metas).await;
    let pending = result(&sub, "pending-1");
    common::wait_until("the answer to pending-1", WAIT, || !pending().is_empty()).await;
    assert_eq!(pending()[0]["ok"], true, "{}", pending()[0]);
    let late = result(&sub, "late-1");
    common::wait_until("the answer to late-1", WAIT, || !late().is_empty()).await;
    assert_eq!(late()[0]["error"]["code"], "expired", "{}", late()[0]);
    assert_eq!(read_setpoint(&sub, "r1").await, json!(42.0));

    // done-1 again (a client retrying after the crash): the first result,
    // and the device keeps 42.
    sub.publish(&format!("{ROOT}/devices/boiler/cmd"), answered, None)
        .await;
    let done = result(&sub, "done-1");
    common::wait_until("the answer to done-1", WAIT, || !done().is_empty()).await;
    assert_eq!(done()[0]["ok"], true);
    assert_eq!(done()[0]["values"]["setpoint"], 77.0);
    assert_eq!(read_setpoint(&sub, "r2").await, json!(42.0));
    assert_eq!(pending().len(), 1, "pending-1 answered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_journalled_but_not_yet_stored_is_published_after_kill_9() {
    let broker = Mosquitto::start();
    let config = ConfigDir::new(
        "gw-dur",
        broker.port,
        "5",
        &simulated_device("boiler", "1s"),
    );
    let sub = Subscriber::start(broker.port, &format!("{ROOT}/#")).await;
    let gw = Daemon::start(config.path());
    wait_ready(&sub, 0).await;
    let metas = sub.on(&format!("{ROOT}/devices/boiler/meta")).len();
    let before = read_setpoint(&sub, "r0").await;
    drop(gw); // kill -9

    // The gateway died after journalling two results: `gap-1`'s before it
    // reached the outbox (no `s` line), `sent-1`'s after (published then).
    let now = ferrogate_sdk::Timestamp::now().0;
    let mut lines = Vec::new();
    for (id, value) in [("gap-1", 55), ("sent-1", 66)] {
        let body = format!(r#"{{"id":"{id}","op":"write","point":"setpoint","value":{value}}}"#);
        let fingerprint = decode_request(body.as_bytes()).unwrap().fingerprint;
        lines.push(json!({"k":"p","device":"boiler","id":id,"body":body,
               "received_ms":now - 2000,"reply_to":null}));
        lines.push(json!({"k":"d","device":"boiler","id":id,"fingerprint":fingerprint.to_string(),
               "outcome":{"ok":true,"values":{"setpoint":value}},"at_ms":now - 1000,"stored":false}));
    }
    lines.push(json!({"k":"s","device":"boiler","id":"sent-1"}));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(config.path().join("state/commands.journal"), text).unwrap();

    let gw = Daemon::start(config.path());
    wait_ready(&sub, metas).await;
    let gap = result(&sub, "gap-1");
    common::wait_until("the answer to gap-1, without a retry", WAIT, || {
        !gap().is_empty()
    })
    .await;
    assert_eq!(gap()[0]["ok"], true, "{}", gap()[0]);
    assert_eq!(gap()[0]["values"]["setpoint"], 55);
    // Not executed again: the device still has what it had.
    assert_eq!(read_setpoint(&sub, "r1").await, before);
    assert!(
        result(&sub, "sent-1")().is_empty(),
        "sent-1 was published before"
    );

    // Marked stored: a further restart does not publish it again.
    drop(gw);
    let metas = sub.on(&format!("{ROOT}/devices/boiler/meta")).len();
    let _gw = Daemon::start(config.path());
    wait_ready(&sub, metas).await;
    assert_eq!(read_setpoint(&sub, "r2").await, before);
    assert_eq!(gap().len(), 1, "gap-1 answered once");
}
