//! Runs each adapter as its own task and restarts a failed one with
//! exponential backoff, while the others keep running. Keeps each adapter's
//! state (running, backing off, stopped; restarts; last error) for status,
//! and its health heartbeat for the watchdog.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogate_sdk::{
    AdapterContext, BuiltAdapter, CommandInbox, CommandRequest, DeviceOwners, Health, Refusals,
    Timestamp, UplinkSender,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How many commands may wait for one adapter before the router answers `busy`.
const COMMAND_QUEUE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// Failed; waiting before the next start.
    BackingOff,
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::BackingOff => "backing-off",
            RunState::Stopped => "stopped",
        }
    }
}

/// What status reports about one adapter.
#[derive(Debug, Clone)]
pub struct AdapterState {
    pub state: RunState,
    pub restarts: u32,
    pub last_error: Option<(Timestamp, String)>,
    pub health: Health,
    pub refusals: Refusals,
}

/// Restart backoff bounds: the delay before restart number `attempt`.
pub use ferrogate_sdk::backoff::Backoff;

/// A cloneable view of every adapter's state.
#[derive(Debug, Clone, Default)]
pub struct StateHandle(Arc<Mutex<BTreeMap<String, AdapterState>>>);

impl StateHandle {
    pub fn snapshot(&self) -> BTreeMap<String, AdapterState> {
        lock(&self.0).clone()
    }

    /// Names of adapters whose loop made no progress for `limit`.
    pub fn stalled(&self, limit: Duration) -> Vec<String> {
        lock(&self.0)
            .iter()
            .filter(|(_, s)| s.state == RunState::Running && s.health.since_last_beat() > limit)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The running adapters, each under its own stop token so that a reload
/// restarts only the instances whose configuration changed.
pub struct Supervisor {
    states: Arc<Mutex<BTreeMap<String, AdapterState>>>,
    uplink: UplinkSender,
    backoff: Backoff,
    shutdown: CancellationToken,
    owners: DeviceOwners,
    running: BTreeMap<String, Running>,
}

/// One running adapter instance.
struct Running {
    fingerprint: u64,
    stop: CancellationToken,
    task: JoinHandle<()>,
    commands: mpsc::Sender<CommandRequest>,
}

/// What a reload did to the adapter instances, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Restarted: their configuration changed.
    pub changed: Vec<String>,
    /// Kept running untouched.
    pub unchanged: Vec<String>,
}

impl Supervisor {
    /// Start every adapter, each sending its uplinks into `uplink` and its
    /// state into `states`; all stop when `shutdown` is cancelled.
    pub fn start(
        adapters: Vec<BuiltAdapter>,
        uplink: &UplinkSender,
        backoff: Backoff,
        shutdown: CancellationToken,
        states: StateHandle,
    ) -> Self {
        let mut sup = Supervisor {
            states: states.0,
            uplink: uplink.clone(),
            backoff,
            shutdown,
            owners: DeviceOwners::new(owners_of(&adapters)),
            running: BTreeMap::new(),
        };
        for built in adapters {
            sup.spawn(built);
        }
        sup
    }

    /// Take `adapters` as the new set: an instance with the same name and
    /// fingerprint keeps running; removed and changed ones stop (each within
    /// `grace`, else aborted) before added and changed ones start, so two
    /// generations never hold the same serial line or port at once.
    pub async fn reload(&mut self, adapters: Vec<BuiltAdapter>, grace: Duration) -> Changes {
        let mut changes = Changes::default();
        let mut start = Vec::new();
        let wanted: BTreeSet<String> = adapters.iter().map(|a| a.name.clone()).collect();
        self.owners.replace(owners_of(&adapters));
        for built in adapters {
            match self.running.get(&built.name) {
                Some(r) if r.fingerprint == built.fingerprint => {
                    changes.unchanged.push(built.name);
                }
                Some(_) => {
                    changes.changed.push(built.name.clone());
                    start.push(built);
                }
                None => {
                    changes.added.push(built.name.clone());
                    start.push(built);
                }
            }
        }
        changes.removed = self
            .running
            .keys()
            .filter(|name| !wanted.contains(*name))
            .cloned()
            .collect();
        let stopping: Vec<(String, Running)> = changes
            .removed
            .iter()
            .chain(&changes.changed)
            .filter_map(|name| self.running.remove_entry(name))
            .collect();
        for (_, r) in &stopping {
            r.stop.cancel();
        }
        for (name, mut r) in stopping {
            if tokio::time::timeout(grace, &mut r.task).await.is_err() {
                tracing::warn!(adapter = %name, "adapter did not stop within the reload grace period: aborted");
                r.task.abort();
            }
            lock(&self.states).remove(&name);
        }
        for built in start {
            self.spawn(built);
        }
        changes
    }

    fn spawn(&mut self, mut built: BuiltAdapter) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let stop = self.shutdown.child_token();
        let health = Health::default();
        let refusals = Refusals::default();
        let ctx = AdapterContext {
            name: built.name.clone(),
            uplink: self.uplink.for_adapter(built.name.as_str()),
            commands: CommandInbox::new(rx),
            shutdown: stop.clone(),
            health: health.clone(),
            refusals: refusals.clone(),
            owners: self.owners.clone(),
        };
        // Report by exception: one stage per instance, kept across restarts.
        let (ctx, wakes) = ctx.with_reporting(std::mem::take(&mut built.policies));
        lock(&self.states).insert(
            built.name.clone(),
            AdapterState {
                state: RunState::Running,
                restarts: 0,
                last_error: None,
                health,
                refusals,
            },
        );
        let name = built.name.clone();
        let fingerprint = built.fingerprint;
        let supervised = supervise(built, ctx, self.backoff, self.states.clone());
        // The wake task ends with the instance, after sending what it held:
        // stopping or reloading waits for both.
        let task = match wakes {
            Some(wakes) => tokio::spawn(async move {
                tokio::join!(supervised, wakes);
            }),
            None => tokio::spawn(supervised),
        };
        self.running.insert(
            name,
            Running {
                fingerprint,
                stop,
                task,
                commands: tx,
            },
        );
    }

    /// A snapshot of every adapter's state.
    pub fn states(&self) -> BTreeMap<String, AdapterState> {
        lock(&self.states).clone()
    }

    /// The shared state map, for status and the watchdog.
    pub fn state_handle(&self) -> StateHandle {
        StateHandle(self.states.clone())
    }

    /// The command channel of each adapter, by adapter name.
    pub fn command_senders(&self) -> BTreeMap<String, mpsc::Sender<CommandRequest>> {
        self.running
            .iter()
            .map(|(name, r)| (name.clone(), r.commands.clone()))
            .collect()
    }

    /// Wait for every adapter to return after shutdown was cancelled.
    pub async fn join(self) {
        for (_, r) in self.running {
            let _ = r.task.await;
        }
    }
}

/// Which adapter owns each configured device.
fn owners_of(adapters: &[BuiltAdapter]) -> Vec<(String, String)> {
    adapters
        .iter()
        .flat_map(|a| {
            a.devices
                .iter()
                .map(|(device, _)| (device.clone(), a.name.clone()))
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update of plain
    // status data; the data is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn supervise(
    mut built: BuiltAdapter,
    ctx: AdapterContext,
    backoff: Backoff,
    states: Arc<Mutex<BTreeMap<String, AdapterState>>>,
) {
    let name = built.name.clone();
    let mut attempt = 0u32;
    loop {
        set_state(&states, &name, |s| s.state = RunState::Running);
        let result = built.adapter.run(ctx.clone()).await;
        if ctx.shutdown.is_cancelled() {
            if let Err(e) = result {
                tracing::warn!(adapter = %name, error = %e, "adapter failed while stopping");
            }
            break;
        }
        attempt = attempt.saturating_add(1);
        let reason = match result {
            Ok(()) => "adapter returned without being asked to stop".to_string(),
            Err(e) => e.to_string(),
        };
        let delay = backoff.delay(attempt);
        tracing::error!(adapter = %name, error = %reason, restart_in = ?delay, "adapter failed");
        set_state(&states, &name, |s| {
            s.state = RunState::BackingOff;
            s.restarts = attempt;
            s.last_error = Some((Timestamp::now(), reason.clone()));
        });
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    set_state(&states, &name, |s| s.state = RunState::Stopped);
}

fn set_state(
    states: &Mutex<BTreeMap<String, AdapterState>>,
    name: &str,
    f: impl FnOnce(&mut AdapterState),
) {
    if let Some(s) = lock(states).get_mut(name) {
        f(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogate_sdk::{Adapter, AdapterError, BoxFuture};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails its first two runs, then runs until shutdown.
    struct Flaky {
        runs: Arc<AtomicU32>,
    }

    impl Adapter for Flaky {
        fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
            Box::pin(async move {
                let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= 2 {
                    return Err(AdapterError::new(format!("boom {n}")));
                }
                ctx.shutdown.cancelled().await;
                Ok(())
            })
        }
    }

    /// Runs until shutdown.
    struct Steady;

    impl Adapter for Steady {
        fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
            Box::pin(async move {
                ctx.shutdown.cancelled().await;
                Ok(())
            })
        }
    }

    fn built(name: &str, adapter: Box<dyn Adapter>) -> BuiltAdapter {
        BuiltAdapter {
            name: name.into(),
            devices: Vec::new(),
            notes: Vec::new(),
            fingerprint: 0,
            policies: Default::default(),
            adapter,
        }
    }

    /// Counts its starts and stops.
    struct Counted {
        starts: Arc<AtomicU32>,
        stops: Arc<AtomicU32>,
    }

    impl Adapter for Counted {
        fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
            Box::pin(async move {
                self.starts.fetch_add(1, Ordering::SeqCst);
                ctx.shutdown.cancelled().await;
                self.stops.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reload_restarts_only_what_changed() {
        let counters: BTreeMap<&str, (Arc<AtomicU32>, Arc<AtomicU32>)> =
            ["same", "changed", "gone", "new"]
                .into_iter()
                .map(|n| (n, Default::default()))
                .collect();
        let make = |name: &str, fingerprint: u64| {
            let (starts, stops) = counters[name].clone();
            BuiltAdapter {
                fingerprint,
                ..built(name, Box::new(Counted { starts, stops }))
            }
        };
        let (tx, _rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let mut sup = Supervisor::start(
            vec![make("same", 1), make("changed", 1), make("gone", 1)],
            &UplinkSender::new("test", tx),
            Backoff::default(),
            shutdown.clone(),
            StateHandle::default(),
        );
        let runs = |name: &str| {
            let (starts, stops) = &counters[name];
            (starts.load(Ordering::SeqCst), stops.load(Ordering::SeqCst))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while ["same", "changed", "gone"].iter().any(|n| runs(n).0 == 0) {
            assert!(tokio::time::Instant::now() < deadline, "adapters never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let changes = sup
            .reload(
                vec![make("same", 1), make("changed", 2), make("new", 1)],
                Duration::from_secs(5),
            )
            .await;
        assert_eq!(
            changes,
            Changes {
                added: vec!["new".into()],
                removed: vec!["gone".into()],
                changed: vec!["changed".into()],
                unchanged: vec!["same".into()],
            }
        );
        while runs("new").0 == 0 || runs("changed").0 < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "new adapters never ran"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(runs("same"), (1, 0), "an unchanged adapter was restarted");
        assert_eq!(runs("changed"), (2, 1));
        assert_eq!(runs("gone"), (1, 1));
        assert_eq!(
            sup.states().into_keys().collect::<Vec<_>>(),
            ["changed", "new", "same"]
        );
        assert_eq!(
            sup.command_senders().into_keys().collect::<Vec<_>>(),
            ["changed", "new", "same"]
        );
        shutdown.cancel();
        sup.join().await;
        assert_eq!(runs("same"), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_adapter_is_restarted_while_others_keep_running() {
        let runs = Arc::new(AtomicU32::new(0));
        let (tx, _rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let sup = Supervisor::start(
            vec![
                built("flaky", Box::new(Flaky { runs: runs.clone() })),
                built("steady", Box::new(Steady)),
            ],
            &UplinkSender::new("test", tx),
            Backoff::default(),
            shutdown.clone(),
            StateHandle::default(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "flaky never restarted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let states = sup.states();
        assert_eq!(states["flaky"].restarts, 2);
        assert_eq!(states["flaky"].last_error.as_ref().unwrap().1, "boom 2");
        assert_eq!(states["steady"].state, RunState::Running);
        assert_eq!(states["steady"].restarts, 0);
        shutdown.cancel();
        let handle = sup.state_handle();
        sup.join().await;
        assert!(
            handle
                .snapshot()
                .values()
                .all(|s| s.state == RunState::Stopped)
        );
    }
}
