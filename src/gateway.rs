//! The in-process gateway core, independent of MQTT: the supervised
//! adapters, the device directory kept from their messages as they are
//! sent, and the command router. The daemon connects it to the northbound
//! path; tests connect it to a channel. A reload swaps the adapters while
//! the directory and the router (and so the north side) keep running.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ferrogate_sdk::{BuiltAdapter, UplinkEnvelope, UplinkSender};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::directory::{self, Directory, LiveFeed};
use crate::metrics::Counters;
use crate::router::{CommandsConfig, Router};
use crate::supervisor::{Backoff, Changes, StateHandle, Supervisor};

/// Live messages buffered per `tail` watcher before it starts missing some.
const LIVE_BUFFER: usize = 1024;
/// How long the old adapters of a reload get to stop.
const RELOAD_STOP_GRACE: Duration = Duration::from_secs(5);

/// The running core.
pub struct Core {
    pub directory: Directory,
    pub router: Router,
    pub live: LiveFeed,
    pub counters: Arc<Counters>,
    states: StateHandle,
    supervisor: Supervisor,
    /// Where adapters' messages go (north), observed by the directory.
    uplink: UplinkSender,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub adapters: Vec<String>,
    pub changes: Changes,
    /// Devices no adapter has any more; their retained status and meta
    /// are cleared on the broker.
    pub forgotten: Vec<String>,
}

impl Core {
    /// Start the adapters; everything they send reaches `north` in order.
    pub fn start(
        adapters: Vec<BuiltAdapter>,
        commands: CommandsConfig,
        backoff: Backoff,
        north: mpsc::Sender<UplinkEnvelope>,
        shutdown: CancellationToken,
    ) -> Core {
        let directory = Directory::default();
        for a in &adapters {
            directory.declare(&a.name, a.devices.iter().map(|(d, _)| d.clone()));
        }
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let counters = Arc::new(Counters::default());
        let uplink = UplinkSender::new("router", north)
            .observed_by(directory::observer(directory.clone(), live.clone()));
        let states = StateHandle::default();
        let supervisor = Supervisor::start(adapters, &uplink, backoff, shutdown, states.clone());
        let router = Router::new(
            commands,
            directory.clone(),
            supervisor.command_senders(),
            uplink.clone(),
            counters.clone(),
        );
        Core {
            directory,
            router,
            live,
            counters,
            states,
            supervisor,
            uplink,
        }
    }

    /// Every adapter's state; stays valid across reloads.
    pub fn states(&self) -> StateHandle {
        self.states.clone()
    }

    /// Take `adapters` as the running set: instances whose configuration
    /// is unchanged keep running, removed and changed ones stop, added and
    /// changed ones start. The directory, the router and the north side are
    /// untouched, so `seq` continues and no accepted message is lost.
    pub async fn reload(&mut self, adapters: Vec<BuiltAdapter>) -> ReloadSummary {
        let names: BTreeSet<String> = adapters.iter().map(|a| a.name.clone()).collect();
        let declared: Vec<(String, Vec<String>)> = adapters
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    a.devices.iter().map(|(d, _)| d.clone()).collect(),
                )
            })
            .collect();
        let changes = self.supervisor.reload(adapters, RELOAD_STOP_GRACE).await;
        self.router.set_adapters(self.supervisor.command_senders());
        let forgotten = self.directory.reconcile(&declared);
        for device in &forgotten {
            if self.uplink.forget(device.as_str()).await.is_err() {
                tracing::warn!(device, "removed device not cleared north: uplink closed");
            }
        }
        ReloadSummary {
            adapters: names.into_iter().collect(),
            changes,
            forgotten,
        }
    }

    /// Wait for the adapters to stop (after shutdown was cancelled) and for
    /// their last messages to be handed north.
    pub async fn join(self) {
        self.supervisor.join().await;
        drop(self.router);
        drop(self.uplink);
    }
}
