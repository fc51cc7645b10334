//! Which configured devices are online: a device is offline while any of
//! its resources fails (timeout, lost observation, transport error) and
//! online again once every failing resource has succeeded. Only changes
//! are reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ferrogate_sdk::{DeviceState, DeviceStatus, Timestamp, Uplink, UplinkSender};

#[derive(Debug, Default)]
struct Health {
    state: Option<DeviceState>,
    failing: BTreeMap<String, String>,
}

/// Shared by the tasks of one adapter.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    devices: Arc<Mutex<HashMap<String, Health>>>,
    uplink: UplinkSender,
}

impl StatusBoard {
    pub fn new(uplink: UplinkSender) -> Self {
        StatusBoard {
            devices: Arc::default(),
            uplink,
        }
    }

    /// Record the outcome of one resource's latest exchange and send a
    /// status uplink if the device's state changed.
    pub async fn report(&self, device: &str, resource: &str, outcome: Result<(), String>) {
        let change = {
            let Ok(mut devices) = self.devices.lock() else {
                return;
            };
            let health = devices.entry(device.to_string()).or_default();
            match &outcome {
                Ok(()) => {
                    health.failing.remove(resource);
                }
                Err(reason) => {
                    health.failing.insert(resource.to_string(), reason.clone());
                }
            }
            let (state, reason) = match health.failing.iter().next() {
                Some((res, why)) => (DeviceState::Offline, Some(format!("{res}: {why}"))),
                None => (DeviceState::Online, None),
            };
            if health.state == Some(state) {
                None
            } else {
                health.state = Some(state);
                Some((state, reason))
            }
        };
        if let Some((state, reason)) = change {
            tracing::info!(
                device,
                state = state.as_str(),
                reason = reason.as_deref().unwrap_or(""),
                "CoAP device status"
            );
            let _ = self
                .uplink
                .send(Uplink::Status(DeviceStatus {
                    device: device.to_string(),
                    state,
                    reason,
                    ts: Timestamp::now(),
                }))
                .await;
        }
    }
}
