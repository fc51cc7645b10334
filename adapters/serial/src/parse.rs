//! Frame parsers: one frame's payload in, named fields out; and the typing
//! of a field into a point's value.
//!
//! A frame either parses completely or is an error; a parser never guesses a
//! value. All parsers are total over arbitrary bytes.

use std::collections::BTreeMap;

use ferrogate_sdk::Value;
use regex::bytes::Regex;

use crate::nmea::{self, NmeaError};

/// A field of a parsed frame, before it is typed as a point.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// Text from a regex capture or a `key=value` pair.
    Text(String),
    /// A JSON value from a JSON line.
    Json(serde_json::Value),
    /// An already typed value (NMEA).
    Typed(Value),
}

/// The fields of one frame, by source name.
pub type Fields = BTreeMap<String, Field>;

/// Why a frame did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("frame does not match the pattern")]
    NoMatch,
    #[error("frame is not UTF-8 text")]
    NotText,
    #[error("`{0}` is not a key{1}value pair")]
    NotAPair(String, String),
    #[error("frame is not a JSON object: {0}")]
    Json(String),
    #[error("NMEA: {0}")]
    Nmea(#[from] NmeaError),
}

impl ParseError {
    /// A checksum failure, counted apart from other parse errors.
    pub fn is_checksum(&self) -> bool {
        matches!(self, ParseError::Nmea(e) if e.is_checksum())
    }
}

/// The field holding an NMEA sentence's type (`GGA`, `XDR`).
pub const NMEA_SENTENCE: &str = "sentence";

/// How a device's frames are read.
#[derive(Debug, Clone)]
pub enum FrameParser {
    /// Named captures of a regex are the fields.
    Regex(Regex),
    /// `key=value` pairs split by `separator` (whitespace when `None`).
    KeyValue {
        separator: Option<String>,
        assign: String,
    },
    /// One JSON object per frame; fields are top-level keys or JSON pointers.
    Json,
    /// NMEA 0183 sentences, checksum checked.
    Nmea { require_checksum: bool },
}

impl FrameParser {
    pub fn kind(&self) -> &'static str {
        match self {
            FrameParser::Regex(_) => "regex",
            FrameParser::KeyValue { .. } => "key_value",
            FrameParser::Json => "json",
            FrameParser::Nmea { .. } => "nmea",
        }
    }

    /// The fields of one frame.
    pub fn parse(&self, frame: &[u8]) -> Result<Fields, ParseError> {
        match self {
            FrameParser::Regex(re) => regex_fields(re, frame),
            FrameParser::KeyValue { separator, assign } => {
                key_value_fields(frame, separator.as_deref(), assign)
            }
            FrameParser::Json => json_fields(frame),
            FrameParser::Nmea { require_checksum } => {
                let sentence = nmea::parse(frame, *require_checksum)?;
                let mut fields: Fields = sentence
                    .values
                    .into_iter()
                    .map(|(k, v)| (k, Field::Typed(v)))
                    .collect();
                // `TYPE.N`: the raw fields, for a generic mapping by index
                for (i, text) in sentence.fields.into_iter().enumerate() {
                    if !text.is_empty() {
                        fields.insert(format!("{}.{}", sentence.kind, i + 1), Field::Text(text));
                    }
                }
                fields.insert(NMEA_SENTENCE.into(), Field::Text(sentence.kind));
                Ok(fields)
            }
        }
    }

    /// Look up `source` in parsed fields (JSON pointers for JSON lines).
    pub fn lookup<'f>(&self, fields: &'f Fields, source: &str) -> Option<FieldRef<'f>> {
        if let (FrameParser::Json, Some(Field::Json(root))) = (self, fields.get("")) {
            let found = if source.starts_with('/') {
                root.pointer(source)
            } else {
                root.get(source)
            };
            return found.map(FieldRef::Json);
        }
        fields.get(source).map(FieldRef::Field)
    }
}

/// A field found for a point.
#[derive(Debug, Clone, Copy)]
pub enum FieldRef<'f> {
    Field(&'f Field),
    Json(&'f serde_json::Value),
}

fn text(frame: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(frame).map_err(|_| ParseError::NotText)
}

fn regex_fields(re: &Regex, frame: &[u8]) -> Result<Fields, ParseError> {
    let caps = re.captures(frame).ok_or(ParseError::NoMatch)?;
    let mut fields = Fields::new();
    for name in re.capture_names().flatten() {
        if let Some(m) = caps.name(name) {
            let value = std::str::from_utf8(m.as_bytes()).map_err(|_| ParseError::NotText)?;
            fields.insert(name.to_string(), Field::Text(value.to_string()));
        }
    }
    Ok(fields)
}

fn key_value_fields(
    frame: &[u8],
    separator: Option<&str>,
    assign: &str,
) -> Result<Fields, ParseError> {
    let text = text(frame)?;
    let tokens: Box<dyn Iterator<Item = &str>> = match separator {
        Some(sep) => Box::new(text.split(sep)),
        None => Box::new(text.split_whitespace()),
    };
    let mut fields = Fields::new();
    for token in tokens.map(str::trim).filter(|t| !t.is_empty()) {
        let (key, value) = token
            .split_once(assign)
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ParseError::NotAPair(token.to_string(), assign.to_string()))?;
        fields.insert(
            key.trim().to_string(),
            Field::Text(value.trim().to_string()),
        );
    }
    if fields.is_empty() {
        return Err(ParseError::NotAPair(text.to_string(), assign.to_string()));
    }
    Ok(fields)
}

fn json_fields(frame: &[u8]) -> Result<Fields, ParseError> {
    let value: serde_json::Value =
        serde_json::from_slice(frame).map_err(|e| ParseError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(ParseError::Json("top level is not an object".into()));
    }
    // The whole object is kept under "" and looked up by pointer.
    Ok(Fields::from([(String::new(), Field::Json(value))]))
}

/// The type a point's value has on the way north.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointType {
    Bool,
    I64,
    U64,
    F64,
    String,
}

impl PointType {
    pub fn parse(name: &str) -> Option<PointType> {
        Some(match name {
            "bool" => PointType::Bool,
            "i64" | "int" => PointType::I64,
            "u64" | "uint" => PointType::U64,
            "f64" | "float" => PointType::F64,
            "string" => PointType::String,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PointType::Bool => "bool",
            PointType::I64 => "i64",
            PointType::U64 => "u64",
            PointType::F64 => "f64",
            PointType::String => "string",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, PointType::I64 | PointType::U64 | PointType::F64)
    }
}

/// Turn a field into a value of `ty`, then apply `value * scale + offset`
/// (only for f64 points; the build step refuses scale on other types).
pub fn typed(field: FieldRef<'_>, ty: PointType, scale: f64, offset: f64) -> Result<Value, String> {
    let value = match field {
        FieldRef::Field(Field::Text(t)) => from_text(t, ty)?,
        FieldRef::Field(Field::Json(j)) | FieldRef::Json(j) => from_json(j, ty)?,
        FieldRef::Field(Field::Typed(v)) => coerce(v, ty)?,
    };
    Ok(match value {
        Value::Float(f) => Value::Float(f * scale + offset),
        other => other,
    })
}

fn from_text(text: &str, ty: PointType) -> Result<Value, String> {
    let t = text.trim();
    let t_num = t.strip_prefix('+').unwrap_or(t);
    let bad = || {
        format!(
            "`{}` is not a valid {}",
            crate::bytes::printable(text.as_bytes(), 40),
            ty.name()
        )
    };
    match ty {
        PointType::String => Ok(Value::String(text.to_string())),
        PointType::F64 => t_num
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float)
            .ok_or_else(bad),
        PointType::I64 => t_num.parse().map(Value::Int).map_err(|_| bad()),
        PointType::U64 => t_num.parse().map(Value::UInt).map_err(|_| bad()),
        PointType::Bool => match t.to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => Ok(Value::Bool(true)),
            "0" | "false" | "off" | "no" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
    }
}

fn from_json(json: &serde_json::Value, ty: PointType) -> Result<Value, String> {
    match (json, ty) {
        (serde_json::Value::String(s), _) => from_text(s, ty),
        (serde_json::Value::Null, _) => Err("value is null".into()),
        (serde_json::Value::Array(_) | serde_json::Value::Object(_), PointType::String) => {
            Ok(Value::String(json.to_string()))
        }
        _ => match Value::from_json(json) {
            Some(v) => coerce(&v, ty),
            None => Err(format!("a JSON {} is not a {}", json_kind(json), ty.name())),
        },
    }
}

fn json_kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
        _ => "value",
    }
}

/// A value of one type as another, when no information is lost.
pub fn coerce(value: &Value, ty: PointType) -> Result<Value, String> {
    let bad = || {
        format!(
            "{} `{value}` is not a valid {}",
            value.type_name(),
            ty.name()
        )
    };
    match (value, ty) {
        (Value::String(s), _) => from_text(s, ty),
        (v, PointType::String) => Ok(Value::String(v.to_string())),
        (Value::Bool(b), PointType::Bool) => Ok(Value::Bool(*b)),
        (Value::Int(i), PointType::Bool) | (Value::Int(i), PointType::U64) if *i < 0 => Err(bad()),
        (Value::Int(i), PointType::Bool) => match i {
            0 => Ok(Value::Bool(false)),
            1 => Ok(Value::Bool(true)),
            _ => Err(bad()),
        },
        (Value::UInt(u), PointType::Bool) => match u {
            0 => Ok(Value::Bool(false)),
            1 => Ok(Value::Bool(true)),
            _ => Err(bad()),
        },
        (Value::Int(i), PointType::I64) => Ok(Value::Int(*i)),
        (Value::Int(i), PointType::U64) => Ok(Value::UInt(*i as u64)),
        (Value::UInt(u), PointType::U64) => Ok(Value::UInt(*u)),
        (Value::UInt(u), PointType::I64) => i64::try_from(*u).map(Value::Int).map_err(|_| bad()),
        (Value::Int(i), PointType::F64) => Ok(Value::Float(*i as f64)),
        (Value::UInt(u), PointType::F64) => Ok(Value::Float(*u as f64)),
        (Value::Float(f), PointType::F64) if f.is_finite() => Ok(Value::Float(*f)),
        (Value::Float(f), PointType::I64) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Ok(Value::Int(*f as i64))
        }
        (Value::Float(f), PointType::U64) if f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15 => {
            Ok(Value::UInt(*f as u64))
        }
        (Value::Bool(b), PointType::I64) => Ok(Value::Int(i64::from(*b))),
        (Value::Bool(b), PointType::U64) => Ok(Value::UInt(u64::from(*b))),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(parser: &FrameParser, fields: &'a Fields, source: &str) -> FieldRef<'a> {
        parser.lookup(fields, source).unwrap()
    }

    #[test]
    fn regex_named_captures_with_scale() {
        let p = FrameParser::Regex(
            Regex::new(r"^(?P<sign>[+-]) *(?P<weight>[0-9.]+) ?(?P<unit>\w+)$").unwrap(),
        );
        let fields = p.parse(b"+  12.50 kg").unwrap();
        let w = typed(field(&p, &fields, "weight"), PointType::F64, 1000.0, 0.0).unwrap();
        assert_eq!(w, Value::Float(12500.0));
        assert_eq!(p.parse(b"ERR 3"), Err(ParseError::NoMatch));
    }

    #[test]
    fn key_value_pairs() {
        let p = FrameParser::KeyValue {
            separator: Some(",".into()),
            assign: "=".into(),
        };
        let fields = p.parse(b"T=21.5, RH=40,ok=1").unwrap();
        assert_eq!(
            typed(field(&p, &fields, "RH"), PointType::U64, 1.0, 0.0),
            Ok(Value::UInt(40))
        );
        assert_eq!(
            typed(field(&p, &fields, "ok"), PointType::Bool, 1.0, 0.0),
            Ok(Value::Bool(true))
        );
        assert!(matches!(
            p.parse(b"T=1,garbage"),
            Err(ParseError::NotAPair(..))
        ));
        assert!(p.parse(b" , ").is_err());
    }

    #[test]
    fn json_lines_by_key_and_pointer() {
        let p = FrameParser::Json;
        let fields = p.parse(br#"{"t":21.5,"s":{"n":-3},"x":null}"#).unwrap();
        assert_eq!(
            typed(field(&p, &fields, "t"), PointType::F64, 2.0, 1.0),
            Ok(Value::Float(44.0))
        );
        assert_eq!(
            typed(field(&p, &fields, "/s/n"), PointType::I64, 1.0, 0.0),
            Ok(Value::Int(-3))
        );
        assert!(typed(field(&p, &fields, "/s/n"), PointType::U64, 1.0, 0.0).is_err());
        assert!(typed(field(&p, &fields, "x"), PointType::F64, 1.0, 0.0).is_err());
        assert!(p.lookup(&fields, "missing").is_none());
        assert!(p.parse(b"[1,2]").is_err());
        assert!(p.parse(b"{\"t\":").is_err());
    }

    #[test]
    fn text_that_is_not_the_type_is_an_error() {
        assert!(from_text("12a", PointType::F64).is_err());
        assert!(from_text("NaN", PointType::F64).is_err());
        assert!(from_text("-1", PointType::U64).is_err());
        assert_eq!(from_text(" +7 ", PointType::I64), Ok(Value::Int(7)));
    }
}
