//! ferrogate-modbus: the Modbus master adapter (TCP, RTU over a serial
//! line, RTU over TCP).
//!
//! [`ModbusKind`] owns the `modbus` table of the configuration. It builds
//! one adapter per `[[modbus.connection]]`, named `modbus/<connection>`,
//! that polls the connection's devices and executes their commands.
//!
//! Public for diagnostics such as `ferrogate modbus read|probe`:
//! - [`point`], [`codec`]: point maps and register ⇄ value conversion.
//! - [`pdu`], [`frame`]: the wire format (sans-IO).
//! - [`plan`]: the requests each poll cycle sends (`ferrogate modbus plan`).
//!
//! Internal: `config` and `build` (the TOML shape and its validation),
//! `planner` (merging points into requests, splitting after refusals),
//! `scheduler` (what the line does next, sans-IO), `quality`
//! (online/offline; report on change is the runtime's stage, from
//! `ferrogate_sdk::report`), `transport` and `line` (the I/O
//! shell and the running adapter).

pub mod codec;
pub mod frame;
pub mod pdu;
pub mod plan;
pub mod point;

mod build;
mod config;
mod line;
mod planner;
mod quality;
mod scheduler;
mod transport;

use ferrogate_sdk::config::{BuildContext, ConfigIssue, Section};
use ferrogate_sdk::{AdapterKind, BuiltAdapter};

/// The Modbus protocol, configured under the `modbus` key.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModbusKind;

impl AdapterKind for ModbusKind {
    fn key(&self) -> &'static str {
        "modbus"
    }

    fn build(
        &self,
        section: &Section<'_>,
        ctx: &BuildContext<'_>,
    ) -> Result<Vec<BuiltAdapter>, Vec<ConfigIssue>> {
        let built = build::build(section, ctx)?;
        Ok(built
            .lines
            .into_iter()
            .zip(built.notes)
            .map(|(line, notes)| BuiltAdapter {
                name: format!("modbus/{}", line.name),
                devices: line
                    .devices
                    .iter()
                    .map(|d| (d.name.clone(), d.pos.clone()))
                    .collect(),
                notes,
                fingerprint: ferrogate_sdk::fingerprint(&line),
                policies: line
                    .devices
                    .iter()
                    .map(|d| (d.name.clone(), d.policy.clone()))
                    .collect(),
                adapter: Box::new(line::ModbusLine::new(line)),
            })
            .collect())
    }
}
