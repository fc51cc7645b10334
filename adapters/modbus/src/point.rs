//! A device's point map: what each point is (area, address, type, byte
//! order, scaling) and the Modicon address notation integrators write.
//!
//! Decoding and encoding of values lives in [`crate::codec`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ferrogate_sdk::PointMeta;
use ferrogate_sdk::report::PointReport;
use serde::Deserialize;

/// The four Modbus data areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    /// Read/write bits (FC01, FC05, FC15).
    Coil,
    /// Read-only bits (FC02).
    Discrete,
    /// Read-only registers (FC04).
    Input,
    /// Read/write registers (FC03, FC06, FC16).
    Holding,
}

impl Area {
    pub fn is_bits(self) -> bool {
        matches!(self, Area::Coil | Area::Discrete)
    }

    pub fn is_writable(self) -> bool {
        matches!(self, Area::Coil | Area::Holding)
    }

    /// The read function code of this area.
    pub fn read_function(self) -> u8 {
        match self {
            Area::Coil => 1,
            Area::Discrete => 2,
            Area::Holding => 3,
            Area::Input => 4,
        }
    }

    /// The most items one read request may cover (Modbus spec 6.1–6.4).
    pub fn max_read(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Area::Coil => "coil",
            Area::Discrete => "discrete input",
            Area::Input => "input register",
            Area::Holding => "holding register",
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resolve a Modicon reference (`40001`, `300001`) into an area and a
/// zero-based protocol address. Five digits: `0xxxx` coils, `1xxxx`
/// discrete inputs, `3xxxx` input registers, `4xxxx` holding registers,
/// each starting at 1; six digits extend the range to 65536.
pub fn resolve_modicon(reference: u32) -> Result<(Area, u16), String> {
    let (digit, offset) = if reference >= 100_000 {
        (reference / 100_000, reference % 100_000)
    } else {
        (reference / 10_000, reference % 10_000)
    };
    let area = match digit {
        0 => Area::Coil,
        1 => Area::Discrete,
        3 => Area::Input,
        4 => Area::Holding,
        _ => {
            return Err(format!(
                "Modicon reference {reference} has no area: the first digit must be 0 (coil), 1 (discrete), 3 (input) or 4 (holding)"
            ));
        }
    };
    if offset == 0 || offset > 65_536 {
        return Err(format!(
            "Modicon reference {reference} is out of range: references start at 1 (e.g. 40001 is holding register 0)"
        ));
    }
    Ok((area, (offset - 1) as u16))
}

/// Byte and word order of a multi-register value. `A` is the most
/// significant byte. The 64-bit names (`ABCDEFGH`, ...) mean the same
/// swaps applied to four registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum Order {
    /// Big-endian bytes, most significant register first (the Modbus default).
    #[default]
    #[serde(rename = "ABCD", alias = "ABCDEFGH")]
    Abcd,
    /// Registers swapped, bytes big-endian within each ("word swap").
    #[serde(rename = "CDAB", alias = "GHEFCDAB")]
    Cdab,
    /// Registers in order, bytes swapped within each ("byte swap").
    #[serde(rename = "BADC", alias = "BADCFEHG")]
    Badc,
    /// Fully little-endian.
    #[serde(rename = "DCBA", alias = "HGFEDCBA")]
    Dcba,
}

impl Order {
    pub fn swaps_words(self) -> bool {
        matches!(self, Order::Cdab | Order::Dcba)
    }

    pub fn swaps_bytes(self) -> bool {
        matches!(self, Order::Badc | Order::Dcba)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Order::Abcd => "ABCD",
            Order::Cdab => "CDAB",
            Order::Badc => "BADC",
            Order::Dcba => "DCBA",
        }
    }
}

/// The type names of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeName {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    String,
    Bytes,
}

/// What a point's bits mean, with the sizes resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointType {
    /// A coil or discrete input.
    Bool,
    /// One bit (0 = least significant) of a register.
    Bit(u8),
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// Text in `n` registers (two bytes each), NUL/space padded.
    String(u16),
    /// Raw bytes of `n` registers.
    Bytes(u16),
}

impl PointType {
    /// Registers (or bits, for coils and discrete inputs) the point covers.
    pub fn width(self) -> u16 {
        match self {
            PointType::Bool | PointType::Bit(_) | PointType::U16 | PointType::I16 => 1,
            PointType::U32 | PointType::I32 | PointType::F32 => 2,
            PointType::U64 | PointType::I64 | PointType::F64 => 4,
            PointType::String(n) | PointType::Bytes(n) => n,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PointType::Bool | PointType::Bit(_) => "bool",
            PointType::U16 => "u16",
            PointType::I16 => "i16",
            PointType::U32 => "u32",
            PointType::I32 => "i32",
            PointType::U64 => "u64",
            PointType::I64 => "i64",
            PointType::F32 => "f32",
            PointType::F64 => "f64",
            PointType::String(_) => "string",
            PointType::Bytes(_) => "bytes",
        }
    }

    /// Whether the point holds a number that scale, offset, min, max and
    /// deadband apply to.
    pub fn is_numeric(self) -> bool {
        !matches!(
            self,
            PointType::Bool | PointType::Bit(_) | PointType::String(_) | PointType::Bytes(_)
        )
    }
}

/// One point of a device, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: Arc<str>,
    pub area: Area,
    pub address: u16,
    pub ty: PointType,
    pub order: Order,
    pub scale: f64,
    pub offset: f64,
    pub unit: Option<String>,
    pub description: Option<String>,
    pub writable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Overrides the device's poll period.
    pub poll: Option<Duration>,
    /// Overrides the device's deadband and intervals.
    pub report: PointReport,
}

impl Point {
    /// What the device's meta message says about this point.
    pub fn meta(&self) -> PointMeta {
        PointMeta {
            name: self.name.to_string(),
            data_type: self.ty.name().to_string(),
            unit: self.unit.clone(),
            writable: self.writable,
            min: self.min,
            max: self.max,
            description: self.description.clone(),
            address: Some(format!("{} {}", self.area, self.address)),
        }
    }

    /// The last address the point covers (checked at build to fit in u16).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.ty.width())
    }

    /// Whether the raw value is scaled into a float.
    pub fn is_scaled(&self) -> bool {
        self.ty.is_numeric() && (self.scale != 1.0 || self.offset != 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn modicon_references() {
        assert_eq!(resolve_modicon(40001), Ok((Area::Holding, 0)));
        assert_eq!(resolve_modicon(30010), Ok((Area::Input, 9)));
        assert_eq!(resolve_modicon(10001), Ok((Area::Discrete, 0)));
        assert_eq!(resolve_modicon(1), Ok((Area::Coil, 0)));
        assert_eq!(resolve_modicon(465536), Ok((Area::Holding, 65535)));
        assert!(resolve_modicon(40000).is_err());
        assert!(resolve_modicon(20001).is_err());
        assert!(resolve_modicon(465537).is_err());
    }

    proptest! {
        #[test]
        fn any_reference_resolves_or_errs(reference in any::<u32>()) {
            let _ = resolve_modicon(reference);
        }

        #[test]
        fn six_digit_references_roundtrip(digit in prop_oneof![Just(0u32), Just(1), Just(3), Just(4)], address in 0u32..65536) {
            let reference = digit * 100_000 + address + 1;
            let expected = [Area::Coil, Area::Discrete, Area::Coil, Area::Input, Area::Holding][digit as usize];
            if reference >= 100_000 {
                prop_assert_eq!(resolve_modicon(reference), Ok((expected, address as u16)));
            }
        }
    }
}
