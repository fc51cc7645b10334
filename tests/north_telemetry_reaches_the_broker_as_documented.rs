//! Telemetry, device status and meta reach a real mosquitto on exactly the
//! documented topics with the documented JSON, `seq` +1 per message, over
//! MQTT 5 and 3.1.1; retained messages are retained; commands come in and
//! their results go out on `cmd/result` and on the MQTT 5 response topic.

mod common;

use std::time::Duration;

use common::*;
use ferrogate::north::CommandResultMsg;
use ferrogate::north::config::MqttVersion;
use ferrogate_sdk::{
    CommandError, DeviceMeta, DeviceState, DeviceStatus, ErrorCode, PointError, PointErrorKind,
    PointMeta, Reading, Telemetry, Timestamp, Uplink, UplinkSender, Value,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

async fn contract(version: MqttVersion) {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gw1/#").await;
    let state = tempfile::tempdir().unwrap();
    let mut north = start_north("gw1", &broker.url(), state.path(), |m, _| {
        m.version = version
    })
    .await;
    let uplink = UplinkSender::new("modbus", north.uplink_tx());

    let birth = sub.wait_for("ferrogate/gw1/status", WAIT, |_| true).await;
    let b = birth.json();
    assert_eq!(
        (b["gateway"].clone(), b["state"].clone()),
        (json!("gw1"), json!("online"))
    );
    assert!(
        b["ts"].as_u64().unwrap() > 1_600_000_000_000,
        "ts is epoch ms: {b}"
    );
    assert_eq!(b["version"], json!(env!("CARGO_PKG_VERSION")));

    for i in 0..3 {
        let ts = Timestamp(1_700_000_000_000 + i);
        uplink
            .send(Uplink::Telemetry(Telemetry {
                device: "meter-7".into(),
                ts,
                readings: vec![
                    Reading::ok("voltage", Value::Float(230.5), ts),
                    Reading::ok("count", Value::UInt(i), ts),
                    Reading::failed(
                        "current",
                        PointError::new(PointErrorKind::Timeout, "no response within 300ms"),
                        ts,
                    ),
                ],
            }))
            .await
            .unwrap();
    }
    let topic = "ferrogate/gw1/devices/meter-7/telemetry";
    wait_until("3 telemetry messages", WAIT, || sub.on(topic).len() >= 3).await;
    let got = sub.on(topic);
    for (i, m) in got.iter().enumerate() {
        assert!(!m.retain, "telemetry is not retained");
        assert_eq!(m.qos, 1, "QoS 1 by default");
        assert_eq!(
            m.json(),
            json!({"gateway":"gw1","device":"meter-7","adapter":"modbus",
                   "ts": 1_700_000_000_000u64 + i as u64, "seq": i as u64 + 1,
                   "values":{"voltage":230.5,"count":i},
                   "errors":{"current":"timeout: no response within 300ms"}})
        );
    }

    uplink
        .send(Uplink::Status(DeviceStatus {
            device: "meter-7".into(),
            state: DeviceState::Online,
            reason: None,
            ts: Timestamp(5),
        }))
        .await
        .unwrap();
    uplink
        .send(Uplink::Meta(DeviceMeta {
            device: "meter-7".into(),
            points: vec![PointMeta {
                name: "setpoint".into(),
                data_type: "f32".into(),
                unit: Some("C".into()),
                writable: true,
                min: Some(0.0),
                max: Some(90.0),
                description: Some("target".into()),
                address: Some("holding 0".into()),
            }]
            .into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let status_topic = "ferrogate/gw1/devices/meter-7/status";
    let meta_topic = "ferrogate/gw1/devices/meter-7/meta";
    sub.wait_for(meta_topic, WAIT, |_| true).await;
    // A subscriber that arrives later still gets status and meta: retained.
    let late = Subscriber::start(broker.port, "ferrogate/gw1/devices/+/+").await;
    let st = late.wait_for(status_topic, WAIT, |m| m.retain).await;
    assert_eq!(
        st.json(),
        json!({"gateway":"gw1","device":"meter-7","state":"online","ts":5,"reason":null})
    );
    let meta = late.wait_for(meta_topic, WAIT, |m| m.retain).await.json();
    assert_eq!(
        meta["points"],
        json!([{"name":"setpoint","type":"f32","unit":"C","writable":true,
                "description":"target","min":0.0,"max":90.0,"address":"holding 0"}])
    );
    assert!(late.on(topic).is_empty(), "telemetry must not be retained");

    // Commands: received with the device from the topic; results published.
    let mut commands = north.take_commands();
    let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
        response_topic: Some("ferrogate/gw1/responses/42".into()),
        correlation_data: Some(b"corr-42".to_vec().into()),
        ..Default::default()
    };
    let replies = Subscriber::start(broker.port, "ferrogate/gw1/responses/#").await;
    sub.publish(
        "ferrogate/gw1/devices/meter-7/cmd",
        br#"{"id":"c1","op":"write","point":"setpoint","value":21.5}"#,
        Some(props),
    )
    .await;
    let cmd = tokio::time::timeout(WAIT, commands.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cmd.device, "meter-7");
    assert_eq!(cmd.request.as_ref().unwrap().id, "c1");
    let reply_to = match version {
        MqttVersion::V5 => {
            assert_eq!(
                cmd.reply_to,
                Some(("ferrogate/gw1/responses/42".into(), b"corr-42".to_vec()))
            );
            cmd.reply_to.clone()
        }
        // MQTT 3.1.1 has no response topic.
        MqttVersion::V311 => {
            assert_eq!(cmd.reply_to, None);
            None
        }
    };
    north
        .result_tx()
        .send(CommandResultMsg {
            device: "meter-7".into(),
            id: "c1".into(),
            outcome: Ok([("setpoint".to_string(), Value::Float(21.5))].into()),
            reply_to,
            stored: None,
        })
        .await
        .unwrap();
    north
        .result_tx()
        .send(CommandResultMsg {
            device: "meter-7".into(),
            id: "c2".into(),
            outcome: Err(CommandError::new(
                ErrorCode::NotWritable,
                "voltage is read-only",
            )),
            reply_to: None,
            stored: None,
        })
        .await
        .unwrap();
    let result_topic = "ferrogate/gw1/devices/meter-7/cmd/result";
    wait_until("two results", WAIT, || sub.on(result_topic).len() >= 2).await;
    let results: Vec<_> = sub.on(result_topic).iter().map(|m| m.json()).collect();
    let ok = &results[0];
    assert_eq!(
        (
            ok["gateway"].clone(),
            ok["device"].clone(),
            ok["id"].clone(),
            ok["ok"].clone(),
            ok["values"].clone()
        ),
        (
            json!("gw1"),
            json!("meter-7"),
            json!("c1"),
            json!(true),
            json!({"setpoint":21.5})
        )
    );
    assert!(ok["ts"].is_u64());
    let err = &results[1];
    assert_eq!(err["ok"], json!(false));
    assert_eq!(
        err["error"],
        json!({"code":"not_writable","message":"voltage is read-only"})
    );
    if version == MqttVersion::V5 {
        let r = replies
            .wait_for("ferrogate/gw1/responses/42", WAIT, |_| true)
            .await;
        assert_eq!(r.correlation.as_deref(), Some(&b"corr-42"[..]));
        assert_eq!(r.json()["id"], json!("c1"));
    }

    let status = north.status();
    assert!(status.live.connected);
    north.shutdown().await;
    // A clean shutdown publishes the offline status itself (no will needed).
    let off = sub
        .wait_for("ferrogate/gw1/status", WAIT, |m| {
            m.json()["state"] == json!("offline")
        })
        .await;
    assert_eq!(off.json(), json!({"gateway":"gw1","state":"offline"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5() {
    contract(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311() {
    contract(MqttVersion::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_continues_after_restart() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gw2/devices/+/telemetry").await;
    let state = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let north = start_north("gw2", &broker.url(), state.path(), |_, _| {}).await;
        let up = UplinkSender::new("sim", north.uplink_tx());
        for _ in 0..5 {
            up.send(telemetry("d1", &[("x", Value::Int(1))]))
                .await
                .unwrap();
        }
        let want = 5 * (round + 1);
        wait_until("telemetry", WAIT, || sub.all().len() >= want).await;
        north.shutdown().await;
    }
    let seqs = seqs_by_device(&sub.all());
    assert_eq!(seqs["d1"], (1..=10).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublishable_messages_are_refused_not_stuck() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gw3/devices/+/telemetry").await;
    let state = tempfile::tempdir().unwrap();
    let north = start_north("gw3", &broker.url(), state.path(), |m, _| {
        m.max_packet_size = 4096;
    })
    .await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    up.send(telemetry("bad+name", &[("x", Value::Int(1))]))
        .await
        .unwrap();
    up.send(telemetry(
        "big",
        &[("blob", Value::String("x".repeat(10_000)))],
    ))
    .await
    .unwrap();
    up.send(telemetry("ok", &[("x", Value::Int(1))]))
        .await
        .unwrap();
    sub.wait_for("ferrogate/gw3/devices/ok/telemetry", WAIT, |_| true)
        .await;
    let st = north.status().outbox;
    assert_eq!(st.refused, 2, "{st:?}");
    assert!(st.last_refused.unwrap().contains("max_packet_size"));
    assert_eq!(
        north.status().live.reconnects,
        0,
        "no connection was sacrificed"
    );
    north.shutdown().await;
}
