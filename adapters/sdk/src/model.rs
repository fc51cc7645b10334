//! The common message model: everything an adapter reports about its devices.
//!
//! Adapters produce [`Uplink`]s; the runtime encodes them (JSON by default) and
//! puts them in the outbox. Nothing here knows about MQTT topics.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix epoch milliseconds, the `ts` of the northbound contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A point's value, as the device gave it after decoding and scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// A 32-bit float with the precision it has: the shortest decimal that
    /// reads back as the same `f32` (`229.8`), not the widened binary value
    /// (`f64::from(229.8f32)` is `229.8000030517578`). Every adapter that
    /// decodes an `f32` uses this, so MQTT, `read` and `modbus read` agree.
    pub fn from_f32(x: f32) -> Value {
        use std::io::Write;
        if !x.is_finite() {
            return Value::Float(f64::from(x));
        }
        // `Display` for f32 prints the shortest round-tripping decimal;
        // the longest is under 64 bytes, so nothing is allocated.
        let mut buf = [0u8; 64];
        let mut out = &mut buf[..];
        let written = write!(out, "{x}").map(|()| 64 - out.len());
        let shortest = written
            .ok()
            .and_then(|len| std::str::from_utf8(&buf[..len]).ok()?.parse::<f64>().ok());
        Value::Float(shortest.unwrap_or(f64::from(x)))
    }

    /// The value as a float, for range checks and numeric coercion.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            Value::String(_) | Value::Bytes(_) => None,
        }
    }

    /// The value as JSON: numbers as numbers, bytes as a lowercase hex string.
    /// Non-finite floats have no JSON form and become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::UInt(u) => (*u).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => s.clone().into(),
            Value::Bytes(b) => crate::hex::encode(b).into(),
        }
    }

    /// A value from JSON, as it arrives in a command. Arrays, objects and
    /// `null` have no single-point meaning and are refused.
    pub fn from_json(json: &serde_json::Value) -> Option<Value> {
        match json {
            serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .or_else(|| n.as_u64().map(Value::UInt))
                .or_else(|| n.as_f64().map(Value::Float)),
            serde_json::Value::String(s) => Some(Value::String(s.clone())),
            _ => None,
        }
    }

    /// The name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::UInt(_) => "unsigned integer",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::String(s) => write!(f, "{s}"),
            Value::Bytes(b) => write!(f, "{}", crate::hex::encode(b)),
        }
    }
}

/// Why a point has no value in this reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointErrorKind {
    /// The device did not answer in time.
    Timeout,
    /// The device answered with a protocol exception (Modbus exception,
    /// CoAP 4.xx/5.xx).
    DeviceException,
    /// The device answered, but the bytes do not decode as the point's type.
    Decode,
    /// The transport failed (connection refused, port gone).
    Io,
}

impl PointErrorKind {
    /// Stable name, used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PointErrorKind::Timeout => "timeout",
            PointErrorKind::DeviceException => "device_exception",
            PointErrorKind::Decode => "decode",
            PointErrorKind::Io => "io",
        }
    }
}

/// A failed read of one point. Never replaced by a made-up value.
#[derive(Debug, Clone, PartialEq)]
pub struct PointError {
    pub kind: PointErrorKind,
    pub message: String,
}

impl PointError {
    pub fn new(kind: PointErrorKind, message: impl Into<String>) -> Self {
        PointError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for PointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// One point's value or error, with the time the device produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Shared with the adapter's point map: a reading costs no allocation
    /// for its name.
    pub point: Arc<str>,
    pub value: Result<Value, PointError>,
    pub ts: Timestamp,
}

impl Reading {
    pub fn ok(point: impl Into<Arc<str>>, value: Value, ts: Timestamp) -> Self {
        Reading {
            point: point.into(),
            value: Ok(value),
            ts,
        }
    }

    pub fn failed(point: impl Into<Arc<str>>, error: PointError, ts: Timestamp) -> Self {
        Reading {
            point: point.into(),
            value: Err(error),
            ts,
        }
    }
}

/// A batch of readings of one device, published as one telemetry message.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    pub device: String,
    pub ts: Timestamp,
    pub readings: Vec<Reading>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    Online,
    Offline,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Online => "online",
            DeviceState::Offline => "offline",
        }
    }
}

/// A device went online or offline, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStatus {
    pub device: String,
    pub state: DeviceState,
    pub reason: Option<String>,
    pub ts: Timestamp,
}

/// What one point is: its type, unit, and whether (and within which range)
/// it may be written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PointMeta {
    pub name: String,
    /// Type name as configured: `bool`, `u16`, `f32`, `string`, ...
    pub data_type: String,
    pub unit: Option<String>,
    pub writable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub description: Option<String>,
    /// Where the point lives on the device, in its protocol's terms
    /// (Modbus `holding register 0`: area and zero-based address; LwM2M
    /// `/3303/0/5700`; a CoAP path; a serial `source`).
    pub address: Option<String>,
}

/// The device's points and what may be done with it. Sending a device's
/// meta also tells the runtime which adapter owns the device, so commands
/// for it are routed there.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceMeta {
    pub device: String,
    /// Shared: devices of one kind (a Modbus profile, LwM2M clients with
    /// the same objects) hold one list between them.
    pub points: Arc<[PointMeta]>,
    /// Operations allowed on this device; `None` allows every operation the
    /// adapter supports.
    pub operations: Option<Vec<String>>,
    /// Protocol-specific facts (an LwM2M client's object list, a serial
    /// port path), published as they are.
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Something that happened to a device (an LwM2M registration, a write
/// executed) that is not a reading.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    pub device: String,
    pub ts: Timestamp,
    pub event: String,
    pub data: BTreeMap<String, serde_json::Value>,
}

/// A device the gateway no longer serves (removed from the configuration
/// by a reload, an LwM2M client forgotten): the directory drops it and its
/// retained `status` and `meta` are cleared on the broker (an empty
/// retained payload on each), so consumers stop seeing it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceForgotten {
    pub device: String,
}

/// Everything an adapter sends north.
#[derive(Debug, Clone, PartialEq)]
pub enum Uplink {
    Telemetry(Telemetry),
    Status(DeviceStatus),
    Meta(DeviceMeta),
    Event(DeviceEvent),
    Forgotten(DeviceForgotten),
}

impl Uplink {
    /// The device this message is about.
    pub fn device(&self) -> &str {
        match self {
            Uplink::Telemetry(t) => &t.device,
            Uplink::Status(s) => &s.device,
            Uplink::Meta(m) => &m.device,
            Uplink::Event(e) => &e.device,
            Uplink::Forgotten(f) => &f.device,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_f32_keeps_the_precision_it_has() {
        assert_eq!(Value::from_f32(229.8), Value::Float(229.8));
        assert_eq!(Value::from_f32(229.8).to_json().to_string(), "229.8");
        assert_eq!(Value::from_f32(-1.5e-7), Value::Float(-1.5e-7));
        assert_eq!(Value::from_f32(f32::MAX), Value::Float(3.4028235e38));
        assert_eq!(
            Value::from_f32(f32::MIN_POSITIVE / 8.0),
            Value::Float(1.469368e-39)
        );
        assert!(matches!(Value::from_f32(f32::NAN), Value::Float(f) if f.is_nan()));
        for x in [0.1f32, 1.0 / 3.0, 123.456, 16_777_217.0, -0.0] {
            let Value::Float(f) = Value::from_f32(x) else {
                unreachable!()
            };
            assert_eq!(f as f32, x, "round trip of {x}");
        }
    }

    #[test]
    fn json_numbers_keep_their_kind() {
        assert_eq!(Value::from_json(&serde_json::json!(5)), Some(Value::Int(5)));
        assert_eq!(
            Value::from_json(&serde_json::json!(u64::MAX)),
            Some(Value::UInt(u64::MAX))
        );
        assert_eq!(
            Value::from_json(&serde_json::json!(1.5)),
            Some(Value::Float(1.5))
        );
        assert_eq!(Value::from_json(&serde_json::json!([1])), None);
        assert_eq!(Value::from_json(&serde_json::Value::Null), None);
    }

    #[test]
    fn non_finite_floats_become_null_and_bytes_hex() {
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::Value::Null);
        assert_eq!(Value::Bytes(vec![0xab, 0x01]).to_json(), "ab01");
    }
}
