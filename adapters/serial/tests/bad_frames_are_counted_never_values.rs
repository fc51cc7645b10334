//! Checksum errors, oversize frames and garbage bytes are counted and
//! reported as events; they never become values, and good frames around
//! them still do.

mod common;

use common::*;
use ferrogate_sdk::{DeviceEvent, Uplink, Value};
use ferrogate_serial::nmea::with_checksum;

fn event<'a>(u: &'a Uplink, name: &str) -> Option<&'a DeviceEvent> {
    match u {
        Uplink::Event(e) if e.event == name => Some(e),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gps_checksum_errors_and_oversize_lines() {
    let pair = PtyPair::new("nmea");
    let mut gps = pair.instrument();
    let toml = format!(
        r#"
[[serial.device]]
name = "gps"
port = "{}"
baud = 4800
error_report_interval = "1ms"

[serial.device.framing]
delimiter = "\r\n"
max_frame = 82

[serial.device.parser]
kind = "nmea"
"#,
        pair.adapter_end().display()
    );
    let mut running = start(&toml);
    let meta = running
        .expect("meta", |u| matches!(u, Uplink::Meta(_)))
        .await;
    let Uplink::Meta(meta) = meta else {
        unreachable!()
    };
    assert!(
        meta.points
            .iter()
            .any(|p| p.name == "lat" && p.data_type == "f64")
    );

    gps.send(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")
        .await;
    let t = running
        .expect("GGA telemetry", |u| telemetry(u).is_some())
        .await;
    let t = telemetry(&t).unwrap();
    assert!((value_of(t, "lat").and_then(Value::as_f64).unwrap() - 48.1173).abs() < 1e-9);
    assert_eq!(value_of(t, "satellites"), Some(&Value::UInt(8)));

    // One corrupted byte: the checksum no longer matches.
    gps.send(b"$GPGGA,123519,4807.038,N,01131.000,E,1,09,0.9,545.4,M,46.9,M,,*47\r\n")
        .await;
    let e = running
        .expect("parse_error event", |u| event(u, "parse_error").is_some())
        .await;
    let e = event(&e, "parse_error").unwrap();
    assert_eq!(e.data["checksum_errors"], 1);
    assert!(
        e.data["error"].as_str().unwrap().contains("checksum"),
        "{:?}",
        e.data
    );

    // A line far longer than any NMEA sentence, then line noise.
    let mut long = vec![b'$'; 300];
    long.extend_from_slice(b"\r\n");
    gps.send(&long).await;
    let e = running
        .expect("framing_error event", |u| {
            event(u, "framing_error").is_some()
        })
        .await;
    let e = event(&e, "framing_error").unwrap();
    assert_eq!(e.data["oversize_frames"], 1);
    assert!(e.data["discarded_bytes"].as_u64().unwrap() >= 300);

    gps.send(b"\x00\xff\x13garbage\r\n").await;
    let e = running
        .expect("parse_error event", |u| event(u, "parse_error").is_some())
        .await;
    assert_eq!(event(&e, "parse_error").unwrap().data["parse_errors"], 2);

    // The line is still usable: a good RMC comes through, and nothing of the
    // bad frames was ever published as a value.
    let rmc = with_checksum("GNRMC,225446,A,4916.45,S,12311.12,W,000.5,054.7,191194,020.3,E");
    gps.send(format!("{rmc}\r\n").as_bytes()).await;
    let t = running
        .expect("RMC telemetry", |u| {
            assert!(
                telemetry(u).is_none_or(|t| value_of(t, "satellites") != Some(&Value::UInt(9))),
                "a corrupted sentence was published"
            );
            telemetry(u).is_some()
        })
        .await;
    let t = telemetry(&t).unwrap();
    assert!(value_of(t, "lat").and_then(Value::as_f64).unwrap() < -49.0);
    assert_eq!(value_of(t, "valid"), Some(&Value::Bool(true)));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stx_etx_frames_resync_after_garbage() {
    let pair = PtyPair::new("stx-etx");
    let mut meter = pair.instrument();
    let toml = format!(
        r#"
[[serial.device]]
name = "flowmeter"
port = "{}"
error_report_interval = "1ms"

[serial.device.framing]
kind = "start_end"
start = 0x02
end = "\\x03"
max_frame = 16

[serial.device.parser]
kind = "regex"
pattern = '^F(?P<flow>[0-9]+)$'

[[serial.device.point]]
name = "flow"
type = "u64"
"#,
        pair.adapter_end().display()
    );
    let mut running = start(&toml);
    running
        .expect("meta", |u| matches!(u, Uplink::Meta(_)))
        .await;

    meter.send(b"\xff\xfe noise \x02F120\x03").await;
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&t).unwrap(), "flow"),
        Some(&Value::UInt(120))
    );
    let e = running
        .expect("framing_error", |u| event(u, "framing_error").is_some())
        .await;
    assert_eq!(
        event(&e, "framing_error").unwrap().data["discarded_bytes"],
        9
    );

    // A frame cut short by a new STX, and one that never ends in time.
    meter
        .send(b"\x02F1\x02F7\x03\x02F12345678901234567890\x03\x02F8\x03")
        .await;
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&t).unwrap(), "flow"),
        Some(&Value::UInt(7))
    );
    let t = running
        .expect("telemetry", |u| telemetry(u).is_some())
        .await;
    assert_eq!(
        value_of(telemetry(&t).unwrap(), "flow"),
        Some(&Value::UInt(8))
    );
    let e = running
        .expect("oversize reported", |u| {
            event(u, "framing_error").is_some_and(|e| e.data["oversize_frames"] == 1)
        })
        .await;
    assert!(
        event(&e, "framing_error").unwrap().data["discarded_bytes"]
            .as_u64()
            .unwrap()
            > 9
    );
    running.stop().await;
}
