//! The TOML shape of `[[modbus.connection]]`, `[[modbus.device]]`,
//! `[[modbus.device.point]]` and of a device profile (`profiles/<name>.toml`
//! with `[[point]]` entries). Only deserialization lives here; checks that
//! span entries (names, overlaps, line load) are in [`crate::build`].

use serde::Deserialize;
use serde::de::IgnoredAny;

use ferrogate_sdk::config::ConfigDuration;

use crate::point::{Area, Order, TypeName};
use crate::transport::Parity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    Tcp,
    Rtu,
    RtuOverTcp,
    Ascii,
    AsciiOverTcp,
    /// The device (a 4G/NB modem, a DTU) connects to the gateway.
    DialIn,
}

/// How requests are framed on a dial-in connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DialInFraming {
    Rtu,
    Tcp,
}

/// One serial line or TCP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    pub name: String,
    pub transport: TransportKind,
    /// `host:port` for `tcp`, `rtu-over-tcp` and `ascii-over-tcp` (port
    /// 502 if omitted).
    pub address: Option<String>,
    /// `dial-in`: where the gateway listens for the device.
    pub listen: Option<String>,
    /// `dial-in`: the registration packet the device sends first (text).
    pub registration: Option<String>,
    /// `dial-in`: or the device is known by its source address.
    pub peer: Option<String>,
    /// `dial-in`: RTU frames (default) or Modbus TCP over the connection.
    pub framing: Option<DialInFraming>,
    /// Serial device path for `rtu` and `ascii`.
    pub port: Option<String>,
    pub baud: Option<u32>,
    pub parity: Option<Parity>,
    pub data_bits: Option<u8>,
    pub stop_bits: Option<u8>,
    /// Longest wait for one answer.
    pub timeout: Option<ConfigDuration>,
    /// Quiet time between transactions (RTU default: 3.5 characters, at
    /// least 1.75 ms).
    pub frame_gap: Option<ConfigDuration>,
    /// Typical time a device takes to start answering; used only to
    /// estimate the line's load.
    pub response_time: Option<ConfigDuration>,
    pub connect_timeout: Option<ConfigDuration>,
    pub reconnect_min: Option<ConfigDuration>,
    pub reconnect_max: Option<ConfigDuration>,
    /// Consecutive timed-out cycles before a unit is backed off.
    pub backoff_after: Option<u32>,
    pub backoff_max: Option<ConfigDuration>,
}

/// One device (unit) on a connection. Its points come from a profile,
/// from `[[modbus.device.point]]`, or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    pub connection: String,
    pub unit: u32,
    pub profile: Option<String>,
    pub poll: Option<ConfigDuration>,
    pub report_on_change: Option<bool>,
    pub deadband: Option<f64>,
    pub deadband_percent: Option<f64>,
    pub span: Option<f64>,
    pub min_interval: Option<ConfigDuration>,
    pub max_interval: Option<ConfigDuration>,
    pub offline_after: Option<u32>,
    pub max_gap: Option<u16>,
    pub max_registers: Option<u16>,
    pub max_bits: Option<u16>,
    /// Write multi-register values with FC06 one register at a time, for
    /// devices without FC16.
    pub single_register_writes: Option<bool>,
    /// Read a point back after writing it and fail the write on mismatch.
    pub verify_writes: Option<bool>,
    /// Operations allowed on this device (`read`, `write`); all if absent.
    pub operations: Option<Vec<String>>,
    pub description: Option<String>,
    /// Parsed entry by entry in [`crate::build`], so every bad point is
    /// reported with its own position.
    #[serde(default, rename = "point")]
    pub _points: IgnoredAny,
}

/// A profile's own keys besides its `[[point]]`s: a description and the
/// report-by-exception defaults of the devices that use it (a device's
/// own keys win).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// For the reader of the file: checked to be text, published nowhere.
    #[serde(rename = "description")]
    pub _description: Option<String>,
    pub report_on_change: Option<bool>,
    pub deadband: Option<f64>,
    pub deadband_percent: Option<f64>,
    pub span: Option<f64>,
    pub min_interval: Option<ConfigDuration>,
    pub max_interval: Option<ConfigDuration>,
    #[serde(default, rename = "point")]
    pub _points: IgnoredAny,
}

/// One point, inline or in a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    pub name: String,
    pub area: Option<Area>,
    /// Zero-based protocol address.
    pub address: Option<u32>,
    /// Modicon reference (`40001` = holding register 0).
    pub modicon: Option<u32>,
    #[serde(rename = "type")]
    pub data_type: Option<TypeName>,
    pub order: Option<Order>,
    /// Bit 0..15 of a register, for `type = "bool"` on input/holding.
    pub bit: Option<u8>,
    /// Registers of a `string` or `bytes` point.
    pub length: Option<u16>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub unit: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub writable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub poll: Option<ConfigDuration>,
    pub deadband: Option<f64>,
    pub deadband_percent: Option<f64>,
    pub span: Option<f64>,
    pub min_interval: Option<ConfigDuration>,
    pub max_interval: Option<ConfigDuration>,
}
