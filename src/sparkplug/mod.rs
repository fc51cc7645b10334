//! Sparkplug B 3.0 edge node: the gateway's devices published the way
//! SCADA hosts (Ignition, hosts built on Eclipse Tahu) consume them, next
//! to the JSON contract.
//!
//! - [`config`]: the `[sparkplug]` table.
//! - [`proto`]: the payload messages (Tahu's `sparkplug_b.proto`, prost).
//! - [`metric`]: datatypes and the mapping to and from the value model.
//! - [`topic`]: topics and the device name to device id mapping.
//! - [`node`]: the edge node state machine (sans-IO).
//! - [`driver`]: its MQTT session, fed from the gateway's uplinks.

pub mod config;
pub mod driver;
pub mod metric;
pub mod node;
pub mod proto;
pub mod topic;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::gateway::Core;
pub use driver::{Sparkplug, SparkplugError, SparkplugStatus};

/// How long a clean stop waits for NDEATH and DISCONNECT.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The daemon's one way in: the edge node for `[sparkplug]` when enabled,
/// fed from `core`'s directory and live feed, writing through its router.
pub fn start(
    gw: &GatewayConfig,
    core: &Core,
    stop: CancellationToken,
) -> Result<Option<Sparkplug>, SparkplugError> {
    if !gw.sparkplug.enabled {
        return Ok(None);
    }
    Sparkplug::start(
        &gw.sparkplug,
        &gw.gateway_id,
        &gw.mqtt,
        &gw.state_dir,
        core.directory.clone(),
        core.live.clone(),
        core.router.clone(),
        stop,
    )
    .map(Some)
}

/// Waits (bounded) for a stopped edge node's NDEATH and DISCONNECT.
pub async fn stopped(sparkplug: Option<Sparkplug>) {
    if let Some(sparkplug) = sparkplug
        && tokio::time::timeout(STOP_GRACE, sparkplug.stopped())
            .await
            .is_err()
    {
        tracing::warn!("Sparkplug edge node did not stop in time");
    }
}
