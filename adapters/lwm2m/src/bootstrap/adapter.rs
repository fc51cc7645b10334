//! The tokio shell around the [`BootstrapServer`] core: one UDP socket and
//! a timer. It only moves bytes and reports what the core decided.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogate_sdk::{
    Adapter, AdapterContext, AdapterError, BoxFuture, BuiltAdapter, CommandError, ErrorCode,
};
use tokio::net::UdpSocket;

use super::config::BootstrapSettings;
use super::{BootstrapConfig, BootstrapServer, Output};

/// The longest the loop waits without beating its health.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The bootstrap server as an adapter instance of its own (`lwm2m/bootstrap`),
/// so a change to its accounts restarts it alone on reload.
pub fn built(settings: BootstrapSettings) -> BuiltAdapter {
    let accounts = settings.accounts.by_endpoint.len();
    let mut notes = vec![format!(
        "LwM2M bootstrap server on udp://{}, {accounts} endpoint account(s){}",
        settings.bind,
        if settings.accounts.default.is_some() {
            " and a default for every other endpoint"
        } else {
            "; other endpoints are refused"
        }
    )];
    notes.extend(ferrogate_sdk::config::nosec_exposure(
        "the LwM2M bootstrap server",
        settings.bind,
    ));
    // Hash, not the Debug text: Debug hides the keys, and a changed key
    // must restart the server.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    settings.hash(&mut h);
    BuiltAdapter {
        name: "lwm2m/bootstrap".to_string(),
        devices: Vec::new(),
        notes,
        fingerprint: h.finish(),
        policies: Default::default(),
        adapter: Box::new(BootstrapAdapter {
            settings: Arc::new(settings),
        }),
    }
}

/// The running bootstrap server.
pub struct BootstrapAdapter {
    settings: Arc<BootstrapSettings>,
}

impl Adapter for BootstrapAdapter {
    fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
        let settings = self.settings.clone();
        Box::pin(run(settings, ctx))
    }
}

async fn run(settings: Arc<BootstrapSettings>, ctx: AdapterContext) -> Result<(), AdapterError> {
    let socket = UdpSocket::bind(settings.bind).await.map_err(|e| {
        AdapterError::new(format!(
            "cannot bind the LwM2M bootstrap server to {}: {e}",
            settings.bind
        ))
    })?;
    tracing::info!(adapter = %ctx.name, address = %settings.bind, "LwM2M bootstrap server listening");
    let mut config = BootstrapConfig {
        session_timeout: settings.session_timeout,
        max_sessions: settings.max_sessions,
        ..BootstrapConfig::default()
    };
    config.coap.seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed);
    let mut server = BootstrapServer::new(config, Arc::new(settings.accounts.clone()));
    let mut buf = vec![0u8; 64 * 1024];
    let mut commands_open = true;
    loop {
        while let Some(t) = server.poll_transmit() {
            if let Err(e) = socket.send_to(&t.datagram, t.peer).await {
                tracing::debug!(adapter = %ctx.name, peer = %t.peer, error = %e, "bootstrap send failed");
            }
        }
        while let Some(out) = server.poll_output() {
            match out {
                Output::Bootstrapped {
                    endpoint,
                    peer,
                    server_uri,
                } => {
                    tracing::info!(adapter = %ctx.name, %endpoint, %peer, %server_uri, "client bootstrapped");
                }
                Output::Failed {
                    endpoint,
                    peer,
                    reason,
                } => {
                    ctx.refusals.count("bootstrap_failed");
                    tracing::warn!(adapter = %ctx.name, %endpoint, %peer, %reason, "bootstrap failed");
                }
                Output::Refused { reason } => ctx.refusals.count(reason),
            }
        }
        let tick = Instant::now() + IDLE_TICK;
        let wake =
            tokio::time::Instant::from_std(server.poll_timeout().map_or(tick, |t| t.min(tick)));
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => server.handle(Instant::now(), peer, buf.get(..n).unwrap_or(&[])),
                Err(e) => tracing::debug!(adapter = %ctx.name, error = %e, "bootstrap receive error"),
            },
            // It owns no device: a command routed here is answered, never held.
            request = ctx.commands.recv(), if commands_open => match request {
                Some(request) => request.respond(Err(CommandError::new(
                    ErrorCode::UnknownDevice,
                    "the bootstrap server has no devices",
                ))),
                None => commands_open = false,
            },
            _ = tokio::time::sleep_until(wake) => server.handle_timeout(Instant::now()),
        }
        ctx.health.beat();
    }
}
