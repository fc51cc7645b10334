//! Sparkplug B 3.0 edge node: the gateway's devices published the way
//! SCADA hosts (Ignition, hosts built on Eclipse Tahu) consume them, next
//! to the JSON contract.
//!
//! - [`proto`]: the payload messages (Tahu's `sparkplug_b.proto`, prost).
//! - [`metric`]: datatypes and the mapping to and from the value model.
//! - [`topic`]: topics and the device name to device id mapping.
//! - [`node`]: the edge node state machine (sans-IO).

pub mod metric;
pub mod node;
pub mod proto;
pub mod topic;
