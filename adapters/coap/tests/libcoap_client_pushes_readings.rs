//! libcoap's coap-client pushes readings to the ingest server: CON and NON,
//! text, JSON, SenML JSON and SenML CBOR, a body large enough for Block1;
//! unknown devices, names no topic can carry and bad bodies get the right
//! 4.xx and no telemetry; refused names are counted.
//! Needs `coap-client-notls` (Debian package libcoap3-bin).

mod common;

use common::{coap_client, next_uplink, start_adapter, telemetry};
use ferrogate_coap::senml::{self, Record, SenmlValue};
use ferrogate_sdk::{Uplink, Value};

fn config(port: u16) -> String {
    format!(
        r#"
[coap.server]
bind = "127.0.0.1:{port}"
allow = ["lab-*"]

[[coap.device]]
name = "meter-1"

[[coap.device.point]]
name = "temp"
unit = "Cel"
"#
    )
}

fn value_of(t: &ferrogate_sdk::Telemetry, point: &str) -> Value {
    t.readings
        .iter()
        .find(|r| &*r.point == point)
        .unwrap_or_else(|| panic!("no {point} in {t:?}"))
        .value
        .clone()
        .expect("a value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_client_pushes_readings() {
    common::require("coap-client-notls");
    let port = common::free_udp_port();
    let (mut h, task) = start_adapter(&config(port));
    // ready once the configured device is announced
    next_uplink(&mut h, |u| {
        matches!(u, Uplink::Meta(m) if m.device == "meter-1").then_some(())
    })
    .await;
    let base = format!("coap://127.0.0.1:{port}");

    // CON, text/plain, /{device}/{point}
    let codes = coap_client(&[
        "-m",
        "post",
        "-t",
        "0",
        "-e",
        "21.5",
        &format!("{base}/meter-1/temp"),
    ])
    .await;
    assert_eq!(codes, vec!["2.04"]);
    let t = telemetry(&mut h, "meter-1").await;
    assert_eq!(value_of(&t, "temp"), Value::Float(21.5));

    // NON, JSON object, /{device}
    let codes = coap_client(&[
        "-N",
        "-m",
        "put",
        "-t",
        "50",
        "-e",
        r#"{"temp":22.25,"door":true}"#,
        &format!("{base}/meter-1"),
    ])
    .await;
    assert_eq!(codes, vec!["2.04"]);
    let t = telemetry(&mut h, "meter-1").await;
    assert_eq!(value_of(&t, "temp"), Value::Float(22.25));
    assert_eq!(value_of(&t, "door"), Value::Bool(true));

    // SenML JSON with a base name and base time
    let body = r#"[{"bn":"meter-1/","bt":1700000000,"n":"temp","u":"Cel","v":23},{"n":"rh","v":41.5,"t":10}]"#;
    let codes = coap_client(&[
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        body,
        &format!("{base}/meter-1"),
    ])
    .await;
    assert_eq!(codes, vec!["2.04"]);
    let t = telemetry(&mut h, "meter-1").await;
    assert_eq!(value_of(&t, "temp"), Value::Int(23));
    let rh = t.readings.iter().find(|r| &*r.point == "rh").unwrap();
    assert_eq!(rh.ts.0, 1_700_000_010_000);

    // SenML CBOR, from a file (binary body)
    let cbor = senml::encode_cbor(&[Record {
        name: Some("temp".into()),
        value: Some(SenmlValue::Float(19.5)),
        ..Record::default()
    }]);
    let file = std::env::temp_dir().join(format!("ferrogate-coap-senml-{port}.cbor"));
    std::fs::write(&file, &cbor).unwrap();
    let codes = coap_client(&[
        "-m",
        "post",
        "-t",
        "112",
        "-f",
        file.to_str().unwrap(),
        &format!("{base}/meter-1"),
    ])
    .await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(codes, vec!["2.04"]);
    let t = telemetry(&mut h, "meter-1").await;
    assert_eq!(value_of(&t, "temp"), Value::Float(19.5));

    // plain CBOR map {"temp": 18, "ok": true}
    let cbor = [
        0xa2, 0x64, b't', b'e', b'm', b'p', 0x12, 0x62, b'o', b'k', 0xf5,
    ];
    let file = std::env::temp_dir().join(format!("ferrogate-coap-plain-{port}.cbor"));
    std::fs::write(&file, cbor).unwrap();
    let codes = coap_client(&[
        "-m",
        "put",
        "-t",
        "60",
        "-f",
        file.to_str().unwrap(),
        &format!("{base}/meter-1"),
    ])
    .await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(codes, vec!["2.04"]);
    let t = telemetry(&mut h, "meter-1").await;
    assert_eq!(value_of(&t, "temp"), Value::Int(18));
    assert_eq!(value_of(&t, "ok"), Value::Bool(true));

    // a JSON body of ~3 KiB: coap-client sends it block-wise (Block1)
    let fields: Vec<String> = (0..150)
        .map(|i| format!(r#""point_{i:03}":{i}.5"#))
        .collect();
    let big = format!("{{{}}}", fields.join(","));
    assert!(big.len() > 2048);
    let codes = coap_client(&[
        "-m",
        "post",
        "-t",
        "50",
        "-e",
        &big,
        &format!("{base}/meter-1"),
    ])
    .await;
    assert!(
        codes.iter().filter(|c| *c == "2.31").count() >= 2,
        "{codes:?}"
    );
    assert_eq!(codes.last().map(String::as_str), Some("2.04"));
    let t = telemetry(&mut h, "meter-1").await;
    assert_eq!(t.readings.len(), 150);
    assert_eq!(value_of(&t, "point_149"), Value::Float(149.5));

    // an unknown device is forbidden
    let codes = coap_client(&[
        "-m",
        "post",
        "-t",
        "0",
        "-e",
        "1",
        &format!("{base}/ghost/temp"),
    ])
    .await;
    assert_eq!(codes, vec!["4.03"]);
    // a device allowed by pattern is announced, then its readings flow
    let codes = coap_client(&[
        "-m",
        "post",
        "-t",
        "0",
        "-e",
        "7",
        &format!("{base}/lab-3/x"),
    ])
    .await;
    assert_eq!(codes, vec!["2.04"]);
    next_uplink(&mut h, |u| {
        matches!(u, Uplink::Meta(m) if m.device == "lab-3").then_some(())
    })
    .await;
    let t = telemetry(&mut h, "lab-3").await;
    assert_eq!(value_of(&t, "x"), Value::Int(7));

    // a name an allow pattern admits but no topic can carry (a control
    // character, a space, a wildcard) is refused and counted, never a device
    for name in ["lab-x%01y", "lab-a%20b", "lab-%2B"] {
        let codes = coap_client(&[
            "-m",
            "post",
            "-t",
            "0",
            "-e",
            "1",
            &format!("{base}/{name}/x"),
        ])
        .await;
        assert_eq!(codes, vec!["4.00"], "{name}");
    }
    assert_eq!(h.refusals.get("bad_name"), 3);

    // bad bodies and formats: the right code, nothing published
    let codes = coap_client(&[
        "-m",
        "post",
        "-t",
        "50",
        "-e",
        "{nope",
        &format!("{base}/meter-1"),
    ])
    .await;
    assert_eq!(codes, vec!["4.00"]);
    let codes = coap_client(&[
        "-m",
        "post",
        "-t",
        "41",
        "-e",
        "<x/>",
        &format!("{base}/meter-1"),
    ])
    .await;
    assert_eq!(codes, vec!["4.15"]);
    let codes = coap_client(&["-m", "get", &format!("{base}/meter-1")]).await;
    assert_eq!(codes, vec!["4.05"]);
    let codes = coap_client(&["-m", "post", "-e", "1", &format!("{base}/a/b/c")]).await;
    assert_eq!(codes, vec!["4.04"]);
    // the next telemetry is the next good reading, not one of the above
    let codes = coap_client(&["-m", "post", "-e", "5", &format!("{base}/meter-1/temp")]).await;
    assert_eq!(codes, vec!["2.04"]);
    let t = telemetry(&mut h, "meter-1").await;
    assert_eq!(value_of(&t, "temp"), Value::Int(5));

    h.shutdown.cancel();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "run must return Ok(()) on shutdown: {ended:?}"
    );
}
