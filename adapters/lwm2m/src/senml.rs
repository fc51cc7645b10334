//! SenML (RFC 8428) records as LwM2M 1.1+ uses them: JSON (content format
//! 110) and CBOR (112, integer labels from RFC 8428 §6), with base-name
//! resolution. LwM2M uses `bn`/`n` for paths, `bt`/`t` for times, values in
//! `v`, `vs`, `vb`, `vd` and `vlo` (object link, Core 1.1 §7.4.5).

use crate::cbor::{Cbor, CborError};

/// A record's value.
#[derive(Debug, Clone, PartialEq)]
pub enum SenmlValue {
    /// `v` holding an integer that fits i64.
    Integer(i64),
    /// `v` holding an integer above i64::MAX.
    Unsigned(u64),
    /// `v` holding a non-integer number.
    Float(f64),
    /// `vs`
    String(String),
    /// `vb`
    Bool(bool),
    /// `vd` (base64url in JSON, a byte string in CBOR)
    Data(Vec<u8>),
    /// `vlo`: an LwM2M object link `"3:0"`
    ObjLink(String),
}

/// One SenML record as written (before base values are applied).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SenmlRecord {
    pub base_name: Option<String>,
    pub base_time: Option<f64>,
    pub name: Option<String>,
    pub time: Option<f64>,
    pub value: Option<SenmlValue>,
}

/// A record with its base name and base time applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRecord {
    pub name: String,
    /// Seconds: absolute (since the epoch) or relative to now when < 2^28.
    pub time: Option<f64>,
    pub value: Option<SenmlValue>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SenmlError {
    #[error("SenML JSON: {0}")]
    Json(String),
    #[error("SenML CBOR: {0}")]
    Cbor(#[from] CborError),
    #[error("SenML record {index}: {reason}")]
    Record { index: usize, reason: String },
    #[error("SenML pack is not an array of records")]
    NotAPack,
    #[error("SenML value cannot be encoded: {0}")]
    Unencodable(&'static str),
}

fn record_err(index: usize, reason: impl Into<String>) -> SenmlError {
    SenmlError::Record {
        index,
        reason: reason.into(),
    }
}

/// Apply base names and times (RFC 8428 §4.6): a base value holds until the
/// next record that sets one.
pub fn resolve(records: &[SenmlRecord]) -> Vec<ResolvedRecord> {
    let mut base_name = String::new();
    let mut base_time = 0.0;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        if let Some(bn) = &r.base_name {
            base_name.clone_from(bn);
        }
        if let Some(bt) = r.base_time {
            base_time = bt;
        }
        let name = format!("{base_name}{}", r.name.as_deref().unwrap_or(""));
        let time = match r.time {
            None if base_time == 0.0 => None,
            t => Some(t.unwrap_or(0.0) + base_time),
        };
        out.push(ResolvedRecord {
            name,
            time,
            value: r.value.clone(),
        });
    }
    out
}

// ---------------------------------------------------------------- JSON

/// Decode a SenML JSON pack.
pub fn parse_json(bytes: &[u8]) -> Result<Vec<SenmlRecord>, SenmlError> {
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| SenmlError::Json(e.to_string()))?;
    let serde_json::Value::Array(items) = doc else {
        return Err(SenmlError::NotAPack);
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| json_record(index, item))
        .collect()
}

fn json_record(index: usize, item: &serde_json::Value) -> Result<SenmlRecord, SenmlError> {
    use serde_json::Value as J;
    let J::Object(map) = item else {
        return Err(record_err(index, "not a JSON object"));
    };
    let mut rec = SenmlRecord::default();
    let set_value = |rec: &mut SenmlRecord, v: SenmlValue| {
        if rec.value.is_some() {
            return Err(record_err(index, "more than one value"));
        }
        rec.value = Some(v);
        Ok(())
    };
    for (label, v) in map {
        let text = || {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| record_err(index, format!("`{label}` must be a string")))
        };
        let number = || {
            v.as_f64()
                .ok_or_else(|| record_err(index, format!("`{label}` must be a number")))
        };
        match label.as_str() {
            "bn" => rec.base_name = Some(text()?),
            "bt" => rec.base_time = Some(number()?),
            "n" => rec.name = Some(text()?),
            "t" => rec.time = Some(number()?),
            "v" => {
                let J::Number(n) = v else {
                    return Err(record_err(index, "`v` must be a number"));
                };
                let value = if let Some(i) = n.as_i64() {
                    SenmlValue::Integer(i)
                } else if let Some(u) = n.as_u64() {
                    SenmlValue::Unsigned(u)
                } else {
                    SenmlValue::Float(n.as_f64().unwrap_or(f64::NAN))
                };
                set_value(&mut rec, value)?;
            }
            "vs" => set_value(&mut rec, SenmlValue::String(text()?))?,
            "vb" => {
                let b = v
                    .as_bool()
                    .ok_or_else(|| record_err(index, "`vb` must be a boolean"))?;
                set_value(&mut rec, SenmlValue::Bool(b))?;
            }
            "vd" => {
                let data = base64url_decode(&text()?)
                    .ok_or_else(|| record_err(index, "`vd` is not base64url"))?;
                set_value(&mut rec, SenmlValue::Data(data))?;
            }
            "vlo" => set_value(&mut rec, SenmlValue::ObjLink(text()?))?,
            other if other.ends_with('_') => {
                return Err(record_err(
                    index,
                    format!("must-understand label `{other}` is not supported"),
                ));
            }
            // bver, bu, u, s, bs, ut and extensions do not change LwM2M values
            _ => {}
        }
    }
    Ok(rec)
}

/// Encode records as a SenML JSON pack.
pub fn emit_json(records: &[SenmlRecord]) -> Result<Vec<u8>, SenmlError> {
    use serde_json::{Map, Value as J};
    let number = |f: f64| {
        serde_json::Number::from_f64(f)
            .map(J::Number)
            .ok_or(SenmlError::Unencodable("non-finite number"))
    };
    let mut pack = Vec::with_capacity(records.len());
    for r in records {
        let mut m = Map::new();
        if let Some(bn) = &r.base_name {
            m.insert("bn".into(), J::String(bn.clone()));
        }
        if let Some(bt) = r.base_time {
            m.insert("bt".into(), number(bt)?);
        }
        if let Some(n) = &r.name {
            m.insert("n".into(), J::String(n.clone()));
        }
        if let Some(t) = r.time {
            m.insert("t".into(), number(t)?);
        }
        match &r.value {
            None => {}
            Some(SenmlValue::Integer(i)) => {
                m.insert("v".into(), J::from(*i));
            }
            Some(SenmlValue::Unsigned(u)) => {
                m.insert("v".into(), J::from(*u));
            }
            Some(SenmlValue::Float(f)) => {
                m.insert("v".into(), number(*f)?);
            }
            Some(SenmlValue::String(s)) => {
                m.insert("vs".into(), J::String(s.clone()));
            }
            Some(SenmlValue::Bool(b)) => {
                m.insert("vb".into(), J::Bool(*b));
            }
            Some(SenmlValue::Data(d)) => {
                m.insert("vd".into(), J::String(base64url_encode(d)));
            }
            Some(SenmlValue::ObjLink(s)) => {
                m.insert("vlo".into(), J::String(s.clone()));
            }
        }
        pack.push(J::Object(m));
    }
    serde_json::to_vec(&J::Array(pack)).map_err(|_| SenmlError::Unencodable("JSON serialization"))
}

// ---------------------------------------------------------------- CBOR

const BASE_NAME: i128 = -2;
const BASE_TIME: i128 = -3;
const NAME: i128 = 0;
const TIME: i128 = 6;
const VALUE: i128 = 2;
const STRING_VALUE: i128 = 3;
const BOOL_VALUE: i128 = 4;
const DATA_VALUE: i128 = 8;

/// Decode a SenML CBOR pack.
pub fn parse_cbor(bytes: &[u8]) -> Result<Vec<SenmlRecord>, SenmlError> {
    let Cbor::Array(items) = Cbor::parse(bytes)? else {
        return Err(SenmlError::NotAPack);
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| cbor_record(index, item))
        .collect()
}

fn cbor_number(v: &Cbor) -> Option<SenmlValue> {
    match v {
        Cbor::Unsigned(u) => Some(match i64::try_from(*u) {
            Ok(i) => SenmlValue::Integer(i),
            Err(_) => SenmlValue::Unsigned(*u),
        }),
        Cbor::Negative(n) => i64::try_from(*n).ok().map(|n| SenmlValue::Integer(-1 - n)),
        Cbor::Float(f) => Some(SenmlValue::Float(*f)),
        _ => None,
    }
}

fn cbor_time(v: &Cbor) -> Option<f64> {
    match v {
        Cbor::Float(f) => Some(*f),
        other => other.as_integer().map(|i| i as f64),
    }
}

fn cbor_record(index: usize, item: &Cbor) -> Result<SenmlRecord, SenmlError> {
    let Cbor::Map(entries) = item else {
        return Err(record_err(index, "not a CBOR map"));
    };
    let mut rec = SenmlRecord::default();
    for (k, v) in entries {
        let text = |label: &str| match v {
            Cbor::Text(s) => Ok(s.clone()),
            _ => Err(record_err(
                index,
                format!("`{label}` must be a text string"),
            )),
        };
        let value = match (k.as_integer(), k) {
            (Some(BASE_NAME), _) => {
                rec.base_name = Some(text("bn")?);
                None
            }
            (Some(BASE_TIME), _) => {
                rec.base_time =
                    Some(cbor_time(v).ok_or_else(|| record_err(index, "`bt` must be a number"))?);
                None
            }
            (Some(NAME), _) => {
                rec.name = Some(text("n")?);
                None
            }
            (Some(TIME), _) => {
                rec.time =
                    Some(cbor_time(v).ok_or_else(|| record_err(index, "`t` must be a number"))?);
                None
            }
            (Some(VALUE), _) => {
                Some(cbor_number(v).ok_or_else(|| record_err(index, "`v` must be a number"))?)
            }
            (Some(STRING_VALUE), _) => Some(SenmlValue::String(text("vs")?)),
            (Some(BOOL_VALUE), _) => match v {
                Cbor::Bool(b) => Some(SenmlValue::Bool(*b)),
                _ => return Err(record_err(index, "`vb` must be a boolean")),
            },
            (Some(DATA_VALUE), _) => match v {
                Cbor::Bytes(b) => Some(SenmlValue::Data(b.clone())),
                _ => return Err(record_err(index, "`vd` must be a byte string")),
            },
            (None, Cbor::Text(label)) if label == "vlo" => Some(SenmlValue::ObjLink(text("vlo")?)),
            (None, Cbor::Text(label)) if label.ends_with('_') => {
                return Err(record_err(
                    index,
                    format!("must-understand label `{label}` is not supported"),
                ));
            }
            _ => None,
        };
        if let Some(value) = value {
            if rec.value.is_some() {
                return Err(record_err(index, "more than one value"));
            }
            rec.value = Some(value);
        }
    }
    Ok(rec)
}

/// Encode records as a SenML CBOR pack.
pub fn emit_cbor(records: &[SenmlRecord]) -> Vec<u8> {
    let label = |n: i64| Cbor::integer(n);
    let number = |f: f64| {
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            Cbor::integer(f as i64)
        } else {
            Cbor::Float(f)
        }
    };
    let pack = records
        .iter()
        .map(|r| {
            let mut m = Vec::new();
            if let Some(bn) = &r.base_name {
                m.push((label(-2), Cbor::Text(bn.clone())));
            }
            if let Some(bt) = r.base_time {
                m.push((label(-3), number(bt)));
            }
            if let Some(n) = &r.name {
                m.push((label(0), Cbor::Text(n.clone())));
            }
            if let Some(t) = r.time {
                m.push((label(6), number(t)));
            }
            match &r.value {
                None => {}
                Some(SenmlValue::Integer(i)) => m.push((label(2), Cbor::integer(*i))),
                Some(SenmlValue::Unsigned(u)) => m.push((label(2), Cbor::Unsigned(*u))),
                Some(SenmlValue::Float(f)) => m.push((label(2), Cbor::Float(*f))),
                Some(SenmlValue::String(s)) => m.push((label(3), Cbor::Text(s.clone()))),
                Some(SenmlValue::Bool(b)) => m.push((label(4), Cbor::Bool(*b))),
                Some(SenmlValue::Data(d)) => m.push((label(8), Cbor::Bytes(d.clone()))),
                Some(SenmlValue::ObjLink(s)) => {
                    m.push((Cbor::Text("vlo".into()), Cbor::Text(s.clone())))
                }
            }
            Cbor::Map(m)
        })
        .collect();
    Cbor::Array(pack).to_vec()
}

// ---------------------------------------------------------------- base64url

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (RFC 4648 §5), as SenML JSON `vd` requires.
pub fn base64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out
}

/// Decode base64url, with or without padding; `None` if not base64url.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_carry_forward() {
        let recs = parse_json(
            br#"[{"bn":"/3/0/","n":"0","vs":"x"},{"n":"6/1","v":5},{"n":"9","v":2.5,"t":-5}]"#,
        )
        .unwrap();
        let resolved = resolve(&recs);
        assert_eq!(resolved[1].name, "/3/0/6/1");
        assert_eq!(resolved[1].value, Some(SenmlValue::Integer(5)));
        assert_eq!(resolved[2].value, Some(SenmlValue::Float(2.5)));
        assert_eq!(resolved[2].time, Some(-5.0));
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(matches!(parse_json(b"{}"), Err(SenmlError::NotAPack)));
        assert!(matches!(
            parse_json(b"[1]"),
            Err(SenmlError::Record { index: 0, .. })
        ));
        assert!(parse_json(br#"[{"n":"1","v":1,"vs":"x"}]"#).is_err());
        assert!(parse_json(br#"[{"n":"1","foo_":1}]"#).is_err());
        assert!(parse_json(br#"[{"n":1}]"#).is_err());
        assert!(parse_cbor(&[0x81, 0xa1, 0x00, 0x01]).is_err());
    }

    #[test]
    fn cbor_integer_labels() {
        // 81 a2 21 66 "/3/0/9" 02 18 64  (from the Wakaama capture README)
        let mut bytes = vec![0x81, 0xa2, 0x21, 0x66];
        bytes.extend_from_slice(b"/3/0/9");
        bytes.extend_from_slice(&[0x02, 0x18, 0x64]);
        let recs = parse_cbor(&bytes).unwrap();
        assert_eq!(recs[0].base_name.as_deref(), Some("/3/0/9"));
        assert_eq!(recs[0].value, Some(SenmlValue::Integer(100)));
        assert_eq!(emit_cbor(&recs), bytes);
    }

    #[test]
    fn base64url() {
        assert_eq!(base64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(base64url_decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(base64url_decode("-_8="), Some(vec![0xfb, 0xff]));
        assert_eq!(base64url_decode("a"), None);
        assert_eq!(base64url_decode("a*"), None);
    }
}
