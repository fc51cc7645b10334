//! The default JSON codec and the topic layout of the northbound contract
//! (DESIGN.md, "Northbound MQTT contract"). Pure functions: the caller
//! supplies the clock and the telemetry `seq`.

use std::collections::BTreeMap;

use ferrogate_sdk::{
    DeviceEvent, DeviceMeta, DeviceStatus, Outcome, Reading, Telemetry, Timestamp, Uplink, Value,
};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value as Json, json};

/// The topics under one root (`ferrogate/{gateway_id}` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    root: String,
}

impl Topics {
    pub fn new(root: impl Into<String>) -> Self {
        Topics { root: root.into() }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// `{root}/status`: birth and last will.
    pub fn gateway_status(&self) -> String {
        format!("{}/status", self.root)
    }

    /// `{root}/devices/{device}/{leaf}`.
    pub fn device(&self, device: &str, leaf: &str) -> String {
        format!("{}/devices/{device}/{leaf}", self.root)
    }

    /// The filter the session subscribes to for commands.
    pub fn command_filter(&self) -> String {
        format!("{}/devices/+/cmd", self.root)
    }

    /// The device of a command topic, `None` for any other topic.
    pub fn command_device<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic.strip_prefix(self.root.as_str())?;
        let device = rest.strip_prefix("/devices/")?.strip_suffix("/cmd")?;
        (!device.is_empty() && !device.contains('/')).then_some(device)
    }
}

/// An encoded northbound message, ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub topic: String,
    pub retain: bool,
    pub payload: Vec<u8>,
}

/// The kind of an uplink's topic leaf, with whether it is retained. A
/// forgotten device has no leaf of its own: it clears `status` and `meta`.
pub fn leaf(uplink: &Uplink) -> (&'static str, bool) {
    match uplink {
        Uplink::Telemetry(_) => ("telemetry", false),
        Uplink::Status(_) => ("status", true),
        Uplink::Meta(_) => ("meta", true),
        Uplink::Event(_) => ("event", false),
        Uplink::Forgotten(_) => ("forgotten", true),
    }
}

/// Encodes one adapter message: one MQTT message, or for a forgotten
/// device two, an empty retained payload on its `status` and on its `meta`
/// (which is how MQTT deletes a retained message). `seq` is used for
/// telemetry only.
pub fn encode_uplink(
    topics: &Topics,
    gateway: &str,
    adapter: &str,
    uplink: &Uplink,
    seq: u64,
) -> impl Iterator<Item = Encoded> + use<> {
    let (first, second) = match uplink {
        Uplink::Forgotten(f) => {
            let cleared = |leaf| Encoded {
                topic: topics.device(&f.device, leaf),
                retain: true,
                payload: Vec::new(),
            };
            (cleared("status"), Some(cleared("meta")))
        }
        _ => (encode_one(topics, gateway, adapter, uplink, seq), None),
    };
    std::iter::once(first).chain(second)
}

fn encode_one(topics: &Topics, gateway: &str, adapter: &str, uplink: &Uplink, seq: u64) -> Encoded {
    let (leaf, retain) = leaf(uplink);
    let body = match uplink {
        Uplink::Telemetry(t) => {
            return Encoded {
                topic: topics.device(&t.device, leaf),
                retain,
                payload: telemetry(gateway, adapter, t, seq),
            };
        }
        Uplink::Status(s) => device_status(gateway, s),
        Uplink::Meta(m) => meta(gateway, m),
        Uplink::Event(e) => event(gateway, e),
        Uplink::Forgotten(_) => Json::Null,
    };
    Encoded {
        topic: topics.device(uplink.device(), leaf),
        retain,
        payload: to_bytes(&body),
    }
}

fn to_bytes(v: &Json) -> Vec<u8> {
    // Serializing a `serde_json::Value` to a Vec cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Telemetry is the hot path (one message per poll of every device): it is
/// serialized straight from the readings, without building a JSON tree.
fn telemetry(gateway: &str, adapter: &str, t: &Telemetry, seq: u64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        gateway: &'a str,
        device: &'a str,
        adapter: &'a str,
        ts: u64,
        seq: u64,
        values: Values<'a>,
        errors: Errors<'a>,
    }
    let body = Body {
        gateway,
        device: &t.device,
        adapter,
        ts: t.ts.0,
        seq,
        values: Values(&t.readings),
        errors: Errors(&t.readings),
    };
    // Room for the envelope and ~16 bytes per reading, so the buffer does
    // not grow by doubling from serde_json's 128 bytes.
    let mut out = Vec::with_capacity(160 + 16 * t.readings.len());
    // Serializing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &body);
    out
}

/// `{point: value}` of the readings that have a value.
struct Values<'a>(&'a [Reading]);

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for r in self.0 {
            if let Ok(v) = &r.value {
                map.serialize_entry(&*r.point, &PointValue(v))?;
            }
        }
        map.end()
    }
}

/// `{point: "kind: message"}` of the readings that failed.
struct Errors<'a>(&'a [Reading]);

impl Serialize for Errors<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for r in self.0 {
            if let Err(e) = &r.value {
                map.serialize_entry(&*r.point, &e.to_string())?;
            }
        }
        map.end()
    }
}

/// A value as [`Value::to_json`] writes it, without the intermediate tree.
struct PointValue<'a>(&'a Value);

impl Serialize for PointValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(_) => s.serialize_unit(),
            Value::String(text) => s.serialize_str(text),
            Value::Bytes(_) => self.0.to_json().serialize(s),
        }
    }
}

fn device_status(gateway: &str, s: &DeviceStatus) -> Json {
    json!({
        "gateway": gateway,
        "device": s.device,
        "state": s.state.as_str(),
        "ts": s.ts.0,
        "reason": s.reason,
    })
}

fn meta(gateway: &str, m: &DeviceMeta) -> Json {
    let points: Vec<Json> = m
        .points
        .iter()
        .map(|p| {
            // Fields a point does not have are left out, not sent as null:
            // a fleet of LwM2M clients publishes this once per registration.
            let mut point = Map::new();
            point.insert("name".into(), p.name.clone().into());
            point.insert("type".into(), p.data_type.clone().into());
            if let Some(unit) = &p.unit {
                point.insert("unit".into(), unit.clone().into());
            }
            point.insert("writable".into(), p.writable.into());
            if let Some(d) = &p.description {
                point.insert("description".into(), d.clone().into());
            }
            if let Some(min) = p.min {
                point.insert("min".into(), json!(min));
            }
            if let Some(max) = p.max {
                point.insert("max".into(), json!(max));
            }
            Json::Object(point)
        })
        .collect();
    json!({
        "gateway": gateway,
        "device": m.device,
        "ts": Timestamp::now().0,
        "points": points,
        "operations": m.operations,
        "attributes": m.attributes,
    })
}

fn event(gateway: &str, e: &DeviceEvent) -> Json {
    let mut obj = Map::new();
    // Event data first, so the contract's own fields win on a name clash.
    for (k, v) in &e.data {
        obj.insert(k.clone(), v.clone());
    }
    obj.insert("gateway".into(), gateway.into());
    obj.insert("device".into(), e.device.clone().into());
    obj.insert("ts".into(), e.ts.0.into());
    obj.insert("event".into(), e.event.clone().into());
    Json::Object(obj)
}

/// The retained birth message on `{root}/status`.
pub fn birth(gateway: &str, ts: Timestamp) -> Vec<u8> {
    to_bytes(&json!({
        "gateway": gateway,
        "state": "online",
        "ts": ts.0,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// The last will on `{root}/status`, also published on a clean shutdown.
pub fn will(gateway: &str) -> Vec<u8> {
    to_bytes(&json!({ "gateway": gateway, "state": "offline" }))
}

/// A command's result, for `{root}/devices/{device}/cmd/result` and the
/// request's MQTT 5 response topic.
pub fn command_result(
    gateway: &str,
    device: &str,
    id: &str,
    outcome: &Outcome,
    ts: Timestamp,
) -> Vec<u8> {
    // A request whose id could not be read is answered with `"id": null`.
    let id_json = if id.is_empty() {
        Json::Null
    } else {
        Json::from(id)
    };
    let body = match outcome {
        Ok(values) => {
            let values: BTreeMap<&String, Json> =
                values.iter().map(|(k, v)| (k, v.to_json())).collect();
            json!({
                "gateway": gateway,
                "device": device,
                "id": id_json,
                "ok": true,
                "ts": ts.0,
                "values": values,
            })
        }
        Err(e) => json!({
            "gateway": gateway,
            "device": device,
            "id": id_json,
            "ok": false,
            "ts": ts.0,
            "error": { "code": e.code.as_str(), "message": e.message },
        }),
    };
    to_bytes(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogate_sdk::{
        CommandError, DeviceState, ErrorCode, PointError, PointErrorKind, PointMeta, Reading, Value,
    };

    fn parse(bytes: &[u8]) -> Json {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn telemetry_matches_the_contract() {
        let topics = Topics::new("ferrogate/gw1");
        let t = Uplink::Telemetry(Telemetry {
            device: "meter-7".into(),
            ts: Timestamp(1700000000123),
            readings: vec![
                Reading::ok("voltage", Value::Float(230.5), Timestamp(1)),
                Reading::failed(
                    "current",
                    PointError::new(PointErrorKind::Timeout, "no response within 300ms"),
                    Timestamp(1),
                ),
            ],
        });
        let e = encode_uplink(&topics, "gw1", "modbus", &t, 42)
            .next()
            .unwrap();
        assert_eq!(e.topic, "ferrogate/gw1/devices/meter-7/telemetry");
        assert!(!e.retain);
        assert_eq!(
            parse(&e.payload),
            json!({"gateway":"gw1","device":"meter-7","adapter":"modbus","ts":1700000000123u64,
                   "seq":42,"values":{"voltage":230.5},
                   "errors":{"current":"timeout: no response within 300ms"}})
        );
    }

    #[test]
    fn a_forgotten_device_clears_its_retained_status_and_meta() {
        let topics = Topics::new("r");
        let f = Uplink::Forgotten(ferrogate_sdk::DeviceForgotten { device: "d".into() });
        let cleared: Vec<_> = encode_uplink(&topics, "g", "a", &f, 0)
            .map(|e| (e.topic, e.retain, e.payload))
            .collect();
        assert_eq!(
            cleared,
            [
                ("r/devices/d/status".to_string(), true, vec![]),
                ("r/devices/d/meta".to_string(), true, vec![])
            ]
        );
    }

    #[test]
    fn status_meta_event_and_results() {
        let topics = Topics::new("r");
        let s = Uplink::Status(DeviceStatus {
            device: "d".into(),
            state: DeviceState::Offline,
            reason: Some("no answer".into()),
            ts: Timestamp(5),
        });
        let e = encode_uplink(&topics, "g", "a", &s, 0).next().unwrap();
        assert_eq!((e.topic.as_str(), e.retain), ("r/devices/d/status", true));
        assert_eq!(
            parse(&e.payload),
            json!({"gateway":"g","device":"d","state":"offline","ts":5,"reason":"no answer"})
        );
        let m = Uplink::Meta(DeviceMeta {
            device: "d".into(),
            points: vec![PointMeta {
                name: "sp".into(),
                data_type: "f32".into(),
                unit: Some("C".into()),
                writable: true,
                min: Some(0.0),
                max: Some(90.0),
                description: None,
            }]
            .into(),
            ..Default::default()
        });
        let e = encode_uplink(&topics, "g", "a", &m, 0).next().unwrap();
        assert_eq!((e.topic.as_str(), e.retain), ("r/devices/d/meta", true));
        let j = parse(&e.payload);
        assert_eq!(
            j["points"][0],
            json!({"name":"sp","type":"f32","unit":"C","writable":true,"min":0.0,"max":90.0})
        );
        let ok: Outcome = Ok([("sp".to_string(), Value::Int(3))].into());
        assert_eq!(
            parse(&command_result("g", "d", "c1", &ok, Timestamp(9))),
            json!({"gateway":"g","device":"d","id":"c1","ok":true,"ts":9,"values":{"sp":3}})
        );
        let err: Outcome = Err(CommandError::new(ErrorCode::NotWritable, "sp is read-only"));
        assert_eq!(
            parse(&command_result("g", "d", "c2", &err, Timestamp(9))),
            json!({"gateway":"g","device":"d","id":"c2","ok":false,"ts":9,
                   "error":{"code":"not_writable","message":"sp is read-only"}})
        );
    }

    #[test]
    fn command_topics() {
        let topics = Topics::new("ferrogate/gw");
        assert_eq!(topics.command_filter(), "ferrogate/gw/devices/+/cmd");
        assert_eq!(
            topics.command_device("ferrogate/gw/devices/m1/cmd"),
            Some("m1")
        );
        assert_eq!(topics.command_device("ferrogate/gw/devices//cmd"), None);
        assert_eq!(
            topics.command_device("ferrogate/gw/devices/m1/cmd/result"),
            None
        );
        assert_eq!(topics.command_device("other/devices/m1/cmd"), None);
    }
}
