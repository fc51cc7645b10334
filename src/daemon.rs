//! The daemon: loads the configuration, starts the northbound path and the
//! adapters, tells systemd it is ready, keeps the watchdog fed while every
//! part makes progress, and shuts down within 5 s on SIGTERM or SIGINT.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{self, LoadedConfig};
use crate::gateway::Core;
use crate::north::North;
use crate::north::config::{MqttConfig, MqttVersion};
use crate::north::{CommandResultMsg, InboundCommand};
use crate::router::Router;
use crate::supervisor::Backoff;
use crate::systemd::{self, Notifier};

/// How long adapters get to stop before the north side is flushed.
const ADAPTER_STOP_GRACE: Duration = Duration::from_millis(1500);
/// How long the north side gets to flush and disconnect.
const NORTH_STOP_GRACE: Duration = Duration::from_millis(2500);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    North(String),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[cfg(feature = "embedded-broker")]
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
}

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

/// `ferrogate run --config DIR`.
pub fn main(dir: &Path) -> ExitCode {
    let loaded = match config::load(dir, &crate::kinds::all()) {
        Ok(l) => l,
        Err(issues) => {
            for issue in &issues {
                eprintln!("error: {issue}");
            }
            eprintln!("{}: configuration invalid, not starting", dir.display());
            return ExitCode::from(crate::cli::EXIT_INVALID_CONFIG);
        }
    };
    crate::logging::init(&loaded.gateway.log.level);
    match run_blocking(loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run the gateway on a new multi-threaded runtime until a stop signal.
pub fn run_blocking(loaded: LoadedConfig) -> Result<(), DaemonError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(run(loaded, CancellationToken::new()))
}

/// Run until `stop` is cancelled or a SIGTERM/SIGINT arrives.
pub async fn run(mut loaded: LoadedConfig, stop: CancellationToken) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "NOTIFY_SOCKET unusable; not notifying systemd");
        Notifier::disabled()
    });
    let gw = &mut loaded.gateway;
    if gw.mqtt.url == "embedded" {
        start_embedded_broker(&mut gw.mqtt, crate::broker::DEFAULT_PORT)?;
    }
    let adapters_stop = CancellationToken::new();
    let north_stop = CancellationToken::new();
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
    let core = Core::start(
        std::mem::take(&mut loaded.adapters),
        gw.commands.clone(),
        backoff,
        north.uplink_tx(),
        adapters_stop.clone(),
    );
    let commands = tokio::spawn(serve_commands(
        north.take_commands(),
        north.result_tx(),
        core.router.clone(),
    ));
    tracing::info!(
        gateway = %loaded.gateway.gateway_id,
        adapters = core.supervisor.states().len(),
        "gateway running"
    );
    notifier.ready();

    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let watchdog = systemd::watchdog_period().unwrap_or(Duration::from_secs(3600));
    let mut watchdog_tick = tokio::time::interval(watchdog);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break }
            _ = watchdog_tick.tick() => {
                let stalled: Vec<String> = core
                    .supervisor
                    .states()
                    .into_iter()
                    .filter(|(_, s)| s.health.since_last_beat() > stall_after)
                    .map(|(name, _)| name)
                    .collect();
                if stalled.is_empty() {
                    notifier.watchdog();
                } else {
                    tracing::error!(adapters = ?stalled, "adapters stalled; withholding watchdog ping");
                    notifier.status(&format!("stalled: {}", stalled.join(", ")));
                }
            }
        }
    }

    notifier.stopping();
    commands.abort();
    adapters_stop.cancel();
    if tokio::time::timeout(ADAPTER_STOP_GRACE, core.join())
        .await
        .is_err()
    {
        tracing::warn!("adapters did not stop in time");
    }
    north_stop.cancel();
    if tokio::time::timeout(NORTH_STOP_GRACE, north.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("northbound did not flush in time; the outbox keeps the rest");
    }
    Ok(())
}

/// Answer every command arriving from MQTT, each in its own task so a slow
/// device does not hold up the others; the router serialises per device.
async fn serve_commands(
    mut inbound: tokio::sync::mpsc::Receiver<InboundCommand>,
    results: tokio::sync::mpsc::Sender<CommandResultMsg>,
    router: Router,
) {
    while let Some(command) = inbound.recv().await {
        let router = router.clone();
        let results = results.clone();
        tokio::spawn(async move {
            let answer = router.submit(&command.device, &command.payload).await;
            let message = CommandResultMsg {
                device: answer.device,
                id: answer.id.unwrap_or_default(),
                outcome: answer.outcome,
                reply_to: command.reply_to,
            };
            if results.send(message).await.is_err() {
                tracing::warn!("command result not published: northbound closed");
            }
        });
    }
}
