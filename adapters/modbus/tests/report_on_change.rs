//! With report-on-change, a poll cycle sends only the points that moved
//! more than their deadband since they were last sent.

mod common;

use common::{Slave, start, value};
use ferrogate_sdk::Value;
use serde_json::json;

#[tokio::test]
async fn only_changes_beyond_the_deadband_are_sent() {
    let mut slave = Slave::start(json!({"tcp": 0, "units": {"1": {"hr": [100, 7]}}})).await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"500ms\"\n\n\
         [[modbus.device]]\nname = \"tank\"\nconnection = \"plc\"\nunit = 1\npoll = \"50ms\"\n\
         report_on_change = true\ndeadband = 5.0\nmax_interval = \"1h\"\n\
         [[modbus.device.point]]\nname = \"level\"\naddress = 0\ntype = \"i16\"\n\
         [[modbus.device.point]]\nname = \"mode\"\naddress = 1\ndeadband = 0.0\n",
        slave.port
    );
    let mut running = start(&toml);
    let first = running.telemetry("tank").await;
    assert_eq!(first.readings.len(), 2);
    assert_eq!(value(&first, "level"), Value::Int(100));

    // level moves by 3 (inside its deadband), then mode changes: the next
    // message carries mode only.
    slave.set(1, 3, 0, &[103]).await;
    slave.set(1, 3, 1, &[8]).await;
    let t = running.telemetry("tank").await;
    assert_eq!(t.readings.len(), 1, "{t:?}");
    assert_eq!(value(&t, "mode"), Value::UInt(8));

    // level drifts to 106: 6 away from the 100 last sent.
    slave.set(1, 3, 0, &[106]).await;
    let t = running.telemetry("tank").await;
    assert_eq!(t.readings.len(), 1, "{t:?}");
    assert_eq!(value(&t, "level"), Value::Int(106));
    running.stop().await;
    slave.stop().await;
}

/// A value that does not change is sent again every `max_interval`, so a
/// consumer can tell "unchanged" from "dead"; a percent deadband of the
/// last sent value holds back small moves in between.
#[tokio::test]
async fn unchanged_values_come_back_as_heartbeats() {
    let mut slave = Slave::start(json!({"tcp": 0, "units": {"1": {"hr": [1000]}}})).await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"500ms\"\n\n\
         [[modbus.device]]\nname = \"tank\"\nconnection = \"plc\"\nunit = 1\npoll = \"50ms\"\n\
         report_on_change = true\ndeadband_percent = 5.0\nmax_interval = \"400ms\"\n\
         [[modbus.device.point]]\nname = \"level\"\naddress = 0\n",
        slave.port
    );
    let mut running = start(&toml);
    let first = running.telemetry("tank").await;
    assert_eq!(value(&first, "level"), Value::UInt(1000));
    // 1040 is within 5 % of 1000: the next message is the heartbeat,
    // carrying the latest value read, no sooner than max_interval after
    // the last (`ts` is taken as each is sent; 10 ms for the ms clock).
    slave.set(1, 3, 0, &[1040]).await;
    let beat = running.telemetry("tank").await;
    assert!(
        beat.ts.0 - first.ts.0 >= 390,
        "{} ms",
        beat.ts.0 - first.ts.0
    );
    assert!(matches!(value(&beat, "level"), Value::UInt(1000 | 1040)));
    let next = running.telemetry("tank").await;
    assert!(next.ts.0 - beat.ts.0 >= 390, "{} ms", next.ts.0 - beat.ts.0);
    assert_eq!(value(&next, "level"), Value::UInt(1040));
    // 1100 is more than 5 % of 1040: sent at once.
    slave.set(1, 3, 0, &[1100]).await;
    let t = running.telemetry("tank").await;
    let v = value(&t, "level");
    assert!(matches!(v, Value::UInt(1040 | 1100)), "{v:?}");
    if v == Value::UInt(1040) {
        // That was a heartbeat that raced the change: the change follows.
        assert_eq!(
            value(&running.telemetry("tank").await, "level"),
            Value::UInt(1100)
        );
    }
    running.stop().await;
    slave.stop().await;
}

/// A quality change (value → timeout → value) is sent at once, even inside
/// a `min_interval` that holds every value change back.
#[tokio::test]
async fn quality_changes_go_out_at_once_inside_min_interval() {
    let mut slave = Slave::start(json!({"tcp": 0, "units": {"1": {"hr": [5]}}})).await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"200ms\"\n\
         backoff_after = 1000\n\n\
         [[modbus.device]]\nname = \"pump\"\nconnection = \"plc\"\nunit = 1\npoll = \"50ms\"\n\
         report_on_change = true\nmin_interval = \"1h\"\nmax_interval = \"2h\"\noffline_after = 1000\n\
         [[modbus.device.point]]\nname = \"speed\"\naddress = 0\n",
        slave.port
    );
    let mut running = start(&toml);
    assert_eq!(
        value(&running.telemetry("pump").await, "speed"),
        Value::UInt(5)
    );
    // A change is held for the hour; the timeout is not.
    slave.set(1, 3, 0, &[6]).await;
    slave.silent(1, true).await;
    let t = running.telemetry("pump").await;
    let error = t.readings[0].value.as_ref().expect_err("the timeout first");
    assert_eq!(error.kind, ferrogate_sdk::PointErrorKind::Timeout, "{t:?}");
    slave.silent(1, false).await;
    let t = running.telemetry("pump").await;
    assert_eq!(
        value(&t, "speed"),
        Value::UInt(6),
        "the value again, at once"
    );
    running.stop().await;
    slave.stop().await;
}
