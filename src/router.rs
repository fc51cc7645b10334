//! The downlink router: turns a command request (from MQTT or the control
//! socket; one code path for both) into exactly one result.
//!
//! Requests arrive decoded ([`codec::decode_request`]); the router never
//! reads JSON. Lifecycle of a request: find the device (`unknown_device`,
//! before anything is remembered about the request); answer a repeated id
//! from the idempotency cache without executing again (`bad_request` when
//! the id comes back with a different body); check the operation against
//! the device's metadata (`unknown_point`, `not_writable`, `out_of_range`);
//! take a place in the device's queue (`busy` when full) and a rate-limit
//! slot; wait for an offline device when its adapter's policy says hold
//! (`device_offline` otherwise); start before the deadline (`expired`) and
//! get the adapter's answer before it (`timeout`). Writes and executes are
//! audited to the log and as a device event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogate_sdk::config::ConfigDuration;
use ferrogate_sdk::{
    Command, CommandError, CommandRequest, DeviceEvent, DeviceMeta, ErrorCode, Operation, Outcome,
    Timestamp, Uplink, UplinkSender,
};
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::directory::Directory;
use crate::metrics::Counters;
use crate::north::codec::{self, Refused, Request};

/// The `[commands]` table of gateway.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// Deadline of a request without `timeout_ms`.
    #[serde(default = "default_timeout")]
    pub default_timeout: ConfigDuration,
    /// Largest `timeout_ms` accepted.
    #[serde(default = "max_timeout")]
    pub max_timeout: ConfigDuration,
    /// A command id seen again within this window gets the first result,
    /// without executing again (QoS 1 redelivery never writes twice).
    #[serde(default = "idempotency_window")]
    pub idempotency_window: ConfigDuration,
    /// Most ids the window holds; beyond it the oldest are forgotten first.
    #[serde(default = "idempotency_max_ids")]
    pub idempotency_max_ids: usize,
    /// Most bytes (ids, device names, results) the window holds.
    #[serde(default = "idempotency_max_bytes")]
    pub idempotency_max_bytes: usize,
    /// Commands waiting per device before `busy`.
    #[serde(default = "queue_depth")]
    pub queue_depth: usize,
    /// Commands executing at once per device (LwM2M clients take several).
    #[serde(default = "in_flight")]
    pub in_flight: usize,
    /// Commands started per second per device; unset = unlimited.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Adapters (by name or name prefix, e.g. `lwm2m`) whose offline devices
    /// get commands held until they return, within the deadline; others
    /// fail fast with `device_offline`.
    #[serde(default = "hold_when_offline")]
    pub hold_when_offline: Vec<String>,
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn max_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(600))
}
fn idempotency_window() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(600))
}
fn idempotency_max_ids() -> usize {
    10_000
}
fn idempotency_max_bytes() -> usize {
    4 << 20
}
fn queue_depth() -> usize {
    32
}
fn in_flight() -> usize {
    1
}
fn hold_when_offline() -> Vec<String> {
    vec!["lwm2m".into()]
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            default_timeout: default_timeout(),
            max_timeout: max_timeout(),
            idempotency_window: idempotency_window(),
            idempotency_max_ids: idempotency_max_ids(),
            idempotency_max_bytes: idempotency_max_bytes(),
            queue_depth: queue_depth(),
            in_flight: in_flight(),
            rate: None,
            hold_when_offline: hold_when_offline(),
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub device: String,
    /// `None` when the request had no readable id.
    pub id: Option<String>,
    pub outcome: Outcome,
    /// Whether this answer was replayed from the idempotency cache.
    pub replayed: bool,
}

/// Per-device admission: queue depth, concurrency and rate.
struct DeviceGate {
    waiting: usize,
    permits: Arc<Semaphore>,
    next_slot: Instant,
}

enum Recent {
    Running(watch::Receiver<Option<Outcome>>),
    Done(Outcome),
}

/// One id in the window: when it came, what its body was, how it ended.
struct RecentEntry {
    at: Instant,
    fingerprint: u64,
    bytes: usize,
    state: Recent,
}

/// Idempotency cache: (device, id) → the first outcome, for a window, and
/// bounded in ids and bytes.
#[derive(Default)]
struct RecentIds {
    entries: HashMap<(String, String), RecentEntry>,
    order: VecDeque<(Instant, (String, String))>,
    bytes: usize,
}

/// What an entry costs: its key twice (map and order) plus the outcome.
fn entry_bytes(key: &(String, String), outcome: Option<&Outcome>) -> usize {
    const FIXED: usize = 128;
    let result = match outcome {
        Some(Ok(values)) => values.keys().map(|k| k.len() + 32).sum(),
        Some(Err(e)) => e.message.len(),
        None => 0,
    };
    FIXED + 2 * (key.0.len() + key.1.len()) + result
}

impl RecentIds {
    /// Forgets ids older than the window, then the oldest ones beyond the
    /// caps.
    fn expire(&mut self, config: &CommandsConfig) {
        let now = Instant::now();
        let window = config.idempotency_window.0;
        while let Some((at, key)) = self.order.front() {
            let over = self.entries.len() > config.idempotency_max_ids
                || self.bytes > config.idempotency_max_bytes;
            if now.duration_since(*at) < window && !over {
                break;
            }
            // An id seen again is in `order` once per insert; only the
            // entry inserted at that time is removed.
            let stale = self.entries.get(key).is_some_and(|e| e.at == *at);
            if let Some((_, key)) = self.order.pop_front() {
                if stale {
                    if let Some(e) = self.entries.remove(&key) {
                        self.bytes = self.bytes.saturating_sub(e.bytes);
                    }
                }
            }
        }
    }

    fn insert(&mut self, key: (String, String), fingerprint: u64, state: Recent) {
        let now = Instant::now();
        let bytes = entry_bytes(&key, None);
        self.bytes += bytes;
        if let Some(old) = self.entries.insert(
            key.clone(),
            RecentEntry {
                at: now,
                fingerprint,
                bytes,
                state,
            },
        ) {
            self.bytes = self.bytes.saturating_sub(old.bytes);
        }
        self.order.push_back((now, key));
    }

    fn finish(&mut self, key: &(String, String), outcome: &Outcome) {
        if let Some(entry) = self.entries.get_mut(key) {
            let bytes = entry_bytes(key, Some(outcome));
            self.bytes = self.bytes.saturating_sub(entry.bytes) + bytes;
            entry.bytes = bytes;
            entry.state = Recent::Done(outcome.clone());
        }
    }
}

/// Routes commands to adapters. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    config: CommandsConfig,
    directory: Directory,
    adapters: std::sync::RwLock<BTreeMap<String, mpsc::Sender<CommandRequest>>>,
    gates: Mutex<HashMap<String, DeviceGate>>,
    recent: Mutex<RecentIds>,
    audit: UplinkSender,
    counters: Arc<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Router {
    /// `adapters`: each adapter's command channel by adapter name; `audit`
    /// carries audit events north.
    pub fn new(
        config: CommandsConfig,
        directory: Directory,
        adapters: BTreeMap<String, mpsc::Sender<CommandRequest>>,
        audit: UplinkSender,
        counters: Arc<Counters>,
    ) -> Self {
        Router {
            inner: Arc::new(Inner {
                config,
                directory,
                adapters: std::sync::RwLock::new(adapters),
                gates: Mutex::new(HashMap::new()),
                recent: Mutex::new(RecentIds::default()),
                audit,
                counters,
            }),
        }
    }

    /// Route to a new set of adapters (after a reload).
    pub fn set_adapters(&self, adapters: BTreeMap<String, mpsc::Sender<CommandRequest>>) {
        *self
            .inner
            .adapters
            .write()
            .unwrap_or_else(|e| e.into_inner()) = adapters;
    }

    /// Puts a result from an earlier run (the command journal) into the
    /// idempotency window: that id is answered with it, not executed again.
    /// `age`: how long ago it was answered.
    pub fn remember(
        &self,
        device: &str,
        id: &str,
        fingerprint: u64,
        outcome: Outcome,
        age: Duration,
    ) {
        let key = (device.to_string(), id.to_string());
        let mut recent = lock(&self.inner.recent);
        recent.insert(key.clone(), fingerprint, Recent::Done(outcome.clone()));
        recent.finish(&key, &outcome);
        if let Some(entry) = recent.entries.get_mut(&key) {
            let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            entry.at = at;
            if let Some(last) = recent.order.back_mut() {
                last.0 = at;
            }
        }
        recent.expire(&self.inner.config);
    }

    /// Whether `device` exists (is routable).
    pub fn knows(&self, device: &str) -> bool {
        self.inner.directory.get(device).is_some()
    }

    /// The deadline a request gets: its `timeout_ms` or the default.
    pub fn timeout_of(&self, request: &Request) -> Duration {
        request
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.inner.config.default_timeout.0)
    }

    /// Ids in the idempotency window, and the bytes they take.
    pub fn remembered_ids(&self) -> (usize, usize) {
        let recent = lock(&self.inner.recent);
        (recent.entries.len(), recent.bytes)
    }

    /// Commands for `device` waiting for admission, and executing now.
    pub fn pending(&self, device: &str) -> (usize, usize) {
        let gates = lock(&self.inner.gates);
        match gates.get(device) {
            Some(g) => (
                g.waiting,
                self.inner.config.in_flight.max(1) - g.permits.available_permits(),
            ),
            None => (0, 0),
        }
    }

    /// Handle one raw request for `device` and return its single answer.
    pub async fn submit(&self, device: &str, payload: &[u8]) -> Answer {
        let received = Instant::now();
        match codec::decode_request(payload) {
            Ok(request) => self.execute(device, request, received).await,
            Err(refused) => self.refuse(device, refused),
        }
    }

    /// The answer to a request that could not be decoded.
    pub fn refuse(&self, device: &str, refused: Refused) -> Answer {
        self.inner.counters.command(Err(refused.error.code));
        Answer {
            device: device.to_string(),
            id: refused.id,
            outcome: Err(refused.error),
            replayed: false,
        }
    }

    /// Execute a decoded request (MQTT's and the control socket's entry
    /// point).
    pub async fn execute(&self, device: &str, request: Request, received: Instant) -> Answer {
        let id = request.id.clone();
        // Nothing is remembered for a device that does not exist: a flood
        // of requests for made-up devices costs no memory.
        if self.inner.directory.get(device).is_none() {
            let error =
                CommandError::new(ErrorCode::UnknownDevice, format!("no device `{device}`"));
            return self.answer(device, &id, Err(error), false);
        }
        let key = (device.to_string(), id.clone());

        // Idempotency: a repeated id waits for, or replays, the first outcome.
        let sender = {
            let mut recent = lock(&self.inner.recent);
            recent.expire(&self.inner.config);
            match recent.entries.get(&key) {
                Some(entry) if entry.fingerprint != request.fingerprint => {
                    let error = CommandError::new(
                        ErrorCode::BadRequest,
                        format!("id `{id}` reused with a different request"),
                    );
                    drop(recent);
                    return self.answer(device, &id, Err(error), false);
                }
                Some(RecentEntry {
                    state: Recent::Done(outcome),
                    ..
                }) => {
                    let outcome = outcome.clone();
                    drop(recent);
                    return self.answer(device, &id, outcome, true);
                }
                Some(RecentEntry {
                    state: Recent::Running(rx),
                    ..
                }) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    recent.insert(key.clone(), request.fingerprint, Recent::Running(rx));
                    recent.expire(&self.inner.config);
                    Ok(tx)
                }
            }
        };
        let tx = match sender {
            Ok(tx) => tx,
            Err(mut rx) => {
                let outcome = match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.clone().unwrap_or_else(|| Err(internal("no outcome"))),
                    Err(_) => Err(internal("the first delivery of this id was abandoned")),
                };
                return self.answer(device, &id, outcome, true);
            }
        };

        let is_audited = matches!(
            &request.op,
            Operation::Write { .. } | Operation::Protocol { .. }
        ) && !matches!(&request.op, Operation::Protocol { op, .. } if op == "discover");
        let op_name = request.op.name().to_string();
        let outcome = self.run(device, request, received).await;
        if is_audited {
            self.audit(device, &id, &op_name, &outcome).await;
        }
        tx.send_replace(Some(outcome.clone()));
        lock(&self.inner.recent).finish(&key, &outcome);
        self.answer(device, &id, outcome, false)
    }

    fn answer(&self, device: &str, id: &str, outcome: Outcome, replayed: bool) -> Answer {
        self.inner
            .counters
            .command(outcome.as_ref().map(|_| ()).map_err(|e| e.code));
        Answer {
            device: device.to_string(),
            id: Some(id.to_string()),
            outcome,
            replayed,
        }
    }

    async fn run(&self, device: &str, request: Request, received: Instant) -> Outcome {
        let config = &self.inner.config;
        let timeout = match request.timeout_ms {
            Some(ms) if Duration::from_millis(ms) > config.max_timeout.0 => {
                return Err(CommandError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "timeout_ms {ms} exceeds the maximum of {} ms",
                        config.max_timeout.0.as_millis()
                    ),
                ));
            }
            Some(ms) => Duration::from_millis(ms),
            None => config.default_timeout.0,
        };
        let deadline = received + timeout;
        let entry = self.inner.directory.get(device).ok_or_else(|| {
            CommandError::new(ErrorCode::UnknownDevice, format!("no device `{device}`"))
        })?;
        check_allowed(entry.meta.as_ref(), &request.op)?;
        let adapter = self
            .inner
            .adapters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&entry.adapter)
            .cloned();
        let Some(adapter) = adapter else {
            return Err(CommandError::new(
                ErrorCode::UnknownDevice,
                format!("device `{device}` belongs to no running adapter"),
            ));
        };

        // Admission: queue depth, then concurrency and rate within the deadline.
        let permits = {
            let mut gates = lock(&self.inner.gates);
            let gate = gates
                .entry(device.to_string())
                .or_insert_with(|| DeviceGate {
                    waiting: 0,
                    permits: Arc::new(Semaphore::new(config.in_flight.max(1))),
                    next_slot: Instant::now(),
                });
            if gate.waiting >= config.queue_depth {
                return Err(CommandError::new(
                    ErrorCode::Busy,
                    format!(
                        "{} commands already queued for `{device}`",
                        config.queue_depth
                    ),
                ));
            }
            gate.waiting += 1;
            gate.permits.clone()
        };
        let admitted = self.admit(device, &permits, deadline).await;
        if let Some(gate) = lock(&self.inner.gates).get_mut(device) {
            gate.waiting = gate.waiting.saturating_sub(1);
        }
        let _permit = admitted?;

        if let Some(entry) = self.inner.directory.get(device) {
            if entry.is_offline() {
                let holds = config
                    .hold_when_offline
                    .iter()
                    .any(|p| entry.adapter.starts_with(p.as_str()));
                if !holds {
                    return Err(CommandError::new(
                        ErrorCode::DeviceOffline,
                        format!(
                            "`{device}` is offline{}",
                            entry
                                .reason
                                .as_ref()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        ),
                    ));
                }
                let mut online = entry.watch_online();
                let back = tokio::time::timeout_at(deadline, online.wait_for(|up| *up)).await;
                if !matches!(back, Ok(Ok(_))) {
                    return Err(CommandError::new(
                        ErrorCode::Expired,
                        format!("`{device}` stayed offline until the deadline"),
                    ));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(expired(device));
        }

        let (request, reply) = CommandRequest::new(Command {
            id: request.id,
            device: device.to_string(),
            op: request.op,
            deadline,
        });
        match adapter.try_send(request) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(CommandError::new(
                    ErrorCode::Busy,
                    format!("adapter `{}` has too many commands queued", entry.adapter),
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(CommandError::new(
                    ErrorCode::DeviceOffline,
                    format!("adapter `{}` is not running", entry.adapter),
                ));
            }
        }
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(CommandError::new(
                ErrorCode::DeviceOffline,
                format!(
                    "adapter `{}` stopped before answering (restarting?)",
                    entry.adapter
                ),
            )),
            Err(_) => Err(CommandError::new(
                ErrorCode::Timeout,
                format!(
                    "`{device}` did not answer within {} ms",
                    deadline.duration_since(received).as_millis()
                ),
            )),
        }
    }

    /// Wait for a concurrency permit and a rate slot, both before the deadline.
    async fn admit(
        &self,
        device: &str,
        permits: &Arc<Semaphore>,
        deadline: Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, CommandError> {
        let permit = match tokio::time::timeout_at(deadline, permits.clone().acquire_owned()).await
        {
            Ok(Ok(p)) => p,
            _ => return Err(expired(device)),
        };
        if let Some(rate) = self.inner.config.rate.filter(|r| *r > 0.0) {
            let slot = {
                let mut gates = lock(&self.inner.gates);
                let Some(gate) = gates.get_mut(device) else {
                    return Ok(permit);
                };
                let slot = gate.next_slot.max(Instant::now());
                // `rate` is configuration: 1e-300 must not overflow.
                let gap = ferrogate_sdk::time::duration_from_secs_f64(1.0 / rate);
                gate.next_slot =
                    Instant::from_std(ferrogate_sdk::time::saturating_add(slot.into_std(), gap));
                slot
            };
            if slot >= deadline {
                return Err(expired(device));
            }
            tokio::time::sleep_until(slot).await;
        }
        Ok(permit)
    }

    async fn audit(&self, device: &str, id: &str, op: &str, outcome: &Outcome) {
        let mut data = BTreeMap::new();
        data.insert("id".to_string(), id.into());
        data.insert("op".to_string(), op.into());
        data.insert("ok".to_string(), outcome.is_ok().into());
        match outcome {
            Ok(values) => {
                tracing::info!(device, id, op, "command executed");
                let values: serde_json::Map<_, _> = values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect();
                data.insert("values".to_string(), values.into());
            }
            Err(e) => {
                tracing::warn!(device, id, op, code = %e.code, error = %e.message, "command failed");
                data.insert(
                    "error".to_string(),
                    serde_json::json!({"code": e.code.as_str(), "message": e.message}),
                );
            }
        }
        let event = DeviceEvent {
            device: device.to_string(),
            ts: Timestamp::now(),
            event: "command".into(),
            data,
        };
        if self.inner.audit.send(Uplink::Event(event)).await.is_err() {
            tracing::warn!(device, id, "audit event not sent: uplink closed");
        }
    }
}

fn expired(device: &str) -> CommandError {
    CommandError::new(
        ErrorCode::Expired,
        format!("the command for `{device}` could not start before its deadline"),
    )
}

fn internal(message: &str) -> CommandError {
    CommandError::new(ErrorCode::DeviceException, message.to_string())
}

/// Whether a point is named by its protocol path (`/3/0`, `3303/0/5700`)
/// rather than by a name in the device's metadata. The adapter resolves
/// and checks such a path itself; the metadata lists names, so a path
/// (which may name a whole object or instance) is not looked up there.
fn is_path_address(name: &str) -> bool {
    name.contains('/') && name.bytes().all(|b| b.is_ascii_digit() || b == b'/')
}

/// Check an operation against the device's metadata: allow-list, known
/// points, writability, value type and range. Points named by path are
/// left to the adapter.
fn check_allowed(meta: Option<&DeviceMeta>, op: &Operation) -> Result<(), CommandError> {
    let Some(meta) = meta else {
        return Ok(());
    };
    if let Some(allowed) = &meta.operations {
        if !allowed.iter().any(|a| a == op.name()) {
            return Err(CommandError::new(
                ErrorCode::BadRequest,
                format!(
                    "operation `{}` is not allowed on `{}` (allowed: {})",
                    op.name(),
                    meta.device,
                    allowed.join(", ")
                ),
            ));
        }
    }
    if meta.points.is_empty() {
        return Ok(());
    }
    let point = |name: &str| {
        meta.points.iter().find(|p| p.name == name).ok_or_else(|| {
            CommandError::new(
                ErrorCode::UnknownPoint,
                format!("device `{}` has no point `{name}`", meta.device),
            )
        })
    };
    match op {
        Operation::Read { points } => {
            for p in points.iter().filter(|p| !is_path_address(p)) {
                point(p)?;
            }
        }
        Operation::Write { values } => {
            for (name, value) in values.iter().filter(|(n, _)| !is_path_address(n)) {
                let p = point(name)?;
                if !p.writable {
                    return Err(CommandError::new(
                        ErrorCode::NotWritable,
                        format!("point `{name}` of `{}` is read-only", meta.device),
                    ));
                }
                if let Some(x) = value.as_f64() {
                    let below = p.min.is_some_and(|min| x < min);
                    let above = p.max.is_some_and(|max| x > max);
                    if below || above {
                        return Err(CommandError::new(
                            ErrorCode::OutOfRange,
                            format!(
                                "{x} is outside [{}, {}] for point `{name}`",
                                p.min.map(|v| v.to_string()).unwrap_or("-inf".into()),
                                p.max.map(|v| v.to_string()).unwrap_or("inf".into())
                            ),
                        ));
                    }
                }
            }
        }
        Operation::Protocol { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogate_sdk::{PointMeta, Value};

    #[test]
    fn points_named_by_path_are_left_to_the_adapter() {
        let meta = DeviceMeta {
            device: "ep".into(),
            points: vec![PointMeta {
                name: "temperature".into(),
                data_type: "f64".into(),
                unit: None,
                writable: false,
                min: None,
                max: None,
                description: None,
                address: None,
            }]
            .into(),
            ..DeviceMeta::default()
        };
        let read = |p: &str| Operation::Read {
            points: vec![p.to_string()],
        };
        for path in ["/3/0", "3303/0/5700", "/3/0/0"] {
            assert_eq!(check_allowed(Some(&meta), &read(path)), Ok(()), "{path}");
        }
        let write = Operation::Write {
            values: BTreeMap::from([("/1/0/1".to_string(), Value::Int(120))]),
        };
        assert_eq!(check_allowed(Some(&meta), &write), Ok(()));
        let e = check_allowed(Some(&meta), &read("humidity")).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownPoint);
        let e = check_allowed(Some(&meta), &read("3303/x")).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownPoint);
    }
}
