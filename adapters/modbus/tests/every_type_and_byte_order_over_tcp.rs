//! Every point type and byte/word order, read over Modbus TCP from a real
//! pymodbus slave whose registers the test set from known values.

mod common;

use common::{Slave, start, value, words};
use ferrogate_sdk::Value;
use serde_json::json;

/// Registers of a big-endian number stored with the given swaps, computed
/// here independently of the crate's codec.
fn stored(be: &[u8], swap_words: bool, swap_bytes: bool) -> Vec<i64> {
    let mut regs: Vec<[u8; 2]> = be.chunks(2).map(|c| [c[0], c[1]]).collect();
    if swap_bytes {
        for r in &mut regs {
            r.swap(0, 1);
        }
    }
    if swap_words {
        regs.reverse();
    }
    regs.iter()
        .map(|r| i64::from(u16::from_be_bytes(*r)))
        .collect()
}

const ORDERS: [(&str, bool, bool); 4] = [
    ("ABCD", false, false),
    ("CDAB", true, false),
    ("BADC", false, true),
    ("DCBA", true, true),
];
const ORDERS64: [&str; 4] = ["ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA"];

#[tokio::test]
async fn every_type_and_order_decodes_the_slaves_values() {
    let mut hr: Vec<i64> = Vec::new();
    let mut points = String::new();
    let mut expected: Vec<(String, Value)> = Vec::new();
    let mut add = |name: String,
                   ty: &str,
                   order: &str,
                   regs: Vec<i64>,
                   extra: &str,
                   value: Value| {
        points.push_str(&format!(
            "[[modbus.device.point]]\nname = \"{name}\"\naddress = {}\ntype = \"{ty}\"\norder = \"{order}\"\n{extra}\n",
            hr.len()
        ));
        hr.extend(regs);
        expected.push((name, value));
    };
    add(
        "u16".into(),
        "u16",
        "ABCD",
        vec![65000],
        "",
        Value::UInt(65000),
    );
    add(
        "u16_badc".into(),
        "u16",
        "BADC",
        vec![0x3412],
        "",
        Value::UInt(0x1234),
    );
    add(
        "i16".into(),
        "i16",
        "ABCD",
        vec![i64::from((-1234i16) as u16)],
        "",
        Value::Int(-1234),
    );
    for (order, sw, sb) in ORDERS {
        let x = 0xDEAD_BEEFu32;
        add(
            format!("u32_{order}"),
            "u32",
            order,
            stored(&x.to_be_bytes(), sw, sb),
            "",
            Value::UInt(x.into()),
        );
        let y = -123_456_789i32;
        add(
            format!("i32_{order}"),
            "i32",
            order,
            stored(&y.to_be_bytes(), sw, sb),
            "",
            Value::Int(y.into()),
        );
        let f = 123.456f32;
        add(
            format!("f32_{order}"),
            "f32",
            order,
            stored(&f.to_be_bytes(), sw, sb),
            "",
            Value::from_f32(f),
        );
    }
    for ((_, sw, sb), order) in ORDERS.iter().zip(ORDERS64) {
        let u = 0x0123_4567_89AB_CDEFu64;
        add(
            format!("u64_{order}"),
            "u64",
            order,
            stored(&u.to_be_bytes(), *sw, *sb),
            "",
            Value::UInt(u),
        );
        let i = -0x0123_4567_89AB_CDEFi64;
        add(
            format!("i64_{order}"),
            "i64",
            order,
            stored(&i.to_be_bytes(), *sw, *sb),
            "",
            Value::Int(i),
        );
        let d = 6.022_140_76e23f64;
        add(
            format!("f64_{order}"),
            "f64",
            order,
            stored(&d.to_be_bytes(), *sw, *sb),
            "",
            Value::Float(d),
        );
    }
    add(
        "name".into(),
        "string",
        "ABCD",
        words(b"ferrogate\0"),
        "length = 5",
        Value::String("ferrogate".into()),
    );
    add(
        "name_badc".into(),
        "string",
        "BADC",
        words(b"EMET1R"),
        "length = 3",
        Value::String("METER1".into()),
    );
    add(
        "blob".into(),
        "bytes",
        "ABCD",
        words(&[0xCA, 0xFE, 0xBA, 0xBE]),
        "length = 2",
        Value::Bytes(vec![0xCA, 0xFE, 0xBA, 0xBE]),
    );
    add(
        "temp".into(),
        "i16",
        "ABCD",
        vec![653],
        "scale = 0.1\noffset = -40.0\nunit = \"°C\"",
        Value::Float(653.0 * 0.1 - 40.0),
    );
    let flags_at = hr.len();
    hr.push(0b1000_0000_0000_0101);
    points.push_str(&format!(
        "[[modbus.device.point]]\nname = \"bit0\"\naddress = {flags_at}\ntype = \"bool\"\nbit = 0\n\
         [[modbus.device.point]]\nname = \"bit1\"\naddress = {flags_at}\ntype = \"bool\"\nbit = 1\n\
         [[modbus.device.point]]\nname = \"bit15\"\naddress = {flags_at}\ntype = \"bool\"\nbit = 15\n"
    ));
    expected.push(("bit0".into(), Value::Bool(true)));
    expected.push(("bit1".into(), Value::Bool(false)));
    expected.push(("bit15".into(), Value::Bool(true)));
    // Input registers, coils and discrete inputs; one address in Modicon style.
    let voltage = stored(&231.5f32.to_be_bytes(), true, false);
    points.push_str(
        "[[modbus.device.point]]\nname = \"voltage\"\nmodicon = 30001\ntype = \"f32\"\norder = \"CDAB\"\n\
         [[modbus.device.point]]\nname = \"relay0\"\narea = \"coil\"\naddress = 0\n\
         [[modbus.device.point]]\nname = \"relay2\"\narea = \"coil\"\naddress = 2\n\
         [[modbus.device.point]]\nname = \"door\"\narea = \"discrete\"\naddress = 1\n",
    );
    expected.push(("voltage".into(), Value::Float(231.5)));
    expected.push(("relay0".into(), Value::Bool(true)));
    expected.push(("relay2".into(), Value::Bool(false)));
    expected.push(("door".into(), Value::Bool(true)));

    let slave = Slave::start(json!({
        "tcp": 0,
        "units": {"1": {"hr": hr, "ir": voltage, "co": [1, 1, 0], "di": [0, 1]}}
    }))
    .await;
    let toml = format!(
        "[[modbus.connection]]\nname = \"plc\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"500ms\"\n\n\
         [[modbus.device]]\nname = \"meter\"\nconnection = \"plc\"\nunit = 1\npoll = \"200ms\"\n\n{points}",
        slave.port
    );
    let mut running = start(&toml);
    assert!(
        running
            .notes
            .iter()
            .any(|n| n.contains("Modicon 30001 = input register 0")),
        "{:?}",
        running.notes
    );
    let meta = running
        .wait_for("meta", |u| match u {
            ferrogate_sdk::Uplink::Meta(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(meta.device, "meter");
    let temp = meta.points.iter().find(|p| p.name == "temp").unwrap();
    assert_eq!(
        (temp.data_type.as_str(), temp.unit.as_deref()),
        ("i16", Some("°C"))
    );

    let t = running.good_telemetry("meter").await;
    for (name, want) in &expected {
        assert_eq!(&value(&t, name), want, "point {name}");
    }
    assert_eq!(t.readings.len(), expected.len());
    running.stop().await;
    slave.stop().await;
}
