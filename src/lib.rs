//! ferrogate runtime: configuration, the northbound path (codec, outbox,
//! MQTT session), the adapter supervisor, and the daemon that wires them.

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
#[cfg(feature = "embedded-broker")]
pub mod demo;
pub mod directory;
pub mod gateway;
pub mod histogram;
pub mod kinds;
pub mod logging;
pub mod metrics;
pub mod north;
pub mod router;
pub mod sparkplug;
pub mod state_lock;
pub mod supervisor;
pub mod systemd;
