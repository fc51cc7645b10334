//! ferrogate-sdk: the one contract between the ferrogate runtime and its
//! protocol adapters.
//!
//! - [`model`]: what goes north (telemetry, device status, metadata, events).
//! - [`command`]: what comes south (commands) and the single answer each gets.
//! - [`adapter`]: the [`Adapter`] trait and the [`AdapterContext`] it runs in.
//! - [`name`]: the one check a device name from the network passes.
//! - [`refusals`]: counts of network input an adapter refused, by reason.
//! - [`backoff`]: the one exponential backoff for every retry.
//! - [`report`] and [`stage`]: report by exception (deadbands, intervals,
//!   heartbeats), applied to every adapter's uplinks in one place, with
//!   the value [`transform`]s (scale, offset, units, clamp; inverted for
//!   writes).
//! - [`time`]: deadlines from durations that must not overflow the clock.
//! - [`config`]: span-keeping access to an adapter's TOML section, so
//!   validation errors point at `file:line:col`.
//!
//! An adapter crate depends on this crate only, never on the runtime.

pub mod adapter;
pub mod backoff;
pub mod command;
pub mod config;
pub mod hex;
pub mod model;
pub mod name;
pub mod refusals;
pub mod report;
pub mod stage;
pub mod testing;
pub mod time;
pub mod transform;

pub use adapter::{
    Adapter, AdapterContext, AdapterError, AdapterKind, BoxFuture, BuiltAdapter, CommandInbox,
    DeviceOwners, Health, UplinkEnvelope, UplinkObserver, UplinkSender, fingerprint,
};
pub use command::{Command, CommandError, CommandRequest, ErrorCode, Operation, Outcome};
pub use model::{
    DeviceEvent, DeviceForgotten, DeviceMeta, DeviceState, DeviceStatus, PointError,
    PointErrorKind, PointMeta, Reading, Telemetry, Timestamp, Uplink, Value,
};
pub use refusals::Refusals;
