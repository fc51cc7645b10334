//! SenML (RFC 8428) in its JSON (`application/senml+json`, content format
//! 110) and CBOR (`application/senml+cbor`, 112) representations: a pack is
//! a list of [`Record`]s; [`resolve`] applies the base fields (§4.6) and
//! yields one [`Resolved`] measurement per record.
//!
//! Decoders are total over arbitrary bytes and allocate no more than the
//! input they are given. Public and protocol-neutral: the LwM2M adapter
//! uses the same codecs.

use std::collections::BTreeMap;

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

/// A record's value (RFC 8428 §4.2: `v`, `vs`, `vb`, `vd`). Integers are
/// kept apart from floats so `21` does not become `21.0`.
#[derive(Debug, Clone, PartialEq)]
pub enum SenmlValue {
    Int(i64),
    Float(f64),
    String(String),
    Bool(bool),
    Data(Vec<u8>),
}

impl SenmlValue {
    fn as_f64(&self) -> Option<f64> {
        match self {
            SenmlValue::Int(i) => Some(*i as f64),
            SenmlValue::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// One SenML record as written (base fields not applied).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub base_name: Option<String>,
    pub base_time: Option<f64>,
    pub base_unit: Option<String>,
    pub base_value: Option<f64>,
    pub base_sum: Option<f64>,
    pub base_version: Option<i64>,
    pub name: Option<String>,
    pub unit: Option<String>,
    pub value: Option<SenmlValue>,
    pub sum: Option<f64>,
    pub time: Option<f64>,
    pub update_time: Option<f64>,
}

/// A record with its base fields applied (RFC 8428 §4.6).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub name: String,
    pub unit: Option<String>,
    pub value: Option<SenmlValue>,
    pub sum: Option<f64>,
    /// Seconds: absolute (Unix time) when at least 2^28, else relative to
    /// now (negative is the past), per §4.5.3.
    pub time: f64,
}

impl Resolved {
    /// The Unix time in milliseconds, given the current time for relative
    /// times.
    pub fn unix_millis(&self, now_ms: u64) -> u64 {
        let t = if self.time >= RELATIVE_TIME_LIMIT {
            self.time * 1000.0
        } else {
            now_ms as f64 + self.time * 1000.0
        };
        if t.is_finite() && t > 0.0 {
            t as u64
        } else {
            0
        }
    }
}

/// Times below 2^28 seconds are relative to now (RFC 8428 §4.5.3).
pub const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// Why a SenML pack did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenmlError {
    #[error("invalid SenML JSON: {0}")]
    Json(String),
    #[error("invalid SenML CBOR: {0}")]
    Cbor(String),
    #[error("SenML field `{0}` has the wrong type")]
    FieldType(&'static str),
    #[error("SenML record has more than one value field")]
    MultipleValues,
    #[error("SenML record uses must-understand field `{0}`")]
    MustUnderstand(String),
    #[error("SenML record has no name (neither bn nor n)")]
    NoName,
    #[error("SenML name `{0}` is not valid (RFC 8428 §4.5.1)")]
    BadName(String),
}

// CBOR labels, RFC 8428 §6.
const L_BVER: i64 = -1;
const L_BN: i64 = -2;
const L_BT: i64 = -3;
const L_BU: i64 = -4;
const L_BV: i64 = -5;
const L_BS: i64 = -6;
const L_N: i64 = 0;
const L_U: i64 = 1;
const L_V: i64 = 2;
const L_VS: i64 = 3;
const L_VB: i64 = 4;
const L_S: i64 = 5;
const L_T: i64 = 6;
const L_UT: i64 = 7;
const L_VD: i64 = 8;

/// Decode a SenML JSON pack (§5).
pub fn decode_json(bytes: &[u8]) -> Result<Vec<Record>, SenmlError> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| SenmlError::Json(e.to_string()))?;
    let serde_json::Value::Array(items) = json else {
        return Err(SenmlError::Json("a pack must be an array".into()));
    };
    items.iter().map(record_from_json).collect()
}

fn record_from_json(item: &serde_json::Value) -> Result<Record, SenmlError> {
    let serde_json::Value::Object(map) = item else {
        return Err(SenmlError::Json("a record must be an object".into()));
    };
    let mut r = Record::default();
    let num =
        |key: &'static str, v: &serde_json::Value| v.as_f64().ok_or(SenmlError::FieldType(key));
    let text = |key: &'static str, v: &serde_json::Value| {
        v.as_str()
            .map(str::to_string)
            .ok_or(SenmlError::FieldType(key))
    };
    for (key, v) in map {
        match key.as_str() {
            "bn" => r.base_name = Some(text("bn", v)?),
            "bt" => r.base_time = Some(num("bt", v)?),
            "bu" => r.base_unit = Some(text("bu", v)?),
            "bv" => r.base_value = Some(num("bv", v)?),
            "bs" => r.base_sum = Some(num("bs", v)?),
            "bver" => r.base_version = Some(v.as_i64().ok_or(SenmlError::FieldType("bver"))?),
            "n" => r.name = Some(text("n", v)?),
            "u" => r.unit = Some(text("u", v)?),
            "v" => {
                let value = match v.as_i64() {
                    Some(i) => SenmlValue::Int(i),
                    None => SenmlValue::Float(num("v", v)?),
                };
                set_value(&mut r, value)?;
            }
            "vs" => set_value(&mut r, SenmlValue::String(text("vs", v)?))?,
            "vb" => set_value(
                &mut r,
                SenmlValue::Bool(v.as_bool().ok_or(SenmlError::FieldType("vb"))?),
            )?,
            "vd" => {
                let s = text("vd", v)?;
                let data = base64url_decode(&s).ok_or(SenmlError::FieldType("vd"))?;
                set_value(&mut r, SenmlValue::Data(data))?;
            }
            "s" => r.sum = Some(num("s", v)?),
            "t" => r.time = Some(num("t", v)?),
            "ut" => r.update_time = Some(num("ut", v)?),
            other if other.ends_with('_') => {
                return Err(SenmlError::MustUnderstand(other.to_string()));
            }
            _ => {}
        }
    }
    Ok(r)
}

fn set_value(r: &mut Record, value: SenmlValue) -> Result<(), SenmlError> {
    if r.value.replace(value).is_some() {
        return Err(SenmlError::MultipleValues);
    }
    Ok(())
}

/// Encode a SenML JSON pack. Non-finite floats have no JSON form and are
/// written as `null`.
pub fn encode_json(records: &[Record]) -> Vec<u8> {
    let items: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut m = serde_json::Map::new();
            let f = |x: f64| {
                serde_json::Number::from_f64(x)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null)
            };
            if let Some(v) = &r.base_name {
                m.insert("bn".into(), v.clone().into());
            }
            if let Some(v) = r.base_time {
                m.insert("bt".into(), f(v));
            }
            if let Some(v) = &r.base_unit {
                m.insert("bu".into(), v.clone().into());
            }
            if let Some(v) = r.base_value {
                m.insert("bv".into(), f(v));
            }
            if let Some(v) = r.base_sum {
                m.insert("bs".into(), f(v));
            }
            if let Some(v) = r.base_version {
                m.insert("bver".into(), v.into());
            }
            if let Some(v) = &r.name {
                m.insert("n".into(), v.clone().into());
            }
            if let Some(v) = &r.unit {
                m.insert("u".into(), v.clone().into());
            }
            match &r.value {
                Some(SenmlValue::Int(i)) => {
                    m.insert("v".into(), (*i).into());
                }
                Some(SenmlValue::Float(x)) => {
                    m.insert("v".into(), f(*x));
                }
                Some(SenmlValue::String(s)) => {
                    m.insert("vs".into(), s.clone().into());
                }
                Some(SenmlValue::Bool(b)) => {
                    m.insert("vb".into(), (*b).into());
                }
                Some(SenmlValue::Data(d)) => {
                    m.insert("vd".into(), base64url_encode(d).into());
                }
                None => {}
            }
            if let Some(v) = r.sum {
                m.insert("s".into(), f(v));
            }
            if let Some(v) = r.time {
                m.insert("t".into(), f(v));
            }
            if let Some(v) = r.update_time {
                m.insert("ut".into(), f(v));
            }
            serde_json::Value::Object(m)
        })
        .collect();
    serde_json::to_vec(&items).unwrap_or_default()
}

fn cbor_err(e: minicbor::decode::Error) -> SenmlError {
    SenmlError::Cbor(e.to_string())
}

/// A CBOR scalar: what a SenML value or a plain CBOR reading can be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CborScalar {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
    Null,
}

/// Read one scalar; `Ok(None)` (after skipping it) for arrays, maps and
/// other non-scalars.
pub(crate) fn read_scalar(
    d: &mut Decoder<'_>,
) -> Result<Option<CborScalar>, minicbor::decode::Error> {
    Ok(Some(match d.datatype()? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
            let v = d.u64()?;
            match i64::try_from(v) {
                Ok(i) => CborScalar::Int(i),
                Err(_) => CborScalar::Float(v as f64),
            }
        }
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            let v = d.int()?;
            match i64::try_from(v) {
                Ok(i) => CborScalar::Int(i),
                Err(_) => CborScalar::Float(i128::from(v) as f64),
            }
        }
        Type::F16 => {
            // minicbor decodes half floats only with its `half` feature;
            // the conversion is small enough to do here.
            let p = d.position();
            let Some(&[hi, lo]) = d.input().get(p + 1..p + 3) else {
                return Err(minicbor::decode::Error::end_of_input());
            };
            d.set_position(p + 3);
            CborScalar::Float(half_to_f64(u16::from_be_bytes([hi, lo])))
        }
        Type::F32 => CborScalar::Float(f64::from(d.f32()?)),
        Type::F64 => CborScalar::Float(d.f64()?),
        Type::Bool => CborScalar::Bool(d.bool()?),
        Type::String => CborScalar::Text(d.str()?.to_string()),
        Type::StringIndef => {
            let mut s = String::new();
            for part in d.str_iter()? {
                s.push_str(part?);
            }
            CborScalar::Text(s)
        }
        Type::Bytes => CborScalar::Bytes(d.bytes()?.to_vec()),
        Type::BytesIndef => {
            let mut b = Vec::new();
            for part in d.bytes_iter()? {
                b.extend_from_slice(part?);
            }
            CborScalar::Bytes(b)
        }
        Type::Null | Type::Undefined => {
            d.skip()?;
            CborScalar::Null
        }
        Type::Tag => {
            // A tagged value (e.g. a date): read the value under the tag.
            d.tag()?;
            return read_scalar(d);
        }
        _ => {
            d.skip()?;
            return Ok(None);
        }
    }))
}

/// IEEE 754 binary16 to f64 (RFC 8949 Appendix D).
fn half_to_f64(half: u16) -> f64 {
    let exp = (half >> 10) & 0x1f;
    let mant = f64::from(half & 0x3ff);
    let value = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (mant + 1024.0) * 2f64.powi(i32::from(e) - 25),
    };
    if half & 0x8000 != 0 { -value } else { value }
}

/// Decode a SenML CBOR pack (§6).
pub fn decode_cbor(bytes: &[u8]) -> Result<Vec<Record>, SenmlError> {
    let mut d = Decoder::new(bytes);
    let len = d.array().map_err(cbor_err)?;
    let mut records = Vec::new();
    let mut i = 0u64;
    loop {
        match len {
            Some(n) if i >= n => break,
            None if d.datatype().map_err(cbor_err)? == Type::Break => {
                d.skip().map_err(cbor_err)?;
                break;
            }
            _ => {}
        }
        records.push(record_from_cbor(&mut d)?);
        i += 1;
    }
    if d.position() != bytes.len() {
        return Err(SenmlError::Cbor("trailing bytes after the pack".into()));
    }
    Ok(records)
}

fn record_from_cbor(d: &mut Decoder<'_>) -> Result<Record, SenmlError> {
    let len = d.map().map_err(cbor_err)?;
    let mut r = Record::default();
    let mut i = 0u64;
    loop {
        match len {
            Some(n) if i >= n => break,
            None if d.datatype().map_err(cbor_err)? == Type::Break => {
                d.skip().map_err(cbor_err)?;
                break;
            }
            _ => {}
        }
        i += 1;
        let label = match d.datatype().map_err(cbor_err)? {
            Type::String => {
                let key = d.str().map_err(cbor_err)?;
                if key.ends_with('_') {
                    return Err(SenmlError::MustUnderstand(key.to_string()));
                }
                d.skip().map_err(cbor_err)?;
                continue;
            }
            _ => match read_scalar(d).map_err(cbor_err)? {
                Some(CborScalar::Int(l)) => l,
                _ => return Err(SenmlError::Cbor("record labels must be integers".into())),
            },
        };
        let value = read_scalar(d).map_err(cbor_err)?;
        let num = |key: &'static str| match &value {
            Some(CborScalar::Int(i)) => Ok(*i as f64),
            Some(CborScalar::Float(f)) => Ok(*f),
            _ => Err(SenmlError::FieldType(key)),
        };
        let text = |key: &'static str| match &value {
            Some(CborScalar::Text(s)) => Ok(s.clone()),
            _ => Err(SenmlError::FieldType(key)),
        };
        match label {
            L_BN => r.base_name = Some(text("bn")?),
            L_BT => r.base_time = Some(num("bt")?),
            L_BU => r.base_unit = Some(text("bu")?),
            L_BV => r.base_value = Some(num("bv")?),
            L_BS => r.base_sum = Some(num("bs")?),
            L_BVER => match value {
                Some(CborScalar::Int(v)) => r.base_version = Some(v),
                _ => return Err(SenmlError::FieldType("bver")),
            },
            L_N => r.name = Some(text("n")?),
            L_U => r.unit = Some(text("u")?),
            L_V => match value {
                Some(CborScalar::Int(v)) => set_value(&mut r, SenmlValue::Int(v))?,
                Some(CborScalar::Float(v)) => set_value(&mut r, SenmlValue::Float(v))?,
                _ => return Err(SenmlError::FieldType("v")),
            },
            L_VS => set_value(&mut r, SenmlValue::String(text("vs")?))?,
            L_VB => match value {
                Some(CborScalar::Bool(b)) => set_value(&mut r, SenmlValue::Bool(b))?,
                _ => return Err(SenmlError::FieldType("vb")),
            },
            L_VD => match value {
                Some(CborScalar::Bytes(b)) => set_value(&mut r, SenmlValue::Data(b))?,
                _ => return Err(SenmlError::FieldType("vd")),
            },
            L_S => r.sum = Some(num("s")?),
            L_T => r.time = Some(num("t")?),
            L_UT => r.update_time = Some(num("ut")?),
            _ => {}
        }
    }
    Ok(r)
}

/// Encode a SenML CBOR pack (integer labels, §6).
pub fn encode_cbor(records: &[Record]) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = write_cbor(&mut e, records);
    e.into_writer()
}

fn write_cbor(
    e: &mut Encoder<Vec<u8>>,
    records: &[Record],
) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
    e.array(records.len() as u64)?;
    for r in records {
        let mut fields: Vec<(i64, Field<'_>)> = Vec::new();
        if let Some(v) = &r.base_name {
            fields.push((L_BN, Field::Text(v)));
        }
        if let Some(v) = r.base_time {
            fields.push((L_BT, Field::Float(v)));
        }
        if let Some(v) = &r.base_unit {
            fields.push((L_BU, Field::Text(v)));
        }
        if let Some(v) = r.base_value {
            fields.push((L_BV, Field::Float(v)));
        }
        if let Some(v) = r.base_sum {
            fields.push((L_BS, Field::Float(v)));
        }
        if let Some(v) = r.base_version {
            fields.push((L_BVER, Field::Int(v)));
        }
        if let Some(v) = &r.name {
            fields.push((L_N, Field::Text(v)));
        }
        if let Some(v) = &r.unit {
            fields.push((L_U, Field::Text(v)));
        }
        match &r.value {
            Some(SenmlValue::Int(i)) => fields.push((L_V, Field::Int(*i))),
            Some(SenmlValue::Float(x)) => fields.push((L_V, Field::Float(*x))),
            Some(SenmlValue::String(s)) => fields.push((L_VS, Field::Text(s))),
            Some(SenmlValue::Bool(b)) => fields.push((L_VB, Field::Bool(*b))),
            Some(SenmlValue::Data(d)) => fields.push((L_VD, Field::Bytes(d))),
            None => {}
        }
        if let Some(v) = r.sum {
            fields.push((L_S, Field::Float(v)));
        }
        if let Some(v) = r.time {
            fields.push((L_T, Field::Float(v)));
        }
        if let Some(v) = r.update_time {
            fields.push((L_UT, Field::Float(v)));
        }
        e.map(fields.len() as u64)?;
        for (label, field) in fields {
            e.i64(label)?;
            match field {
                Field::Text(s) => e.str(s)?,
                Field::Float(x) => e.f64(x)?,
                Field::Int(i) => e.i64(i)?,
                Field::Bool(b) => e.bool(b)?,
                Field::Bytes(b) => e.bytes(b)?,
            };
        }
    }
    Ok(())
}

enum Field<'a> {
    Text(&'a str),
    Float(f64),
    Int(i64),
    Bool(bool),
    Bytes(&'a [u8]),
}

/// Apply base fields (§4.6): name = bn + n, time = bt + t, numeric value =
/// bv + v, unit = u or bu, sum = bs + s. Base fields carry over to the
/// records that follow until replaced.
pub fn resolve(records: &[Record]) -> Result<Vec<Resolved>, SenmlError> {
    let mut base_name = String::new();
    let mut base_time = 0.0;
    let mut base_unit: Option<String> = None;
    let mut base_value: Option<f64> = None;
    let mut base_sum: Option<f64> = None;
    let mut out = Vec::with_capacity(records.len().min(1024));
    for r in records {
        if let Some(bn) = &r.base_name {
            base_name = bn.clone();
        }
        if let Some(bt) = r.base_time {
            base_time = bt;
        }
        if let Some(bu) = &r.base_unit {
            base_unit = Some(bu.clone());
        }
        if let Some(bv) = r.base_value {
            base_value = Some(bv);
        }
        if let Some(bs) = r.base_sum {
            base_sum = Some(bs);
        }
        let name = format!("{base_name}{}", r.name.as_deref().unwrap_or(""));
        if name.is_empty() {
            return Err(SenmlError::NoName);
        }
        if !valid_name(&name) {
            return Err(SenmlError::BadName(name));
        }
        let value = match (&r.value, base_value) {
            (Some(v), Some(bv)) => match v.as_f64() {
                Some(x) => Some(SenmlValue::Float(x + bv)),
                None => Some(v.clone()),
            },
            (Some(v), None) => Some(v.clone()),
            (None, Some(bv)) if r.sum.is_none() => Some(SenmlValue::Float(bv)),
            (None, _) => None,
        };
        let sum = match (r.sum, base_sum) {
            (Some(s), Some(bs)) => Some(s + bs),
            (Some(s), None) => Some(s),
            (None, _) => None,
        };
        out.push(Resolved {
            name,
            unit: r.unit.clone().or_else(|| base_unit.clone()),
            value,
            sum,
            time: base_time + r.time.unwrap_or(0.0),
        });
    }
    Ok(out)
}

/// RFC 8428 §4.5.1: names start with a letter or digit and use letters,
/// digits, `-`, `:`, `.`, `/` and `_`. ferrogate also accepts the record
/// names LwM2M uses (`/3/0/0`), which start with `/`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/');
    first_ok
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_'))
}

/// Group resolved records by name, keeping the last value of each (for
/// callers that want "current value per point").
pub fn latest_by_name(resolved: &[Resolved]) -> BTreeMap<String, &Resolved> {
    let mut out = BTreeMap::new();
    for r in resolved {
        out.insert(r.name.clone(), r);
    }
    out
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (RFC 8428 §5: `vd` in JSON).
pub fn base64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = ((n >> (18 - 6 * i)) & 0x3f) as usize;
            out.push(char::from(B64URL[idx]));
        }
    }
    out
}

/// Decode base64url, with or without padding; also accepts the standard
/// alphabet's `+` and `/`, which some devices send.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc8428_example_resolves() {
        // RFC 8428 §5.1.2, multiple data points
        let json = br#"[
            {"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e+09,"bu":"%RH","v":20},
            {"u":"lon","v":24.30621},
            {"u":"lat","v":60.07965},
            {"t":60,"v":20.3},
            {"u":"lon","t":60,"v":24.30622},
            {"u":"lat","t":60,"v":60.07965},
            {"t":120,"v":20.7}
        ]"#;
        let records = decode_json(json).unwrap();
        let resolved = resolve(&records).unwrap();
        assert_eq!(resolved.len(), 7);
        assert_eq!(resolved[0].name, "urn:dev:ow:10e2073a01080063:");
        assert_eq!(resolved[0].value, Some(SenmlValue::Int(20)));
        assert_eq!(resolved[0].unit.as_deref(), Some("%RH"));
        assert_eq!(resolved[1].unit.as_deref(), Some("lon"));
        assert_eq!(resolved[3].time, 1.320067524e9);
        assert_eq!(resolved[3].unix_millis(0), 1_320_067_524_000);
    }

    #[test]
    fn relative_times_are_relative_to_now() {
        let r = resolve(&decode_json(br#"[{"n":"a","v":1,"t":-5}]"#).unwrap()).unwrap();
        assert_eq!(r[0].unix_millis(10_000), 5_000);
    }

    #[test]
    fn base_value_is_added() {
        let r =
            resolve(&decode_json(br#"[{"bn":"d/","bv":10,"n":"x","v":1.5},{"n":"y"}]"#).unwrap())
                .unwrap();
        assert_eq!(r[0].value, Some(SenmlValue::Float(11.5)));
        assert_eq!(r[1].value, Some(SenmlValue::Float(10.0)));
        assert_eq!(r[1].name, "d/y");
    }

    #[test]
    fn bad_packs_are_errors() {
        assert!(decode_json(b"{}").is_err());
        assert!(decode_json(br#"[{"n":"a","v":"x"}]"#).is_err());
        assert!(decode_json(br#"[{"n":"a","v":1,"vs":"x"}]"#).is_err());
        assert!(matches!(
            decode_json(br#"[{"n":"a","v":1,"x_":1}]"#),
            Err(SenmlError::MustUnderstand(_))
        ));
        assert!(matches!(
            resolve(&decode_json(br#"[{"v":1}]"#).unwrap()),
            Err(SenmlError::NoName)
        ));
        assert!(matches!(
            resolve(&decode_json(br#"[{"n":"a b","v":1}]"#).unwrap()),
            Err(SenmlError::BadName(_))
        ));
        assert!(decode_cbor(&[0x81, 0xa1, 0x00]).is_err());
        assert!(decode_cbor(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_cbor(&[0x80, 0x00]).is_err(), "trailing bytes");
    }

    #[test]
    fn cbor_example_from_rfc8428_decodes() {
        // RFC 8428 §6: [{-2: "urn:dev:ow:10e2073a0108006:", -3: 1276020076.001,
        //   -4: "A", -1: 5, 0: "voltage", 1: "V", 2: 120.1}, {0: "current", 6: -5, 2: 1.2}]
        let mut e = Encoder::new(Vec::new());
        e.array(2).unwrap();
        e.map(7).unwrap();
        e.i64(-2)
            .unwrap()
            .str("urn:dev:ow:10e2073a0108006:")
            .unwrap();
        e.i64(-3).unwrap().f64(1276020076.001).unwrap();
        e.i64(-4).unwrap().str("A").unwrap();
        e.i64(-1).unwrap().i64(5).unwrap();
        e.i64(0).unwrap().str("voltage").unwrap();
        e.i64(1).unwrap().str("V").unwrap();
        e.i64(2).unwrap().f64(120.1).unwrap();
        e.map(3).unwrap();
        e.i64(0).unwrap().str("current").unwrap();
        e.i64(6).unwrap().i64(-5).unwrap();
        e.i64(2).unwrap().f32(1.2).unwrap();
        let bytes = e.into_writer();
        let r = resolve(&decode_cbor(&bytes).unwrap()).unwrap();
        assert_eq!(r[0].name, "urn:dev:ow:10e2073a0108006:voltage");
        assert_eq!(r[0].unit.as_deref(), Some("V"));
        assert_eq!(r[1].unit.as_deref(), Some("A"));
        assert!((r[1].time - 1276020071.001).abs() < 1e-3);
    }

    #[test]
    fn half_floats() {
        assert_eq!(half_to_f64(0x3c00), 1.0);
        assert_eq!(half_to_f64(0xc000), -2.0);
        assert_eq!(half_to_f64(0x7bff), 65504.0);
        assert_eq!(half_to_f64(0x0001), 5.960464477539063e-8);
        assert_eq!(half_to_f64(0x7c00), f64::INFINITY);
        let r = decode_cbor(&[0x81, 0xa2, 0x00, 0x61, b'a', 0x02, 0xf9, 0x3e, 0x00]).unwrap();
        assert_eq!(r[0].value, Some(SenmlValue::Float(1.5)));
    }

    #[test]
    fn base64url() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", &[0xfb, 0xff, 0xfe]] {
            assert_eq!(base64url_decode(&base64url_encode(data)).unwrap(), data);
        }
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url_decode("Zm9vYg=="), Some(b"foob".to_vec()));
        assert_eq!(base64url_decode("Z"), None);
        assert_eq!(base64url_decode("Zm9*"), None);
    }

    fn value() -> impl Strategy<Value = SenmlValue> {
        prop_oneof![
            any::<i64>().prop_map(SenmlValue::Int),
            (-1e12f64..1e12).prop_map(|f| SenmlValue::Float(f + 0.5)),
            "[a-z0-9 ]{0,12}".prop_map(SenmlValue::String),
            any::<bool>().prop_map(SenmlValue::Bool),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(SenmlValue::Data),
        ]
    }

    fn record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of("[a-z][a-z0-9:/]{0,8}"),
            proptest::option::of((0u32..2_000_000_000).prop_map(f64::from)),
            proptest::option::of("[a-z][a-z0-9_]{0,8}"),
            proptest::option::of("[A-Za-z%]{1,4}"),
            proptest::option::of(value()),
            proptest::option::of((-1000i32..1000).prop_map(f64::from)),
        )
            .prop_map(|(base_name, base_time, name, unit, value, time)| Record {
                base_name,
                base_time,
                name,
                unit,
                value,
                time,
                ..Record::default()
            })
    }

    proptest! {
        #[test]
        fn json_round_trip(records in proptest::collection::vec(record(), 0..6)) {
            prop_assert_eq!(decode_json(&encode_json(&records)).unwrap(), records);
        }

        #[test]
        fn cbor_round_trip(records in proptest::collection::vec(record(), 0..6)) {
            prop_assert_eq!(decode_cbor(&encode_cbor(&records)).unwrap(), records);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(records) = decode_cbor(&bytes) {
                let _ = resolve(&records);
            }
            if let Ok(records) = decode_json(&bytes) {
                let _ = resolve(&records);
            }
        }
    }
}
