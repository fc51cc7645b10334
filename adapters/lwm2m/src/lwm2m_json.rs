//! The OMA LwM2M JSON format of LwM2M 1.0 (content format 11543, Core 1.0
//! §6.4.4), decode only: `{"bn":"/3/0/","e":[{"n":"9","v":100}, ...]}`.
//! Records come out in the SenML shape so one path mapping serves both.

use crate::senml::{ResolvedRecord, SenmlError, SenmlValue};

/// Decode an LwM2M JSON document into resolved records.
pub fn parse(bytes: &[u8]) -> Result<Vec<ResolvedRecord>, SenmlError> {
    use serde_json::Value as J;
    let doc: J = serde_json::from_slice(bytes).map_err(|e| SenmlError::Json(e.to_string()))?;
    let J::Object(top) = doc else {
        return Err(SenmlError::Json(
            "LwM2M JSON must be an object with `e`".into(),
        ));
    };
    let base_name = match top.get("bn") {
        None => String::new(),
        Some(J::String(s)) => s.clone(),
        Some(_) => return Err(SenmlError::Json("`bn` must be a string".into())),
    };
    let base_time = match top.get("bt") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| SenmlError::Json("`bt` must be a number".into()))?,
        ),
    };
    let Some(J::Array(entries)) = top.get("e") else {
        return Err(SenmlError::Json("missing `e` array".into()));
    };
    let mut out = Vec::with_capacity(entries.len());
    for (index, e) in entries.iter().enumerate() {
        let err = |reason: &str| SenmlError::Record {
            index,
            reason: reason.to_string(),
        };
        let J::Object(m) = e else {
            return Err(err("not a JSON object"));
        };
        let name = match m.get("n") {
            None => String::new(),
            Some(J::String(s)) => s.clone(),
            Some(_) => return Err(err("`n` must be a string")),
        };
        let time = match (m.get("t"), base_time) {
            (Some(t), b) => {
                Some(t.as_f64().ok_or_else(|| err("`t` must be a number"))? + b.unwrap_or(0.0))
            }
            (None, b) => b,
        };
        let mut value = None;
        for (label, v) in m {
            let parsed = match label.as_str() {
                "v" => match v {
                    J::Number(n) => Some(if let Some(i) = n.as_i64() {
                        SenmlValue::Integer(i)
                    } else if let Some(u) = n.as_u64() {
                        SenmlValue::Unsigned(u)
                    } else {
                        SenmlValue::Float(n.as_f64().unwrap_or(f64::NAN))
                    }),
                    _ => return Err(err("`v` must be a number")),
                },
                "sv" => Some(SenmlValue::String(
                    v.as_str()
                        .ok_or_else(|| err("`sv` must be a string"))?
                        .to_string(),
                )),
                "bv" => Some(SenmlValue::Bool(
                    v.as_bool().ok_or_else(|| err("`bv` must be a boolean"))?,
                )),
                "ov" => Some(SenmlValue::ObjLink(
                    v.as_str()
                        .ok_or_else(|| err("`ov` must be a string"))?
                        .to_string(),
                )),
                _ => None,
            };
            if let Some(p) = parsed {
                if value.is_some() {
                    return Err(err("more than one value"));
                }
                value = Some(p);
            }
        }
        out.push(ResolvedRecord {
            name: format!("{base_name}{name}"),
            time,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_oma_json() {
        let recs = parse(br#"{"bn":"/3/0/","e":[{"n":"0","sv":"Open Mobile Alliance"},{"n":"9","v":100},{"n":"6/0","v":1},{"n":"22/0","ov":"3:1"},{"n":"x","bv":true,"t":5}],"bt":10}"#).unwrap();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[2].name, "/3/0/6/0");
        assert_eq!(recs[1].value, Some(SenmlValue::Integer(100)));
        assert_eq!(recs[3].value, Some(SenmlValue::ObjLink("3:1".into())));
        assert_eq!(recs[4].time, Some(15.0));
        assert!(parse(b"[]").is_err());
        assert!(parse(br#"{"e":[{"n":"1","v":"x"}]}"#).is_err());
        assert!(parse(br#"{"e":[{"n":"1","v":1,"sv":"x"}]}"#).is_err());
    }
}
