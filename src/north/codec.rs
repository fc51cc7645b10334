//! The default JSON codec and the topic layout of the northbound contract
//! (DESIGN.md, "Northbound MQTT contract"): uplinks and command results
//! encoded, command requests decoded (the one place that reads request
//! JSON). Pure functions: the caller supplies the clock and the telemetry
//! `seq`.

use std::collections::BTreeMap;

use ferrogate_sdk::{
    CommandError, DeviceEvent, DeviceMeta, DeviceStatus, ErrorCode, Operation, Outcome, Reading,
    Telemetry, Timestamp, Uplink, Value,
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

    /// `{root}/responses/`: the default prefix of MQTT 5 response topics.
    pub fn responses_prefix(&self) -> String {
        format!("{}/responses/", self.root)
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
            if let Some(address) = &p.address {
                point.insert("address".into(), address.clone().into());
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

/// The operations a request may name besides read and write; adapters say
/// which they support by answering or refusing them.
const PROTOCOL_OPS: &[&str] = &[
    "execute",
    "discover",
    "observe",
    "cancel-observe",
    "write-attr",
    "create",
    "delete",
    "send",
];

/// The fields a request may have.
const REQUEST_FIELDS: &[&str] = &[
    "id",
    "op",
    "point",
    "points",
    "values",
    "path",
    "value",
    "args",
    "timeout_ms",
];

/// Longest command id accepted, in bytes: ids are kept in the idempotency
/// window, so their size is bounded.
pub const MAX_ID_BYTES: usize = 128;

/// A command request decoded from `{"id","op","point"|"points"|"values"|"path","value","args","timeout_ms"}`:
/// what the router executes. MQTT and the control socket both hand this
/// type to the router; nothing after this decoder reads request JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: String,
    pub op: Operation,
    pub timeout_ms: Option<u64>,
    /// A hash of the request's content (key order and whitespace aside):
    /// the same id with another body is refused, not answered with the
    /// first result.
    pub fingerprint: u64,
}

/// A request that could not be decoded: its id when it was readable, and
/// the `bad_request` (or `invalid_value`) naming the one problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub id: Option<String>,
    pub error: CommandError,
}

impl Refused {
    fn bad(id: Option<&str>, message: impl Into<String>) -> Refused {
        Refused {
            id: id.map(str::to_string),
            error: CommandError::new(ErrorCode::BadRequest, message),
        }
    }
}

/// Decodes a request body. Duplicate keys (at any depth) are refused: a
/// body must not mean one thing to us and another to whoever checked it.
pub fn decode_request(payload: &[u8]) -> Result<Request, Refused> {
    let json = serde_json::from_slice::<StrictJson>(payload).map_err(|e| {
        if e.is_data() {
            // Valid JSON with a duplicate key: answer with the id if the
            // lenient reading has a usable one.
            let lenient = serde_json::from_slice::<Json>(payload).ok();
            let id = lenient
                .as_ref()
                .and_then(|j| j.get("id"))
                .and_then(Json::as_str)
                .filter(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES);
            Refused::bad(id, format!("request refused: {e}"))
        } else {
            Refused::bad(None, format!("request is not valid JSON: {e}"))
        }
    })?;
    request_from_json(&json.0)
}

/// Decodes a request already parsed as JSON (the control socket's
/// `command` body).
pub fn request_from_json(json: &Json) -> Result<Request, Refused> {
    let Some(obj) = json.as_object() else {
        return Err(Refused::bad(None, "request must be a JSON object"));
    };
    let id = match obj.get("id") {
        Some(Json::String(s)) if s.len() > MAX_ID_BYTES => {
            return Err(Refused::bad(
                None,
                format!("`id` is {} bytes, longer than {MAX_ID_BYTES}", s.len()),
            ));
        }
        Some(Json::String(s)) if !s.is_empty() => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        Some(_) => return Err(Refused::bad(None, "`id` must be a non-empty string")),
        None => return Err(Refused::bad(None, "missing `id`")),
    };
    let fail = |msg: String| Refused::bad(Some(&id), msg);
    if let Some(k) = obj.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
        return Err(fail(format!(
            "unknown field `{k}`; expected {}",
            REQUEST_FIELDS.join(", ")
        )));
    }
    let op_name = match obj.get("op") {
        Some(Json::String(s)) => s.as_str(),
        Some(_) => return Err(fail("`op` must be a string".into())),
        None => return Err(fail("missing `op`".into())),
    };
    let timeout_ms = match obj.get("timeout_ms") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(ms) if ms > 0 => Some(ms),
            _ => return Err(fail("`timeout_ms` must be a positive integer".into())),
        },
    };
    let string_list = |key: &str| -> Result<Vec<String>, Refused> {
        match obj.get(key) {
            None => Ok(Vec::new()),
            Some(Json::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| fail(format!("`{key}` must be a list of strings")))
                })
                .collect(),
            Some(_) => Err(fail(format!("`{key}` must be a list of strings"))),
        }
    };
    let point = match obj.get("point") {
        None => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(_) => return Err(fail("`point` must be a string".into())),
    };
    let value = |v: &Json| {
        Value::from_json(v).ok_or_else(|| Refused {
            id: Some(id.clone()),
            error: CommandError::new(
                ErrorCode::InvalidValue,
                format!("`{v}` is not a point value (expected a number, bool or string)"),
            ),
        })
    };
    let path = match obj.get("path") {
        None => None,
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(fail("`path` must be a non-empty string".into())),
    };
    let op = match op_name {
        "read" | "write" if point.is_some() && path.is_some() => {
            return Err(fail(format!(
                "a {op_name} names its target by `point` or by `path`, not both"
            )));
        }
        "read" => {
            let mut points = string_list("points")?;
            points.extend(point);
            points.extend(path);
            Operation::Read { points }
        }
        // A write by path keeps the protocol's own forms (an instance
        // written as `{"5850": true}`, `args.mode`): the adapter reads them.
        "write" if path.is_some() => {
            if obj.contains_key("values") {
                return Err(fail(
                    "a write takes either `path` and `value`, or `values`".into(),
                ));
            }
            Operation::Protocol {
                op: "write".into(),
                path,
                value: obj.get("value").cloned(),
                args: obj.get("args").cloned().unwrap_or(Json::Null),
            }
        }
        "write" => {
            let mut values = BTreeMap::new();
            match (point, obj.get("value"), obj.get("values")) {
                (Some(p), Some(v), None) => {
                    values.insert(p, value(v)?);
                }
                (None, None, Some(Json::Object(map))) if !map.is_empty() => {
                    for (p, v) in map {
                        values.insert(p.clone(), value(v)?);
                    }
                }
                (None, None, Some(_)) => {
                    return Err(fail(
                        "`values` must be a non-empty object of point: value".into(),
                    ));
                }
                _ => {
                    return Err(fail(
                        "a write takes either `point` and `value`, or `values`".into(),
                    ));
                }
            }
            Operation::Write { values }
        }
        other if PROTOCOL_OPS.contains(&other) => Operation::Protocol {
            op: other.to_string(),
            path: path.or(point),
            value: obj.get("value").cloned(),
            args: obj.get("args").cloned().unwrap_or(Json::Null),
        },
        other => {
            return Err(fail(format!(
                "unknown op `{other}`; expected read, write, {}",
                PROTOCOL_OPS.join(", ")
            )));
        }
    };
    Ok(Request {
        id,
        op,
        timeout_ms,
        fingerprint: fingerprint(json),
    })
}

/// A hash of a request's content: serde_json's maps are sorted, so the
/// same request written with another key order or spacing hashes the same.
fn fingerprint(json: &Json) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    to_bytes(json).hash(&mut h);
    h.finish()
}

/// JSON parsed like `serde_json::Value`, except that an object with a key
/// twice is an error instead of keeping the last one.
struct StrictJson(Json);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key `{key}`"
                )));
            }
            let StrictJson(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(Json::Object(obj))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogate_sdk::{DeviceState, PointError, PointErrorKind, PointMeta};

    fn parse(bytes: &[u8]) -> Json {
        serde_json::from_slice(bytes).unwrap()
    }

    fn refused(payload: &str) -> Refused {
        decode_request(payload.as_bytes()).unwrap_err()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// The command decoder is total: a request or a refusal, never a
        /// panic, over arbitrary bytes and over JSON-shaped text.
        #[test]
        fn any_payload_is_a_request_or_a_refusal(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            text in r#"\{("(id|op|point|path|value|values|timeout|args|mode)":("[a-z0-9/]{0,8}"|[0-9.e-]{1,8}|true|null|\[\]|\{\}),?){0,6}\}"#,
        ) {
            let _ = decode_request(&bytes);
            if let Err(refused) = decode_request(text.as_bytes()) {
                proptest::prop_assert!(!refused.error.message.is_empty());
            }
        }
    }

    #[test]
    fn decodes_each_request_form() {
        let r = decode_request(br#"{"id":"1","op":"read","point":"t"}"#).unwrap();
        assert_eq!(
            r.op,
            Operation::Read {
                points: vec!["t".into()]
            }
        );
        let r = decode_request(br#"{"id":7,"op":"read"}"#).unwrap();
        assert_eq!(r.id, "7");
        let r = decode_request(
            br#"{"id":"2","op":"write","point":"sp","value":21.5,"timeout_ms":500}"#,
        )
        .unwrap();
        assert_eq!(r.timeout_ms, Some(500));
        assert!(matches!(r.op, Operation::Write { values } if values["sp"] == Value::Float(21.5)));
        let r = decode_request(br#"{"id":"3","op":"write","values":{"a":1,"b":true}}"#).unwrap();
        assert!(matches!(r.op, Operation::Write { values } if values.len() == 2));
        let r =
            decode_request(br#"{"id":"4","op":"execute","path":"/3/0/4","args":"0='x'"}"#).unwrap();
        assert_eq!(r.op.name(), "execute");
    }

    #[test]
    fn malformed_requests_name_the_problem() {
        assert!(refused("not json").error.message.contains("not valid JSON"));
        assert!(refused("[1]").error.message.contains("JSON object"));
        assert!(
            refused(r#"{"op":"read"}"#)
                .error
                .message
                .contains("missing `id`")
        );
        let r = refused(r#"{"id":"9","op":"reboot"}"#);
        assert_eq!(r.id.as_deref(), Some("9"));
        assert!(r.error.message.contains("unknown op `reboot`"));
        let has = |body: &str, text: &str| {
            let r = refused(body);
            assert!(
                r.error.message.contains(text),
                "{body}: {}",
                r.error.message
            );
        };
        has(r#"{"id":"9"}"#, "missing `op`");
        has(r#"{"id":"9","op":"read","points":"a"}"#, "list of strings");
        has(r#"{"id":"9","op":"write","point":"a"}"#, "either");
        has(r#"{"id":"9","op":"read","timeout_ms":-1}"#, "positive");
        has(r#"{"id":"9","op":"read","colour":1}"#, "unknown field");
        has(
            r#"{"id":"9","op":"read","point":"a","path":"/3/0"}"#,
            "not both",
        );
        let r = refused(r#"{"id":"9","op":"write","point":"a","value":[1]}"#);
        assert_eq!(r.error.code, ErrorCode::InvalidValue);
        assert_eq!(refused("{}").error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn read_and_write_take_a_path() {
        let r = decode_request(br#"{"id":"1","op":"read","path":"/3/0"}"#).unwrap();
        assert_eq!(
            r.op,
            Operation::Read {
                points: vec!["/3/0".into()]
            }
        );
        let r = decode_request(br#"{"id":"2","op":"write","path":"/1/0/1","value":120}"#).unwrap();
        assert_eq!(
            r.op,
            Operation::Protocol {
                op: "write".into(),
                path: Some("/1/0/1".into()),
                value: Some(json!(120)),
                args: Json::Null,
            }
        );
        let r = refused(r#"{"id":"3","op":"write","path":"/1/0/1","values":{"a":1}}"#);
        assert_eq!(r.error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        // serde_json keeps the last duplicate: this would execute a write.
        let r = refused(r#"{"id":"d1","op":"read","op":"write","point":"sp","value":1}"#);
        assert_eq!(r.error.code, ErrorCode::BadRequest);
        assert!(r.error.message.contains("duplicate key `op`"), "{:?}", r);
        assert_eq!(r.id.as_deref(), Some("d1"));
        let r = refused(r#"{"id":"d2","op":"write","values":{"sp":1,"sp":2}}"#);
        assert!(r.error.message.contains("duplicate key `sp`"), "{:?}", r);
        assert!(decode_request(br#"{"id":"d3","op":"write","values":{"sp":1,"sq":2}}"#).is_ok());
    }

    #[test]
    fn ids_are_bounded() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let r = refused(&format!(r#"{{"id":"{long}","op":"read"}}"#));
        assert_eq!(r.id, None, "a refused id is not echoed");
        assert!(r.error.message.contains("longer than 128"), "{:?}", r);
        let ok = "x".repeat(MAX_ID_BYTES);
        assert!(decode_request(format!(r#"{{"id":"{ok}","op":"read"}}"#).as_bytes()).is_ok());
    }

    #[test]
    fn the_fingerprint_is_the_content_not_the_spelling() {
        let a = decode_request(br#"{"id":"f","op":"write","point":"sp","value":1}"#).unwrap();
        let b =
            decode_request(br#"{ "value": 1, "point": "sp", "op": "write", "id": "f" }"#).unwrap();
        let c = decode_request(br#"{"id":"f","op":"write","point":"sp","value":2}"#).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
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
                address: Some("holding 0".into()),
            }]
            .into(),
            ..Default::default()
        });
        let e = encode_uplink(&topics, "g", "a", &m, 0).next().unwrap();
        assert_eq!((e.topic.as_str(), e.retain), ("r/devices/d/meta", true));
        let j = parse(&e.payload);
        assert_eq!(
            j["points"][0],
            json!({"name":"sp","type":"f32","unit":"C","writable":true,"min":0.0,"max":90.0,"address":"holding 0"})
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
