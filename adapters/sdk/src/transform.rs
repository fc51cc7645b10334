//! Value transforms of one point, applied by the report-by-exception
//! stage to what an adapter reads (and, inverted, to what is written), in
//! this order: `scale`, then `offset`, then the unit conversion, then
//! `clamp`. A write goes the other way: a value outside the clamp range is
//! refused (`out_of_range`), then the conversion, the offset and the scale
//! are undone.
//!
//! Units are converted by name within one quantity ([`unit`] lists them):
//! temperature, pressure, energy, power, volume, flow, length, speed,
//! current, voltage, time and frequency.

use crate::command::{CommandError, ErrorCode};
use crate::model::{PointError, PointErrorKind, PointMeta, Value};

/// A unit: what it measures and how to reach the quantity's base unit
/// (`base = value * factor + offset`).
#[derive(Debug, PartialEq)]
pub struct Unit {
    pub name: &'static str,
    pub quantity: &'static str,
    factor: f64,
    offset: f64,
}

const fn u(name: &'static str, quantity: &'static str, factor: f64, offset: f64) -> Unit {
    Unit {
        name,
        quantity,
        factor,
        offset,
    }
}

/// Every unit known by name.
pub static UNITS: &[Unit] = &[
    u("degC", "temperature", 1.0, 273.15),
    u("degF", "temperature", 5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0),
    u("K", "temperature", 1.0, 0.0),
    u("Pa", "pressure", 1.0, 0.0),
    u("hPa", "pressure", 1e2, 0.0),
    u("kPa", "pressure", 1e3, 0.0),
    u("MPa", "pressure", 1e6, 0.0),
    u("mbar", "pressure", 1e2, 0.0),
    u("bar", "pressure", 1e5, 0.0),
    u("psi", "pressure", 6_894.757_293_168, 0.0),
    u("J", "energy", 1.0, 0.0),
    u("kJ", "energy", 1e3, 0.0),
    u("MJ", "energy", 1e6, 0.0),
    u("Wh", "energy", 3.6e3, 0.0),
    u("kWh", "energy", 3.6e6, 0.0),
    u("MWh", "energy", 3.6e9, 0.0),
    u("W", "power", 1.0, 0.0),
    u("kW", "power", 1e3, 0.0),
    u("MW", "power", 1e6, 0.0),
    u("l", "volume", 1e-3, 0.0),
    u("m3", "volume", 1.0, 0.0),
    u("gal", "volume", 3.785_411_784e-3, 0.0),
    u("l/s", "flow", 1e-3, 0.0),
    u("l/min", "flow", 1e-3 / 60.0, 0.0),
    u("m3/h", "flow", 1.0 / 3600.0, 0.0),
    u("m3/s", "flow", 1.0, 0.0),
    u("mm", "length", 1e-3, 0.0),
    u("cm", "length", 1e-2, 0.0),
    u("m", "length", 1.0, 0.0),
    u("km", "length", 1e3, 0.0),
    u("in", "length", 0.0254, 0.0),
    u("ft", "length", 0.3048, 0.0),
    u("m/s", "speed", 1.0, 0.0),
    u("km/h", "speed", 1.0 / 3.6, 0.0),
    u("mph", "speed", 0.447_04, 0.0),
    u("mA", "current", 1e-3, 0.0),
    u("A", "current", 1.0, 0.0),
    u("mV", "voltage", 1e-3, 0.0),
    u("V", "voltage", 1.0, 0.0),
    u("kV", "voltage", 1e3, 0.0),
    u("ms", "time", 1e-3, 0.0),
    u("s", "time", 1.0, 0.0),
    u("min", "time", 60.0, 0.0),
    u("h", "time", 3600.0, 0.0),
    u("Hz", "frequency", 1.0, 0.0),
    u("kHz", "frequency", 1e3, 0.0),
];

/// The unit called `name` (`°C`, `°F`, `C`, `F` and `L` are accepted too).
pub fn unit(name: &str) -> Option<&'static Unit> {
    let name = match name.trim() {
        "°C" | "C" => "degC",
        "°F" | "F" => "degF",
        "L" => "l",
        other => other,
    };
    UNITS.iter().find(|u| u.name == name)
}

/// From one unit to another of the same quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    pub from: &'static Unit,
    pub to: &'static Unit,
}

impl Conversion {
    /// `"degC -> degF"`, checked: both units known, one quantity.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((from, to)) = text.split_once("->") else {
            return Err(format!(
                "`{text}` is not a conversion: write it as \"degC -> degF\""
            ));
        };
        let find = |name: &str| {
            unit(name).ok_or_else(|| {
                format!(
                    "unknown unit `{}`; known: {}",
                    name.trim(),
                    UNITS.iter().map(|u| u.name).collect::<Vec<_>>().join(", ")
                )
            })
        };
        let (from, to) = (find(from)?, find(to)?);
        if from.quantity != to.quantity {
            return Err(format!(
                "`{}` is a {} and `{}` a {}: they do not convert",
                from.name, from.quantity, to.name, to.quantity
            ));
        }
        Ok(Conversion { from, to })
    }

    fn apply(&self, x: f64) -> f64 {
        ((x * self.from.factor + self.from.offset) - self.to.offset) / self.to.factor
    }

    fn invert(&self, y: f64) -> f64 {
        ((y * self.to.factor + self.to.offset) - self.from.offset) / self.from.factor
    }
}

/// One point's transforms. The default changes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    pub scale: f64,
    pub offset: f64,
    pub convert: Option<Conversion>,
    /// Published values are kept within these bounds; writes outside them
    /// are refused.
    pub clamp_min: Option<f64>,
    pub clamp_max: Option<f64>,
}

impl Default for Transform {
    fn default() -> Self {
        Transform {
            scale: 1.0,
            offset: 0.0,
            convert: None,
            clamp_min: None,
            clamp_max: None,
        }
    }
}

impl Transform {
    pub fn is_identity(&self) -> bool {
        *self == Transform::default()
    }

    /// A value as read, transformed; a value that is not a number cannot
    /// be, and is a decode error of the point.
    pub fn forward(&self, value: Value) -> Result<Value, PointError> {
        if self.is_identity() {
            return Ok(value);
        }
        let Some(x) = number(&value) else {
            return Err(PointError::new(
                PointErrorKind::Decode,
                format!("a {} cannot be scaled or converted", value.type_name()),
            ));
        };
        let mut y = x * self.scale + self.offset;
        if let Some(c) = &self.convert {
            y = c.apply(y);
        }
        if let Some(lo) = self.clamp_min {
            y = y.max(lo);
        }
        if let Some(hi) = self.clamp_max {
            y = y.min(hi);
        }
        Ok(Value::Float(y))
    }

    /// A value to write, taken back to what the adapter expects: refused
    /// outside the clamp range; integral results become integers, so a
    /// register takes them.
    pub fn inverse(&self, value: &Value) -> Result<Value, CommandError> {
        if self.is_identity() {
            return Ok(value.clone());
        }
        let Some(y) = number(value) else {
            return Err(CommandError::new(
                ErrorCode::InvalidValue,
                format!("expected a number, got a {}", value.type_name()),
            ));
        };
        if self.clamp_min.is_some_and(|lo| y < lo) || self.clamp_max.is_some_and(|hi| y > hi) {
            return Err(CommandError::new(
                ErrorCode::OutOfRange,
                format!(
                    "{y} is outside {}..={}",
                    self.clamp_min.map_or("".into(), |v| v.to_string()),
                    self.clamp_max.map_or("".into(), |v| v.to_string())
                ),
            ));
        }
        let mut x = y;
        if let Some(c) = &self.convert {
            x = c.invert(x);
        }
        x = (x - self.offset) / self.scale;
        let rounded = x.round();
        if (x - rounded).abs() < 1e-9 * x.abs().max(1.0) && rounded.abs() < 9.0e15 {
            Ok(Value::Int(rounded as i64))
        } else {
            Ok(Value::Float(x))
        }
    }

    /// What the point's meta says once transformed: a float in the target
    /// unit, its write range mapped (and clamped), or the clamp range.
    pub fn meta(&self, meta: &PointMeta) -> PointMeta {
        if self.is_identity() {
            return meta.clone();
        }
        let map = |v: Option<f64>| {
            v.and_then(|x| self.forward(Value::Float(x)).ok().and_then(|v| v.as_f64()))
        };
        let (a, b) = (map(meta.min), map(meta.max));
        // A negative scale swaps the ends; `forward` clamped both.
        let (min, max) = match (a, b) {
            (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
            _ => (a, b),
        };
        let (min, max) = (min.or(self.clamp_min), max.or(self.clamp_max));
        PointMeta {
            data_type: "f64".into(),
            unit: self
                .convert
                .map(|c| c.to.name.to_string())
                .or_else(|| meta.unit.clone()),
            min,
            max,
            ..meta.clone()
        }
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => value.as_f64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * a.abs().max(1.0)
    }

    fn float(v: Result<Value, PointError>) -> f64 {
        v.ok().and_then(|v| v.as_f64()).expect("a number")
    }

    #[test]
    fn the_order_is_scale_offset_convert_clamp() {
        let t = Transform {
            scale: 0.1,
            offset: -40.0,
            convert: Some(Conversion::parse("degC -> degF").unwrap()),
            clamp_min: Some(-40.0),
            clamp_max: Some(200.0),
        };
        // raw 650 → 65.0 → 25.0 °C → 77 °F
        assert!(close(float(t.forward(Value::UInt(650))), 77.0));
        // raw 0 → -40 °C = -40 °F: at the clamp
        assert!(close(float(t.forward(Value::Int(0))), -40.0));
        // raw 5000 → 460 °C = 860 °F: clamped to 200
        assert_eq!(float(t.forward(Value::Int(5000))), 200.0);
    }

    #[test]
    fn writes_apply_the_inverse() {
        let t = Transform {
            scale: 0.1,
            offset: -40.0,
            convert: Some(Conversion::parse("degC->degF").unwrap()),
            clamp_min: Some(-40.0),
            clamp_max: Some(200.0),
        };
        assert_eq!(t.inverse(&Value::Float(77.0)), Ok(Value::Int(650)));
        assert_eq!(
            t.inverse(&Value::Int(201)).unwrap_err().code,
            ErrorCode::OutOfRange
        );
        assert_eq!(
            t.inverse(&Value::Bool(true)).unwrap_err().code,
            ErrorCode::InvalidValue
        );
        // Not integral: stays a float, for the adapter to refuse or round.
        assert!(matches!(
            t.inverse(&Value::Float(77.05)),
            Ok(Value::Float(_))
        ));
    }

    #[test]
    fn inverse_undoes_forward() {
        for text in ["kWh->MWh", "bar->psi", "degF->K", "m3/h->l/s", "km/h->mph"] {
            let t = Transform {
                scale: 0.5,
                offset: 3.0,
                convert: Some(Conversion::parse(text).unwrap()),
                ..Transform::default()
            };
            for raw in [-1000i64, -1, 0, 7, 12_345] {
                let y = t.forward(Value::Int(raw)).unwrap();
                assert_eq!(t.inverse(&y), Ok(Value::Int(raw)), "{text} {raw}");
            }
        }
    }

    #[test]
    fn conversions_are_checked() {
        assert!(
            Conversion::parse("degC")
                .unwrap_err()
                .contains("degC -> degF")
        );
        assert!(
            Conversion::parse("degC -> bar")
                .unwrap_err()
                .contains("do not convert")
        );
        assert!(
            Conversion::parse("furlong -> m")
                .unwrap_err()
                .contains("unknown unit `furlong`")
        );
        assert_eq!(Conversion::parse("°C -> K").unwrap().from.name, "degC");
        let c = Conversion::parse("psi -> kPa").unwrap();
        assert!(close(c.apply(1.0), 6.894_757_293_168));
    }

    #[test]
    fn non_numbers_are_a_decode_error_and_identity_passes_them() {
        let t = Transform {
            scale: 2.0,
            ..Transform::default()
        };
        let e = t.forward(Value::String("x".into())).unwrap_err();
        assert_eq!(e.kind, PointErrorKind::Decode);
        assert_eq!(
            Transform::default().forward(Value::Bool(true)),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn meta_gets_the_unit_and_the_range() {
        let t = Transform {
            scale: -2.0,
            convert: Some(Conversion::parse("kW -> W").unwrap()),
            clamp_max: Some(-10.0),
            ..Transform::default()
        };
        let meta = PointMeta {
            name: "p".into(),
            data_type: "i16".into(),
            unit: Some("kW".into()),
            min: Some(0.0),
            max: Some(100.0),
            ..PointMeta::default()
        };
        let m = t.meta(&meta);
        assert_eq!(m.unit.as_deref(), Some("W"));
        assert_eq!(m.data_type, "f64");
        assert_eq!((m.min, m.max), (Some(-200_000.0), Some(-10.0)));
    }
}
