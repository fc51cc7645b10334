//! ferrogate-lwm2m: ferrogate as an LwM2M server (1.0, 1.1, 1.2 over
//! CoAP/UDP), bridging LwM2M clients to the gateway's message model.
//!
//! The runtime uses [`Lwm2mKind`] (TOML key `lwm2m`, table
//! `[lwm2m.server]`): it builds one adapter named `lwm2m` with no static
//! devices; each registered client becomes a device.
//!
//! Pure protocol code, no I/O:
//! - [`path`]: LwM2M paths and `*` patterns.
//! - [`value`]: resource types and typed values.
//! - content formats: [`tlv`], [`senml`] (JSON and CBOR), [`lwm2m_json`],
//!   [`text`], [`link`], [`cbor`], and [`content`] tying them together.
//! - [`registry`]: object definitions (built-in core and IPSO objects, OMA
//!   XML files) for typing, naming points and validating writes.
//! - [`registration`]: the sans-IO registration table (lifetimes, queue
//!   mode, NAT rebinding, held commands).
//! - [`operations`]: commands to CoAP requests, answers to outcomes.
//! - [`server`]: the sans-IO server core on `ferrogate_coap::Endpoint`.
//!
//! [`config`] reads `[lwm2m.server]`; the adapter is a thin tokio shell
//! moving datagrams between a UDP socket and the core.

mod adapter;
pub mod bootstrap;
mod builtin;
pub mod cbor;
pub mod config;
pub mod content;
pub mod link;
pub mod lwm2m_json;
mod object_xml;
pub mod operations;
pub mod path;
pub mod registration;
pub mod registry;
pub mod senml;
pub mod server;
pub mod text;
pub mod tlv;
pub mod value;

pub use adapter::{Lwm2mAdapter, Lwm2mKind};
pub use content::{ContentError, ContentFormat, PathValue};
pub use path::{Path, PathPattern};
pub use registration::{Binding, Registration, RegistrationTable, Security, Version};
pub use registry::{ObjectDef, ObjectRegistry, PointNaming, ResourceDef};
pub use value::{ResourceType, ResourceValue};
