//! NMEA 0183 sentences (GPS receivers, weather stations, marine
//! instruments): checksum validation and typed fields of GGA, RMC, GLL, VTG,
//! ZDA, GSA, GSV (counts), HDT, HDG, MWV, MDA, MTW and XDR (one field per
//! transducer name); every sentence's raw fields as `TYPE.N` for a generic
//! mapping by field index.
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
    /// Typed values by field name (an XDR transducer's is its name).
    pub values: Vec<(String, Value)>,
    /// The data fields as sent, numbered from 1 (`TYPE.1` is `fields[0]`).
    pub fields: Vec<String>,
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
    let typed = match kind {
        "GGA" => gga(&fields)?,
        "RMC" => rmc(&fields)?,
        "GLL" => gll(&fields)?,
        "VTG" => vtg(&fields)?,
        "ZDA" => zda(&fields)?,
        "GSA" => gsa(&fields)?,
        "GSV" => gsv(&fields)?,
        "HDT" => hdt(&fields)?,
        "HDG" => hdg(&fields)?,
        "MWV" => mwv(&fields)?,
        "MDA" => mda(&fields)?,
        "MTW" => mtw(&fields)?,
        "XDR" => return xdr(talker, &fields),
        _ => Vec::new(),
    };
    Ok(Sentence {
        talker: talker.to_string(),
        kind: kind.to_string(),
        values: typed.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
    })
}

/// The sentence types read into named fields.
pub const SUPPORTED: &[&str] = &[
    "GGA", "RMC", "GLL", "VTG", "ZDA", "GSA", "GSV", "HDT", "HDG", "MWV", "MDA", "MTW", "XDR",
];

/// The counter a well-formed sentence no point uses goes to (`status`
/// `adapters[].refused`, metrics `ferrogate_adapter_refused_total`): one
/// per supported sentence type, `unused_other` for the rest.
pub fn unused_reason(kind: &str) -> &'static str {
    const REASONS: &[(&str, &str)] = &[
        ("GGA", "unused_gga"),
        ("RMC", "unused_rmc"),
        ("GLL", "unused_gll"),
        ("VTG", "unused_vtg"),
        ("ZDA", "unused_zda"),
        ("GSA", "unused_gsa"),
        ("GSV", "unused_gsv"),
        ("HDT", "unused_hdt"),
        ("HDG", "unused_hdg"),
        ("MWV", "unused_mwv"),
        ("MDA", "unused_mda"),
        ("MTW", "unused_mtw"),
        ("XDR", "unused_xdr"),
    ];
    REASONS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("unused_other", |(_, r)| r)
}

/// A point source that names a raw field, `TYPE.N` (`MWV.3`): the sentence
/// type and the 1-based field number after the address.
pub fn field_index(source: &str) -> Option<(&str, usize)> {
    let (kind, n) = source.split_once('.')?;
    let ok_kind = (3..=5).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let n: usize = n.parse().ok().filter(|n| *n >= 1)?;
    ok_kind.then_some((kind, n))
}

/// Whether `source` can be an XDR transducer name (`TEMP`, `HUM`,
/// `BARO`): what config check accepts besides the named fields.
pub fn is_transducer_name(source: &str) -> bool {
    !source.is_empty()
        && source.len() <= 32
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !FIELDS.iter().any(|(n, _, _)| *n == source)
}

/// The field names GGA and RMC can produce, for default points (a GPS
/// receiver needs no point list).
pub const GPS_FIELDS: usize = 13;

/// Every named field the supported sentences produce: name, type, unit.
/// The first [`GPS_FIELDS`] are GGA's and RMC's.
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
    // VTG, HDT, HDG
    ("course_magnetic", "f64", Some("deg")),
    ("heading_true", "f64", Some("deg")),
    ("heading_magnetic", "f64", Some("deg")),
    ("magnetic_deviation", "f64", Some("deg")),
    ("magnetic_variation", "f64", Some("deg")),
    // GSA, GSV
    ("fix_type", "u64", None),
    ("satellites_used", "u64", None),
    ("pdop", "f64", None),
    ("vdop", "f64", None),
    ("satellites_in_view", "u64", None),
    // MWV, MDA, MTW
    ("wind_angle", "f64", Some("deg")),
    ("wind_reference", "string", None),
    ("wind_speed", "f64", Some("m/s")),
    ("wind_direction_true", "f64", Some("deg")),
    ("wind_direction_magnetic", "f64", Some("deg")),
    ("pressure", "f64", Some("bar")),
    ("air_temperature", "f64", Some("Cel")),
    ("water_temperature", "f64", Some("Cel")),
    ("relative_humidity", "f64", Some("%")),
    ("dew_point", "f64", Some("Cel")),
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

impl<'a> Fields<'a> {
    /// A field that must be `expected` (a unit or reference letter) when
    /// the value before it is given.
    fn letter(&self, index: usize, expected: &[&str], why: &'static str) -> Result<(), NmeaError> {
        match self.text(index) {
            Some(t) if !expected.contains(&t) => Err(self.bad(index, why)),
            _ => Ok(()),
        }
    }

    /// A float whose value is followed by a status `A` (valid) / `V`.
    fn valid_flag(&mut self, index: usize) -> Result<(), NmeaError> {
        match self.text(index) {
            Some("A") => self.out.push(("valid", Value::Bool(true))),
            Some("V") => self.out.push(("valid", Value::Bool(false))),
            Some(_) => return Err(self.bad(index, "status must be A or V")),
            None => {}
        }
        Ok(())
    }

    fn new(sentence: &'static str, fields: &'a [&'a str]) -> Fields<'a> {
        Fields {
            sentence,
            fields,
            out: Vec::new(),
        }
    }
}

type Typed = Result<Vec<(&'static str, Value)>, NmeaError>;

/// GLL: lat, N/S, lon, E/W, time, status A/V, …
fn gll(fields: &[&str]) -> Typed {
    let mut f = Fields::new("GLL", fields);
    f.coordinate("lat", 0, 'N', 'S', 90.0)?;
    f.coordinate("lon", 2, 'E', 'W', 180.0)?;
    f.string("utc_time", 4);
    f.valid_flag(5)?;
    Ok(f.out)
}

/// VTG: course true, T, course magnetic, M, speed knots, N, speed km/h, K.
fn vtg(fields: &[&str]) -> Typed {
    let mut f = Fields::new("VTG", fields);
    f.float("course", 0)?;
    f.letter(1, &["T"], "reference must be T")?;
    f.float("course_magnetic", 2)?;
    f.letter(3, &["M"], "reference must be M")?;
    f.float("speed_knots", 4)?;
    f.letter(5, &["N"], "unit must be N")?;
    f.float("speed_kmh", 6)?;
    f.letter(7, &["K"], "unit must be K")?;
    Ok(f.out)
}

/// ZDA: time, day, month, year, local zone hours, minutes.
fn zda(fields: &[&str]) -> Typed {
    let mut f = Fields::new("ZDA", fields);
    f.string("utc_time", 0);
    if let (Some(d), Some(m), Some(y)) = (f.text(1), f.text(2), f.text(3)) {
        let num = |t: &str, len: usize, max: u32| {
            t.len() == len
                && t.bytes().all(|b| b.is_ascii_digit())
                && t.parse::<u32>().is_ok_and(|v| (1..=max).contains(&v))
        };
        if !num(d, 2, 31) {
            return Err(f.bad(1, "day must be 01-31"));
        }
        if !num(m, 2, 12) {
            return Err(f.bad(2, "month must be 01-12"));
        }
        if !num(y, 4, 9999) {
            return Err(f.bad(3, "year must have four digits"));
        }
        f.out.push(("date", Value::String(format!("{y}-{m}-{d}"))));
    }
    Ok(f.out)
}

/// GSA: mode, fix type, 12 satellite ids, PDOP, HDOP, VDOP.
fn gsa(fields: &[&str]) -> Typed {
    let mut f = Fields::new("GSA", fields);
    f.unsigned("fix_type", 1)?;
    let used = (2..14).filter(|i| f.text(*i).is_some()).count();
    f.out.push(("satellites_used", Value::UInt(used as u64)));
    f.float("pdop", 14)?;
    f.float("hdop", 15)?;
    f.float("vdop", 16)?;
    Ok(f.out)
}

/// GSV: messages, message number, satellites in view, then per satellite.
fn gsv(fields: &[&str]) -> Typed {
    let mut f = Fields::new("GSV", fields);
    f.unsigned("satellites_in_view", 2)?;
    Ok(f.out)
}

/// HDT: heading, T.
fn hdt(fields: &[&str]) -> Typed {
    let mut f = Fields::new("HDT", fields);
    f.float("heading_true", 0)?;
    f.letter(1, &["T"], "reference must be T")?;
    Ok(f.out)
}

/// A signed angle: value and E (positive) / W (negative).
fn east_west(f: &mut Fields<'_>, name: &'static str, index: usize) -> Result<(), NmeaError> {
    let Some(text) = f.text(index) else {
        return Ok(());
    };
    let v: f64 = text
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| f.bad(index, "not a number"))?;
    let sign = match f.text(index + 1) {
        Some("E") => 1.0,
        Some("W") => -1.0,
        _ => return Err(f.bad(index + 1, "direction must be E or W")),
    };
    f.out.push((name, Value::Float(sign * v)));
    Ok(())
}

/// HDG: magnetic heading, deviation, E/W, variation, E/W.
fn hdg(fields: &[&str]) -> Typed {
    let mut f = Fields::new("HDG", fields);
    f.float("heading_magnetic", 0)?;
    east_west(&mut f, "magnetic_deviation", 1)?;
    east_west(&mut f, "magnetic_variation", 3)?;
    Ok(f.out)
}

/// MWV: wind angle, reference R/T, speed, unit K/M/N/S, status A/V. Speed
/// in m/s whatever the unit sent.
fn mwv(fields: &[&str]) -> Typed {
    let mut f = Fields::new("MWV", fields);
    f.float("wind_angle", 0)?;
    match f.text(1) {
        Some(r @ ("R" | "T")) => f.out.push((
            "wind_reference",
            Value::String(if r == "R" { "relative" } else { "true" }.into()),
        )),
        Some(_) => return Err(f.bad(1, "reference must be R or T")),
        None => {}
    }
    if let Some(text) = f.text(2) {
        let v: f64 = text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| f.bad(2, "not a speed"))?;
        let per_ms = match f.text(3) {
            Some("M") => 1.0,
            Some("K") => 1.0 / 3.6,
            Some("N") => 1852.0 / 3600.0,
            Some("S") => 0.447_04,
            _ => return Err(f.bad(3, "unit must be K, M, N or S")),
        };
        f.out.push(("wind_speed", Value::Float(v * per_ms)));
    }
    f.valid_flag(4)?;
    Ok(f.out)
}

/// MDA: pressure inHg, I, pressure bar, B, air °C, C, water °C, C, relative
/// humidity, absolute humidity, dew point °C, C, wind direction true, T,
/// magnetic, M, wind speed knots, N, m/s, M.
fn mda(fields: &[&str]) -> Typed {
    let mut f = Fields::new("MDA", fields);
    f.float("pressure", 2)?;
    f.letter(3, &["B"], "unit must be B")?;
    f.float("air_temperature", 4)?;
    f.letter(5, &["C"], "unit must be C")?;
    f.float("water_temperature", 6)?;
    f.letter(7, &["C"], "unit must be C")?;
    f.float("relative_humidity", 8)?;
    f.float("dew_point", 10)?;
    f.letter(11, &["C"], "unit must be C")?;
    f.float("wind_direction_true", 12)?;
    f.float("wind_direction_magnetic", 14)?;
    f.float("wind_speed", 18)?;
    f.letter(19, &["M"], "unit must be M")?;
    Ok(f.out)
}

/// MTW: water temperature, C.
fn mtw(fields: &[&str]) -> Typed {
    let mut f = Fields::new("MTW", fields);
    f.float("water_temperature", 0)?;
    f.letter(1, &["C"], "unit must be C")?;
    Ok(f.out)
}

/// XDR: quadruplets of transducer type, value, unit, name; each value
/// becomes a field named by its transducer (`TEMP`). A quadruplet with an
/// empty value gives nothing; one without a name is an error.
fn xdr(talker: &str, fields: &[&str]) -> Result<Sentence, NmeaError> {
    let f = Fields::new("XDR", fields);
    if fields.len() % 4 != 0 {
        return Err(f.bad(fields.len().saturating_sub(1), "XDR fields come in fours"));
    }
    let mut values = Vec::new();
    for q in 0..fields.len() / 4 {
        let base = q * 4;
        let (Some(value), name) = (f.text(base + 1), f.text(base + 3)) else {
            continue;
        };
        let Some(name) =
            name.filter(|n| is_transducer_name(n) || FIELDS.iter().any(|(f, _, _)| *f == *n))
        else {
            return Err(f.bad(base + 3, "transducer name missing or not a name"));
        };
        let v: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| f.bad(base + 1, "not a number"))?;
        values.push((name.to_string(), Value::Float(v)));
    }
    Ok(Sentence {
        talker: talker.to_string(),
        kind: "XDR".into(),
        values,
        fields: fields.iter().map(|f| f.to_string()).collect(),
    })
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

    #[test]
    fn weather_station_transducers() {
        let s = parse(b"$WIXDR,C,21.5,C,TEMP,H,40,P,HUM*08", true).unwrap();
        assert_eq!(s.kind, "XDR");
        assert_eq!(value(&s, "TEMP"), Some(&Value::Float(21.5)));
        assert_eq!(value(&s, "HUM"), Some(&Value::Float(40.0)));
        let bad = with_checksum("WIXDR,C,21.5,C");
        assert!(parse(bad.as_bytes(), true).is_err());
        let unnamed = with_checksum("WIXDR,C,21.5,C,");
        assert!(parse(unnamed.as_bytes(), true).is_err());
        let junk = with_checksum("WIXDR,C,2x,C,TEMP");
        assert!(parse(junk.as_bytes(), true).is_err());
    }

    #[test]
    fn every_supported_sentence_gives_its_fields() {
        let cases: &[(&str, &[(&str, Value)])] = &[
            (
                "IIMWV,045.0,R,10.0,N,A",
                &[
                    ("wind_angle", Value::Float(45.0)),
                    ("wind_reference", Value::String("relative".into())),
                    ("valid", Value::Bool(true)),
                ],
            ),
            ("IIMTW,12.5,C", &[("water_temperature", Value::Float(12.5))]),
            (
                "GPVTG,054.7,T,034.4,M,005.5,N,010.2,K",
                &[
                    ("course", Value::Float(54.7)),
                    ("course_magnetic", Value::Float(34.4)),
                    ("speed_knots", Value::Float(5.5)),
                    ("speed_kmh", Value::Float(10.2)),
                ],
            ),
            (
                "GPZDA,201530.00,04,07,2002,00,00",
                &[
                    ("utc_time", Value::String("201530.00".into())),
                    ("date", Value::String("2002-07-04".into())),
                ],
            ),
            ("HEHDT,274.07,T", &[("heading_true", Value::Float(274.07))]),
            (
                "HCHDG,98.3,0.0,E,12.6,W",
                &[
                    ("heading_magnetic", Value::Float(98.3)),
                    ("magnetic_deviation", Value::Float(0.0)),
                    ("magnetic_variation", Value::Float(-12.6)),
                ],
            ),
            (
                "GPGLL,4916.45,N,12311.12,W,225444,A",
                &[
                    ("utc_time", Value::String("225444".into())),
                    ("valid", Value::Bool(true)),
                ],
            ),
            (
                "GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1",
                &[
                    ("fix_type", Value::UInt(3)),
                    ("satellites_used", Value::UInt(5)),
                    ("pdop", Value::Float(2.5)),
                    ("hdop", Value::Float(1.3)),
                    ("vdop", Value::Float(2.1)),
                ],
            ),
            (
                "GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00",
                &[("satellites_in_view", Value::UInt(11))],
            ),
            (
                "WIMDA,29.9,I,1.0130,B,21.5,C,,,45.0,,9.1,C,180.0,T,175.0,M,5.0,N,2.6,M",
                &[
                    ("pressure", Value::Float(1.013)),
                    ("air_temperature", Value::Float(21.5)),
                    ("relative_humidity", Value::Float(45.0)),
                    ("dew_point", Value::Float(9.1)),
                    ("wind_direction_true", Value::Float(180.0)),
                    ("wind_speed", Value::Float(2.6)),
                ],
            ),
        ];
        for (body, expected) in cases {
            let s = parse(with_checksum(body).as_bytes(), true)
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            for (name, v) in *expected {
                assert_eq!(value(&s, name), Some(v), "{body}: {name}");
                assert!(FIELDS.iter().any(|(n, _, _)| n == name), "{name} is listed");
            }
        }
        let gll = parse(
            with_checksum("GPGLL,4916.45,N,12311.12,W,225444,A").as_bytes(),
            true,
        )
        .unwrap();
        assert!(float(&gll, "lon") < -123.18);
        let mwv = parse(with_checksum("IIMWV,045.0,R,10.0,N,A").as_bytes(), true).unwrap();
        assert!(
            (float(&mwv, "wind_speed") - 5.144).abs() < 1e-3,
            "knots to m/s"
        );
    }

    #[test]
    fn malformed_fields_of_new_sentences_are_errors() {
        for body in [
            "IIMWV,045.0,X,10.0,N,A",
            "IIMWV,045.0,R,10.0,Q,A",
            "IIMTW,12.5,F",
            "GPVTG,054.7,X,034.4,M,005.5,N,010.2,K",
            "GPZDA,201530.00,32,07,2002,00,00",
            "HCHDG,98.3,0.0,X,12.6,W",
            "GPGSA,A,x,04",
            "WIMDA,29.9,I,1.0130,B,hot,C",
        ] {
            assert!(
                parse(with_checksum(body).as_bytes(), true).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn raw_fields_and_generic_sources() {
        let s = parse(with_checksum("PXYZ,1.5,on,,7").as_bytes(), true).unwrap();
        assert_eq!(s.kind, "XYZ");
        assert_eq!(s.fields, ["1.5", "on", "", "7"]);
        assert!(s.values.is_empty());
        assert_eq!(field_index("XYZ.4"), Some(("XYZ", 4)));
        assert_eq!(field_index("MWV.0"), None);
        assert_eq!(field_index("temp.1"), None);
        assert!(is_transducer_name("TEMP"));
        assert!(!is_transducer_name("lat"));
        assert!(!is_transducer_name("a b"));
    }
}
