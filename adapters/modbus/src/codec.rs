//! Register contents ⇄ point values: byte and word orders, scaling,
//! strings and raw bytes. Total over arbitrary input: a wrong length or
//! invalid text is an error, never a panic.

use ferrogate_sdk::Value;

use crate::point::{Order, Point, PointType};

/// The registers do not hold a value of the point's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {expected} bytes of register data, got {got}")]
    Length { expected: usize, got: usize },
    #[error("string is not valid UTF-8")]
    Utf8,
}

/// A value that cannot be written to a point.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("a {ty} point cannot take a {value} value")]
    Type {
        ty: &'static str,
        value: &'static str,
    },
    #[error("{value} does not fit a {ty} point{hint}")]
    Range {
        ty: &'static str,
        value: String,
        hint: String,
    },
}

/// Wire bytes (registers as transmitted, big-endian) arranged into a
/// big-endian number according to `order`.
fn arrange<const N: usize>(wire: &[u8], order: Order) -> [u8; N] {
    let mut out = [0u8; N];
    let registers = N / 2;
    for (i, slot) in out.chunks_exact_mut(2).enumerate() {
        let source = if order.swaps_words() && registers > 1 {
            registers - 1 - i
        } else {
            i
        };
        let (hi, lo) = (wire[source * 2], wire[source * 2 + 1]);
        if order.swaps_bytes() {
            slot.copy_from_slice(&[lo, hi]);
        } else {
            slot.copy_from_slice(&[hi, lo]);
        }
    }
    out
}

/// Inverse of [`arrange`]: a big-endian number into wire bytes.
fn disarrange(be: &[u8], order: Order) -> Vec<u8> {
    let registers = be.len() / 2;
    let mut wire = vec![0u8; be.len()];
    for i in 0..registers {
        let target = if order.swaps_words() && registers > 1 {
            registers - 1 - i
        } else {
            i
        };
        let (hi, lo) = (be[i * 2], be[i * 2 + 1]);
        let pair = if order.swaps_bytes() {
            [lo, hi]
        } else {
            [hi, lo]
        };
        wire[target * 2..target * 2 + 2].copy_from_slice(&pair);
    }
    wire
}

/// Decode a register point from its wire bytes (two per register).
pub fn decode(point: &Point, wire: &[u8]) -> Result<Value, DecodeError> {
    let expected = usize::from(point.ty.width()) * 2;
    if wire.len() != expected {
        return Err(DecodeError::Length {
            expected,
            got: wire.len(),
        });
    }
    let raw = match point.ty {
        PointType::Bool => return Ok(Value::Bool(wire.iter().any(|b| *b != 0))),
        PointType::Bit(n) => {
            let word = u16::from_be_bytes(arrange::<2>(wire, point.order));
            return Ok(Value::Bool(word >> (n & 15) & 1 == 1));
        }
        PointType::String(_) => {
            let bytes = arrange_text(wire, point.order);
            let end = bytes
                .iter()
                .rposition(|b| *b != 0 && *b != b' ')
                .map_or(0, |i| i + 1);
            let text = bytes.get(..end).unwrap_or_default();
            let text = std::str::from_utf8(text).map_err(|_| DecodeError::Utf8)?;
            return Ok(Value::String(text.trim_end_matches('\0').to_string()));
        }
        PointType::Bytes(_) => return Ok(Value::Bytes(arrange_text(wire, point.order))),
        PointType::U16 => Value::UInt(u16::from_be_bytes(arrange(wire, point.order)).into()),
        PointType::I16 => Value::Int(i16::from_be_bytes(arrange(wire, point.order)).into()),
        PointType::U32 => Value::UInt(u32::from_be_bytes(arrange(wire, point.order)).into()),
        PointType::I32 => Value::Int(i32::from_be_bytes(arrange(wire, point.order)).into()),
        PointType::U64 => Value::UInt(u64::from_be_bytes(arrange(wire, point.order))),
        PointType::I64 => Value::Int(i64::from_be_bytes(arrange(wire, point.order))),
        PointType::F32 => Value::from_f32(f32::from_be_bytes(arrange(wire, point.order))),
        PointType::F64 => Value::Float(f64::from_be_bytes(arrange(wire, point.order))),
    };
    if !point.is_scaled() {
        return Ok(raw);
    }
    let x = raw.as_f64().unwrap_or(f64::NAN);
    Ok(Value::Float(x * point.scale + point.offset))
}

/// Text and raw bytes keep register order; only the byte order within a
/// register can be swapped.
fn arrange_text(wire: &[u8], order: Order) -> Vec<u8> {
    let mut out = wire.to_vec();
    if order.swaps_bytes() {
        for pair in out.chunks_exact_mut(2) {
            pair.swap(0, 1);
        }
    }
    out
}

/// The wire bytes that store `value` in a register point, after checking
/// the value's type and that it fits the point's type.
pub fn encode(point: &Point, value: &Value) -> Result<Vec<u8>, EncodeError> {
    let ty = point.ty.name();
    let type_error = || EncodeError::Type {
        ty,
        value: value.type_name(),
    };
    match point.ty {
        PointType::Bool | PointType::Bit(_) => {
            let bit = encode_bool(value).ok_or_else(type_error)?;
            Ok(vec![0, u8::from(bit)])
        }
        PointType::String(n) | PointType::Bytes(n) => {
            let mut bytes = match (point.ty, value) {
                (PointType::String(_), Value::String(s)) => s.as_bytes().to_vec(),
                (PointType::Bytes(_), Value::Bytes(b)) => b.clone(),
                (PointType::Bytes(_), Value::String(s)) => ferrogate_sdk::hex::decode(s.trim())
                    .ok_or_else(|| EncodeError::Range {
                        ty,
                        value: format!("{s:?}"),
                        hint: " (bytes are written as a hex string)".into(),
                    })?,
                _ => return Err(type_error()),
            };
            let capacity = usize::from(n) * 2;
            if bytes.len() > capacity {
                return Err(EncodeError::Range {
                    ty,
                    value: format!("{} bytes", bytes.len()),
                    hint: format!(" of {n} registers ({capacity} bytes)"),
                });
            }
            bytes.resize(capacity, 0);
            Ok(arrange_text(&bytes, point.order))
        }
        _ => encode_number(point, value),
    }
}

/// A coil's or bit's value from a command value.
pub fn encode_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Int(0) | Value::UInt(0) => Some(false),
        Value::Int(1) | Value::UInt(1) => Some(true),
        _ => None,
    }
}

fn encode_number(point: &Point, value: &Value) -> Result<Vec<u8>, EncodeError> {
    let ty = point.ty.name();
    let engineering = match value {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => value,
        other => {
            return Err(EncodeError::Type {
                ty,
                value: other.type_name(),
            });
        }
    };
    let range = |hint: &str| EncodeError::Range {
        ty,
        value: engineering.to_string(),
        hint: hint.to_string(),
    };
    // Integers that are not scaled go through exactly, without f64 rounding.
    if !point.is_scaled() {
        let exact = match (point.ty, engineering) {
            (PointType::F32, v) => {
                let x = v.as_f64().unwrap_or(f64::NAN);
                if x.is_finite() && x.abs() > f64::from(f32::MAX) {
                    return Err(range(""));
                }
                return Ok(disarrange(&(x as f32).to_be_bytes(), point.order));
            }
            (PointType::F64, v) => {
                let x = v.as_f64().unwrap_or(f64::NAN);
                return Ok(disarrange(&x.to_be_bytes(), point.order));
            }
            (_, Value::Int(i)) => Some(i128::from(*i)),
            (_, Value::UInt(u)) => Some(i128::from(*u)),
            (_, Value::Float(f)) if f.fract() == 0.0 && f.is_finite() => Some(*f as i128),
            (_, Value::Float(_)) => {
                return Err(range(" (it has a fraction; the point is an integer)"));
            }
            _ => None,
        };
        let Some(raw) = exact else {
            return Err(range(""));
        };
        return encode_integer(point, raw).ok_or_else(|| range(""));
    }
    let x = engineering.as_f64().unwrap_or(f64::NAN);
    let raw = (x - point.offset) / point.scale;
    if !raw.is_finite() {
        return Err(range(""));
    }
    match point.ty {
        PointType::F32 => Ok(disarrange(&(raw as f32).to_be_bytes(), point.order)),
        PointType::F64 => Ok(disarrange(&raw.to_be_bytes(), point.order)),
        _ => {
            let rounded = raw.round();
            if rounded.abs() > 1.8e19 {
                return Err(range(" after scaling"));
            }
            encode_integer(point, rounded as i128).ok_or_else(|| range(" after scaling"))
        }
    }
}

fn encode_integer(point: &Point, raw: i128) -> Option<Vec<u8>> {
    let be: Vec<u8> = match point.ty {
        PointType::U16 => u16::try_from(raw).ok()?.to_be_bytes().to_vec(),
        PointType::I16 => i16::try_from(raw).ok()?.to_be_bytes().to_vec(),
        PointType::U32 => u32::try_from(raw).ok()?.to_be_bytes().to_vec(),
        PointType::I32 => i32::try_from(raw).ok()?.to_be_bytes().to_vec(),
        PointType::U64 => u64::try_from(raw).ok()?.to_be_bytes().to_vec(),
        PointType::I64 => i64::try_from(raw).ok()?.to_be_bytes().to_vec(),
        _ => return None,
    };
    Some(disarrange(&be, point.order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::Area;
    use proptest::prelude::*;

    fn point(ty: PointType, order: Order) -> Point {
        Point {
            name: "p".into(),
            area: Area::Holding,
            address: 0,
            ty,
            order,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            description: None,
            writable: true,
            min: None,
            max: None,
            poll: None,
            report: Default::default(),
        }
    }

    const ORDERS: [Order; 4] = [Order::Abcd, Order::Cdab, Order::Badc, Order::Dcba];

    #[test]
    fn orders_of_a_known_f32() {
        // 123.456f32 = 0x42F6E979: A=42 B=F6 C=E9 D=79.
        let cases = [
            (Order::Abcd, [0x42, 0xF6, 0xE9, 0x79]),
            (Order::Cdab, [0xE9, 0x79, 0x42, 0xF6]),
            (Order::Badc, [0xF6, 0x42, 0x79, 0xE9]),
            (Order::Dcba, [0x79, 0xE9, 0xF6, 0x42]),
        ];
        for (order, wire) in cases {
            let v = decode(&point(PointType::F32, order), &wire).unwrap();
            assert_eq!(v, Value::Float(123.456), "{order:?}");
        }
    }

    #[test]
    fn orders_of_a_known_u64() {
        let x = 0x0102_0304_0506_0708u64;
        let wire_abcd = [1, 2, 3, 4, 5, 6, 7, 8];
        let wire_cdab = [7, 8, 5, 6, 3, 4, 1, 2];
        let wire_badc = [2, 1, 4, 3, 6, 5, 8, 7];
        let wire_dcba = [8, 7, 6, 5, 4, 3, 2, 1];
        for (order, wire) in [
            (Order::Abcd, wire_abcd),
            (Order::Cdab, wire_cdab),
            (Order::Badc, wire_badc),
            (Order::Dcba, wire_dcba),
        ] {
            assert_eq!(
                decode(&point(PointType::U64, order), &wire).unwrap(),
                Value::UInt(x)
            );
        }
    }

    #[test]
    fn scale_offset_and_bits() {
        let mut p = point(PointType::I16, Order::Abcd);
        p.scale = 0.1;
        p.offset = -40.0;
        assert_eq!(
            decode(&p, &[0x01, 0xF4]).unwrap(),
            Value::Float(500.0 * 0.1 - 40.0)
        );
        assert_eq!(encode(&p, &Value::Float(10.0)).unwrap(), vec![0x01, 0xF4]);
        let bit = point(PointType::Bit(9), Order::Abcd);
        assert_eq!(decode(&bit, &[0x02, 0x00]).unwrap(), Value::Bool(true));
        assert_eq!(decode(&bit, &[0xFD, 0xFF]).unwrap(), Value::Bool(false));
    }

    #[test]
    fn strings_trim_padding_and_refuse_bad_utf8() {
        let p = point(PointType::String(3), Order::Abcd);
        assert_eq!(
            decode(&p, b"AB C\0\0").unwrap(),
            Value::String("AB C".into())
        );
        assert_eq!(
            decode(&p, &[0xff, 0xfe, 0, 0, 0, 0]),
            Err(DecodeError::Utf8)
        );
        let swapped = point(PointType::String(2), Order::Badc);
        assert_eq!(
            decode(&swapped, b"EMRT").unwrap(),
            Value::String("METR".into())
        );
    }

    #[test]
    fn writes_refuse_wrong_types_and_overflow() {
        let p = point(PointType::U16, Order::Abcd);
        assert!(matches!(
            encode(&p, &Value::Int(70000)),
            Err(EncodeError::Range { .. })
        ));
        assert!(matches!(
            encode(&p, &Value::Int(-1)),
            Err(EncodeError::Range { .. })
        ));
        assert!(matches!(
            encode(&p, &Value::String("x".into())),
            Err(EncodeError::Type { .. })
        ));
        assert!(matches!(
            encode(&p, &Value::Float(1.5)),
            Err(EncodeError::Range { .. })
        ));
        let s = point(PointType::String(1), Order::Abcd);
        assert!(encode(&s, &Value::String("abc".into())).is_err());
    }

    fn types() -> impl Strategy<Value = PointType> {
        prop_oneof![
            Just(PointType::Bool),
            (0u8..16).prop_map(PointType::Bit),
            Just(PointType::U16),
            Just(PointType::I16),
            Just(PointType::U32),
            Just(PointType::I32),
            Just(PointType::U64),
            Just(PointType::I64),
            Just(PointType::F32),
            Just(PointType::F64),
            (1u16..8).prop_map(PointType::String),
            (1u16..8).prop_map(PointType::Bytes),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(ty in types(), order in 0usize..4, bytes in proptest::collection::vec(any::<u8>(), 0..20), scale in -10.0f64..10.0) {
            let mut p = point(ty, ORDERS[order]);
            p.scale = scale;
            let _ = decode(&p, &bytes);
        }

        #[test]
        fn integers_roundtrip(order in 0usize..4, a in any::<u16>(), b in any::<i16>(), c in any::<u32>(), d in any::<i32>(), e in any::<u64>(), f in any::<i64>()) {
            let order = ORDERS[order];
            let cases = [
                (PointType::U16, Value::UInt(a.into())),
                (PointType::I16, Value::Int(b.into())),
                (PointType::U32, Value::UInt(c.into())),
                (PointType::I32, Value::Int(d.into())),
                (PointType::U64, Value::UInt(e)),
                (PointType::I64, Value::Int(f)),
            ];
            for (ty, value) in cases {
                let p = point(ty, order);
                let wire = encode(&p, &value).unwrap();
                prop_assert_eq!(wire.len(), usize::from(ty.width()) * 2);
                prop_assert_eq!(decode(&p, &wire).unwrap(), value);
            }
        }

        #[test]
        fn floats_roundtrip(order in 0usize..4, x in any::<f32>().prop_filter("finite", |x| x.is_finite()), y in any::<f64>().prop_filter("finite", |y| y.is_finite())) {
            let order = ORDERS[order];
            let p32 = point(PointType::F32, order);
            let wire = encode(&p32, &Value::Float(x.into())).unwrap();
            prop_assert_eq!(decode(&p32, &wire).unwrap(), Value::from_f32(x));
            let p64 = point(PointType::F64, order);
            let wire = encode(&p64, &Value::Float(y)).unwrap();
            prop_assert_eq!(decode(&p64, &wire).unwrap(), Value::Float(y));
        }

        #[test]
        fn wire_roundtrips_through_decode(order in 0usize..4, wire in proptest::collection::vec(any::<u8>(), 8)) {
            // decode then encode gives back the same registers for every
            // integer width and order.
            let order = ORDERS[order];
            for ty in [PointType::U16, PointType::I16, PointType::U32, PointType::I32, PointType::U64, PointType::I64] {
                let n = usize::from(ty.width()) * 2;
                let p = point(ty, order);
                let value = decode(&p, &wire[..n]).unwrap();
                prop_assert_eq!(encode(&p, &value).unwrap(), wire[..n].to_vec());
            }
        }

        #[test]
        fn text_and_bytes_roundtrip(order in 0usize..4, s in "[a-zA-Z0-9 .-]{0,7}[a-zA-Z0-9.-]", bytes in proptest::collection::vec(any::<u8>(), 8)) {
            let order = ORDERS[order];
            let ps = point(PointType::String(4), order);
            let wire = encode(&ps, &Value::String(s.clone())).unwrap();
            prop_assert_eq!(decode(&ps, &wire).unwrap(), Value::String(s));
            let pb = point(PointType::Bytes(4), order);
            let wire = encode(&pb, &Value::Bytes(bytes.clone())).unwrap();
            prop_assert_eq!(decode(&pb, &wire).unwrap(), Value::Bytes(bytes));
        }

        #[test]
        fn scaled_values_roundtrip(raw in any::<i16>(), scale in prop_oneof![Just(0.1), Just(0.01), Just(2.0), Just(10.0)], offset in -100i32..100) {
            let mut p = point(PointType::I16, Order::Abcd);
            p.scale = scale;
            p.offset = offset.into();
            let wire = raw.to_be_bytes();
            let value = decode(&p, &wire).unwrap();
            prop_assert_eq!(encode(&p, &value).unwrap(), wire.to_vec());
        }
    }
}
