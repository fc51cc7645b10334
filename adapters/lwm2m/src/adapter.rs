//! The tokio shell around the [`Lwm2mServer`] core: one UDP socket, the
//! command inbox, the uplink sender and a timer. It only moves bytes,
//! commands and outcomes; every decision is in the core.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogate_sdk::config::{BuildContext, ConfigIssue, Section};
use ferrogate_sdk::{
    Adapter, AdapterContext, AdapterError, AdapterKind, BoxFuture, BuiltAdapter, CommandError,
    CommandRequest, ErrorCode,
};
use tokio::net::UdpSocket;

use ferrogate_dtls::{SessionEvent, SessionTable};

use crate::bootstrap;
use crate::config::{Settings, settings};
use crate::registration::Security;
use crate::server::{Job, Lwm2mServer, Output, ServerConfig};

/// The longest the loop waits without beating its health.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The LwM2M protocol: the `[lwm2m]` configuration table.
pub struct Lwm2mKind;

impl AdapterKind for Lwm2mKind {
    fn key(&self) -> &'static str {
        "lwm2m"
    }

    fn build(
        &self,
        section: &Section<'_>,
        _ctx: &BuildContext<'_>,
    ) -> Result<Vec<BuiltAdapter>, Vec<ConfigIssue>> {
        let (server, bootstrap) = match (settings(section), bootstrap_settings(section)) {
            (Ok(server), Ok(bootstrap)) => (server, bootstrap),
            (Err(mut a), Err(b)) => {
                a.extend(b);
                return Err(a);
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let mut built: Vec<BuiltAdapter> = bootstrap
            .into_iter()
            .map(bootstrap::adapter::built)
            .collect();
        let Some(settings) = server else {
            return Ok(built);
        };
        let mut notes = Vec::new();
        if let Some(bind) = settings.bind {
            notes.push(format!("LwM2M server on udp://{bind} (NoSec)"));
            notes.extend(ferrogate_sdk::config::nosec_exposure(
                "the LwM2M server",
                bind,
            ));
        }
        if let Some(dtls) = &settings.dtls {
            notes.push(format!(
                "LwM2M server on coaps://{} (DTLS 1.2 PSK), {} credentials from {}",
                dtls.bind,
                dtls.credentials.len(),
                dtls.credentials_path.display()
            ));
        }
        notes.extend(
            settings
                .dtls
                .iter()
                .flat_map(|d| d.warnings.iter().cloned()),
        );
        notes.push(format!(
            "{} object definitions",
            settings.registry.objects().count()
        ));
        if let Some(dir) = &settings.object_dir {
            notes.push(format!(
                "{} object definitions loaded from {}",
                settings.loaded_objects.len(),
                dir.display()
            ));
        }
        if !settings.auto_observe.is_empty() {
            let paths: Vec<String> = settings
                .auto_observe
                .iter()
                .map(ToString::to_string)
                .collect();
            notes.push(format!(
                "auto-observe on registration: {}",
                paths.join(", ")
            ));
        }
        built.insert(
            0,
            BuiltAdapter {
                name: "lwm2m".to_string(),
                devices: Vec::new(),
                notes,
                fingerprint: ferrogate_sdk::fingerprint(&settings),
                policies: Default::default(),
                adapter: Box::new(Lwm2mAdapter {
                    settings: Arc::new(settings),
                }),
            },
        );
        Ok(built)
    }
}

/// `[lwm2m.bootstrap]`, when present.
fn bootstrap_settings(
    section: &Section<'_>,
) -> Result<Option<bootstrap::config::BootstrapSettings>, Vec<ConfigIssue>> {
    match section.single("bootstrap") {
        Ok(Some(node)) => bootstrap::config::settings(&node).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(vec![e]),
    }
}

/// The running LwM2M server.
pub struct Lwm2mAdapter {
    settings: Arc<Settings>,
}

impl Adapter for Lwm2mAdapter {
    fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
        let settings = self.settings.clone();
        Box::pin(run(settings, ctx))
    }
}

fn server_config(settings: &Settings) -> ServerConfig {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x1f2e_3d4c);
    let mut config = ServerConfig {
        naming: settings.naming,
        auto_observe: settings.auto_observe.clone(),
        device_prefix: settings.device_prefix.clone(),
        awake_window: settings.queue_awake,
        re_registration: settings.re_registration,
        forget_after: settings.forget_after,
        composite_wait: settings.composite_wait,
        max_instances: settings.max_instances,
        max_observations: settings.max_observations,
        caps: settings.caps,
        ..ServerConfig::default()
    };
    config.coap.seed = seed;
    // a registration storm comes from many sources at once; the per-source
    // limit still applies
    // Every active observation holds an exchange for as long as it lives, so
    // the cap must exceed the fleet's observations, not only the requests
    // in flight: at 64k, clients past the 65,536th were registered but
    // never observed (ferrogate-bench lwm2m --clients 100000).
    config.coap.max_exchanges = 1 << 20;
    config.coap.max_pending_requests = 16 * 1024;
    // one rate-limit bucket per client address: with fewer, a large fleet
    // makes the limiter evict (and rescan) on every datagram
    config.coap.max_sources = 256 * 1024;
    config
}

/// The DTLS listener: its socket and sessions.
struct Secure {
    socket: UdpSocket,
    sessions: SessionTable,
}

async fn bind(address: SocketAddr, what: &str) -> Result<UdpSocket, AdapterError> {
    UdpSocket::bind(address).await.map_err(|e| {
        AdapterError::new(format!(
            "cannot bind LwM2M {what} listener to {address}: {e}"
        ))
    })
}

/// Receive on `socket`, or never when there is none.
async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn run(settings: Arc<Settings>, ctx: AdapterContext) -> Result<(), AdapterError> {
    let plain = match settings.bind {
        Some(address) => Some(bind(address, "NoSec").await?),
        None => None,
    };
    let mut secure = match &settings.dtls {
        Some(dtls) => Some(Secure {
            socket: bind(dtls.bind, "DTLS").await?,
            sessions: SessionTable::new(dtls.limits.clone(), dtls.credentials.clone()),
        }),
        None => None,
    };
    tracing::info!(adapter = %ctx.name, nosec = ?settings.bind, dtls = ?settings.dtls.as_ref().map(|d| d.bind), "LwM2M server listening");
    let mut server = Lwm2mServer::new(
        server_config(&settings),
        Arc::new(settings.registry.clone()),
    )
    .with_owners(ctx.owners.clone());
    if let Some(dtls) = &settings.dtls {
        server = server.with_credentials(dtls.credentials.clone());
    }
    let mut waiting: HashMap<u64, CommandRequest> = HashMap::new();
    let mut next_key = 0u64;
    let mut commands_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    let mut secure_buf = vec![0u8; 64 * 1024];
    loop {
        flush(&mut server, plain.as_ref(), secure.as_mut(), &ctx.name).await;
        if let Some(s) = secure.as_mut() {
            for (reason, n) in s.sessions.take_counts() {
                ctx.refusals.add(reason, n);
            }
        }
        while let Some(out) = server.poll_output() {
            match out {
                Output::Uplink(uplink) => {
                    if ctx.uplink.send(uplink).await.is_err() {
                        return Ok(());
                    }
                }
                Output::Completed { key, outcome } => {
                    if let Some(req) = waiting.remove(&key) {
                        req.respond(outcome);
                    }
                }
                Output::Refused { reason } => ctx.refusals.count(reason),
            }
        }
        // an idle server still ticks once a second, so its health beats
        let tick = Instant::now() + IDLE_TICK;
        let next = [
            server.poll_timeout(),
            secure.as_ref().and_then(|s| s.sessions.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .fold(tick, Instant::min);
        let wake = tokio::time::Instant::from_std(next);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                for (_, req) in waiting.drain() {
                    req.respond(Err(CommandError::new(ErrorCode::DeviceOffline, "the gateway is shutting down")));
                }
                return Ok(());
            }
            received = recv(plain.as_ref(), &mut buf) => match received {
                Ok((n, peer)) => server.handle(Instant::now(), peer, buf.get(..n).unwrap_or(&[])),
                // ICMP port unreachable from a vanished client surfaces here
                Err(e) => tracing::debug!(adapter = %ctx.name, error = %e, "LwM2M receive error"),
            },
            received = recv(secure.as_ref().map(|s| &s.socket), &mut secure_buf) => match (received, secure.as_mut()) {
                (Ok((n, peer)), Some(s)) => {
                    s.sessions.handle(Instant::now(), peer, secure_buf.get(..n).unwrap_or(&[]));
                    deliver(&mut server, &mut s.sessions);
                }
                (Err(e), _) => tracing::debug!(adapter = %ctx.name, error = %e, "LwM2M DTLS receive error"),
                (Ok(_), None) => {}
            },
            request = ctx.commands.recv(), if commands_open => match request {
                Some(request) => {
                    next_key += 1;
                    let job = Job {
                        key: next_key,
                        command: (*request.command).clone(),
                        deadline: request.command.deadline.into_std(),
                    };
                    waiting.insert(next_key, request);
                    server.command(Instant::now(), job);
                }
                None => commands_open = false,
            },
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                server.handle_timeout(now);
                if let Some(s) = secure.as_mut() {
                    s.sessions.handle_timeout(now);
                    deliver(&mut server, &mut s.sessions);
                }
            }
        }
        ctx.health.beat();
    }
}

/// Hand the server what the DTLS sessions decrypted.
fn deliver(server: &mut Lwm2mServer, sessions: &mut SessionTable) {
    let now = Instant::now();
    while let Some(event) = sessions.poll_event() {
        match event {
            SessionEvent::Plaintext {
                peer,
                credential,
                data,
            } => server.handle_dtls(now, peer, &credential, &data),
            SessionEvent::Established { peer, credential } => {
                tracing::debug!(peer = %peer, endpoint = %credential.endpoint, "DTLS session established");
            }
            SessionEvent::Closed { peer, reason } => {
                tracing::debug!(peer = %peer, reason, "DTLS session closed");
            }
        }
    }
}

/// Send what the server has: to a peer with a DTLS session through it; to
/// a client registered over DTLS whose session is gone, nothing (never in
/// the clear); to the others on the plain listener.
async fn flush(
    server: &mut Lwm2mServer,
    plain: Option<&UdpSocket>,
    mut secure: Option<&mut Secure>,
    adapter: &str,
) {
    while let Some(t) = server.poll_transmit() {
        match secure.as_deref_mut() {
            Some(s) if s.sessions.credential(t.peer).is_some() => {
                if let Err(e) = s.sessions.send(Instant::now(), t.peer, &t.datagram) {
                    tracing::debug!(adapter, error = %e, "LwM2M DTLS send failed");
                }
            }
            _ if matches!(server.security_of(t.peer), Some(Security::Psk { .. })) => {
                tracing::debug!(adapter, peer = %t.peer, "no DTLS session with a DTLS client: not sent");
            }
            _ => {
                if let Some(socket) = plain
                    && let Err(e) = socket.send_to(&t.datagram, t.peer).await
                {
                    tracing::debug!(adapter, peer = %t.peer, error = %e, "LwM2M send failed");
                }
            }
        }
    }
    if let Some(s) = secure {
        while let Some(d) = s.sessions.poll_transmit() {
            if let Err(e) = s.socket.send_to(&d.bytes, d.peer).await {
                tracing::debug!(adapter, peer = %d.peer, error = %e, "LwM2M DTLS send failed");
            }
        }
    }
}
