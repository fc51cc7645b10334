//! Sparkplug datatypes and the one mapping between ferrogate's [`Value`]
//! model and a metric's value (both directions: telemetry going north,
//! DCMD writes coming south).
//!
//! A metric's datatype comes from the point's configured type (`u16` is
//! UInt16, `f32` is Float); a value that does not fit it (a scaled `u16`
//! register is a float) is sent as its own kind's datatype instead
//! ([`DataType::for_value`]), and the edge node rebirths the device when a
//! metric's datatype changes. IntN goes on the wire as N-bit two's
//! complement in `int_value`, as Eclipse Tahu writes it (pysparkplug
//! refuses the sign-extended 32-bit form); decoding takes both.

use ferrogate_sdk::{PointErrorKind, Value};

use super::proto::{MetricValue, PropertySet, PropertyValue, PropertyValueKind};

/// `org.eclipse.tahu.protobuf.DataType`, the scalar types an edge node
/// uses (arrays, DataSet, Template, File and property-set types are never
/// sent and are refused in commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
    DateTime = 13,
    Text = 14,
    Bytes = 17,
}

impl DataType {
    const ALL: [DataType; 15] = [
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
        DataType::Float,
        DataType::Double,
        DataType::Boolean,
        DataType::String,
        DataType::DateTime,
        DataType::Text,
        DataType::Bytes,
    ];

    /// The number on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The datatype with this number, if it is one an edge node handles.
    pub fn from_code(code: u32) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The datatype of a point of this configured type (the `data_type`
    /// of its meta, as each adapter names it). `None` for a type that says
    /// nothing about the value (CoAP's `auto`, LwM2M object links): the
    /// value's kind decides.
    pub fn for_point(data_type: &str) -> Option<DataType> {
        Some(match data_type {
            "bool" => DataType::Boolean,
            "i8" => DataType::Int8,
            "i16" => DataType::Int16,
            "i32" => DataType::Int32,
            "i64" | "integer" => DataType::Int64,
            "u8" => DataType::UInt8,
            "u16" => DataType::UInt16,
            "u32" => DataType::UInt32,
            "u64" | "unsigned" => DataType::UInt64,
            "f32" => DataType::Float,
            "f64" | "float" => DataType::Double,
            "string" => DataType::String,
            "bytes" => DataType::Bytes,
            "time" => DataType::DateTime,
            _ => return None,
        })
    }

    /// The datatype `value` is sent as: `declared` when the value fits it
    /// exactly, otherwise the datatype of the value's own kind.
    pub fn for_value(value: &Value, declared: Option<DataType>) -> DataType {
        match declared {
            Some(t) if t.fits(value) => t,
            _ => DataType::natural(value),
        }
    }

    /// The datatype every value of this kind fits.
    fn natural(value: &Value) -> DataType {
        match value {
            Value::Bool(_) => DataType::Boolean,
            Value::Int(_) => DataType::Int64,
            Value::UInt(_) => DataType::UInt64,
            Value::Float(_) => DataType::Double,
            Value::String(_) => DataType::String,
            Value::Bytes(_) => DataType::Bytes,
        }
    }

    /// Whether `value` can be sent as this datatype without loss.
    fn fits(self, value: &Value) -> bool {
        let int = match value {
            Value::Int(i) => i128::from(*i),
            Value::UInt(u) => i128::from(*u),
            Value::Bool(_) => return self == DataType::Boolean,
            Value::String(_) => return matches!(self, DataType::String | DataType::Text),
            Value::Bytes(_) => return self == DataType::Bytes,
            // An f64 that is not exactly an f32 does not fit Float: the
            // adapters hand f32 points over at f32 precision (Value::from_f32).
            Value::Float(f) => {
                return match self {
                    DataType::Double => true,
                    DataType::Float => f.is_nan() || Value::from_f32(*f as f32) == *value,
                    _ => false,
                };
            }
        };
        let (lo, hi): (i128, i128) = match self {
            DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
            DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
            DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
            DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
            DataType::UInt8 => (0, u8::MAX.into()),
            DataType::UInt16 => (0, u16::MAX.into()),
            DataType::UInt32 => (0, u32::MAX.into()),
            DataType::UInt64 | DataType::DateTime => (0, u64::MAX.into()),
            _ => return false,
        };
        (lo..=hi).contains(&int)
    }

    /// `value` as a metric value of this datatype. The caller chose the
    /// datatype with [`DataType::for_value`], so the value fits; a value
    /// that does not is sent as its natural kind's wire field.
    pub fn encode(self, value: &Value) -> MetricValue {
        let int = match value {
            Value::Int(i) => i128::from(*i),
            Value::UInt(u) => i128::from(*u),
            Value::Bool(b) => return MetricValue::Boolean(*b),
            Value::String(s) => return MetricValue::String(s.clone()),
            Value::Bytes(b) => return MetricValue::Bytes(b.clone()),
            Value::Float(f) => {
                return match self {
                    DataType::Float => MetricValue::Float(*f as f32),
                    _ => MetricValue::Double(*f),
                };
            }
        };
        match self {
            DataType::Int8 => MetricValue::Int(u32::from(int as i8 as u8)),
            DataType::Int16 => MetricValue::Int(u32::from(int as i16 as u16)),
            DataType::Int32 => MetricValue::Int(int as i32 as u32),
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => MetricValue::Int(int as u32),
            // Int64 as two's complement, UInt64 and DateTime as they are.
            _ => MetricValue::Long(int as u64),
        }
    }

    /// The model value a metric of this datatype carries (a DCMD write).
    pub fn decode(self, value: &MetricValue) -> Result<Value, ValueError> {
        let wrong = || ValueError::WrongField { datatype: self };
        let narrow = |x: u32, bits: u32| -> Result<Value, ValueError> {
            // N-bit two's complement (Tahu), or the sign-extended 32-bit
            // form other writers use.
            let n = if bits < 32 && x < (1 << bits) {
                let shift = 32 - bits;
                i64::from(((x << shift) as i32) >> shift)
            } else {
                i64::from(x as i32)
            };
            let half = 1i64 << (bits - 1);
            if (-half..half).contains(&n) {
                Ok(Value::Int(n))
            } else {
                Err(ValueError::OutOfRange { datatype: self })
            }
        };
        let unsigned = |x: u32, bits: u32| -> Result<Value, ValueError> {
            if bits == 32 || x < (1 << bits) {
                Ok(Value::UInt(u64::from(x)))
            } else {
                Err(ValueError::OutOfRange { datatype: self })
            }
        };
        match (self, value) {
            (DataType::Int8, MetricValue::Int(x)) => narrow(*x, 8),
            (DataType::Int16, MetricValue::Int(x)) => narrow(*x, 16),
            (DataType::Int32, MetricValue::Int(x)) => narrow(*x, 32),
            (DataType::Int64, MetricValue::Long(x)) => Ok(Value::Int(*x as i64)),
            (DataType::UInt8, MetricValue::Int(x)) => unsigned(*x, 8),
            (DataType::UInt16, MetricValue::Int(x)) => unsigned(*x, 16),
            (DataType::UInt32, MetricValue::Int(x)) => unsigned(*x, 32),
            (DataType::UInt64 | DataType::DateTime, MetricValue::Long(x)) => Ok(Value::UInt(*x)),
            (DataType::Float, MetricValue::Float(x)) => Ok(Value::from_f32(*x)),
            (DataType::Double, MetricValue::Double(x)) => Ok(Value::Float(*x)),
            (DataType::Boolean, MetricValue::Boolean(b)) => Ok(Value::Bool(*b)),
            (DataType::String | DataType::Text, MetricValue::String(s)) => {
                Ok(Value::String(s.clone()))
            }
            (DataType::Bytes, MetricValue::Bytes(b)) => Ok(Value::Bytes(b.clone())),
            _ => Err(wrong()),
        }
    }
}

/// Why a metric's value has no model value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("a {datatype:?} metric's value is in the wrong field")]
    WrongField { datatype: DataType },
    #[error("the value does not fit a {datatype:?}")]
    OutOfRange { datatype: DataType },
}

/// The `Quality` property of a metric whose read failed, OPC DA quality
/// codes as Ignition reads them (Int32): the reason a value is null.
pub fn quality(kind: PointErrorKind) -> i32 {
    match kind {
        // Bad_CommFailure: the device did not answer.
        PointErrorKind::Timeout => 24,
        // Bad_NotConnected: the transport is down.
        PointErrorKind::Io => 8,
        // Bad_DeviceFailure: the device refused the read.
        PointErrorKind::DeviceException => 12,
        // Bad_ConfigError: the bytes do not decode as the configured type.
        PointErrorKind::Decode => 4,
    }
}

/// A property set of one Int32 `Quality`.
pub fn quality_properties(kind: PointErrorKind) -> PropertySet {
    PropertySet {
        keys: vec!["Quality".to_string()],
        values: vec![PropertyValue {
            r#type: Some(DataType::Int32.code()),
            is_null: None,
            value: Some(PropertyValueKind::Int(quality(kind) as u32)),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::proto::{Metric, Payload};
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            any::<f64>().prop_map(Value::Float),
            any::<f32>().prop_map(Value::from_f32),
            ".{0,20}".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
        ]
    }

    fn any_declared() -> impl Strategy<Value = Option<DataType>> {
        proptest::option::of(proptest::sample::select(DataType::ALL.to_vec()))
    }

    /// NaN is not equal to itself; compare bit patterns' meaning instead.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
            (Value::Int(x), Value::UInt(y)) | (Value::UInt(y), Value::Int(x)) => {
                i128::from(*x) == i128::from(*y)
            }
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn any_model_value_round_trips(value in any_value(), declared in any_declared()) {
            let datatype = DataType::for_value(&value, declared);
            let payload = Payload {
                metrics: vec![Metric {
                    datatype: Some(datatype.code()),
                    value: Some(datatype.encode(&value)),
                    ..Metric::default()
                }],
                ..Payload::default()
            };
            let bytes = prost::Message::encode_to_vec(&payload);
            let decoded: Payload = prost::Message::decode(bytes.as_slice()).expect("our payload decodes");
            let metric = &decoded.metrics[0];
            let datatype = metric.datatype.and_then(DataType::from_code).expect("datatype kept");
            let wire = metric.value.as_ref().expect("value kept");
            let back = datatype.decode(wire).expect("a value encoded as its datatype decodes");
            prop_assert!(same(&value, &back), "{value:?} as {datatype:?} came back as {back:?}");
        }

        #[test]
        fn any_wire_value_decodes_or_is_refused(code in 0u32..40, x in any::<u32>(), l in any::<u64>()) {
            if let Some(t) = DataType::from_code(code) {
                for wire in [MetricValue::Int(x), MetricValue::Long(l), MetricValue::Float(x as f32)] {
                    let _ = t.decode(&wire);
                }
            }
        }
    }

    #[test]
    fn signed_narrow_ints_are_n_bit_twos_complement_as_tahu_writes_them() {
        assert_eq!(
            DataType::Int8.encode(&Value::Int(-1)),
            MetricValue::Int(0xFF)
        );
        assert_eq!(
            DataType::Int16.encode(&Value::Int(-2)),
            MetricValue::Int(0xFFFE)
        );
        assert_eq!(
            DataType::Int32.encode(&Value::Int(-3)),
            MetricValue::Int(0xFFFF_FFFD)
        );
        assert_eq!(
            DataType::Int64.encode(&Value::Int(-1)),
            MetricValue::Long(u64::MAX)
        );
        // Both the N-bit and the sign-extended form decode.
        assert_eq!(
            DataType::Int8.decode(&MetricValue::Int(0xFF)),
            Ok(Value::Int(-1))
        );
        assert_eq!(
            DataType::Int8.decode(&MetricValue::Int(u32::MAX)),
            Ok(Value::Int(-1))
        );
        assert_eq!(
            DataType::Int8.decode(&MetricValue::Int(0x1FF)),
            Err(ValueError::OutOfRange {
                datatype: DataType::Int8
            })
        );
        assert_eq!(
            DataType::UInt16.decode(&MetricValue::Int(70_000)),
            Err(ValueError::OutOfRange {
                datatype: DataType::UInt16
            })
        );
    }

    #[test]
    fn a_value_that_does_not_fit_its_point_type_goes_as_its_own_kind() {
        let u16_point = DataType::for_point("u16");
        assert_eq!(
            DataType::for_value(&Value::UInt(7), u16_point),
            DataType::UInt16
        );
        // A scaled register.
        assert_eq!(
            DataType::for_value(&Value::Float(22.5), u16_point),
            DataType::Double
        );
        assert_eq!(
            DataType::for_value(&Value::UInt(70_000), u16_point),
            DataType::UInt64
        );
        let f32_point = DataType::for_point("f32");
        assert_eq!(
            DataType::for_value(&Value::from_f32(229.8), f32_point),
            DataType::Float
        );
        assert_eq!(
            DataType::for_value(&Value::Float(0.123_456_789_012), f32_point),
            DataType::Double
        );
        assert_eq!(
            DataType::for_value(&Value::Int(1), DataType::for_point("auto")),
            DataType::Int64
        );
    }

    #[test]
    fn a_value_in_the_wrong_field_is_refused() {
        assert_eq!(
            DataType::Boolean.decode(&MetricValue::Int(1)),
            Err(ValueError::WrongField {
                datatype: DataType::Boolean
            })
        );
    }
}
