//! Content formats of LwM2M payloads and the one entry point that turns a
//! payload into typed path values ([`decode`]) and values into a payload
//! ([`encode`]), whatever the format. Types come from the registry; a value
//! of an unknown resource keeps the type its format gives it.

use std::fmt;

use crate::cbor::{Cbor, CborError};
use crate::link::LinkError;
use crate::path::{Path, PathError};
use crate::registry::ObjectRegistry;
use crate::senml::{self, ResolvedRecord, SenmlError, SenmlRecord, SenmlValue};
use crate::text::TextError;
use crate::tlv::{self, TlvContent, TlvError, TlvKind, TlvRepr};
use crate::value::{ResourceType, ResourceValue, parse_objlnk};

/// The content formats LwM2M 1.0–1.2 use (CoAP Content-Format registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentFormat {
    Text,
    LinkFormat,
    Opaque,
    Cbor,
    SenmlJson,
    SenmlCbor,
    Tlv,
    Lwm2mJson,
}

impl ContentFormat {
    pub fn from_number(n: u16) -> Option<ContentFormat> {
        Some(match n {
            0 => ContentFormat::Text,
            40 => ContentFormat::LinkFormat,
            42 => ContentFormat::Opaque,
            60 => ContentFormat::Cbor,
            110 => ContentFormat::SenmlJson,
            112 => ContentFormat::SenmlCbor,
            11542 => ContentFormat::Tlv,
            11543 => ContentFormat::Lwm2mJson,
            // LwM2M 1.0 clients may still send the pre-registration numbers
            1541 => ContentFormat::Text,
            1542 => ContentFormat::Tlv,
            1543 => ContentFormat::Lwm2mJson,
            1544 => ContentFormat::Opaque,
            _ => return None,
        })
    }

    pub fn number(self) -> u16 {
        match self {
            ContentFormat::Text => 0,
            ContentFormat::LinkFormat => 40,
            ContentFormat::Opaque => 42,
            ContentFormat::Cbor => 60,
            ContentFormat::SenmlJson => 110,
            ContentFormat::SenmlCbor => 112,
            ContentFormat::Tlv => 11542,
            ContentFormat::Lwm2mJson => 11543,
        }
    }

    /// Whether a payload in this format can hold several resources.
    pub fn is_multi_value(self) -> bool {
        matches!(
            self,
            ContentFormat::SenmlJson
                | ContentFormat::SenmlCbor
                | ContentFormat::Tlv
                | ContentFormat::Lwm2mJson
        )
    }
}

impl fmt::Display for ContentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ContentFormat::Text => "text/plain",
            ContentFormat::LinkFormat => "application/link-format",
            ContentFormat::Opaque => "application/octet-stream",
            ContentFormat::Cbor => "application/cbor",
            ContentFormat::SenmlJson => "application/senml+json",
            ContentFormat::SenmlCbor => "application/senml+cbor",
            ContentFormat::Tlv => "application/vnd.oma.lwm2m+tlv",
            ContentFormat::Lwm2mJson => "application/vnd.oma.lwm2m+json",
        };
        write!(f, "{name} ({})", self.number())
    }
}

/// One decoded value with its full path and, when the payload gave one,
/// its time (SenML seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct PathValue {
    pub path: Path,
    pub value: ResourceValue,
    pub time: Option<f64>,
}

/// A payload that cannot be turned into values (or values into a payload).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContentError {
    #[error("content format {0} is not supported")]
    Unsupported(u16),
    #[error("{format} carries no resource values")]
    NotValues { format: ContentFormat },
    #[error(transparent)]
    Tlv(#[from] TlvError),
    #[error(transparent)]
    Senml(#[from] SenmlError),
    #[error(transparent)]
    Cbor(#[from] CborError),
    #[error(transparent)]
    Text(#[from] TextError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("record name: {0}")]
    Path(#[from] PathError),
    #[error("{path}: {reason}")]
    Value { path: Path, reason: String },
    #[error(
        "{format} holds exactly one resource value, at a resource path (got {count} values for {path})"
    )]
    SingleValue {
        format: ContentFormat,
        path: Path,
        count: usize,
    },
}

/// Decode a payload answering (or notifying about) `base`.
pub fn decode(
    format: ContentFormat,
    base: Path,
    payload: &[u8],
    registry: &ObjectRegistry,
) -> Result<Vec<PathValue>, ContentError> {
    let single = |value: ResourceValue| -> Result<Vec<PathValue>, ContentError> {
        if base.depth() < 3 {
            return Err(ContentError::SingleValue {
                format,
                path: base,
                count: 1,
            });
        }
        Ok(vec![PathValue {
            path: base,
            value,
            time: None,
        }])
    };
    match format {
        ContentFormat::Text => single(crate::text::decode(payload, registry.resource_type(&base))?),
        ContentFormat::Opaque => single(ResourceValue::Opaque(payload.to_vec())),
        ContentFormat::Cbor => {
            let item = Cbor::parse(payload)?;
            let value = from_cbor(&item).ok_or_else(|| ContentError::Value {
                path: base,
                reason: "CBOR item is not a single value".into(),
            })?;
            single(coerce(base, value, registry)?)
        }
        ContentFormat::Tlv => {
            let items = TlvRepr::parse_all(payload)?;
            TlvRepr::flatten(&items, base)?
                .into_iter()
                .map(|(path, bytes)| {
                    let value = match registry.resource_type(&path) {
                        Some(ty) => tlv::decode_value(bytes, ty)?,
                        None => guess_tlv(bytes),
                    };
                    Ok(PathValue {
                        path,
                        value,
                        time: None,
                    })
                })
                .collect()
        }
        ContentFormat::SenmlJson => {
            records(&senml::resolve(&senml::parse_json(payload)?), registry)
        }
        ContentFormat::SenmlCbor => {
            records(&senml::resolve(&senml::parse_cbor(payload)?), registry)
        }
        ContentFormat::Lwm2mJson => records(&crate::lwm2m_json::parse(payload)?, registry),
        ContentFormat::LinkFormat => Err(ContentError::NotValues { format }),
    }
}

/// A TLV value of a resource no definition types: 1, 2, 4 or 8 bytes are
/// a signed integer, other printable UTF-8 is a string, the rest opaque.
fn guess_tlv(bytes: &[u8]) -> ResourceValue {
    let printable = std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.is_empty() && s.chars().all(|c| !c.is_control()));
    match (bytes.len(), printable) {
        (1 | 2 | 4 | 8, _) => tlv::decode_value(bytes, ResourceType::Integer)
            .unwrap_or_else(|_| ResourceValue::Opaque(bytes.to_vec())),
        (_, Some(s)) => ResourceValue::String(s.to_string()),
        _ => ResourceValue::Opaque(bytes.to_vec()),
    }
}

fn from_cbor(item: &Cbor) -> Option<ResourceValue> {
    Some(match item {
        Cbor::Unsigned(u) => i64::try_from(*u)
            .map(ResourceValue::Integer)
            .unwrap_or(ResourceValue::Unsigned(*u)),
        Cbor::Negative(_) => ResourceValue::Integer(i64::try_from(item.as_integer()?).ok()?),
        Cbor::Float(f) => ResourceValue::Float(*f),
        Cbor::Text(s) => ResourceValue::String(s.clone()),
        Cbor::Bytes(b) => ResourceValue::Opaque(b.clone()),
        Cbor::Bool(b) => ResourceValue::Boolean(*b),
        _ => return None,
    })
}

fn from_senml(path: Path, value: &SenmlValue) -> Result<ResourceValue, ContentError> {
    Ok(match value {
        SenmlValue::Integer(i) => ResourceValue::Integer(*i),
        SenmlValue::Unsigned(u) => ResourceValue::Unsigned(*u),
        SenmlValue::Float(f) => ResourceValue::Float(*f),
        SenmlValue::String(s) => ResourceValue::String(s.clone()),
        SenmlValue::Bool(b) => ResourceValue::Boolean(*b),
        SenmlValue::Data(d) => ResourceValue::Opaque(d.clone()),
        SenmlValue::ObjLink(s) => parse_objlnk(s).ok_or_else(|| ContentError::Value {
            path,
            reason: format!("`{s}` is not an object link"),
        })?,
    })
}

/// Bring a value decoded from a self-describing format to the resource's
/// declared type (an integer `v` for a float or time resource).
fn coerce(
    path: Path,
    value: ResourceValue,
    registry: &ObjectRegistry,
) -> Result<ResourceValue, ContentError> {
    let Some(ty) = registry.resource_type(&path) else {
        return Ok(value);
    };
    if value.resource_type() == ty {
        return Ok(value);
    }
    ResourceValue::from_model(&value.to_model(), ty)
        .map_err(|reason| ContentError::Value { path, reason })
}

fn records(
    records: &[ResolvedRecord],
    registry: &ObjectRegistry,
) -> Result<Vec<PathValue>, ContentError> {
    records
        .iter()
        .map(|r| {
            let path = Path::parse(&r.name)?;
            let value = r.value.as_ref().ok_or_else(|| ContentError::Value {
                path,
                reason: "record has no value".into(),
            })?;
            Ok(PathValue {
                path,
                value: coerce(path, from_senml(path, value)?, registry)?,
                time: r.time,
            })
        })
        .collect()
}

/// Encode values (all at or below `base`) for a Write or Create.
pub fn encode(
    format: ContentFormat,
    base: Path,
    values: &[(Path, ResourceValue)],
) -> Result<Vec<u8>, ContentError> {
    let single = || match values {
        [(path, value)] if path.depth() >= 3 => Ok((path, value)),
        _ => Err(ContentError::SingleValue {
            format,
            path: base,
            count: values.len(),
        }),
    };
    match format {
        ContentFormat::Text => {
            let (path, value) = single()?;
            crate::text::encode(value).ok_or_else(|| ContentError::Value {
                path: *path,
                reason: "has no plain text form".into(),
            })
        }
        ContentFormat::Opaque => match single()? {
            (_, ResourceValue::Opaque(b)) => Ok(b.clone()),
            (path, _) => Err(ContentError::Value {
                path: *path,
                reason: "only opaque values are sent as application/octet-stream".into(),
            }),
        },
        ContentFormat::Cbor => {
            let (_, value) = single()?;
            Ok(to_cbor(value).to_vec())
        }
        ContentFormat::Tlv => Ok(TlvRepr::emit_all(&tlv_tree(base, values)?)?),
        ContentFormat::SenmlJson => Ok(senml::emit_json(&senml_records(values))?),
        ContentFormat::SenmlCbor => Ok(senml::emit_cbor(&senml_records(values))),
        ContentFormat::Lwm2mJson | ContentFormat::LinkFormat => {
            Err(ContentError::Unsupported(format.number()))
        }
    }
}

/// The SenML body of a Composite Read or Observe-Composite (Core 1.1
/// §5.4.7): records naming paths, with no values.
pub fn encode_paths(format: ContentFormat, paths: &[Path]) -> Result<Vec<u8>, ContentError> {
    let recs: Vec<SenmlRecord> = paths
        .iter()
        .map(|p| SenmlRecord {
            name: Some(p.to_string()),
            ..SenmlRecord::default()
        })
        .collect();
    match format {
        ContentFormat::SenmlJson => Ok(senml::emit_json(&recs)?),
        ContentFormat::SenmlCbor => Ok(senml::emit_cbor(&recs)),
        other => Err(ContentError::Unsupported(other.number())),
    }
}

fn to_cbor(value: &ResourceValue) -> Cbor {
    match value {
        ResourceValue::String(s) => Cbor::Text(s.clone()),
        ResourceValue::Integer(i) | ResourceValue::Time(i) => Cbor::integer(*i),
        ResourceValue::Unsigned(u) => Cbor::Unsigned(*u),
        ResourceValue::Float(f) => Cbor::Float(*f),
        ResourceValue::Boolean(b) => Cbor::Bool(*b),
        ResourceValue::Opaque(b) => Cbor::Bytes(b.clone()),
        ResourceValue::Objlnk(o, i) => Cbor::Text(format!("{o}:{i}")),
    }
}

fn senml_records(values: &[(Path, ResourceValue)]) -> Vec<SenmlRecord> {
    values
        .iter()
        .map(|(path, value)| SenmlRecord {
            name: Some(path.to_string()),
            value: Some(match value {
                ResourceValue::String(s) => SenmlValue::String(s.clone()),
                ResourceValue::Integer(i) | ResourceValue::Time(i) => SenmlValue::Integer(*i),
                ResourceValue::Unsigned(u) => match i64::try_from(*u) {
                    Ok(i) => SenmlValue::Integer(i),
                    Err(_) => SenmlValue::Unsigned(*u),
                },
                ResourceValue::Float(f) => SenmlValue::Float(*f),
                ResourceValue::Boolean(b) => SenmlValue::Bool(*b),
                ResourceValue::Opaque(d) => SenmlValue::Data(d.clone()),
                ResourceValue::Objlnk(o, i) => SenmlValue::ObjLink(format!("{o}:{i}")),
            }),
            ..SenmlRecord::default()
        })
        .collect()
}

/// Nest values under `base` as TLV: instances, resources, and resource
/// instances grouped into multiple resources.
fn tlv_tree(base: Path, values: &[(Path, ResourceValue)]) -> Result<Vec<TlvRepr>, ContentError> {
    for (path, _) in values {
        if !path.starts_with(&base) || path.depth() < 3 {
            return Err(ContentError::Value {
                path: *path,
                reason: format!("is not a resource below {base}"),
            });
        }
    }
    let items = level(base.depth(), base, values);
    // a write of a multiple resource wraps its instances
    if base.depth() == 3 && values.iter().any(|(p, _)| p.depth() == 4) {
        return Ok(vec![TlvRepr {
            kind: TlvKind::MultipleResource,
            id: base.resource().unwrap_or(0),
            content: TlvContent::Children(items),
        }]);
    }
    Ok(items)
}

fn level(depth: usize, base: Path, values: &[(Path, ResourceValue)]) -> Vec<TlvRepr> {
    // ids at this level, in first-seen order
    let mut ids: Vec<u16> = Vec::new();
    for (p, _) in values {
        if let Some(id) = p.ids().get(depth)
            && !ids.contains(id)
        {
            ids.push(*id);
        }
    }
    let leaf = values
        .iter()
        .find(|(p, _)| p.depth() == depth && *p == base);
    if let Some((_, value)) = leaf {
        // a resource path written directly: one value entry for its id
        let kind = if depth == 4 {
            TlvKind::ResourceInstance
        } else {
            TlvKind::ResourceValue
        };
        return vec![TlvRepr {
            kind,
            id: base.ids().last().copied().unwrap_or(0),
            content: TlvContent::Value(tlv::encode_value(value)),
        }];
    }
    ids.into_iter()
        .filter_map(|id| {
            let child = base.child(id)?;
            let below: Vec<(Path, ResourceValue)> = values
                .iter()
                .filter(|(p, _)| p.starts_with(&child))
                .cloned()
                .collect();
            Some(match depth {
                // object → object instances
                1 => TlvRepr {
                    kind: TlvKind::ObjectInstance,
                    id,
                    content: TlvContent::Children(level(2, child, &below)),
                },
                // instance → resources, multiple when they have instances
                2 => {
                    if let [(p, v)] = below.as_slice()
                        && p.depth() == 3
                    {
                        TlvRepr {
                            kind: TlvKind::ResourceValue,
                            id,
                            content: TlvContent::Value(tlv::encode_value(v)),
                        }
                    } else {
                        TlvRepr {
                            kind: TlvKind::MultipleResource,
                            id,
                            content: TlvContent::Children(level(3, child, &below)),
                        }
                    }
                }
                // resource → its instances
                _ => TlvRepr {
                    kind: TlvKind::ResourceInstance,
                    id,
                    content: TlvContent::Value(
                        below
                            .first()
                            .map(|(_, v)| tlv::encode_value(v))
                            .unwrap_or_default(),
                    ),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn tlv_write_of_an_instance_round_trips() {
        let reg = ObjectRegistry::builtin();
        let values = vec![
            (p("/3311/0/5850"), ResourceValue::Boolean(true)),
            (p("/3311/0/5851"), ResourceValue::Integer(40)),
        ];
        let bytes = encode(ContentFormat::Tlv, p("/3311/0"), &values).unwrap();
        let back = decode(ContentFormat::Tlv, p("/3311/0"), &bytes, &reg).unwrap();
        let back: Vec<(Path, ResourceValue)> =
            back.into_iter().map(|v| (v.path, v.value)).collect();
        assert_eq!(back, values);
    }

    #[test]
    fn tlv_single_resource_and_multiple_resource() {
        let reg = ObjectRegistry::builtin();
        let bytes = encode(
            ContentFormat::Tlv,
            p("/1/0/1"),
            &[(p("/1/0/1"), ResourceValue::Integer(3600))],
        )
        .unwrap();
        assert_eq!(bytes, [0xc2, 0x01, 0x0e, 0x10]);
        let multi = vec![
            (p("/3/0/7/0"), ResourceValue::Integer(3800)),
            (p("/3/0/7/1"), ResourceValue::Integer(5000)),
        ];
        let bytes = encode(ContentFormat::Tlv, p("/3/0"), &multi).unwrap();
        assert_eq!(
            bytes,
            [
                0x88, 0x07, 0x08, 0x42, 0x00, 0x0e, 0xd8, 0x42, 0x01, 0x13, 0x88
            ]
        );
        let back = decode(ContentFormat::Tlv, p("/3/0"), &bytes, &reg).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].value, ResourceValue::Integer(5000));
        let object = vec![(p("/3303/2/5700"), ResourceValue::Float(20.5))];
        let bytes = encode(ContentFormat::Tlv, p("/3303"), &object).unwrap();
        let back = decode(ContentFormat::Tlv, p("/3303"), &bytes, &reg).unwrap();
        assert_eq!(back[0].path, p("/3303/2/5700"));
        assert_eq!(back[0].value, ResourceValue::Float(20.5));
    }

    #[test]
    fn senml_values_take_the_declared_type() {
        let reg = ObjectRegistry::builtin();
        let got = decode(
            ContentFormat::SenmlJson,
            Path::ROOT,
            br#"[{"bn":"/3303/0/","n":"5700","v":21},{"n":"5518","v":1700000000}]"#,
            &reg,
        )
        .unwrap();
        assert_eq!(got[0].value, ResourceValue::Float(21.0));
        assert_eq!(got[1].value, ResourceValue::Time(1_700_000_000));
        assert!(
            decode(
                ContentFormat::SenmlJson,
                Path::ROOT,
                br#"[{"n":"/3303/0/5700","vs":"hot"}]"#,
                &reg
            )
            .is_err()
        );
        assert!(
            decode(
                ContentFormat::SenmlJson,
                Path::ROOT,
                br#"[{"n":"/3303/0/5700"}]"#,
                &reg
            )
            .is_err()
        );
    }

    #[test]
    fn single_value_formats_need_a_resource_path() {
        let reg = ObjectRegistry::builtin();
        assert!(matches!(
            decode(ContentFormat::Text, p("/3/0"), b"1", &reg),
            Err(ContentError::SingleValue { .. })
        ));
        assert_eq!(
            decode(
                ContentFormat::Cbor,
                p("/3303/0/5700"),
                &[0xfb, 0x40, 0x35, 0, 0, 0, 0, 0, 0],
                &reg
            )
            .unwrap()[0]
                .value,
            ResourceValue::Float(21.0)
        );
        assert!(encode(ContentFormat::Text, p("/3/0"), &[]).is_err());
        assert!(decode(ContentFormat::LinkFormat, p("/3/0"), b"</3/0>", &reg).is_err());
        assert_eq!(ContentFormat::from_number(11542), Some(ContentFormat::Tlv));
        assert_eq!(ContentFormat::from_number(9999), None);
    }

    #[test]
    fn unknown_tlv_resources_are_typed_by_form() {
        assert_eq!(guess_tlv(&[0x00, 0x7b]), ResourceValue::Integer(123));
        assert_eq!(guess_tlv(b"hello"), ResourceValue::String("hello".into()));
        assert_eq!(
            guess_tlv(&[0x01, 0x02, 0x03]),
            ResourceValue::Opaque(vec![1, 2, 3])
        );
    }
}
