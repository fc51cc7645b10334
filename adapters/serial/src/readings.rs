//! A parsed frame's fields turned into the device's readings.

use ferrogate_sdk::{PointError, PointErrorKind, Reading, Timestamp};

use crate::config::Device;
use crate::parse::{self, Fields};

/// Typed readings of a parsed frame. A point whose field is absent is
/// an error when the frame was the answer to a query, and simply not in
/// this frame otherwise.
pub fn readings(device: &Device, fields: &Fields, ts: Timestamp, answer: bool) -> Vec<Reading> {
    let parser = &device.parser;
    device
        .points
        .iter()
        .filter_map(|p| match parser.lookup(fields, &p.source) {
            Some(field) => Some(match parse::typed(field, p.ty, p.scale, p.offset) {
                Ok(v) => Reading::ok(p.name.clone(), v, ts),
                Err(e) => Reading::failed(
                    p.name.clone(),
                    PointError::new(PointErrorKind::Decode, e),
                    ts,
                ),
            }),
            None if answer => Some(Reading::failed(
                p.name.clone(),
                PointError::new(
                    PointErrorKind::Decode,
                    format!("`{}` missing from the reply", p.source),
                ),
                ts,
            )),
            None => None,
        })
        .collect()
}
