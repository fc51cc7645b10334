//! The in-process gateway core, independent of MQTT: the supervised
//! adapters, the uplink tap that keeps the device directory, and the
//! command router. The daemon connects it to the northbound path; tests
//! connect it to a channel.

use ferrogate_sdk::{BuiltAdapter, UplinkEnvelope, UplinkSender};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::directory::{self, Directory, LiveFeed};
use crate::router::{CommandsConfig, Router};
use crate::supervisor::{Backoff, Supervisor};

/// Uplink messages buffered between adapters and the north side.
const UPLINK_BUFFER: usize = 4096;
/// Live messages buffered per `tail` watcher before it starts missing some.
const LIVE_BUFFER: usize = 1024;

/// The running core.
pub struct Core {
    pub directory: Directory,
    pub router: Router,
    pub supervisor: Supervisor,
    pub live: LiveFeed,
    tap: tokio::task::JoinHandle<()>,
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
        let (tap_tx, tap_rx) = mpsc::channel(UPLINK_BUFFER);
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let tap = tokio::spawn(directory::tap(
            tap_rx,
            north,
            directory.clone(),
            live.clone(),
        ));
        let supervisor = Supervisor::start(adapters, tap_tx.clone(), backoff, shutdown);
        let router = Router::new(
            commands,
            directory.clone(),
            supervisor.command_senders(),
            UplinkSender::new("router", tap_tx),
        );
        Core {
            directory,
            router,
            supervisor,
            live,
            tap,
        }
    }

    /// Wait for the adapters to stop (after shutdown was cancelled) and for
    /// their last messages to be handed north.
    pub async fn join(self) {
        self.supervisor.join().await;
        drop(self.router);
        let _ = self.tap.await;
    }
}
