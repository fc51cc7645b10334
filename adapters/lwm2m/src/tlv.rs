//! OMA LwM2M TLV (content format 11542), OMA-TS-LightweightM2M-Core 1.1
//! §7.4.3: a checked view of one TLV entry ([`Tlv`]), a nested
//! representation ([`TlvRepr`]) with `parse`/`emit`, and typed value
//! encoding. TLV carries no types: values are typed from the object registry.

use crate::path::Path;
use crate::value::{ResourceType, ResourceValue};

/// A TLV payload that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    #[error("TLV truncated: header or value runs past the end of the payload")]
    Truncated,
    #[error("TLV nesting invalid: {0}")]
    Structure(&'static str),
    #[error("TLV value of {len} bytes is not a valid {ty}")]
    BadValue { ty: &'static str, len: usize },
    #[error("TLV value longer than 16 MiB cannot be encoded")]
    TooLong,
    #[error("TLV entry {id} does not fit under {base}")]
    Misplaced { id: u16, base: Path },
}

/// What a TLV entry identifies (bits 7-6 of the type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlvKind {
    /// 00: an object instance containing resources.
    ObjectInstance,
    /// 01: one instance of a multiple resource, with a value.
    ResourceInstance,
    /// 10: a multiple resource containing resource instances.
    MultipleResource,
    /// 11: a single resource with a value.
    ResourceValue,
}

impl TlvKind {
    fn bits(self) -> u8 {
        match self {
            TlvKind::ObjectInstance => 0b00,
            TlvKind::ResourceInstance => 0b01,
            TlvKind::MultipleResource => 0b10,
            TlvKind::ResourceValue => 0b11,
        }
    }

    fn has_children(self) -> bool {
        matches!(self, TlvKind::ObjectInstance | TlvKind::MultipleResource)
    }
}

/// A checked, zero-copy view of one TLV entry at the start of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Tlv<T> {
    /// Wrap a buffer after checking that the header and the value it
    /// announces are inside it.
    pub fn new_checked(buffer: T) -> Result<Self, TlvError> {
        let tlv = Tlv { buffer };
        tlv.check_len()?;
        Ok(tlv)
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn type_byte(&self) -> u8 {
        self.bytes().first().copied().unwrap_or(0)
    }

    fn id_len(&self) -> usize {
        if self.type_byte() & 0x20 != 0 { 2 } else { 1 }
    }

    fn length_len(&self) -> usize {
        usize::from((self.type_byte() >> 3) & 0b11)
    }

    /// Bytes of type, identifier and length fields.
    pub fn header_len(&self) -> usize {
        1 + self.id_len() + self.length_len()
    }

    fn check_len(&self) -> Result<(), TlvError> {
        let len = self.bytes().len();
        if len == 0 || len < self.header_len() {
            return Err(TlvError::Truncated);
        }
        if len < self.total_len() {
            return Err(TlvError::Truncated);
        }
        Ok(())
    }

    pub fn kind(&self) -> TlvKind {
        match self.type_byte() >> 6 {
            0b00 => TlvKind::ObjectInstance,
            0b01 => TlvKind::ResourceInstance,
            0b10 => TlvKind::MultipleResource,
            _ => TlvKind::ResourceValue,
        }
    }

    /// The identifier (8 or 16 bits, bit 5 of the type byte).
    pub fn id(&self) -> u16 {
        let b = self.bytes();
        if self.id_len() == 2 {
            u16::from_be_bytes([
                b.get(1).copied().unwrap_or(0),
                b.get(2).copied().unwrap_or(0),
            ])
        } else {
            u16::from(b.get(1).copied().unwrap_or(0))
        }
    }

    /// Length of the value: in bits 2-0, or in 1-3 following bytes.
    pub fn value_len(&self) -> usize {
        let start = 1 + self.id_len();
        match self.length_len() {
            0 => usize::from(self.type_byte() & 0b111),
            n => self
                .bytes()
                .get(start..start + n)
                .map(|b| b.iter().fold(0usize, |acc, x| (acc << 8) | usize::from(*x)))
                .unwrap_or(0),
        }
    }

    pub fn total_len(&self) -> usize {
        self.header_len() + self.value_len()
    }

    pub fn value(&self) -> &[u8] {
        self.bytes()
            .get(self.header_len()..self.total_len())
            .unwrap_or(&[])
    }
}

/// A decoded TLV entry and what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlvRepr {
    pub kind: TlvKind,
    pub id: u16,
    pub content: TlvContent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlvContent {
    /// The raw value of a resource or resource instance.
    Value(Vec<u8>),
    /// The entries inside an object instance or multiple resource.
    Children(Vec<TlvRepr>),
}

impl TlvRepr {
    /// Decode a whole payload: a sequence of entries.
    pub fn parse_all(bytes: &[u8]) -> Result<Vec<TlvRepr>, TlvError> {
        Self::parse_level(bytes, None)
    }

    fn parse_level(mut bytes: &[u8], parent: Option<TlvKind>) -> Result<Vec<TlvRepr>, TlvError> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let tlv = Tlv::new_checked(bytes)?;
            let kind = tlv.kind();
            let allowed = match parent {
                None => true,
                Some(TlvKind::ObjectInstance) => {
                    matches!(kind, TlvKind::ResourceValue | TlvKind::MultipleResource)
                }
                Some(_) => kind == TlvKind::ResourceInstance,
            };
            if !allowed {
                return Err(TlvError::Structure(match parent {
                    Some(TlvKind::ObjectInstance) => {
                        "an object instance may only contain resources"
                    }
                    _ => "a multiple resource may only contain resource instances",
                }));
            }
            let content = if kind.has_children() {
                TlvContent::Children(Self::parse_level(tlv.value(), Some(kind))?)
            } else {
                TlvContent::Value(tlv.value().to_vec())
            };
            out.push(TlvRepr {
                kind,
                id: tlv.id(),
                content,
            });
            bytes = bytes.get(tlv.total_len()..).unwrap_or(&[]);
        }
        Ok(out)
    }

    fn value_len(&self) -> Result<usize, TlvError> {
        match &self.content {
            TlvContent::Value(v) => Ok(v.len()),
            TlvContent::Children(c) => c.iter().map(TlvRepr::buffer_len).sum(),
        }
    }

    /// Bytes this entry takes when emitted.
    pub fn buffer_len(&self) -> Result<usize, TlvError> {
        let value_len = self.value_len()?;
        let id_len = if self.id > 0xff { 2 } else { 1 };
        Ok(1 + id_len + length_field_len(value_len)? + value_len)
    }

    /// Append this entry to `out` in the canonical form Wakaama also uses:
    /// the shortest identifier and length fields that hold the values.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), TlvError> {
        if self.kind.has_children() != matches!(self.content, TlvContent::Children(_)) {
            return Err(TlvError::Structure("kind and content disagree"));
        }
        let value_len = self.value_len()?;
        let len_len = length_field_len(value_len)?;
        let mut ty = self.kind.bits() << 6;
        if self.id > 0xff {
            ty |= 0x20;
        }
        if len_len == 0 {
            ty |= value_len as u8;
        } else {
            ty |= (len_len as u8) << 3;
        }
        out.push(ty);
        if self.id > 0xff {
            out.extend_from_slice(&self.id.to_be_bytes());
        } else {
            out.push(self.id as u8);
        }
        let len_bytes = (value_len as u32).to_be_bytes();
        out.extend_from_slice(len_bytes.get(4 - len_len..).unwrap_or(&[]));
        match &self.content {
            TlvContent::Value(v) => out.extend_from_slice(v),
            TlvContent::Children(children) => {
                for c in children {
                    c.emit(out)?;
                }
            }
        }
        Ok(())
    }

    /// Encode a sequence of entries.
    pub fn emit_all(items: &[TlvRepr]) -> Result<Vec<u8>, TlvError> {
        let mut out = Vec::new();
        for item in items {
            item.emit(&mut out)?;
        }
        Ok(out)
    }

    /// Every value in `items` with its full path, given the path the payload
    /// answers (`/3` for an object read, `/3/0` for an instance, ...).
    pub fn flatten(items: &[TlvRepr], base: Path) -> Result<Vec<(Path, &[u8])>, TlvError> {
        let mut out = Vec::new();
        for item in items {
            item.flatten_into(base, &mut out)?;
        }
        Ok(out)
    }

    fn flatten_into<'a>(
        &'a self,
        base: Path,
        out: &mut Vec<(Path, &'a [u8])>,
    ) -> Result<(), TlvError> {
        let misplaced = || TlvError::Misplaced { id: self.id, base };
        // The level this entry names: object instance = 2, resource = 3,
        // resource instance = 4. A payload for a deeper request may repeat
        // the requested id (a read of /3/0/6 answers with multiple resource 6).
        let level = match self.kind {
            TlvKind::ObjectInstance => 2,
            TlvKind::MultipleResource | TlvKind::ResourceValue => 3,
            TlvKind::ResourceInstance => 4,
        };
        let path = if base.depth() + 1 == level {
            base.child(self.id).ok_or_else(misplaced)?
        } else if base.depth() == level && base.ids().last() == Some(&self.id) {
            base
        } else {
            return Err(misplaced());
        };
        match &self.content {
            TlvContent::Value(v) => out.push((path, v.as_slice())),
            TlvContent::Children(children) => {
                for c in children {
                    c.flatten_into(path, out)?;
                }
            }
        }
        Ok(())
    }
}

fn length_field_len(value_len: usize) -> Result<usize, TlvError> {
    Ok(match value_len {
        0..=7 => 0,
        8..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xff_ffff => 3,
        _ => return Err(TlvError::TooLong),
    })
}

/// Decode one TLV value as a resource of type `ty` (Core 1.1 §7.4.3 table
/// "TLV data types").
pub fn decode_value(bytes: &[u8], ty: ResourceType) -> Result<ResourceValue, TlvError> {
    let bad = || TlvError::BadValue {
        ty: ty.as_str(),
        len: bytes.len(),
    };
    Ok(match ty {
        ResourceType::String | ResourceType::Corelnk => {
            ResourceValue::String(String::from_utf8(bytes.to_vec()).map_err(|_| bad())?)
        }
        ResourceType::Integer => ResourceValue::Integer(signed(bytes).ok_or_else(bad)?),
        ResourceType::Time => ResourceValue::Time(signed(bytes).ok_or_else(bad)?),
        ResourceType::UnsignedInteger => ResourceValue::Unsigned(unsigned(bytes).ok_or_else(bad)?),
        ResourceType::Float => match bytes.len() {
            4 => ResourceValue::Float(f64::from(f32::from_be_bytes(
                to_array(bytes).ok_or_else(bad)?,
            ))),
            8 => ResourceValue::Float(f64::from_be_bytes(to_array(bytes).ok_or_else(bad)?)),
            _ => return Err(bad()),
        },
        ResourceType::Boolean => match bytes {
            [0] => ResourceValue::Boolean(false),
            [1] => ResourceValue::Boolean(true),
            _ => return Err(bad()),
        },
        ResourceType::Opaque => ResourceValue::Opaque(bytes.to_vec()),
        ResourceType::Objlnk => match bytes {
            [a, b, c, d] => {
                ResourceValue::Objlnk(u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))
            }
            _ => return Err(bad()),
        },
        ResourceType::None => return Err(bad()),
    })
}

/// Encode a value: integers in the smallest of 1, 2, 4 or 8 bytes, floats
/// in 4 bytes when exact, else 8.
pub fn encode_value(value: &ResourceValue) -> Vec<u8> {
    match value {
        ResourceValue::String(s) => s.as_bytes().to_vec(),
        ResourceValue::Integer(i) | ResourceValue::Time(i) => {
            let i = *i;
            if let Ok(v) = i8::try_from(i) {
                v.to_be_bytes().to_vec()
            } else if let Ok(v) = i16::try_from(i) {
                v.to_be_bytes().to_vec()
            } else if let Ok(v) = i32::try_from(i) {
                v.to_be_bytes().to_vec()
            } else {
                i.to_be_bytes().to_vec()
            }
        }
        ResourceValue::Unsigned(u) => {
            let u = *u;
            if let Ok(v) = u8::try_from(u) {
                vec![v]
            } else if let Ok(v) = u16::try_from(u) {
                v.to_be_bytes().to_vec()
            } else if let Ok(v) = u32::try_from(u) {
                v.to_be_bytes().to_vec()
            } else {
                u.to_be_bytes().to_vec()
            }
        }
        ResourceValue::Float(f) => {
            let narrow = *f as f32;
            if f64::from(narrow) == *f || f.is_nan() {
                narrow.to_be_bytes().to_vec()
            } else {
                f.to_be_bytes().to_vec()
            }
        }
        ResourceValue::Boolean(b) => vec![u8::from(*b)],
        ResourceValue::Opaque(b) => b.clone(),
        ResourceValue::Objlnk(o, i) => {
            let mut v = o.to_be_bytes().to_vec();
            v.extend_from_slice(&i.to_be_bytes());
            v
        }
    }
}

fn to_array<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

fn signed(bytes: &[u8]) -> Option<i64> {
    Some(match bytes.len() {
        1 => i64::from(i8::from_be_bytes(to_array(bytes)?)),
        2 => i64::from(i16::from_be_bytes(to_array(bytes)?)),
        4 => i64::from(i32::from_be_bytes(to_array(bytes)?)),
        8 => i64::from_be_bytes(to_array(bytes)?),
        _ => return None,
    })
}

fn unsigned(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        1 | 2 | 4 | 8 => Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_reads_header_fields() {
        // c8 00 14: resource value, 8-bit id 0, 8-bit length 20
        let mut bytes = vec![0xc8, 0x00, 0x14];
        bytes.extend_from_slice(b"Open Mobile Alliance");
        let tlv = Tlv::new_checked(&bytes[..]).unwrap();
        assert_eq!(tlv.kind(), TlvKind::ResourceValue);
        assert_eq!(tlv.id(), 0);
        assert_eq!(tlv.value(), b"Open Mobile Alliance");
        assert_eq!(
            Tlv::new_checked(&bytes[..10]).unwrap_err(),
            TlvError::Truncated
        );
        assert_eq!(
            Tlv::new_checked(&[0xe8u8, 0x01][..]).unwrap_err(),
            TlvError::Truncated
        );
    }

    #[test]
    fn multiple_resource_and_16_bit_ids() {
        // 86 06 | 41 00 01 41 01 05: resource 6 = [1, 5]
        let items = TlvRepr::parse_all(&[0x86, 0x06, 0x41, 0x00, 0x01, 0x41, 0x01, 0x05]).unwrap();
        let flat = TlvRepr::flatten(&items, Path::parse("/3/0").unwrap()).unwrap();
        assert_eq!(flat.len(), 2);
        assert_eq!(flat[1].0.to_string(), "/3/0/6/1");
        assert_eq!(
            decode_value(flat[1].1, ResourceType::Integer),
            Ok(ResourceValue::Integer(5))
        );
        let big = TlvRepr {
            kind: TlvKind::ResourceValue,
            id: 5700,
            content: TlvContent::Value(encode_value(&ResourceValue::Float(21.5))),
        };
        let bytes = TlvRepr::emit_all(std::slice::from_ref(&big)).unwrap();
        assert_eq!(bytes, [0xe4, 0x16, 0x44, 0x41, 0xac, 0x00, 0x00]);
        assert_eq!(TlvRepr::parse_all(&bytes).unwrap(), vec![big]);
    }

    #[test]
    fn bad_nesting_is_refused() {
        // an object instance containing an object instance
        assert!(matches!(
            TlvRepr::parse_all(&[0x03, 0x00, 0x00, 0x00, 0x00]),
            Err(TlvError::Structure(_))
        ));
        // resource 1 under base /3/0/5 is misplaced
        let items = TlvRepr::parse_all(&[0xc1, 0x01, 0x00]).unwrap();
        assert!(TlvRepr::flatten(&items, Path::parse("/3/0/5").unwrap()).is_err());
        assert!(TlvRepr::flatten(&items, Path::parse("/3/0/1").unwrap()).is_ok());
    }

    #[test]
    fn integers_use_the_smallest_signed_width() {
        assert_eq!(encode_value(&ResourceValue::Integer(3600)), [0x0e, 0x10]);
        assert_eq!(encode_value(&ResourceValue::Integer(128)), [0x00, 0x80]);
        assert_eq!(
            encode_value(&ResourceValue::Integer(3_163_182_348)),
            [0, 0, 0, 0, 0xbc, 0x8a, 0x55, 0x0c]
        );
        assert!(decode_value(&[1, 2, 3], ResourceType::Integer).is_err());
        assert!(decode_value(&[2], ResourceType::Boolean).is_err());
        assert!(decode_value(&[0xff], ResourceType::String).is_err());
    }
}
