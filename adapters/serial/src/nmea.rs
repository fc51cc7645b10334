//! NMEA 0183 sentences (GPS receivers): checksum validation and the GGA and
//! RMC sentences as typed fields.
//!
//! A sentence is `$` talker+type `,` fields `*` two hex digits; the checksum
//! is the XOR of every byte between `$` and `*` (NMEA 0183 v4.11 §5.2.1).
//! Positions are `ddmm.mmmm` with a hemisphere letter and become signed
//! decimal degrees (south and west negative). Empty fields, as sent before a
//! fix, produce no value rather than a zero.

use ferrogate_sdk::Value;

/// Why a frame is not a usable NMEA sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NmeaError {
    #[error("not an NMEA sentence (must start with `$` or `!`)")]
    NoStart,
    #[error("sentence is not ASCII")]
    NotAscii,
    #[error("missing checksum (`*hh`)")]
    MissingChecksum,
    #[error("malformed checksum `{0}`")]
    BadChecksumField(String),
    #[error("checksum mismatch: sentence says {stated:02X}, computed {computed:02X}")]
    ChecksumMismatch { stated: u8, computed: u8 },
    #[error("sentence address `{0}` is not talker + type")]
    BadAddress(String),
    #[error("{sentence} field {index} (`{text}`) is invalid: {why}")]
    BadField {
        sentence: &'static str,
        index: usize,
        text: String,
        why: &'static str,
    },
}

impl NmeaError {
    pub fn is_checksum(&self) -> bool {
        matches!(
            self,
            NmeaError::ChecksumMismatch { .. } | NmeaError::MissingChecksum
        )
    }
}

/// A checked sentence: its address split, the data fields, and the typed
/// values this crate knows how to read from it (empty for sentence types
/// it does not interpret).
#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    pub talker: String,
    pub kind: String,
    pub values: Vec<(&'static str, Value)>,
}

/// The XOR checksum of a sentence body (the bytes between `$` and `*`).
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0, |acc, b| acc ^ b)
}

/// `$body*HH`, the wire form of a sentence body (no line ending).
pub fn with_checksum(body: &str) -> String {
    format!("${body}*{:02X}", checksum(body.as_bytes()))
}

/// Check and read one sentence (without its line ending).
pub fn parse(frame: &[u8], require_checksum: bool) -> Result<Sentence, NmeaError> {
    let text = std::str::from_utf8(frame).map_err(|_| NmeaError::NotAscii)?;
    if !text.is_ascii() {
        return Err(NmeaError::NotAscii);
    }
    let text = text.trim_end_matches(['\r', '\n']);
    let rest = text
        .strip_prefix('$')
        .or_else(|| text.strip_prefix('!'))
        .ok_or(NmeaError::NoStart)?;
    let body = match rest.rsplit_once('*') {
        Some((body, stated)) => {
            let stated_value = u8::from_str_radix(stated, 16)
                .ok()
                .filter(|_| stated.len() == 2)
                .ok_or_else(|| NmeaError::BadChecksumField(stated.to_string()))?;
            let computed = checksum(body.as_bytes());
            if stated_value != computed {
                return Err(NmeaError::ChecksumMismatch {
                    stated: stated_value,
                    computed,
                });
            }
            body
        }
        None if require_checksum => return Err(NmeaError::MissingChecksum),
        None => rest,
    };
    let mut fields = body.split(',');
    let address = fields.next().unwrap_or_default();
    if address.len() < 3 || !address.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(NmeaError::BadAddress(address.to_string()));
    }
    // Proprietary sentences (`$P…`) have a one-letter prefix, others a
    // two-letter talker.
    let split = if address.starts_with('P') { 1 } else { 2 };
    let (talker, kind) = address.split_at(split);
    let fields: Vec<&str> = fields.collect();
    let values = match kind {
        "GGA" => gga(&fields)?,
        "RMC" => rmc(&fields)?,
        _ => Vec::new(),
    };
    Ok(Sentence {
        talker: talker.to_string(),
        kind: kind.to_string(),
        values,
    })
}

/// The field names GGA and RMC can produce, for default points.
pub const FIELDS: &[(&str, &str, Option<&str>)] = &[
    ("lat", "f64", Some("deg")),
    ("lon", "f64", Some("deg")),
    ("fix_quality", "u64", None),
    ("satellites", "u64", None),
    ("hdop", "f64", None),
    ("altitude", "f64", Some("m")),
    ("geoid_separation", "f64", Some("m")),
    ("utc_time", "string", None),
    ("valid", "bool", None),
    ("speed_knots", "f64", Some("kn")),
    ("speed_kmh", "f64", Some("km/h")),
    ("course", "f64", Some("deg")),
    ("date", "string", None),
];

struct Fields<'a> {
    sentence: &'static str,
    fields: &'a [&'a str],
    out: Vec<(&'static str, Value)>,
}

impl<'a> Fields<'a> {
    fn text(&self, index: usize) -> Option<&'a str> {
        self.fields.get(index).copied().filter(|t| !t.is_empty())
    }

    fn bad(&self, index: usize, why: &'static str) -> NmeaError {
        NmeaError::BadField {
            sentence: self.sentence,
            index: index + 1,
            text: self.text(index).unwrap_or_default().to_string(),
            why,
        }
    }

    fn float(&mut self, name: &'static str, index: usize) -> Result<Option<f64>, NmeaError> {
        let Some(text) = self.text(index) else {
            return Ok(None);
        };
        let v: f64 = text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| self.bad(index, "not a number"))?;
        self.out.push((name, Value::Float(v)));
        Ok(Some(v))
    }

    fn unsigned(&mut self, name: &'static str, index: usize) -> Result<(), NmeaError> {
        if let Some(text) = self.text(index) {
            let v: u64 = text
                .parse()
                .map_err(|_| self.bad(index, "not an unsigned integer"))?;
            self.out.push((name, Value::UInt(v)));
        }
        Ok(())
    }

    fn string(&mut self, name: &'static str, index: usize) {
        if let Some(text) = self.text(index) {
            self.out.push((name, Value::String(text.to_string())));
        }
    }

    /// `ddmm.mmmm` (or `dddmm.mmmm`) and a hemisphere letter.
    fn coordinate(
        &mut self,
        name: &'static str,
        index: usize,
        positive: char,
        negative: char,
        max_degrees: f64,
    ) -> Result<(), NmeaError> {
        let (Some(text), hemisphere) = (self.text(index), self.text(index + 1)) else {
            return Ok(());
        };
        let raw: f64 = text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| self.bad(index, "not a ddmm.mmmm coordinate"))?;
        let degrees = (raw / 100.0).trunc();
        let minutes = raw - degrees * 100.0;
        if minutes >= 60.0 {
            return Err(self.bad(index, "minutes are 60 or more"));
        }
        let magnitude = degrees + minutes / 60.0;
        if magnitude > max_degrees {
            return Err(self.bad(index, "coordinate out of range"));
        }
        let sign = match hemisphere.and_then(|h| h.chars().next()) {
            Some(c) if c == positive => 1.0,
            Some(c) if c == negative => -1.0,
            _ => return Err(self.bad(index + 1, "hemisphere must be given")),
        };
        self.out.push((name, Value::Float(sign * magnitude)));
        Ok(())
    }
}

/// GGA: time, lat, N/S, lon, E/W, fix quality, satellites, HDOP, altitude,
/// M, geoid separation, M, …
fn gga(fields: &[&str]) -> Result<Vec<(&'static str, Value)>, NmeaError> {
    let mut f = Fields {
        sentence: "GGA",
        fields,
        out: Vec::new(),
    };
    f.string("utc_time", 0);
    f.coordinate("lat", 1, 'N', 'S', 90.0)?;
    f.coordinate("lon", 3, 'E', 'W', 180.0)?;
    f.unsigned("fix_quality", 5)?;
    f.unsigned("satellites", 6)?;
    f.float("hdop", 7)?;
    f.float("altitude", 8)?;
    f.float("geoid_separation", 10)?;
    Ok(f.out)
}

/// RMC: time, status A/V, lat, N/S, lon, E/W, speed (knots), course, date
/// (ddmmyy), …
fn rmc(fields: &[&str]) -> Result<Vec<(&'static str, Value)>, NmeaError> {
    let mut f = Fields {
        sentence: "RMC",
        fields,
        out: Vec::new(),
    };
    f.string("utc_time", 0);
    match f.text(1) {
        Some("A") => f.out.push(("valid", Value::Bool(true))),
        Some("V") => f.out.push(("valid", Value::Bool(false))),
        Some(_) => return Err(f.bad(1, "status must be A or V")),
        None => {}
    }
    f.coordinate("lat", 2, 'N', 'S', 90.0)?;
    f.coordinate("lon", 4, 'E', 'W', 180.0)?;
    if let Some(knots) = f.float("speed_knots", 6)? {
        f.out.push(("speed_kmh", Value::Float(knots * 1.852)));
    }
    f.float("course", 7)?;
    if let Some(date) = f.text(8) {
        let ok = date.len() == 6 && date.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(f.bad(8, "date must be ddmmyy"));
        }
        let (dd, rest) = date.split_at(2);
        let (mm, yy) = rest.split_at(2);
        // RMC has a two-digit year; GPS did not exist before 1980.
        let century = if yy >= "80" { "19" } else { "20" };
        f.out
            .push(("date", Value::String(format!("{century}{yy}-{mm}-{dd}"))));
    }
    Ok(f.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(s: &'a Sentence, name: &str) -> Option<&'a Value> {
        s.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn float(s: &Sentence, name: &str) -> f64 {
        value(s, name).and_then(Value::as_f64).unwrap()
    }

    #[test]
    fn gga_from_a_real_receiver() {
        let s = parse(
            b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
            true,
        )
        .unwrap();
        assert_eq!((s.talker.as_str(), s.kind.as_str()), ("GP", "GGA"));
        assert!((float(&s, "lat") - 48.1173).abs() < 1e-9);
        assert!((float(&s, "lon") - 11.516_666_666).abs() < 1e-6);
        assert_eq!(value(&s, "fix_quality"), Some(&Value::UInt(1)));
        assert_eq!(value(&s, "satellites"), Some(&Value::UInt(8)));
        assert_eq!(float(&s, "altitude"), 545.4);
    }

    #[test]
    fn rmc_southern_western_hemispheres_are_negative() {
        let line = with_checksum("GNRMC,225446,A,4916.45,S,12311.12,W,000.5,054.7,191194,020.3,E");
        let s = parse(line.as_bytes(), true).unwrap();
        assert!(float(&s, "lat") < -49.27 && float(&s, "lat") > -49.28);
        assert!(float(&s, "lon") < -123.18);
        assert_eq!(value(&s, "valid"), Some(&Value::Bool(true)));
        assert!((float(&s, "speed_kmh") - 0.926).abs() < 1e-9);
        assert_eq!(value(&s, "date"), Some(&Value::String("1994-11-19".into())));
    }

    #[test]
    fn no_fix_gives_no_position() {
        let line = with_checksum("GPGGA,,,,,,0,00,,,M,,M,,");
        let s = parse(line.as_bytes(), true).unwrap();
        assert!(value(&s, "lat").is_none());
        assert_eq!(value(&s, "fix_quality"), Some(&Value::UInt(0)));
    }

    #[test]
    fn checksum_errors() {
        let err = parse(b"$GPGGA,123519,4807.038,N*00", true).unwrap_err();
        assert!(err.is_checksum(), "{err}");
        assert!(parse(b"$GPGGA,123519", true).unwrap_err().is_checksum());
        assert!(parse(b"$GPGGA,123519", false).is_ok());
        assert!(matches!(
            parse(b"$GPGGA*4", true),
            Err(NmeaError::BadChecksumField(_))
        ));
        assert_eq!(parse(b"GPGGA", true), Err(NmeaError::NoStart));
    }

    #[test]
    fn bad_fields_are_errors_not_values() {
        let line = with_checksum("GPGGA,1,48x7.0,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
        assert!(matches!(
            parse(line.as_bytes(), true),
            Err(NmeaError::BadField { index: 2, .. })
        ));
        let line = with_checksum("GPGGA,1,4807.0,,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
        assert!(parse(line.as_bytes(), true).is_err());
    }
}
