//! Plain text (content format 0, Core 1.1 §7.4.1): one resource value as
//! its decimal or textual form.

use crate::value::{ResourceType, ResourceValue, parse_objlnk};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plain text `{text}` is not a valid {ty}")]
pub struct TextError {
    pub text: String,
    pub ty: &'static str,
}

/// Decode a text payload as type `ty`; with no known type, integers and
/// floats are recognised and anything else is a string.
pub fn decode(bytes: &[u8], ty: Option<ResourceType>) -> Result<ResourceValue, TextError> {
    let err = |ty: ResourceType| TextError {
        text: String::from_utf8_lossy(bytes).chars().take(64).collect(),
        ty: ty.as_str(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| err(ty.unwrap_or(ResourceType::String)))?;
    let Some(ty) = ty else {
        return Ok(text
            .parse()
            .map(ResourceValue::Integer)
            .or_else(|_| {
                text.parse::<f64>()
                    .map(ResourceValue::Float)
                    .map_err(|_| ())
            })
            .ok()
            .filter(|v| !matches!(v, ResourceValue::Float(f) if !f.is_finite()))
            .unwrap_or_else(|| ResourceValue::String(text.to_string())));
    };
    let t = text.trim();
    Ok(match ty {
        ResourceType::String | ResourceType::Corelnk => ResourceValue::String(text.to_string()),
        ResourceType::Integer => ResourceValue::Integer(t.parse().map_err(|_| err(ty))?),
        ResourceType::Time => ResourceValue::Time(t.parse().map_err(|_| err(ty))?),
        ResourceType::UnsignedInteger => ResourceValue::Unsigned(t.parse().map_err(|_| err(ty))?),
        ResourceType::Float => ResourceValue::Float(t.parse().map_err(|_| err(ty))?),
        ResourceType::Boolean => match t {
            "1" | "true" => ResourceValue::Boolean(true),
            "0" | "false" => ResourceValue::Boolean(false),
            _ => return Err(err(ty)),
        },
        ResourceType::Objlnk => parse_objlnk(t).ok_or_else(|| err(ty))?,
        ResourceType::Opaque | ResourceType::None => return Err(err(ty)),
    })
}

/// Encode a value as text; opaque values have no text form.
pub fn encode(value: &ResourceValue) -> Option<Vec<u8>> {
    Some(match value {
        ResourceValue::Boolean(b) => {
            if *b {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            }
        }
        ResourceValue::Opaque(_) => return None,
        ResourceValue::Float(f) if !f.is_finite() => return None,
        other => other.to_string().into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_and_untyped() {
        assert_eq!(
            decode(b"3600", Some(ResourceType::Integer)),
            Ok(ResourceValue::Integer(3600))
        );
        assert_eq!(
            decode(b"1", Some(ResourceType::Boolean)),
            Ok(ResourceValue::Boolean(true))
        );
        assert_eq!(decode(b"21.5", None), Ok(ResourceValue::Float(21.5)));
        assert_eq!(
            decode(b"NaN", None),
            Ok(ResourceValue::String("NaN".into()))
        );
        assert_eq!(decode(b"U", None), Ok(ResourceValue::String("U".into())));
        assert!(decode(b"x", Some(ResourceType::Integer)).is_err());
        assert!(decode(b"\xff", None).is_err());
        assert_eq!(encode(&ResourceValue::Boolean(false)), Some(b"0".to_vec()));
        assert_eq!(encode(&ResourceValue::Objlnk(3, 0)), Some(b"3:0".to_vec()));
    }
}
