//! ferrogate-serial: line-protocol instruments (scales, analysers, GPS
//! receivers, legacy controllers) on RS-232/485 ports, described in TOML.
//!
//! - [`framer`]: sans-IO framing (delimiter, fixed, STX/ETX, length prefix).
//! - [`parse`] and [`nmea`]: frames to named fields, fields to typed values.
//! - [`template`]: command templates such as `"SET {value:.1}\r"`.
//! - [`config`]: the `[[serial.device]]` table and its validation.
//! - [`SerialKind`]: the [`AdapterKind`](ferrogate_sdk::AdapterKind) the
//!   runtime registers under the TOML key `serial`.

mod adapter;
pub mod bytes;
pub mod config;
mod downlink;
pub mod framer;
mod line;
mod meta;
pub mod nmea;
pub mod parse;
mod port;
mod readings;
mod report;
pub mod template;

pub use adapter::{SerialAdapter, SerialKind};
