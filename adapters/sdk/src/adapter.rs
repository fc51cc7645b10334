//! The [`Adapter`] trait, the context an adapter runs in, and the
//! [`AdapterKind`] factory that turns a TOML section into running adapters.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::command::CommandRequest;
use crate::config::{BuildContext, ConfigIssue, Pos, Section};
use crate::model::Uplink;
use crate::refusals::Refusals;
use crate::stage::{CommandTransforms, Policies, Reporting};

/// A boxed future, so the trait stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an adapter's run loop ended with a failure. The supervisor logs it,
/// shows it in status, and restarts the adapter with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AdapterError(pub String);

impl AdapterError {
    pub fn new(message: impl Into<String>) -> Self {
        AdapterError(message.into())
    }
}

/// A protocol adapter: talks to its devices, sends [`Uplink`]s, executes
/// commands.
///
/// `run` returns `Ok(())` only after `ctx.shutdown` was cancelled. Any other
/// return is a failure, and the supervisor calls `run` again after a backoff
/// with a fresh clone of the same context, so state kept in `self` (such as
/// a per-device `seq`-independent cache) survives a restart.
pub trait Adapter: Send + 'static {
    fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>>;
}

/// One uplink message with the adapter it came from and the instant it was
/// produced (for latency measurement).
#[derive(Debug, Clone)]
pub struct UplinkEnvelope {
    pub adapter: Arc<str>,
    pub uplink: Uplink,
    pub produced: Instant,
}

/// The uplink channel was closed: the runtime is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("uplink closed")]
pub struct UplinkClosed;

/// Sees every message as it is sent, just before it is queued: the
/// runtime keeps its device directory and live feed with it, in the
/// sender's task, so a message costs no extra hop on its way north.
pub type UplinkObserver = Arc<dyn Fn(&UplinkEnvelope) + Send + Sync>;

/// Sends an adapter's messages into the runtime's pipeline. Bounded: when
/// the pipeline is behind, `send` waits, which slows polling rather than
/// losing data.
#[derive(Clone)]
pub struct UplinkSender {
    adapter: Arc<str>,
    tx: mpsc::Sender<UplinkEnvelope>,
    observer: Option<UplinkObserver>,
    /// Report by exception, when the adapter's devices have policies.
    reporting: Option<Reporting>,
}

impl std::fmt::Debug for UplinkSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkSender")
            .field("adapter", &self.adapter)
            .field("observed", &self.observer.is_some())
            .field("reporting", &self.reporting.is_some())
            .finish_non_exhaustive()
    }
}

impl UplinkSender {
    pub fn new(adapter: impl Into<Arc<str>>, tx: mpsc::Sender<UplinkEnvelope>) -> Self {
        UplinkSender {
            adapter: adapter.into(),
            tx,
            observer: None,
            reporting: None,
        }
    }

    /// The same sender, with `observer` shown every message.
    pub fn observed_by(self, observer: UplinkObserver) -> Self {
        UplinkSender {
            observer: Some(observer),
            ..self
        }
    }

    /// A sender into the same pipeline, with the same observer, for
    /// another adapter.
    pub fn for_adapter(&self, adapter: impl Into<Arc<str>>) -> Self {
        UplinkSender {
            adapter: adapter.into(),
            ..self.clone()
        }
    }

    pub async fn send(&self, uplink: Uplink) -> Result<(), UplinkClosed> {
        let uplink = match &self.reporting {
            Some(reporting) => match reporting.uplink(uplink, Instant::now()) {
                Some(uplink) => uplink,
                None => return Ok(()),
            },
            None => uplink,
        };
        let envelope = UplinkEnvelope {
            adapter: self.adapter.clone(),
            uplink,
            produced: Instant::now(),
        };
        if let Some(observe) = &self.observer {
            observe(&envelope);
        }
        self.tx.send(envelope).await.map_err(|_| UplinkClosed)
    }

    /// Tell the gateway `device` is gone for good: the directory forgets
    /// it and its retained status and meta are cleared on the broker.
    pub async fn forget(&self, device: impl Into<String>) -> Result<(), UplinkClosed> {
        self.send(Uplink::Forgotten(crate::model::DeviceForgotten {
            device: device.into(),
        }))
        .await
    }
}

/// Commands routed to this adapter. Cloneable so it survives restarts: the
/// supervisor keeps one clone, the running adapter another.
#[derive(Debug, Clone)]
pub struct CommandInbox {
    rx: Arc<Mutex<mpsc::Receiver<CommandRequest>>>,
    /// The devices' value transforms, when they have any.
    transforms: Option<CommandTransforms>,
}

impl CommandInbox {
    pub fn new(rx: mpsc::Receiver<CommandRequest>) -> Self {
        CommandInbox {
            rx: Arc::new(Mutex::new(rx)),
            transforms: None,
        }
    }

    /// The next command, or `None` once the runtime stopped routing.
    /// A write's values arrive inverted through the device's transforms (a
    /// value they refuse is answered without reaching the adapter).
    pub async fn recv(&self) -> Option<CommandRequest> {
        loop {
            let request = self.rx.lock().await.recv().await?;
            match &self.transforms {
                None => return Some(request),
                Some(t) => {
                    if let Some(request) = t.prepare(request) {
                        return Some(request);
                    }
                }
            }
        }
    }
}

/// Progress heartbeat. An adapter calls [`Health::beat`] each time its loop
/// makes progress (a poll cycle, a datagram handled, an idle tick); the
/// runtime stops the systemd watchdog pings when a beat is overdue.
#[derive(Debug, Clone)]
pub struct Health {
    origin: Instant,
    last_beat_ms: Arc<AtomicU64>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            origin: Instant::now(),
            last_beat_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Health {
    pub fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_beat_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat (or since creation if none).
    pub fn since_last_beat(&self) -> std::time::Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        std::time::Duration::from_millis(now.saturating_sub(last))
    }
}

/// The devices configured in the gateway and the adapter owning each, for
/// adapters whose devices appear at run time (an LwM2M endpoint, a CoAP
/// ingest name): a name another adapter owns is refused, never taken over.
/// Shared by every running adapter and replaced in place on reload, so an
/// adapter that a reload keeps running sees the new owners too.
#[derive(Debug, Clone, Default)]
pub struct DeviceOwners(Arc<std::sync::RwLock<std::collections::BTreeMap<String, String>>>);

impl DeviceOwners {
    /// From `(device, adapter)` pairs.
    pub fn new(owners: impl IntoIterator<Item = (String, String)>) -> Self {
        DeviceOwners(Arc::new(std::sync::RwLock::new(
            owners.into_iter().collect(),
        )))
    }

    /// The adapter that owns `device`, if one was configured with it.
    pub fn owner(&self, device: &str) -> Option<String> {
        let owners = self.0.read().unwrap_or_else(|e| e.into_inner());
        owners.get(device).cloned()
    }

    /// Replace every owner (a reload), seen at once by every holder.
    pub fn replace(&self, owners: impl IntoIterator<Item = (String, String)>) {
        let new = owners.into_iter().collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = new;
    }
}

/// Everything a running adapter receives from the runtime.
#[derive(Debug, Clone)]
pub struct AdapterContext {
    /// The adapter instance's name, for logs.
    pub name: String,
    pub uplink: UplinkSender,
    pub commands: CommandInbox,
    pub shutdown: CancellationToken,
    pub health: Health,
    /// Where the adapter counts network input it refused.
    pub refusals: Refusals,
    /// Who owns the configured device names.
    pub owners: DeviceOwners,
}

impl AdapterContext {
    /// This context with its devices' `policies` applied to everything it
    /// sends, and the task that publishes held values and heartbeats as
    /// they fall due, until `shutdown` (run it beside the adapter, for as
    /// long as the instance lives). No task when no policy can hold back
    /// or repeat a reading.
    pub fn with_reporting(
        mut self,
        policies: Policies,
    ) -> (Self, Option<impl Future<Output = ()> + Send + 'static>) {
        let Some(reporting) = Reporting::new(policies) else {
            return (self, None);
        };
        let wakes = reporting
            .clone()
            .run_wakes(self.uplink.clone(), self.shutdown.clone());
        self.commands.transforms = Some(reporting.commands());
        self.uplink.reporting = Some(reporting);
        (self, Some(wakes))
    }
}

/// An adapter built from configuration, not yet running.
pub struct BuiltAdapter {
    /// Instance name (unique in the gateway), e.g. `modbus` or `modbus/line1`.
    pub name: String,
    /// The devices this adapter owns, with where each is defined, so the
    /// runtime can reject duplicate names across adapters. Adapters whose
    /// devices appear at run time (LwM2M) list none.
    pub devices: Vec<(String, Pos)>,
    /// Facts `ferrogate config check` prints for the integrator: resolved
    /// Modicon addresses, a serial line's computed load.
    pub notes: Vec<String>,
    /// A digest of the instance's resolved configuration ([`fingerprint`]):
    /// a reload restarts the instance only when it changed.
    pub fingerprint: u64,
    /// Report by exception per device (deadbands, intervals, heartbeats),
    /// applied to what the adapter sends ([`AdapterContext::with_reporting`]).
    pub policies: Policies,
    pub adapter: Box<dyn Adapter>,
}

/// The digest a kind puts in [`BuiltAdapter::fingerprint`]: of the
/// instance's resolved configuration (profiles and defaults applied), as
/// its `Debug` text. Compared within one process only.
pub fn fingerprint(config: &impl std::fmt::Debug) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{config:?}").hash(&mut h);
    h.finish()
}

/// A protocol: the TOML table name it owns (`modbus`, `coap`, ...) and how
/// to build adapters from that table.
pub trait AdapterKind: Send + Sync {
    /// The top-level TOML key of this protocol's configuration.
    fn key(&self) -> &'static str;

    /// Validate the section and build its adapters. Every problem found is
    /// returned, not only the first. Must not start any I/O.
    fn build(
        &self,
        section: &Section<'_>,
        ctx: &BuildContext<'_>,
    ) -> Result<Vec<BuiltAdapter>, Vec<ConfigIssue>>;
}
