//! The daemon: loads the configuration, starts the northbound path, the
//! adapters and the control socket, tells systemd it is ready, keeps the
//! watchdog fed while every adapter makes progress, reloads on SIGHUP (or
//! `ferrogate reload`) without touching the MQTT session or the outbox, and
//! shuts down within 5 s on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, LoadedConfig};
use crate::control::server::{self as control, ControlState, ReloadRequest};
use crate::gateway::Core;
use crate::logging::LogHandle;
use crate::metrics;
use crate::north::config::MqttConfig;
#[cfg(feature = "embedded-broker")]
use crate::north::config::MqttVersion;
use crate::north::journal::{Done, Journal, Pending, Recovered};
use crate::north::{CommandResultMsg, InboundCommand, North};
use crate::router::Router;
use crate::supervisor::Backoff;
use crate::systemd::{self, Notifier};

/// How long adapters get to stop before the north side is flushed.
const ADAPTER_STOP_GRACE: Duration = Duration::from_millis(1500);
/// Longest wait for the outbox writer to take the devices' offline status.
const OFFLINE_ANNOUNCE_GRACE: Duration = Duration::from_millis(500);
/// How often a command resumed after a restart checks whether its device
/// is back.
const RESUME_POLL: Duration = Duration::from_millis(100);
/// How long the north side gets to flush and disconnect.
const NORTH_STOP_GRACE: Duration = Duration::from_millis(2500);
/// How often adapter health is checked when systemd asks for no watchdog.
const HEALTH_CHECK: Duration = Duration::from_secs(5);
/// How often free heap pages are given back (see [`release_free_memory`]).
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    North(String),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    StateLock(#[from] crate::state_lock::LockError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("metrics endpoint {0}: {1}")]
    Metrics(String, std::io::Error),
    #[cfg(feature = "embedded-broker")]
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
}

/// The port `mqtt.url = "embedded"` listens on (in builds without the
/// `embedded-broker` feature that URL is refused).
pub const EMBEDDED_BROKER_PORT: u16 = 1883;

/// Start the in-process broker and point the MQTT session at it. rumqttd
/// speaks MQTT 3.1.1 only.
#[cfg(feature = "embedded-broker")]
pub fn start_embedded_broker(mqtt: &mut MqttConfig, port: u16) -> Result<(), DaemonError> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    crate::broker::start(addr)?;
    mqtt.url = format!("mqtt://{addr}");
    mqtt.version = MqttVersion::V311;
    tracing::info!(%addr, "embedded MQTT broker listening");
    Ok(())
}

#[cfg(not(feature = "embedded-broker"))]
pub fn start_embedded_broker(_mqtt: &mut MqttConfig, _port: u16) -> Result<(), DaemonError> {
    Err(DaemonError::North(
        "mqtt.url = \"embedded\" needs a build with the `embedded-broker` feature".into(),
    ))
}

/// Give free heap pages back to the system: glibc keeps freed pages until
/// asked, which a 256 MB box cannot afford. Called after the configuration
/// is parsed (measured with 1000 Modbus devices x 100 inline points, a
/// 6.4 MB conf.d file, release build, 8 s after start: 210 MB resident
/// without the trim, 99 MB with it) and every [`TRIM_EVERY`], which returns
/// what bursts left behind (every device's first meta and poll at start, a
/// registration storm).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it
    // touches no memory the program still owns.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// At most two malloc arenas: glibc's default of eight per core lets a few
/// worker threads each keep a mostly empty arena of its own (measured with
/// 1000 Modbus devices: most of the resident memory sat in arenas).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// How often a gateway waiting for its configuration checks it again.
const CONFIG_RECHECK: Duration = Duration::from_secs(5);

/// `ferrogate run --config DIR [--wait-for-config]`.
pub fn main(dir: &Path, wait_for_config: bool) -> ExitCode {
    limit_malloc_arenas();
    let loaded = match config::load(dir, &crate::kinds::all()) {
        Ok(l) => l,
        Err(issues) if wait_for_config => match wait_for_valid_config(dir, issues) {
            Some(l) => l,
            None => return ExitCode::SUCCESS,
        },
        Err(issues) => {
            for issue in &issues {
                eprintln!("error: {issue}");
            }
            eprintln!("{}: configuration invalid, not starting", dir.display());
            return ExitCode::from(crate::cli::EXIT_INVALID_CONFIG);
        }
    };
    let log = crate::logging::init(&loaded.gateway.log.level);
    for ignored in config::ignored_files(dir) {
        tracing::warn!(file = %ignored.display(), "not read: only *.toml files are");
    }
    release_free_memory();
    // One thread runs every task; fsyncs and malloc_trim go to the blocking
    // pool. Measured with ferrogate-bench, one session (BENCHMARKS.md):
    // Modbus 1000 x 100 @ 1 s 5.6 % of a core and 17.7 MB on this runtime,
    // 6.9 % / 19.1 MB with one worker thread, 9.7 % / 21.3 MB with two; one
    // worker against two also gave a higher pipeline ceiling (161k vs 145k
    // msg/s) and CoAP ingest (90k vs 77k req/s). Cross-thread wake-ups cost
    // more than the second core gave.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(
        loaded,
        dir.to_path_buf(),
        log,
        CancellationToken::new(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A fresh install: the configuration is not valid yet (the shipped
/// minimal `gateway.toml` leaves `gateway_id` unset on purpose), so nothing
/// joins the broker. Say what is wrong and how to go on, tell systemd we
/// are up and waiting (status line, watchdog pings), and check again every
/// [`CONFIG_RECHECK`] or on SIGHUP. `None` when stopped while waiting.
fn wait_for_valid_config(
    dir: &Path,
    issues: Vec<ferrogate_sdk::config::ConfigIssue>,
) -> Option<LoadedConfig> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        // Handlers first: a SIGHUP right after the message must not kill us.
        let mut term = signal(SignalKind::terminate()).ok()?;
        let mut int = signal(SignalKind::interrupt()).ok()?;
        let mut hup = signal(SignalKind::hangup()).ok()?;
        for issue in &issues {
            eprintln!("error: {issue}");
        }
        eprintln!(
            "{}: waiting for a valid configuration ({} error{}): edit it, check it with `ferrogate config check --config {0}`; the gateway starts once it passes (checked every {} s and on SIGHUP)",
            dir.display(),
            issues.len(),
            if issues.len() == 1 { "" } else { "s" },
            CONFIG_RECHECK.as_secs()
        );
        let notifier = Notifier::from_env().unwrap_or_else(|_| Notifier::disabled());
        notifier.ready();
        notifier.status(&format!(
            "waiting for configuration: {} error(s), see `ferrogate config check --config {}`",
            issues.len(),
            dir.display()
        ));
        loop {
            tokio::select! {
                _ = term.recv() => return None,
                _ = int.recv() => return None,
                _ = hup.recv() => {}
                _ = tokio::time::sleep(CONFIG_RECHECK) => {}
            }
            notifier.watchdog();
            if let Ok(loaded) = config::load(dir, &crate::kinds::all()) {
                eprintln!("{}: configuration valid, starting", dir.display());
                notifier.status("configuration valid, starting");
                return Some(loaded);
            }
        }
    })
}

/// Run until `stop` is cancelled or a SIGTERM/SIGINT arrives. `config_dir`
/// is read again on reload.
pub async fn run(
    mut loaded: LoadedConfig,
    config_dir: PathBuf,
    log: LogHandle,
    stop: CancellationToken,
) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "NOTIFY_SOCKET unusable; not notifying systemd");
        Notifier::disabled()
    });
    // As written in the files, before the embedded broker rewrites the URL:
    // what a reload compares against.
    let configured = loaded.gateway.clone();
    let gw = &mut loaded.gateway;
    // Before anything opens the outbox or connects as this gateway.
    let _state_lock = crate::state_lock::StateLock::acquire(&gw.state_dir)?;
    if gw.mqtt.url == "embedded" {
        start_embedded_broker(&mut gw.mqtt, EMBEDDED_BROKER_PORT)?;
    }
    let adapters_stop = CancellationToken::new();
    let north_stop = CancellationToken::new();
    let control_stop = CancellationToken::new();
    let mut north = North::start(
        &gw.gateway_id,
        &gw.mqtt,
        &gw.outbox,
        &gw.state_dir,
        north_stop.clone(),
    )
    .await
    .map_err(|e| DaemonError::North(e.to_string()))?;
    let backoff = Backoff {
        min: gw.supervisor.restart_backoff_min.0,
        max: gw.supervisor.restart_backoff_max.0,
    };
    let stall_after = gw.supervisor.stall_after.0;
    let mut core = Core::start(
        std::mem::take(&mut loaded.adapters),
        gw.commands.clone(),
        backoff,
        north.uplink_tx(),
        adapters_stop.clone(),
    );
    let journal = open_journal(&gw.state_dir, gw.commands.idempotency_window.0).await;
    let commands = tokio::spawn(serve_commands(
        north.take_commands(),
        north.result_tx(),
        core.router.clone(),
        journal,
    ));
    let sparkplug_stop = CancellationToken::new();
    let sparkplug = crate::sparkplug::start(gw, &core, sparkplug_stop.clone())
        .map_err(|e| DaemonError::North(e.to_string()))?;
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let control_state = ControlState {
        gateway_id: gw.gateway_id.clone(),
        started: Instant::now(),
        router: core.router.clone(),
        directory: core.directory.clone(),
        adapters: core.states(),
        north: north.status_source(),
        live: core.live.clone(),
        reload: reload_tx,
        log,
        stall_after,
        sparkplug: sparkplug.as_ref().map(|s| s.status_source()),
    };
    let control = control::serve(
        &gw.control.socket,
        gw.control.mode,
        control_state,
        control_stop.clone(),
    )
    .await?;
    let metrics_endpoint = if gw.metrics.bind.is_empty() {
        None
    } else {
        let sources = metrics::Sources {
            started: Instant::now(),
            counters: core.counters.clone(),
            uplink_latency: north.uplink_latency(),
            directory: core.directory.clone(),
            adapters: core.states(),
            north: north.status_source(),
            stall_after,
            sparkplug: sparkplug.as_ref().map(|s| s.status_source()),
        };
        Some(
            metrics::serve(&gw.metrics.bind, sources, control_stop.clone())
                .await
                .map_err(|e| DaemonError::Metrics(gw.metrics.bind.clone(), e))?,
        )
    };
    tracing::info!(
        gateway = %gw.gateway_id,
        adapters = core.states().snapshot().len(),
        control = %gw.control.socket.display(),
        "gateway running"
    );
    notifier.ready();

    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut watchdog_tick =
        tokio::time::interval(systemd::watchdog_period().unwrap_or(HEALTH_CHECK));
    let mut trim_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + TRIM_EVERY / 6, TRIM_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                notifier.reloading();
                let _ = reload(&mut core, &config_dir, &configured).await;
                notifier.ready();
            }
            Some(reply) = reload_rx.recv() => {
                notifier.reloading();
                let _ = reply.send(reload(&mut core, &config_dir, &configured).await);
                notifier.ready();
            }
            _ = trim_tick.tick() => { tokio::task::spawn_blocking(release_free_memory); }
            _ = watchdog_tick.tick() => {
                let stalled = core.states().stalled(stall_after);
                if stalled.is_empty() {
                    notifier.watchdog();
                } else {
                    tracing::error!(adapters = ?stalled, "adapters stalled; withholding the watchdog ping");
                    notifier.status(&format!("stalled: {}", stalled.join(", ")));
                }
            }
        }
    }

    notifier.stopping();
    control_stop.cancel();
    commands.abort();
    adapters_stop.cancel();
    sparkplug_stop.cancel();
    let directory = core.directory.clone();
    if tokio::time::timeout(ADAPTER_STOP_GRACE, core.join())
        .await
        .is_err()
    {
        tracing::warn!("adapters did not stop in time");
    }
    announce_offline(&north, &directory).await;
    // Not `north_stop.cancel()`: that stops the writer and the session at
    // once, and the session could disconnect before the writer stored the
    // offline statuses. `shutdown` stops them in order.
    if tokio::time::timeout(NORTH_STOP_GRACE, north.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("northbound did not flush in time; the outbox keeps the rest");
    }
    crate::sparkplug::stopped(sparkplug).await;
    let _ = control.await;
    if let Some(endpoint) = metrics_endpoint {
        let _ = endpoint.await;
    }
    Ok(())
}

/// Opens `state_dir/commands.journal`; without it commands still work but
/// do not survive a restart (said at WARN).
async fn open_journal(state_dir: &Path, window: Duration) -> Option<(Journal, Recovered)> {
    let path = state_dir.join("commands.journal");
    let opened = tokio::task::spawn_blocking({
        let path = path.clone();
        move || Journal::open(&path, window)
    })
    .await;
    match opened {
        Ok(Ok((journal, recovered))) => {
            if recovered.damaged > 0 {
                tracing::warn!(lines = recovered.damaged, path = %path.display(), "command journal: unreadable lines skipped");
            }
            Some((journal, recovered))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, path = %path.display(), "command journal unusable: commands will not survive a restart");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "command journal not opened");
            None
        }
    }
}

/// On a clean stop every device not already offline gets a retained
/// `offline` status ("gateway stopped"), stored in the outbox before the
/// north side flushes: a consumer reading `{root}/devices/+/status` sees
/// the truth after a stop, not the last `online` (the last will covers
/// only `{root}/status`, and only on a crash).
async fn announce_offline(north: &North, directory: &crate::directory::Directory) {
    let uplink = north.uplink_tx();
    let stopped = ferrogate_sdk::Timestamp::now();
    let deadline = tokio::time::Instant::now() + OFFLINE_ANNOUNCE_GRACE;
    for (device, entry) in directory.snapshot() {
        if entry.state == Some(ferrogate_sdk::DeviceState::Offline) {
            continue;
        }
        let status = ferrogate_sdk::Uplink::Status(ferrogate_sdk::DeviceStatus {
            device,
            state: ferrogate_sdk::DeviceState::Offline,
            reason: Some("gateway stopped".into()),
            ts: stopped,
        });
        let envelope = ferrogate_sdk::UplinkEnvelope {
            adapter: entry.adapter.as_str().into(),
            uplink: status,
            produced: std::time::Instant::now(),
        };
        if tokio::time::timeout_at(deadline, uplink.send(envelope))
            .await
            .map_or(true, |sent| sent.is_err())
        {
            tracing::warn!("devices' offline status not all stored: northbound busy or closed");
            return;
        }
    }
}

/// Load the configuration again and swap the adapters. Gateway-level
/// settings (MQTT, outbox, control socket) need a restart; a change there
/// is reported, not applied. An invalid configuration changes nothing.
async fn reload(
    core: &mut Core,
    dir: &Path,
    running: &config::GatewayConfig,
) -> Result<serde_json::Value, Vec<String>> {
    let loaded = match config::load(dir, &crate::kinds::all()) {
        Ok(l) => l,
        Err(issues) => {
            let errors: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
            tracing::error!(errors = %errors.join("; "), "reload rejected; the running configuration stays");
            return Err(errors);
        }
    };
    let mut restart_needed = Vec::new();
    if loaded.gateway.gateway_id != running.gateway_id {
        restart_needed.push("gateway_id");
    }
    if format!("{:?}{:?}", loaded.gateway.mqtt, loaded.gateway.outbox)
        != format!("{:?}{:?}", running.mqtt, running.outbox)
    {
        restart_needed.push("mqtt/outbox");
    }
    if loaded.gateway.sparkplug != running.sparkplug {
        restart_needed.push("sparkplug");
    }
    let summary = core.reload(loaded.adapters).await;
    release_free_memory();
    let c = &summary.changes;
    tracing::info!(added = ?c.added, removed = ?c.removed, changed = ?c.changed, unchanged = c.unchanged.len(), forgotten = ?summary.forgotten, "configuration reloaded");
    Ok(serde_json::json!({
        "adapters": summary.adapters,
        "added": c.added,
        "removed": c.removed,
        "changed": c.changed,
        "unchanged": c.unchanged,
        "devices_removed": summary.forgotten,
        "devices": core.directory.snapshot().len(),
        "restart_needed_for": restart_needed,
    }))
}

/// Answer every command arriving from MQTT, each in its own task so a slow
/// device does not hold up the others; the router serialises per device.
/// A command is journalled before its PUBACK and its result after it ran
/// ([`crate::north::journal`]); what an earlier run left pending is executed (or expires)
/// first, and its results answer repeated ids.
async fn serve_commands(
    mut inbound: mpsc::Receiver<InboundCommand>,
    results: mpsc::Sender<CommandResultMsg>,
    router: Router,
    journal: Option<(Journal, Recovered)>,
) {
    let (journal, recovered) = match journal {
        Some((j, r)) => (Some(Arc::new(std::sync::Mutex::new(j))), r),
        None => (None, Recovered::default()),
    };
    let now_ms = ferrogate_sdk::Timestamp::now().0;
    for d in recovered.done {
        if !d.stored {
            // Answered, but the process died before the answer reached
            // the outbox: publish it now.
            let result = CommandResultMsg {
                device: d.device.clone(),
                id: d.id.clone(),
                outcome: d.outcome.clone(),
                reply_to: None,
                stored: None,
            };
            tokio::spawn(publish_result(
                result,
                results.clone(),
                journal.clone(),
                None,
                true,
            ));
        }
        let age = Duration::from_millis(now_ms.saturating_sub(d.at_ms));
        router.remember(&d.device, &d.id, d.fingerprint, d.outcome, age);
    }
    if !recovered.pending.is_empty() {
        tracing::info!(
            commands = recovered.pending.len(),
            "resuming commands taken before the restart"
        );
    }
    for p in recovered.pending {
        let request = crate::north::codec::decode_request(&p.payload);
        let age = Duration::from_millis(now_ms.saturating_sub(p.received_ms));
        let received = tokio::time::Instant::now()
            .checked_sub(age)
            .unwrap_or_else(tokio::time::Instant::now);
        let command = InboundCommand {
            device: p.device,
            payload: p.payload,
            request,
            ack: None,
            reply_to: p.reply_to,
            received,
        };
        tokio::spawn(serve_one(
            command,
            results.clone(),
            router.clone(),
            journal.clone(),
            false,
        ));
    }
    while let Some(command) = inbound.recv().await {
        tokio::spawn(serve_one(
            command,
            results.clone(),
            router.clone(),
            journal.clone(),
            true,
        ));
    }
}

type SharedJournal = Arc<std::sync::Mutex<Journal>>;

/// Runs one journal write on the blocking pool.
async fn journalled(
    journal: &Option<SharedJournal>,
    write: impl FnOnce(&mut Journal) -> std::io::Result<()> + Send + 'static,
) {
    let Some(journal) = journal.clone() else {
        return;
    };
    let written = tokio::task::spawn_blocking(move || {
        let mut j = journal.lock().unwrap_or_else(|e| e.into_inner());
        write(&mut j)
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::warn!("command journal not written: this command would not survive a restart");
    }
}

/// Hands `result` to the outbox; once it is stored there, sends `ack` (the
/// PUBACK of a command that was not journalled) and, if its result is in
/// the journal (`journalled`), marks it stored.
async fn publish_result(
    mut result: CommandResultMsg,
    results: mpsc::Sender<CommandResultMsg>,
    journal: Option<SharedJournal>,
    ack: Option<crate::north::link::Ack>,
    journalled_result: bool,
) {
    let (tell, stored) = tokio::sync::oneshot::channel();
    result.stored = Some(tell);
    let (device, id) = (result.device.clone(), result.id.clone());
    if results.send(result).await.is_err() {
        tracing::warn!("command result not published: northbound closed");
        return;
    }
    if stored.await.is_err() {
        // Not stored (the gateway is stopping): no PUBACK, so the broker
        // hands the command over again; a journalled result is published
        // after the restart.
        return;
    }
    if let Some(ack) = ack {
        ack.send().await;
    }
    if journalled_result {
        journalled(&journal, move |j| j.stored(&device, &id)).await;
    }
}

/// One command: journal (when new), acknowledge, execute, journal the
/// result, publish it. A refused request is not journalled: its PUBACK
/// waits until its answer is in the outbox.
async fn serve_one(
    command: InboundCommand,
    results: mpsc::Sender<CommandResultMsg>,
    router: Router,
    journal: Option<SharedJournal>,
    new: bool,
) {
    let InboundCommand {
        device,
        payload,
        request,
        ack,
        reply_to,
        received,
    } = command;
    if let (true, Ok(r)) = (new, &request) {
        let pending = Pending {
            device: device.clone(),
            id: r.id.clone(),
            payload,
            received_ms: ferrogate_sdk::Timestamp::now()
                .0
                .saturating_sub(received.elapsed().as_millis() as u64),
            reply_to: reply_to.clone(),
        };
        journalled(&journal, move |j| j.pending(&pending)).await;
    }
    let ack = match (&request, ack) {
        (Ok(_), Some(ack)) => {
            ack.send().await;
            None
        }
        (_, ack) => ack,
    };
    let mut journalled_result = false;
    let answer = match request {
        Ok(request) => {
            if !new {
                // A dynamic device (an LwM2M client) may come back only
                // after the restart: give it until the command's deadline.
                let deadline = received + router.timeout_of(&request);
                while !router.knows(&device) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(RESUME_POLL).await;
                }
            }
            let fingerprint = request.fingerprint;
            let answer = router.execute(&device, request, received).await;
            if let (false, Some(id)) = (answer.replayed, &answer.id) {
                let done = Done {
                    device: device.clone(),
                    id: id.clone(),
                    fingerprint,
                    outcome: answer.outcome.clone(),
                    at_ms: ferrogate_sdk::Timestamp::now().0,
                    stored: false,
                };
                journalled(&journal, move |j| j.done(&done)).await;
                journalled_result = journal.is_some();
            }
            answer
        }
        Err(refused) => router.refuse(&device, refused),
    };
    let message = CommandResultMsg {
        device: answer.device,
        id: answer.id.unwrap_or_default(),
        outcome: answer.outcome,
        reply_to,
        stored: None,
    };
    publish_result(message, results, journal, ack, journalled_result).await;
}
