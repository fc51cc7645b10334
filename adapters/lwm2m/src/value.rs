//! LwM2M resource data types and typed values (OMA-TS-LightweightM2M-Core
//! 1.1 Appendix C), and their conversion to the gateway's [`Value`].

use std::fmt;

use ferrogate_sdk::Value;

/// The data type of a resource, as an object definition declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    String,
    Integer,
    UnsignedInteger,
    Float,
    Boolean,
    Opaque,
    Time,
    Objlnk,
    Corelnk,
    /// Executable resources carry no value.
    None,
}

impl ResourceType {
    /// The type from the `<Type>` element of an OMA object XML file.
    pub fn from_xml(text: &str) -> Option<ResourceType> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "string" => ResourceType::String,
            "integer" => ResourceType::Integer,
            "unsigned integer" => ResourceType::UnsignedInteger,
            "float" => ResourceType::Float,
            "boolean" => ResourceType::Boolean,
            "opaque" => ResourceType::Opaque,
            "time" => ResourceType::Time,
            "objlnk" => ResourceType::Objlnk,
            "corelnk" => ResourceType::Corelnk,
            "" | "none" => ResourceType::None,
            _ => return None,
        })
    }

    /// The type name published in device meta (`PointMeta::data_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::String => "string",
            ResourceType::Integer => "integer",
            ResourceType::UnsignedInteger => "unsigned",
            ResourceType::Float => "float",
            ResourceType::Boolean => "bool",
            ResourceType::Opaque => "bytes",
            ResourceType::Time => "time",
            ResourceType::Objlnk => "objlnk",
            ResourceType::Corelnk => "corelnk",
            ResourceType::None => "none",
        }
    }
}

/// A typed resource value.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceValue {
    String(String),
    Integer(i64),
    Unsigned(u64),
    Float(f64),
    Boolean(bool),
    Opaque(Vec<u8>),
    /// Seconds since the Unix epoch.
    Time(i64),
    /// Object link `object:instance`.
    Objlnk(u16, u16),
}

impl ResourceValue {
    /// The gateway value: object links become `"3:0"` strings.
    pub fn to_model(&self) -> Value {
        match self {
            ResourceValue::String(s) => Value::String(s.clone()),
            ResourceValue::Integer(i) | ResourceValue::Time(i) => Value::Int(*i),
            ResourceValue::Unsigned(u) => Value::UInt(*u),
            ResourceValue::Float(f) => Value::Float(*f),
            ResourceValue::Boolean(b) => Value::Bool(*b),
            ResourceValue::Opaque(b) => Value::Bytes(b.clone()),
            ResourceValue::Objlnk(o, i) => Value::String(format!("{o}:{i}")),
        }
    }

    /// A value of type `ty` from a gateway value (a command's argument), or
    /// why it does not fit.
    pub fn from_model(value: &Value, ty: ResourceType) -> Result<ResourceValue, String> {
        let mismatch = || {
            format!(
                "a {} value does not fit a {} resource",
                value.type_name(),
                ty.as_str()
            )
        };
        match (ty, value) {
            (ResourceType::String | ResourceType::Corelnk, Value::String(s)) => {
                Ok(ResourceValue::String(s.clone()))
            }
            (ResourceType::Integer | ResourceType::Time, v) => {
                let i = match v {
                    Value::Int(i) => *i,
                    Value::UInt(u) => {
                        i64::try_from(*u).map_err(|_| format!("{u} is out of range"))?
                    }
                    Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => *f as i64,
                    Value::String(s) => s.trim().parse().map_err(|_| mismatch())?,
                    _ => return Err(mismatch()),
                };
                Ok(if ty == ResourceType::Time {
                    ResourceValue::Time(i)
                } else {
                    ResourceValue::Integer(i)
                })
            }
            (ResourceType::UnsignedInteger, v) => match v {
                Value::UInt(u) => Ok(ResourceValue::Unsigned(*u)),
                Value::Int(i) => u64::try_from(*i)
                    .map(ResourceValue::Unsigned)
                    .map_err(|_| format!("{i} is negative")),
                Value::String(s) => s
                    .trim()
                    .parse()
                    .map(ResourceValue::Unsigned)
                    .map_err(|_| mismatch()),
                _ => Err(mismatch()),
            },
            (ResourceType::Float, v) => match v {
                Value::String(s) => s
                    .trim()
                    .parse()
                    .map(ResourceValue::Float)
                    .map_err(|_| mismatch()),
                Value::Bytes(_) => Err(mismatch()),
                v => v.as_f64().map(ResourceValue::Float).ok_or_else(mismatch),
            },
            (ResourceType::Boolean, v) => match v {
                Value::Bool(b) => Ok(ResourceValue::Boolean(*b)),
                Value::Int(0) | Value::UInt(0) => Ok(ResourceValue::Boolean(false)),
                Value::Int(1) | Value::UInt(1) => Ok(ResourceValue::Boolean(true)),
                Value::String(s) => match s.as_str() {
                    "true" | "1" => Ok(ResourceValue::Boolean(true)),
                    "false" | "0" => Ok(ResourceValue::Boolean(false)),
                    _ => Err(mismatch()),
                },
                _ => Err(mismatch()),
            },
            (ResourceType::Opaque, Value::Bytes(b)) => Ok(ResourceValue::Opaque(b.clone())),
            (ResourceType::Opaque, Value::String(s)) => ferrogate_sdk::hex::decode(s)
                .map(ResourceValue::Opaque)
                .ok_or_else(|| "opaque values are written as a hex string".to_string()),
            (ResourceType::Objlnk, Value::String(s)) => parse_objlnk(s)
                .ok_or_else(|| format!("`{s}` is not an object link `object:instance`")),
            (ResourceType::None, _) => {
                Err("the resource is executable and has no value".to_string())
            }
            _ => Err(mismatch()),
        }
    }

    /// The type this value naturally has (used when no definition is known).
    pub fn resource_type(&self) -> ResourceType {
        match self {
            ResourceValue::String(_) => ResourceType::String,
            ResourceValue::Integer(_) => ResourceType::Integer,
            ResourceValue::Unsigned(_) => ResourceType::UnsignedInteger,
            ResourceValue::Float(_) => ResourceType::Float,
            ResourceValue::Boolean(_) => ResourceType::Boolean,
            ResourceValue::Opaque(_) => ResourceType::Opaque,
            ResourceValue::Time(_) => ResourceType::Time,
            ResourceValue::Objlnk(..) => ResourceType::Objlnk,
        }
    }
}

impl fmt::Display for ResourceValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceValue::Objlnk(o, i) => write!(f, "{o}:{i}"),
            other => write!(f, "{}", other.to_model()),
        }
    }
}

/// `"3:0"` as an object link.
pub fn parse_objlnk(text: &str) -> Option<ResourceValue> {
    let (o, i) = text.split_once(':')?;
    Some(ResourceValue::Objlnk(
        o.trim().parse().ok()?,
        i.trim().parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_values_are_coerced_to_the_resource_type() {
        assert_eq!(
            ResourceValue::from_model(&Value::Int(3600), ResourceType::Integer),
            Ok(ResourceValue::Integer(3600))
        );
        assert_eq!(
            ResourceValue::from_model(&Value::Int(21), ResourceType::Float),
            Ok(ResourceValue::Float(21.0))
        );
        assert_eq!(
            ResourceValue::from_model(&Value::String("3:1".into()), ResourceType::Objlnk),
            Ok(ResourceValue::Objlnk(3, 1))
        );
        assert_eq!(
            ResourceValue::from_model(&Value::String("0a0b".into()), ResourceType::Opaque),
            Ok(ResourceValue::Opaque(vec![10, 11]))
        );
        assert!(ResourceValue::from_model(&Value::Int(-1), ResourceType::UnsignedInteger).is_err());
        assert!(
            ResourceValue::from_model(&Value::String("x".into()), ResourceType::Boolean).is_err()
        );
        assert!(ResourceValue::from_model(&Value::Bool(true), ResourceType::String).is_err());
        assert!(ResourceValue::from_model(&Value::Int(1), ResourceType::None).is_err());
    }
}
