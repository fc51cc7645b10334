//! Readings from CoAP payloads by content format (text/plain, JSON,
//! CBOR, SenML JSON, SenML CBOR, octet-stream), and values encoded for
//! PUT/POST. A payload either carries one value (named by the caller) or
//! several named values (a JSON object, a CBOR map, a SenML pack).

use ferrogate_sdk::{Timestamp, Value};
use minicbor::Decoder;
use minicbor::data::Type;
use serde::Deserialize;

use crate::message::content_format as cf;
use crate::senml::{self, CborScalar, Record, SenmlValue};

/// How a value is encoded on the wire, as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    #[serde(rename = "text")]
    Text,
    #[serde(rename = "json")]
    Json,
    #[serde(rename = "cbor")]
    Cbor,
    #[serde(rename = "senml+json")]
    SenmlJson,
    #[serde(rename = "senml+cbor")]
    SenmlCbor,
    #[serde(rename = "octets")]
    Octets,
}

impl Encoding {
    pub fn content_format(self) -> u16 {
        match self {
            Encoding::Text => cf::TEXT_PLAIN,
            Encoding::Json => cf::JSON,
            Encoding::Cbor => cf::CBOR,
            Encoding::SenmlJson => cf::SENML_JSON,
            Encoding::SenmlCbor => cf::SENML_CBOR,
            Encoding::Octets => cf::OCTET_STREAM,
        }
    }
}

/// One decoded value with its point name and source time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub point: String,
    pub value: Value,
    pub ts: Timestamp,
}

/// Why a payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("unsupported content format {0}")]
    UnsupportedFormat(u16),
    #[error("{0}")]
    Invalid(String),
    #[error("payload has several values but no point name to put a single one under")]
    NoPointName,
}

/// Decode `payload` of content format `format` (none means text/plain,
/// RFC 7252 §5.10.3 leaves it to the application). A single value is named
/// `single` (the path's point); a value of `null` is skipped.
pub fn decode(
    format: Option<u16>,
    payload: &[u8],
    single: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Sample>, PayloadError> {
    let named = |values: Vec<(String, Value)>| {
        values
            .into_iter()
            .map(|(point, value)| Sample {
                point,
                value,
                ts: now,
            })
            .collect::<Vec<_>>()
    };
    let one = |value: Value| match single {
        Some(point) => Ok(vec![Sample {
            point: point.to_string(),
            value,
            ts: now,
        }]),
        None => Err(PayloadError::NoPointName),
    };
    match format.unwrap_or(cf::TEXT_PLAIN) {
        cf::TEXT_PLAIN => {
            let text = std::str::from_utf8(payload)
                .map_err(|_| PayloadError::Invalid("text/plain payload is not UTF-8".into()))?;
            one(parse_text(text))
        }
        cf::OCTET_STREAM => one(Value::Bytes(payload.to_vec())),
        cf::JSON => {
            let json: serde_json::Value = serde_json::from_slice(payload)
                .map_err(|e| PayloadError::Invalid(format!("invalid JSON: {e}")))?;
            match json {
                serde_json::Value::Object(map) => {
                    let mut out = Vec::new();
                    flatten_json("", &map, &mut out)?;
                    Ok(named(out))
                }
                serde_json::Value::Null => Ok(Vec::new()),
                scalar => one(json_scalar(&scalar).ok_or_else(|| {
                    PayloadError::Invalid("JSON payload must be an object or a scalar".into())
                })?),
            }
        }
        cf::CBOR => decode_cbor(payload, single, now),
        cf::SENML_JSON | cf::SENML_CBOR => {
            let records = if format == Some(cf::SENML_JSON) {
                senml::decode_json(payload)
            } else {
                senml::decode_cbor(payload)
            }
            .map_err(|e| PayloadError::Invalid(e.to_string()))?;
            let resolved =
                senml::resolve(&records).map_err(|e| PayloadError::Invalid(e.to_string()))?;
            Ok(resolved
                .into_iter()
                .filter_map(|r| {
                    let ts = Timestamp(r.unix_millis(now.0));
                    let value = match r.value? {
                        SenmlValue::Int(i) => Value::Int(i),
                        SenmlValue::Float(f) => Value::Float(f),
                        SenmlValue::String(s) => Value::String(s),
                        SenmlValue::Bool(b) => Value::Bool(b),
                        SenmlValue::Data(d) => Value::Bytes(d),
                    };
                    Some(Sample {
                        point: r.name,
                        value,
                        ts,
                    })
                })
                .collect())
        }
        other => Err(PayloadError::UnsupportedFormat(other)),
    }
}

/// Is `format` one [`decode`] understands?
pub fn is_supported(format: Option<u16>) -> bool {
    matches!(
        format.unwrap_or(cf::TEXT_PLAIN),
        cf::TEXT_PLAIN | cf::OCTET_STREAM | cf::JSON | cf::CBOR | cf::SENML_JSON | cf::SENML_CBOR
    )
}

/// A text value: `true`/`false`, an integer, a float, or else a string.
pub fn parse_text(text: &str) -> Value {
    let t = text.trim();
    if t == "true" {
        Value::Bool(true)
    } else if t == "false" {
        Value::Bool(false)
    } else if let Ok(i) = t.parse::<i64>() {
        Value::Int(i)
    } else if let Ok(u) = t.parse::<u64>() {
        Value::UInt(u)
    } else if let Some(f) = t.parse::<f64>().ok().filter(|f| f.is_finite()) {
        Value::Float(f)
    } else {
        Value::String(text.to_string())
    }
}

/// Convert a decoded value to the configured point type (`bool`, `i16` …
/// `u64`, `f32`, `f64`, `string`, `bytes`), refusing what does not fit.
pub fn coerce(value: Value, data_type: &str) -> Result<Value, String> {
    let range = |v: i128| -> Result<Value, String> {
        let (lo, hi): (i128, i128) = match data_type {
            "i16" => (i16::MIN.into(), i16::MAX.into()),
            "u16" => (0, u16::MAX.into()),
            "i32" => (i32::MIN.into(), i32::MAX.into()),
            "u32" => (0, u32::MAX.into()),
            "i64" => (i64::MIN.into(), i64::MAX.into()),
            _ => (0, u64::MAX.into()),
        };
        if v < lo || v > hi {
            return Err(format!("{v} does not fit a {data_type}"));
        }
        Ok(if data_type.starts_with('u') {
            Value::UInt(v as u64)
        } else {
            Value::Int(v as i64)
        })
    };
    let mismatch = |v: &Value| format!("a {} is not a {data_type}", v.type_name());
    match data_type {
        "bool" => match value {
            Value::Bool(b) => Ok(Value::Bool(b)),
            Value::Int(0) | Value::UInt(0) => Ok(Value::Bool(false)),
            Value::Int(1) | Value::UInt(1) => Ok(Value::Bool(true)),
            Value::String(s) if s.trim() == "true" => Ok(Value::Bool(true)),
            Value::String(s) if s.trim() == "false" => Ok(Value::Bool(false)),
            other => Err(mismatch(&other)),
        },
        "i16" | "u16" | "i32" | "u32" | "i64" | "u64" => match value {
            Value::Int(i) => range(i.into()),
            Value::UInt(u) => range(u.into()),
            Value::Bool(b) => range(i128::from(b)),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1.9e19 => range(f as i128),
            Value::String(s) => match parse_text(&s) {
                v @ (Value::Int(_) | Value::UInt(_)) => coerce(v, data_type),
                _ => Err(format!("`{s}` is not a {data_type}")),
            },
            other => Err(mismatch(&other)),
        },
        "f32" | "f64" => match value.as_f64() {
            Some(f) if !matches!(value, Value::Bool(_)) => Ok(Value::Float(f)),
            _ => match &value {
                Value::String(s) => match parse_text(s).as_f64() {
                    Some(f) if !matches!(parse_text(s), Value::Bool(_)) => Ok(Value::Float(f)),
                    _ => Err(format!("`{s}` is not a {data_type}")),
                },
                other => Err(mismatch(other)),
            },
        },
        "string" => Ok(match value {
            Value::String(s) => Value::String(s),
            other => Value::String(other.to_string()),
        }),
        "bytes" => match value {
            Value::Bytes(b) => Ok(Value::Bytes(b)),
            Value::String(s) => Ok(Value::Bytes(s.into_bytes())),
            other => Err(mismatch(&other)),
        },
        _ => Ok(value),
    }
}

fn json_scalar(v: &serde_json::Value) -> Option<Value> {
    Value::from_json(v)
}

/// `{"a": {"b": 1}}` becomes point `a.b`.
fn flatten_json(
    prefix: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, Value)>,
) -> Result<(), PayloadError> {
    for (key, v) in map {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            serde_json::Value::Object(inner) => flatten_json(&name, inner, out)?,
            serde_json::Value::Null => {}
            serde_json::Value::Array(_) => {
                return Err(PayloadError::Invalid(format!(
                    "JSON field `{name}` is an array; readings must be scalars"
                )));
            }
            scalar => {
                if let Some(value) = json_scalar(scalar) {
                    out.push((name, value));
                }
            }
        }
    }
    Ok(())
}

fn decode_cbor(
    payload: &[u8],
    single: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Sample>, PayloadError> {
    let err = |e: minicbor::decode::Error| PayloadError::Invalid(format!("invalid CBOR: {e}"));
    let mut d = Decoder::new(payload);
    let samples = if matches!(d.datatype().map_err(err)?, Type::Map | Type::MapIndef) {
        let len = d.map().map_err(err)?;
        let mut out = Vec::new();
        let mut i = 0u64;
        loop {
            match len {
                Some(n) if i >= n => break,
                None if d.datatype().map_err(err)? == Type::Break => {
                    d.skip().map_err(err)?;
                    break;
                }
                _ => {}
            }
            i += 1;
            let key = match senml::read_scalar(&mut d).map_err(err)? {
                Some(CborScalar::Text(s)) => s,
                Some(CborScalar::Int(i)) => i.to_string(),
                _ => {
                    return Err(PayloadError::Invalid(
                        "CBOR map keys must be text or integers".into(),
                    ));
                }
            };
            match senml::read_scalar(&mut d).map_err(err)? {
                Some(s) => {
                    if let Some(value) = cbor_value(s) {
                        out.push(Sample {
                            point: key,
                            value,
                            ts: now,
                        });
                    }
                }
                None => {
                    return Err(PayloadError::Invalid(format!(
                        "CBOR field `{key}` is not a scalar"
                    )));
                }
            }
        }
        out
    } else {
        match senml::read_scalar(&mut d).map_err(err)? {
            Some(s) => match (cbor_value(s), single) {
                (Some(value), Some(point)) => vec![Sample {
                    point: point.to_string(),
                    value,
                    ts: now,
                }],
                (None, _) => Vec::new(),
                (Some(_), None) => return Err(PayloadError::NoPointName),
            },
            None => {
                return Err(PayloadError::Invalid(
                    "CBOR payload must be a map or a scalar".into(),
                ));
            }
        }
    };
    if d.position() != payload.len() {
        return Err(PayloadError::Invalid(
            "trailing bytes after the CBOR item".into(),
        ));
    }
    Ok(samples)
}

fn cbor_value(s: CborScalar) -> Option<Value> {
    Some(match s {
        CborScalar::Int(i) => Value::Int(i),
        CborScalar::Float(f) => Value::Float(f),
        CborScalar::Text(t) => Value::String(t),
        CborScalar::Bool(b) => Value::Bool(b),
        CborScalar::Bytes(b) => Value::Bytes(b),
        CborScalar::Null => return None,
    })
}

/// Encode `value` for point `point` in `encoding`. JSON and CBOR carry the
/// bare value; SenML carries one record named `point`.
pub fn encode(encoding: Encoding, point: &str, value: &Value) -> Result<Vec<u8>, PayloadError> {
    Ok(match encoding {
        Encoding::Text => value.to_string().into_bytes(),
        Encoding::Octets => match value {
            Value::Bytes(b) => b.clone(),
            Value::String(s) => s.clone().into_bytes(),
            other => {
                return Err(PayloadError::Invalid(format!(
                    "a {} cannot be sent as octets",
                    other.type_name()
                )));
            }
        },
        Encoding::Json => serde_json::to_vec(&value.to_json())
            .map_err(|e| PayloadError::Invalid(e.to_string()))?,
        Encoding::Cbor => {
            let mut e = minicbor::Encoder::new(Vec::new());
            let written = match value {
                Value::Bool(b) => e.bool(*b).map(|_| ()),
                Value::Int(i) => e.i64(*i).map(|_| ()),
                Value::UInt(u) => e.u64(*u).map(|_| ()),
                Value::Float(f) => e.f64(*f).map(|_| ()),
                Value::String(s) => e.str(s).map(|_| ()),
                Value::Bytes(b) => e.bytes(b).map(|_| ()),
            };
            written.map_err(|e| PayloadError::Invalid(e.to_string()))?;
            e.into_writer()
        }
        Encoding::SenmlJson | Encoding::SenmlCbor => {
            let value = match value {
                Value::Bool(b) => SenmlValue::Bool(*b),
                Value::Int(i) => SenmlValue::Int(*i),
                Value::UInt(u) => match i64::try_from(*u) {
                    Ok(i) => SenmlValue::Int(i),
                    Err(_) => SenmlValue::Float(*u as f64),
                },
                Value::Float(f) => SenmlValue::Float(*f),
                Value::String(s) => SenmlValue::String(s.clone()),
                Value::Bytes(b) => SenmlValue::Data(b.clone()),
            };
            let records = [Record {
                name: Some(point.to_string()),
                value: Some(value),
                ..Record::default()
            }];
            if encoding == Encoding::SenmlJson {
                senml::encode_json(&records)
            } else {
                senml::encode_cbor(&records)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp(1_700_000_000_000);

    fn values(samples: Vec<Sample>) -> Vec<(String, Value)> {
        samples.into_iter().map(|s| (s.point, s.value)).collect()
    }

    #[test]
    fn text_plain_values() {
        let got = decode(None, b"21.5", Some("temp"), NOW).unwrap();
        assert_eq!(values(got), vec![("temp".into(), Value::Float(21.5))]);
        assert_eq!(parse_text("true"), Value::Bool(true));
        assert_eq!(parse_text("-3"), Value::Int(-3));
        assert_eq!(parse_text("18446744073709551615"), Value::UInt(u64::MAX));
        assert_eq!(parse_text("on"), Value::String("on".into()));
        assert_eq!(parse_text("NaN"), Value::String("NaN".into()));
        assert!(decode(Some(0), &[0xff, 0xfe], Some("x"), NOW).is_err());
        assert_eq!(
            decode(Some(0), b"1", None, NOW),
            Err(PayloadError::NoPointName)
        );
    }

    #[test]
    fn json_objects_are_flattened() {
        let got = decode(
            Some(50),
            br#"{"temp":21.5,"unit":"Cel","env":{"rh":40},"x":null}"#,
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(
            values(got),
            vec![
                ("env.rh".into(), Value::Int(40)),
                ("temp".into(), Value::Float(21.5)),
                ("unit".into(), Value::String("Cel".into())),
            ]
        );
        assert!(decode(Some(50), br#"{"a":[1]}"#, None, NOW).is_err());
        assert!(decode(Some(50), b"{", None, NOW).is_err());
        assert_eq!(
            values(decode(Some(50), b"7", Some("p"), NOW).unwrap()),
            vec![("p".into(), Value::Int(7))]
        );
    }

    #[test]
    fn cbor_maps_and_scalars() {
        // {"temp": 21.5, "on": true}
        let bytes = [
            0xa2, 0x64, b't', b'e', b'm', b'p', 0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0, 0x62, b'o',
            b'n', 0xf5,
        ];
        let got = decode(Some(60), &bytes, None, NOW).unwrap();
        assert_eq!(
            values(got),
            vec![
                ("temp".into(), Value::Float(21.5)),
                ("on".into(), Value::Bool(true))
            ]
        );
        assert_eq!(
            values(decode(Some(60), &[0x18, 0x2a], Some("n"), NOW).unwrap()),
            vec![("n".into(), Value::Int(42))]
        );
        assert!(decode(Some(60), &[0xa1, 0x61, b'a', 0x81, 0x01], None, NOW).is_err());
        assert!(decode(Some(60), &[0x01, 0x02], Some("n"), NOW).is_err());
    }

    #[test]
    fn senml_names_and_times() {
        let got = decode(
            Some(110),
            br#"[{"bn":"dev1/","bt":1700000000,"n":"temp","v":21.5,"u":"Cel"},{"n":"on","vb":true,"t":1}]"#,
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(got[0].point, "dev1/temp");
        assert_eq!(got[0].ts, Timestamp(1_700_000_000_000));
        assert_eq!(got[1].value, Value::Bool(true));
        assert_eq!(got[1].ts, Timestamp(1_700_000_001_000));
    }

    #[test]
    fn unsupported_format() {
        assert_eq!(
            decode(Some(41), b"<x/>", Some("p"), NOW),
            Err(PayloadError::UnsupportedFormat(41))
        );
        assert!(!is_supported(Some(41)));
        assert!(is_supported(None));
    }

    #[test]
    fn encodings_decode_back() {
        for (encoding, value) in [
            (Encoding::Text, Value::Int(5)),
            (Encoding::Json, Value::Float(1.25)),
            (Encoding::Cbor, Value::String("on".into())),
            (Encoding::SenmlJson, Value::Bool(true)),
            (Encoding::SenmlCbor, Value::Int(-7)),
        ] {
            let bytes = encode(encoding, "sp", &value).unwrap();
            let got = decode(Some(encoding.content_format()), &bytes, Some("sp"), NOW).unwrap();
            assert_eq!(values(got), vec![("sp".to_string(), value)], "{encoding:?}");
        }
        assert!(encode(Encoding::Octets, "x", &Value::Int(1)).is_err());
    }

    #[test]
    fn values_take_the_configured_type() {
        assert_eq!(coerce(Value::Int(21), "f64"), Ok(Value::Float(21.0)));
        assert_eq!(coerce(Value::Float(7.0), "u16"), Ok(Value::UInt(7)));
        assert_eq!(
            coerce(Value::String("-3".into()), "i16"),
            Ok(Value::Int(-3))
        );
        assert_eq!(coerce(Value::Int(1), "bool"), Ok(Value::Bool(true)));
        assert_eq!(
            coerce(Value::Float(2.5), "string"),
            Ok(Value::String("2.5".into()))
        );
        assert!(coerce(Value::Int(70000), "u16").is_err());
        assert!(coerce(Value::Int(-1), "u32").is_err());
        assert!(coerce(Value::Float(1.5), "i32").is_err());
        assert!(coerce(Value::String("warm".into()), "f32").is_err());
        assert!(coerce(Value::Bool(true), "f64").is_err());
        assert!(coerce(Value::Int(2), "bool").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(
            format in prop_oneof![Just(0u16), Just(42), Just(50), Just(60), Just(110), Just(112)],
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = decode(Some(format), &bytes, Some("p"), NOW);
            let _ = decode(Some(format), &bytes, None, NOW);
        }
    }
}
