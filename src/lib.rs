//! ferrogate runtime: configuration, the northbound path (codec, outbox,
//! MQTT session), the adapter supervisor, and the daemon that wires them.

pub mod config;
pub mod north;
pub mod simulator;
pub mod supervisor;
