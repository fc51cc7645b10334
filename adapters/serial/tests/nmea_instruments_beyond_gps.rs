//! A weather station and marine instruments on a socat pty pair speaking
//! NMEA 0183 beyond GPS: XDR transducers become one point each, MWV, MDA,
//! MTW and the rest become their named fields, a sentence type the crate
//! does not know is read by field index, a well-formed sentence no point
//! uses is counted per type, and a bad checksum is a parse_error event and
//! never a value.

mod common;

use common::*;
use ferrogate_sdk::{Uplink, Value};
use ferrogate_serial::nmea::with_checksum;

fn float(u: &Uplink, point: &str) -> Option<f64> {
    telemetry(u)
        .and_then(|t| value_of(t, point))
        .and_then(Value::as_f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weather_station_sentences_become_points() {
    let mut pair = PtyPair::new("nmea-weather");
    pair.start();
    let mut station = pair.instrument();
    let toml = format!(
        r#"
[[serial.device]]
name = "weather"
port = "{}"
baud = 4800
error_report_interval = "1ms"

[serial.device.framing]
delimiter = "\r\n"
max_frame = 82

[serial.device.parser]
kind = "nmea"

[[serial.device.point]]
name = "air_temp"
source = "TEMP"
unit = "Cel"

[[serial.device.point]]
name = "humidity"
source = "HUM"
unit = "%"

[[serial.device.point]]
name = "wind_angle"

[[serial.device.point]]
name = "wind_speed"

[[serial.device.point]]
name = "pressure"

[[serial.device.point]]
name = "water_temperature"

[[serial.device.point]]
name = "heading_true"

[[serial.device.point]]
name = "satellites_in_view"

[[serial.device.point]]
name = "depth"
source = "DPT.1"
type = "f64"
unit = "m"
"#,
        pair.adapter_end().display()
    );
    let mut running = start(&toml);

    let cases: &[(&str, &str, f64)] = &[
        ("WIXDR,C,21.5,C,TEMP,H,40,P,HUM", "air_temp", 21.5),
        ("WIXDR,C,21.5,C,TEMP,H,40,P,HUM", "humidity", 40.0),
        ("IIMWV,045.0,R,10.0,M,A", "wind_angle", 45.0),
        ("IIMWV,045.0,R,10.0,M,A", "wind_speed", 10.0),
        (
            "WIMDA,29.9,I,1.0130,B,21.5,C,,,45.0,,9.1,C,180.0,T,175.0,M,5.0,N,2.6,M",
            "pressure",
            1.013,
        ),
        ("IIMTW,12.5,C", "water_temperature", 12.5),
        ("HEHDT,274.07,T", "heading_true", 274.07),
        (
            "GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00",
            "satellites_in_view",
            11.0,
        ),
        // a sentence type the crate does not interpret, by field index
        ("SDDPT,3.6,0.0", "depth", 3.6),
    ];
    for (body, point, expected) in cases {
        station
            .send(format!("{}\r\n", with_checksum(body)).as_bytes())
            .await;
        let u = running
            .expect(&format!("{point} from {body}"), |u| {
                float(u, point).is_some()
            })
            .await;
        let got = float(&u, point).unwrap();
        assert!((got - expected).abs() < 1e-9, "{body}: {point} = {got}");
    }

    // well-formed, used by no point: counted per sentence type
    for body in [
        "GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1",
        "GPZDA,201530.00,04,07,2002,00,00",
        "PFOO,1,2",
    ] {
        station
            .send(format!("{}\r\n", with_checksum(body)).as_bytes())
            .await;
    }
    // a bad checksum: an event, no value; the next good sentence still counts
    station.send(b"$IIMTW,99.9,C*00\r\n").await;
    let e = running
        .expect(
            "parse_error",
            |u| matches!(u, Uplink::Event(e) if e.event == "parse_error"),
        )
        .await;
    let Uplink::Event(e) = e else { unreachable!() };
    assert_eq!(e.data["checksum_errors"], 1, "{:?}", e.data);
    station
        .send(format!("{}\r\n", with_checksum("IIMTW,13.0,C")).as_bytes())
        .await;
    let u = running
        .expect("water temperature after the bad one", |u| {
            float(u, "water_temperature").is_some()
        })
        .await;
    assert_eq!(float(&u, "water_temperature"), Some(13.0), "never 99.9");
    let refusals = &running.harness.refusals;
    assert_eq!(refusals.get("unused_gsa"), 1);
    assert_eq!(refusals.get("unused_zda"), 1);
    assert_eq!(refusals.get("unused_other"), 1);
    running.stop().await;
}
