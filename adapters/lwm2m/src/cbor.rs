//! A small CBOR (RFC 8949) data model with a total decoder and a
//! shortest-form encoder: enough for SenML CBOR (content format 112) and
//! LwM2M 1.2 single-value CBOR (60). Nesting depth and announced lengths are
//! checked against the input before anything is allocated.

/// One CBOR data item.
#[derive(Debug, Clone, PartialEq)]
pub enum Cbor {
    Unsigned(u64),
    /// The integer `-1 - n` (major type 1).
    Negative(u64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Cbor>),
    Map(Vec<(Cbor, Cbor)>),
    Tag(u64, Box<Cbor>),
    Bool(bool),
    Null,
    Undefined,
    Float(f64),
}

/// Bytes that are not one well-formed CBOR item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    #[error("CBOR truncated at byte {0}")]
    Truncated(usize),
    #[error("CBOR malformed at byte {at}: {reason}")]
    Malformed { at: usize, reason: &'static str },
    #[error("CBOR nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("{0} trailing bytes after the CBOR item")]
    Trailing(usize),
}

const MAX_DEPTH: usize = 16;

impl Cbor {
    /// Decode exactly one item filling `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Cbor, CborError> {
        let mut reader = Reader { bytes, pos: 0 };
        let item = reader.item(0)?;
        if reader.pos != bytes.len() {
            return Err(CborError::Trailing(bytes.len() - reader.pos));
        }
        Ok(item)
    }

    /// Encode in preferred serialization (shortest argument encoding,
    /// definite lengths, floats as 64-bit).
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Cbor::Unsigned(n) => head(out, 0, *n),
            Cbor::Negative(n) => head(out, 1, *n),
            Cbor::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            Cbor::Text(s) => {
                head(out, 3, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Cbor::Array(items) => {
                head(out, 4, items.len() as u64);
                for i in items {
                    i.emit(out);
                }
            }
            Cbor::Map(entries) => {
                head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.emit(out);
                    v.emit(out);
                }
            }
            Cbor::Tag(tag, item) => {
                head(out, 6, *tag);
                item.emit(out);
            }
            Cbor::Bool(false) => out.push(0xf4),
            Cbor::Bool(true) => out.push(0xf5),
            Cbor::Null => out.push(0xf6),
            Cbor::Undefined => out.push(0xf7),
            Cbor::Float(f) => {
                out.push(0xfb);
                out.extend_from_slice(&f.to_be_bytes());
            }
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(&mut out);
        out
    }

    /// An integer item as i128 (covers both major types fully).
    pub fn as_integer(&self) -> Option<i128> {
        match self {
            Cbor::Unsigned(n) => Some(i128::from(*n)),
            Cbor::Negative(n) => Some(-1 - i128::from(*n)),
            _ => None,
        }
    }

    /// The item for an integer, in whichever major type holds it.
    pub fn integer(i: i64) -> Cbor {
        if i >= 0 {
            Cbor::Unsigned(i as u64)
        } else {
            Cbor::Negative((-1 - i) as u64)
        }
    }
}

fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if let Ok(a) = u8::try_from(arg) {
        out.extend_from_slice(&[m | 24, a]);
    } else if let Ok(a) = u16::try_from(arg) {
        out.push(m | 25);
        out.extend_from_slice(&a.to_be_bytes());
    } else if let Ok(a) = u32::try_from(arg) {
        out.push(m | 26);
        out.extend_from_slice(&a.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

enum Arg {
    Value(u64),
    Indefinite,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CborError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(CborError::Truncated(self.pos))?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(CborError::Truncated(self.pos))?;
        self.pos = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn uint(&mut self, n: usize) -> Result<u64, CborError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn malformed(&self, reason: &'static str) -> CborError {
        CborError::Malformed {
            at: self.pos,
            reason,
        }
    }

    fn arg(&mut self, info: u8) -> Result<Arg, CborError> {
        Ok(Arg::Value(match info {
            0..=23 => u64::from(info),
            24 => self.uint(1)?,
            25 => self.uint(2)?,
            26 => self.uint(4)?,
            27 => self.uint(8)?,
            31 => return Ok(Arg::Indefinite),
            _ => return Err(self.malformed("reserved additional information")),
        }))
    }

    /// A length that cannot exceed what is left (each element takes at
    /// least `min_each` bytes), so a forged length allocates nothing.
    fn length(&self, n: u64, min_each: usize) -> Result<usize, CborError> {
        let left = self.bytes.len().saturating_sub(self.pos);
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_each) <= left => Ok(n),
            _ => Err(CborError::Truncated(self.pos)),
        }
    }

    fn at_break(&self) -> bool {
        self.bytes.get(self.pos) == Some(&0xff)
    }

    fn item(&mut self, depth: usize) -> Result<Cbor, CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        let initial = self.byte()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        if major == 7 {
            return self.simple(info);
        }
        let arg = self.arg(info)?;
        match (major, arg) {
            (0, Arg::Value(n)) => Ok(Cbor::Unsigned(n)),
            (1, Arg::Value(n)) => Ok(Cbor::Negative(n)),
            (2 | 3, Arg::Value(n)) => {
                let len = self.length(n, 1)?;
                let data = self.take(len)?.to_vec();
                self.string(major, data)
            }
            (2 | 3, Arg::Indefinite) => {
                let mut data = Vec::new();
                loop {
                    if self.at_break() {
                        self.pos += 1;
                        break;
                    }
                    let chunk_head = self.byte()?;
                    if chunk_head >> 5 != major {
                        return Err(self.malformed("indefinite string chunk of another type"));
                    }
                    let Arg::Value(n) = self.arg(chunk_head & 0x1f)? else {
                        return Err(self.malformed("nested indefinite string"));
                    };
                    let len = self.length(n, 1)?;
                    data.extend_from_slice(self.take(len)?);
                }
                self.string(major, data)
            }
            (4, Arg::Value(n)) => {
                let len = self.length(n, 1)?;
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Cbor::Array(items))
            }
            (4, Arg::Indefinite) => {
                let mut items = Vec::new();
                while !self.at_break() {
                    items.push(self.item(depth + 1)?);
                }
                self.pos += 1;
                Ok(Cbor::Array(items))
            }
            (5, Arg::Value(n)) => {
                let len = self.length(n, 2)?;
                let mut entries = Vec::with_capacity(len);
                for _ in 0..len {
                    let k = self.item(depth + 1)?;
                    let v = self.item(depth + 1)?;
                    entries.push((k, v));
                }
                Ok(Cbor::Map(entries))
            }
            (5, Arg::Indefinite) => {
                let mut entries = Vec::new();
                while !self.at_break() {
                    let k = self.item(depth + 1)?;
                    let v = self.item(depth + 1)?;
                    entries.push((k, v));
                }
                self.pos += 1;
                Ok(Cbor::Map(entries))
            }
            (6, Arg::Value(tag)) => Ok(Cbor::Tag(tag, Box::new(self.item(depth + 1)?))),
            _ => Err(self.malformed("indefinite length not allowed here")),
        }
    }

    fn string(&self, major: u8, data: Vec<u8>) -> Result<Cbor, CborError> {
        if major == 2 {
            Ok(Cbor::Bytes(data))
        } else {
            String::from_utf8(data)
                .map(Cbor::Text)
                .map_err(|_| self.malformed("text string is not UTF-8"))
        }
    }

    fn simple(&mut self, info: u8) -> Result<Cbor, CborError> {
        match info {
            20 => Ok(Cbor::Bool(false)),
            21 => Ok(Cbor::Bool(true)),
            22 => Ok(Cbor::Null),
            23 => Ok(Cbor::Undefined),
            25 => Ok(Cbor::Float(half_to_f64(self.uint(2)? as u16))),
            26 => {
                let bits = self.uint(4)? as u32;
                Ok(Cbor::Float(f64::from(f32::from_bits(bits))))
            }
            27 => Ok(Cbor::Float(f64::from_bits(self.uint(8)?))),
            31 => Err(self.malformed("unexpected break")),
            _ => Err(self.malformed("unassigned simple value")),
        }
    }
}

/// IEEE 754 half precision to f64 (RFC 8949 Appendix D).
fn half_to_f64(half: u16) -> f64 {
    let exp = (half >> 10) & 0x1f;
    let mant = f64::from(half & 0x3ff);
    let val = match exp {
        0 => mant * 2f64.powi(-24),
        31 => {
            if mant == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => (mant + 1024.0) * 2f64.powi(i32::from(e) - 25),
    };
    if half & 0x8000 != 0 { -val } else { val }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_rfc_8949_examples() {
        assert_eq!(Cbor::parse(&[0x18, 0x64]), Ok(Cbor::Unsigned(100)));
        assert_eq!(Cbor::parse(&[0x38, 0x63]), Ok(Cbor::integer(-100).clone()));
        assert_eq!(Cbor::parse(&[0xf9, 0x3c, 0x00]), Ok(Cbor::Float(1.0)));
        assert_eq!(Cbor::parse(&[0xf9, 0xc4, 0x00]), Ok(Cbor::Float(-4.0)));
        assert_eq!(
            Cbor::parse(&[0xfa, 0x47, 0xc3, 0x50, 0x00]),
            Ok(Cbor::Float(100000.0))
        );
        assert_eq!(
            Cbor::parse(&[0x9f, 0x01, 0x82, 0x02, 0x03, 0xff]),
            Ok(Cbor::Array(vec![
                Cbor::Unsigned(1),
                Cbor::Array(vec![Cbor::Unsigned(2), Cbor::Unsigned(3)])
            ]))
        );
        assert_eq!(
            Cbor::parse(&[0x7f, 0x62, b'a', b'b', 0x61, b'c', 0xff]),
            Ok(Cbor::Text("abc".into()))
        );
    }

    #[test]
    fn forged_lengths_and_depth_are_errors() {
        assert!(matches!(
            Cbor::parse(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(CborError::Truncated(_))
        ));
        assert!(matches!(Cbor::parse(&[0x81; 40]), Err(CborError::TooDeep)));
        assert!(matches!(
            Cbor::parse(&[0x01, 0x02]),
            Err(CborError::Trailing(1))
        ));
        assert!(matches!(
            Cbor::parse(&[0x1c]),
            Err(CborError::Malformed { .. })
        ));
        assert!(matches!(
            Cbor::parse(&[0x62, 0xff, 0xfe]),
            Err(CborError::Malformed { .. })
        ));
    }
}
