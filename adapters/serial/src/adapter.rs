//! The serial protocol as the runtime sees it: [`SerialKind`] builds one
//! [`SerialAdapter`] per `[[serial.device]]` (one device owns one port).

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrogate_sdk::config::{BuildContext, ConfigIssue, Section};
use ferrogate_sdk::{Adapter, AdapterContext, AdapterError, AdapterKind, BoxFuture, BuiltAdapter};

use crate::config::{self, Device};
use crate::line::{Line, LineCounters};

/// The `serial` adapter kind: `[[serial.device]]` entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct SerialKind;

impl AdapterKind for SerialKind {
    fn key(&self) -> &'static str {
        "serial"
    }

    fn build(
        &self,
        section: &Section<'_>,
        _ctx: &BuildContext<'_>,
    ) -> Result<Vec<BuiltAdapter>, Vec<ConfigIssue>> {
        let mut issues = section.unknown_keys(&["device"]);
        let mut names: BTreeMap<String, ferrogate_sdk::config::Pos> = BTreeMap::new();
        let mut ports: BTreeMap<String, ferrogate_sdk::config::Pos> = BTreeMap::new();
        let mut built = Vec::new();
        for node in section.list("device") {
            let (device, origin) = match config::device(&node) {
                Ok(d) => d,
                Err(mut e) => {
                    issues.append(&mut e);
                    continue;
                }
            };
            let name_pos = origin.field("name");
            if let Some(first) = names.insert(device.name.clone(), name_pos.clone()) {
                issues.push(
                    ConfigIssue::at(
                        name_pos.clone(),
                        format!("duplicate serial device `{}`", device.name),
                    )
                    .with_hint(format!("first defined at {first}")),
                );
                continue;
            }
            let port_pos = origin.field("port");
            if let Some(first) = ports.insert(device.port.path.clone(), port_pos.clone()) {
                issues.push(
                    ConfigIssue::at(
                        port_pos,
                        format!(
                            "port {} is already used by another device",
                            device.port.path
                        ),
                    )
                    .with_hint(format!(
                        "first used at {first}; one serial device owns its port"
                    )),
                );
                continue;
            }
            let mut notes: Vec<String> = config::load_note(&device).into_iter().collect();
            for c in device
                .commands
                .iter()
                .filter(|c| c.reply.is_none() && c.error_reply.is_none())
            {
                notes.push(format!(
                    "serial/{}: command `{}` has no `reply` pattern: a write is reported ok once sent, not confirmed",
                    device.name, c.name
                ));
            }
            built.push(BuiltAdapter {
                name: format!("serial/{}", device.name),
                devices: vec![(device.name.clone(), name_pos)],
                notes,
                fingerprint: ferrogate_sdk::fingerprint(&device),
                policies: Default::default(),
                adapter: Box::new(SerialAdapter::new(device)),
            });
        }
        if issues.is_empty() {
            Ok(built)
        } else {
            Err(issues)
        }
    }
}

/// One serial device on its port.
pub struct SerialAdapter {
    device: Arc<Device>,
    counters: LineCounters,
}

impl SerialAdapter {
    pub fn new(device: Device) -> Self {
        SerialAdapter {
            device: Arc::new(device),
            counters: LineCounters::default(),
        }
    }
}

impl Adapter for SerialAdapter {
    fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            let mut line = Line::new(self.device.clone(), ctx, self.counters.clone());
            let result = line.run().await;
            self.counters = line.counters();
            result
        })
    }
}
