//! Runs each adapter as its own task and restarts a failed one with
//! exponential backoff, while the others keep running. Keeps each adapter's
//! state (running, backing off, stopped; restarts; last error) for status,
//! and its health heartbeat for the watchdog.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogate_sdk::{
    AdapterContext, BuiltAdapter, CommandInbox, CommandRequest, DeviceOwners, Health, Refusals,
    Timestamp, UplinkSender,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
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

/// Restart backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (1-based): doubling, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.min.saturating_mul(factor).min(self.max)
    }
}

/// A cloneable view of every adapter's state.
#[derive(Debug, Clone, Default)]
pub struct StateHandle(Arc<Mutex<BTreeMap<String, AdapterState>>>);

impl StateHandle {
    pub fn snapshot(&self) -> BTreeMap<String, AdapterState> {
        lock(&self.0).clone()
    }

    /// Forget every adapter (before a reload starts new ones).
    pub fn clear(&self) {
        lock(&self.0).clear();
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

/// The running adapters.
pub struct Supervisor {
    states: Arc<Mutex<BTreeMap<String, AdapterState>>>,
    command_tx: BTreeMap<String, mpsc::Sender<CommandRequest>>,
    tasks: JoinSet<()>,
}

impl Supervisor {
    /// A supervisor with no adapters.
    pub fn idle() -> Self {
        Supervisor {
            states: StateHandle::default().0,
            command_tx: BTreeMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Start every adapter, each sending its uplinks into `uplink` and its
    /// state into `states`.
    pub fn start(
        adapters: Vec<BuiltAdapter>,
        uplink: &UplinkSender,
        backoff: Backoff,
        shutdown: CancellationToken,
        states: StateHandle,
    ) -> Self {
        let states = states.0;
        let mut command_tx = BTreeMap::new();
        let mut tasks = JoinSet::new();
        let owners = DeviceOwners::new(adapters.iter().flat_map(|a| {
            a.devices
                .iter()
                .map(|(device, _)| (device.clone(), a.name.clone()))
        }));
        for built in adapters {
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            command_tx.insert(built.name.clone(), tx);
            let health = Health::default();
            let refusals = Refusals::default();
            let ctx = AdapterContext {
                name: built.name.clone(),
                uplink: uplink.for_adapter(built.name.as_str()),
                commands: CommandInbox::new(rx),
                shutdown: shutdown.clone(),
                health: health.clone(),
                refusals: refusals.clone(),
                owners: owners.clone(),
            };
            lock(&states).insert(
                built.name.clone(),
                AdapterState {
                    state: RunState::Running,
                    restarts: 0,
                    last_error: None,
                    health,
                    refusals,
                },
            );
            tasks.spawn(supervise(built, ctx, backoff, states.clone()));
        }
        Supervisor {
            states,
            command_tx,
            tasks,
        }
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
        self.command_tx.clone()
    }

    /// Wait for every adapter to return after shutdown was cancelled.
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
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
            adapter,
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
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
