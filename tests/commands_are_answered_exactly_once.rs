//! Every command gets exactly one truthful answer: each error code comes
//! from a real scenario, a redelivered id never executes twice, held
//! commands wait for an offline device within their deadline, and a
//! thousand concurrent commands across a hundred devices are each answered
//! once. Runs the real router, directory and supervisor in-process with a
//! test adapter that counts what reaches the device.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogate::gateway::Core;
use ferrogate::router::CommandsConfig;
use ferrogate::supervisor::Backoff;
use ferrogate_sdk::config::ConfigDuration;
use ferrogate_sdk::{
    Adapter, AdapterContext, AdapterError, BoxFuture, BuiltAdapter, CommandError, DeviceMeta,
    DeviceState, DeviceStatus, ErrorCode, Operation, PointMeta, Timestamp, Uplink, UplinkEnvelope,
    Value,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Devices `dev-0..n`, each with a writable `sp` (0..=100) and a read-only
/// `temp`. Writing 66 makes the device answer with an exception; writing 99
/// makes it never answer. `offline` devices start offline.
struct TestAdapter {
    devices: usize,
    writes: Arc<Mutex<BTreeMap<String, u32>>>,
    answered: Arc<AtomicU32>,
    status: mpsc::Receiver<(String, DeviceState)>,
    /// The device that allows only reads.
    read_only: Option<usize>,
}

impl Adapter for TestAdapter {
    fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            for i in 0..self.devices {
                let meta = DeviceMeta {
                    device: format!("dev-{i}"),
                    points: vec![
                        PointMeta {
                            name: "sp".into(),
                            data_type: "f64".into(),
                            writable: true,
                            min: Some(0.0),
                            max: Some(100.0),
                            ..Default::default()
                        },
                        PointMeta {
                            name: "temp".into(),
                            data_type: "f64".into(),
                            ..Default::default()
                        },
                    ]
                    .into(),
                    operations: (Some(i) == self.read_only).then(|| vec!["read".to_string()]),
                    attributes: BTreeMap::new(),
                };
                ctx.uplink
                    .send(Uplink::Meta(meta))
                    .await
                    .map_err(|e| AdapterError::new(e.to_string()))?;
            }
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    Some((device, state)) = self.status.recv() => {
                        let status = DeviceStatus { device, state, reason: Some("test".into()), ts: Timestamp::now() };
                        ctx.uplink.send(Uplink::Status(status)).await.map_err(|e| AdapterError::new(e.to_string()))?;
                    }
                    Some(request) = ctx.commands.recv() => {
                        let device = request.command.device.clone();
                        match request.command.op.clone() {
                            Operation::Write { values } => {
                                let v = values.get("sp").and_then(Value::as_f64);
                                if v == Some(99.0) {
                                    held.push(request); // never answered: the router times out
                                    continue;
                                }
                                *self.writes.lock().unwrap().entry(device).or_default() += 1;
                                self.answered.fetch_add(1, Ordering::SeqCst);
                                if v == Some(66.0) {
                                    request.respond(Err(CommandError::new(ErrorCode::DeviceException, "exception 4 (server device failure)")));
                                } else {
                                    request.respond(Ok(values));
                                }
                            }
                            Operation::Read { .. } => {
                                self.answered.fetch_add(1, Ordering::SeqCst);
                                request.respond(Ok(BTreeMap::from([("temp".to_string(), Value::Float(21.0))])));
                            }
                            Operation::Protocol { op, .. } => {
                                request.respond(Err(CommandError::new(ErrorCode::BadRequest, format!("unsupported {op}"))));
                            }
                        }
                    }
                }
            }
        })
    }
}

struct Harness {
    core: Core,
    writes: Arc<Mutex<BTreeMap<String, u32>>>,
    answered: Arc<AtomicU32>,
    status: mpsc::Sender<(String, DeviceState)>,
    north: mpsc::Receiver<UplinkEnvelope>,
    shutdown: CancellationToken,
}

impl Harness {
    async fn start(devices: usize, config: CommandsConfig) -> Harness {
        let writes = Arc::new(Mutex::new(BTreeMap::new()));
        let answered = Arc::new(AtomicU32::new(0));
        let (status, status_rx) = mpsc::channel(16);
        let adapter = TestAdapter {
            devices,
            writes: writes.clone(),
            answered: answered.clone(),
            status: status_rx,
            read_only: (devices > 1 && devices < 10).then_some(1),
        };
        let (north_tx, mut north) = mpsc::channel(100_000);
        let shutdown = CancellationToken::new();
        let core = Core::start(
            vec![BuiltAdapter {
                name: "test".into(),
                devices: Vec::new(),
                notes: Vec::new(),
                fingerprint: 0,
                policies: Default::default(),
                adapter: Box::new(adapter),
            }],
            config,
            Backoff::default(),
            north_tx,
            shutdown.clone(),
        );
        // Wait until every device's meta went north: the directory knows them.
        let mut seen = 0;
        while seen < devices {
            let env = tokio::time::timeout(Duration::from_secs(10), north.recv())
                .await
                .expect("meta in time")
                .unwrap();
            if matches!(env.uplink, Uplink::Meta(_)) {
                seen += 1;
            }
        }
        Harness {
            core,
            writes,
            answered,
            status,
            north,
            shutdown,
        }
    }

    async fn set_state(&mut self, device: &str, state: DeviceState) {
        self.status.send((device.to_string(), state)).await.unwrap();
        // The tap updated the directory before forwarding the status north.
        loop {
            let env = tokio::time::timeout(Duration::from_secs(10), self.north.recv())
                .await
                .expect("status in time")
                .unwrap();
            if matches!(&env.uplink, Uplink::Status(s) if s.device == device && s.state == state) {
                return;
            }
        }
    }

    async fn code(&self, device: &str, payload: &str) -> Option<ErrorCode> {
        self.core
            .router
            .submit(device, payload.as_bytes())
            .await
            .outcome
            .err()
            .map(|e| e.code)
    }
}

/// Wait for a condition with a deadline (not a fixed sleep).
async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn each_error_code_comes_from_a_real_scenario() {
    let mut h = Harness::start(3, CommandsConfig::default()).await;
    assert_eq!(
        h.code("dev-0", "{not json").await,
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        h.code("dev-0", r#"{"id":"a","op":"fly"}"#).await,
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        h.code("nope", r#"{"id":"b","op":"read"}"#).await,
        Some(ErrorCode::UnknownDevice)
    );
    assert_eq!(
        h.code("dev-0", r#"{"id":"c","op":"read","point":"x"}"#)
            .await,
        Some(ErrorCode::UnknownPoint)
    );
    assert_eq!(
        h.code(
            "dev-0",
            r#"{"id":"d","op":"write","point":"temp","value":1}"#
        )
        .await,
        Some(ErrorCode::NotWritable)
    );
    assert_eq!(
        h.code(
            "dev-0",
            r#"{"id":"e","op":"write","point":"sp","value":101}"#
        )
        .await,
        Some(ErrorCode::OutOfRange)
    );
    assert_eq!(
        h.code(
            "dev-0",
            r#"{"id":"f","op":"write","point":"sp","value":null}"#
        )
        .await,
        Some(ErrorCode::InvalidValue)
    );
    assert_eq!(
        h.code(
            "dev-0",
            r#"{"id":"g","op":"write","point":"sp","value":66}"#
        )
        .await,
        Some(ErrorCode::DeviceException)
    );
    assert_eq!(
        h.code(
            "dev-0",
            r#"{"id":"h","op":"write","point":"sp","value":99,"timeout_ms":200}"#
        )
        .await,
        Some(ErrorCode::Timeout)
    );
    // dev-1 allows only reads.
    assert_eq!(
        h.code("dev-1", r#"{"id":"i","op":"write","point":"sp","value":1}"#)
            .await,
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(h.code("dev-1", r#"{"id":"j","op":"read"}"#).await, None);

    h.set_state("dev-2", DeviceState::Offline).await;
    assert_eq!(
        h.code("dev-2", r#"{"id":"k","op":"write","point":"sp","value":5}"#)
            .await,
        Some(ErrorCode::DeviceOffline)
    );

    // busy: fill dev-0's queue of 1 behind a command the device never answers.
    let small = CommandsConfig {
        queue_depth: 1,
        ..Default::default()
    };
    let h2 = Harness::start(1, small).await;
    let router = h2.core.router.clone();
    let stuck = tokio::spawn(async move {
        router
            .submit(
                "dev-0",
                br#"{"id":"s1","op":"write","point":"sp","value":99,"timeout_ms":60000}"#,
            )
            .await
    });
    wait_until(|| h2.core.router.pending("dev-0") == (0, 1)).await;
    let router = h2.core.router.clone();
    let queued = tokio::spawn(async move {
        router
            .submit("dev-0", br#"{"id":"s2","op":"read","timeout_ms":1000}"#)
            .await
    });
    wait_until(|| h2.core.router.pending("dev-0") == (1, 1)).await;
    assert_eq!(
        h2.code("dev-0", r#"{"id":"s3","op":"read"}"#).await,
        Some(ErrorCode::Busy)
    );
    // s2 never got its turn behind the unanswered s1.
    assert_eq!(
        queued.await.unwrap().outcome.unwrap_err().code,
        ErrorCode::Expired
    );
    stuck.abort();
    h.shutdown.cancel();
    h2.shutdown.cancel();
}

#[tokio::test]
async fn a_redelivered_command_id_is_not_executed_twice() {
    let h = Harness::start(1, CommandsConfig::default()).await;
    let req = br#"{"id":"once","op":"write","point":"sp","value":42}"#;
    let (a, b) = tokio::join!(
        h.core.router.submit("dev-0", req),
        h.core.router.submit("dev-0", req)
    );
    let c = h.core.router.submit("dev-0", req).await;
    for answer in [&a, &b, &c] {
        assert_eq!(answer.outcome.as_ref().unwrap()["sp"], Value::Int(42));
    }
    assert_eq!(
        [a.replayed, b.replayed, c.replayed]
            .iter()
            .filter(|r| **r)
            .count(),
        2
    );
    assert_eq!(h.writes.lock().unwrap().get("dev-0"), Some(&1));
    // The same id on another device is a different command.
    let h3 = h
        .core
        .router
        .submit(
            "dev-0",
            br#"{"id":"twice","op":"write","point":"sp","value":1}"#,
        )
        .await;
    assert!(h3.outcome.is_ok());
    assert_eq!(h.writes.lock().unwrap().get("dev-0"), Some(&2));
    h.shutdown.cancel();
}

#[tokio::test]
async fn held_command_waits_for_the_device_or_expires() {
    let config = CommandsConfig {
        hold_when_offline: vec!["test".into()],
        ..Default::default()
    };
    let mut h = Harness::start(1, config).await;
    h.set_state("dev-0", DeviceState::Offline).await;

    // Not back in time: expired, and nothing reached the device.
    let answer = h
        .core
        .router
        .submit(
            "dev-0",
            br#"{"id":"late","op":"write","point":"sp","value":3,"timeout_ms":200}"#,
        )
        .await;
    assert_eq!(answer.outcome.unwrap_err().code, ErrorCode::Expired);
    assert_eq!(h.writes.lock().unwrap().get("dev-0"), None);

    // Back in time: executed once the device is online.
    let router = h.core.router.clone();
    let held = tokio::spawn(async move {
        router
            .submit(
                "dev-0",
                br#"{"id":"held","op":"write","point":"sp","value":4,"timeout_ms":30000}"#,
            )
            .await
    });
    h.set_state("dev-0", DeviceState::Online).await;
    let answer = held.await.unwrap();
    assert_eq!(answer.outcome.unwrap()["sp"], Value::Int(4));
    assert_eq!(h.writes.lock().unwrap().get("dev-0"), Some(&1));
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_commands_are_each_answered_once() {
    let config = CommandsConfig {
        default_timeout: ConfigDuration(Duration::from_secs(60)),
        ..Default::default()
    };
    let h = Harness::start(100, config).await;
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let router = h.core.router.clone();
        tasks.push(tokio::spawn(async move {
            let device = format!("dev-{}", i % 100);
            let body = format!(
                r#"{{"id":"c{i}","op":"write","point":"sp","value":{}}}"#,
                i % 50
            );
            router.submit(&device, body.as_bytes()).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let answer = t.await.unwrap();
        assert!(answer.outcome.is_ok(), "{answer:?}");
        assert!(ids.insert(answer.id.unwrap()), "an id answered twice");
    }
    assert_eq!(ids.len(), 1000);
    assert_eq!(h.answered.load(Ordering::SeqCst), 1000);
    let writes = h.writes.lock().unwrap();
    assert_eq!(writes.len(), 100);
    assert!(writes.values().all(|n| *n == 10));
    drop(writes);
    h.shutdown.cancel();
}

#[tokio::test]
async fn the_idempotency_window_is_checked_and_bounded() {
    let config = CommandsConfig {
        idempotency_max_ids: 50,
        idempotency_max_bytes: 1 << 20,
        ..Default::default()
    };
    let h = Harness::start(1, config).await;
    let router = &h.core.router;
    // Requests for devices that do not exist are remembered nowhere.
    for i in 0..200 {
        let body = format!(r#"{{"id":"{i:0>128}","op":"read"}}"#);
        let a = router.submit(&format!("ghost-{i}"), body.as_bytes()).await;
        assert_eq!(a.outcome.unwrap_err().code, ErrorCode::UnknownDevice);
    }
    assert_eq!(router.remembered_ids().0, 0);
    // An id longer than 128 bytes is refused before anything else.
    let long = format!(r#"{{"id":"{}","op":"read"}}"#, "x".repeat(129));
    let a = router.submit("dev-0", long.as_bytes()).await;
    assert_eq!(a.outcome.unwrap_err().code, ErrorCode::BadRequest);
    assert_eq!(a.id, None);

    // Same id, different body: refused, not answered with the first result.
    let first = router
        .submit(
            "dev-0",
            br#"{"id":"r1","op":"write","point":"sp","value":1}"#,
        )
        .await;
    assert!(first.outcome.is_ok());
    let other = router
        .submit(
            "dev-0",
            br#"{"id":"r1","op":"write","point":"sp","value":2}"#,
        )
        .await;
    let e = other.outcome.unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(
        e.message.contains("reused with a different request"),
        "{e:?}"
    );
    let again = router
        .submit(
            "dev-0",
            br#"{ "value": 1, "point": "sp", "op": "write", "id": "r1" }"#,
        )
        .await;
    assert!(
        again.replayed,
        "same body, other spelling: the first result"
    );
    assert_eq!(h.writes.lock().unwrap().get("dev-0"), Some(&1));

    // The window holds at most idempotency_max_ids ids.
    for i in 0..120 {
        let body = format!(r#"{{"id":"many-{i}","op":"read"}}"#);
        assert!(
            router
                .submit("dev-0", body.as_bytes())
                .await
                .outcome
                .is_ok()
        );
    }
    let (ids, bytes) = router.remembered_ids();
    assert!(ids <= 50, "{ids} ids remembered");
    assert!(bytes > 0 && bytes < 1 << 20, "{bytes} bytes");
    h.shutdown.cancel();
}
