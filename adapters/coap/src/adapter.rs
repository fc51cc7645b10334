//! The ferrogate adapter: [`CoapKind`] builds it from `[coap]`, and its
//! run loop owns one socket (driver) that serves the ingest server and the
//! device client at once, answers commands, and beats health.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrogate_sdk::config::{BuildContext, ConfigIssue, Section, nosec_exposure};
use ferrogate_sdk::{
    Adapter, AdapterContext, AdapterError, AdapterKind, BoxFuture, BuiltAdapter, DeviceMeta,
    Reading, Telemetry, Timestamp, Uplink,
};
use tokio::task::JoinSet;

use crate::config::{CoapPlan, DevicePlan, Mode, plan};
use crate::device::{ResourceTask, execute};
use crate::driver::{self, Incoming};
use crate::ingest::Ingest;
use crate::message::{Code, Response};
use crate::secure::DtlsSocket;
use crate::status::StatusBoard;
use ferrogate_dtls::PskCredential;

/// The CoAP protocol: TOML key `coap`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoapKind;

impl AdapterKind for CoapKind {
    fn key(&self) -> &'static str {
        "coap"
    }

    fn build(
        &self,
        section: &Section<'_>,
        _ctx: &BuildContext<'_>,
    ) -> Result<Vec<BuiltAdapter>, Vec<ConfigIssue>> {
        if section.is_empty() {
            return Ok(Vec::new());
        }
        let plan = plan(section)?;
        if plan.ingest.is_none() && plan.devices.is_empty() {
            return Ok(Vec::new());
        }
        let mut notes = vec![format!("CoAP socket: udp {}", plan.bind)];
        if let Some(ingest) = &plan.ingest {
            notes.extend(nosec_exposure("the CoAP ingest server", plan.bind));
            let paths: Vec<&str> = ingest.paths.iter().map(|p| p.as_str()).collect();
            notes.push(format!("ingest paths: {}", paths.join(", ")));
            if let Some(dtls) = &ingest.dtls {
                notes.push(format!(
                    "CoAP ingest on coaps://{} (DTLS 1.2 PSK), {} credentials from {}",
                    dtls.bind,
                    dtls.credentials.len(),
                    dtls.credentials_path.display()
                ));
                notes.extend(dtls.warnings.iter().cloned());
            }
        }
        for d in &plan.devices {
            let polled = d.resources.iter().filter(|r| r.mode == Mode::Poll).count();
            let observed = d
                .resources
                .iter()
                .filter(|r| r.mode == Mode::Observe)
                .count();
            notes.push(format!(
                "device {}: {} polled, {} observed resource(s){}",
                d.name,
                polled,
                observed,
                d.address
                    .map(|a| format!(" at {a}"))
                    .unwrap_or_else(|| " (push only)".into())
            ));
        }
        Ok(vec![BuiltAdapter {
            name: "coap".to_string(),
            devices: plan
                .devices
                .iter()
                .map(|d| (d.name.clone(), d.pos.clone()))
                .collect(),
            notes,
            fingerprint: ferrogate_sdk::fingerprint(&plan),
            policies: Default::default(),
            adapter: Box::new(CoapAdapter::new(plan)),
        }])
    }
}

/// The running adapter.
pub struct CoapAdapter {
    plan: Arc<CoapPlan>,
}

impl CoapAdapter {
    pub fn new(plan: CoapPlan) -> Self {
        CoapAdapter {
            plan: Arc::new(plan),
        }
    }
}

impl Adapter for CoapAdapter {
    fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
        let plan = self.plan.clone();
        Box::pin(run(plan, ctx))
    }
}

/// The engine's seed (first message id, jitter): random, so message ids
/// start somewhere an off-path peer cannot guess.
fn seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    })
}

async fn run(plan: Arc<CoapPlan>, ctx: AdapterContext) -> Result<(), AdapterError> {
    let socket = tokio::net::UdpSocket::bind(plan.bind).await.map_err(|e| {
        AdapterError::new(format!("cannot bind the CoAP socket to {}: {e}", plan.bind))
    })?;
    let stop = ctx.shutdown.child_token();
    let mut endpoint = plan.endpoint.clone();
    endpoint.seed = seed();
    let (coap, mut incoming) = driver::spawn(socket, endpoint.clone(), stop.clone());
    // the ingest server's DTLS listener: its own socket and engine
    let secure = match plan.ingest.as_ref().and_then(|i| i.dtls.as_ref()) {
        Some(dtls) => {
            let socket = tokio::net::UdpSocket::bind(dtls.bind).await.map_err(|e| {
                AdapterError::new(format!(
                    "cannot bind the CoAP DTLS socket to {}: {e}",
                    dtls.bind
                ))
            })?;
            let socket = DtlsSocket::server(socket, dtls.limits.clone(), dtls.credentials.clone());
            // the handle lives as long as the loop: its driver stops without it
            let (handle, incoming) = driver::spawn(socket.clone(), endpoint, stop.clone());
            tracing::info!(adapter = %ctx.name, local = %dtls.bind, "CoAP ingest listening for DTLS");
            Some((socket, handle, incoming))
        }
        None => None,
    };
    let (secure, _secure_coap, mut secure_incoming) = match secure {
        Some((s, h, i)) => (Some(s), Some(h), Some(i)),
        None => (None, None, None),
    };
    tracing::info!(adapter = %ctx.name, local = %coap.local_addr(), "CoAP adapter listening");
    if plan.ingest.is_some() {
        if let Some(warning) = nosec_exposure("the CoAP ingest server", plan.bind) {
            tracing::warn!(adapter = %ctx.name, "{warning}");
        }
    }

    for device in &plan.devices {
        let meta = DeviceMeta {
            device: device.name.clone(),
            points: device.points.clone(),
            operations: None,
            attributes: attributes(device),
        };
        if ctx.uplink.send(Uplink::Meta(meta)).await.is_err() {
            stop.cancel();
            return Ok(());
        }
    }

    let status = StatusBoard::new(ctx.uplink.clone());
    let mut tasks = JoinSet::new();
    for device in &plan.devices {
        let device = Arc::new(device.clone());
        for resource in &device.resources {
            if device.address.is_some() && resource.mode != Mode::None {
                tasks.spawn(
                    ResourceTask {
                        coap: coap.clone(),
                        device: device.clone(),
                        resource: resource.clone(),
                        uplink: ctx.uplink.clone(),
                        status: status.clone(),
                        shutdown: stop.clone(),
                    }
                    .run(),
                );
            }
        }
    }

    let mut ingest = plan
        .ingest
        .clone()
        .map(|p| Ingest::new(p, plan.devices.iter().map(|d| d.name.clone())));
    let devices: BTreeMap<String, Arc<DevicePlan>> = plan
        .devices
        .iter()
        .map(|d| (d.name.clone(), Arc::new(d.clone())))
        .collect();
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let mut report = tokio::time::interval(Duration::from_secs(5));
    let mut reported = crate::Stats::default();
    let mut commands_open = true;
    let result = loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break Ok(()),
            _ = beat.tick() => ctx.health.beat(),
            _ = report.tick() => {
                if let Ok(stats) = coap.stats().await {
                    count_refusals(&ctx, &reported, &stats);
                    reported = stats;
                }
                for (reason, n) in secure.iter().flat_map(|s| s.take_counts()) {
                    ctx.refusals.add(reason, n);
                }
            }
            Some(request) = recv(secure_incoming.as_mut()) => {
                ctx.health.beat();
                let via = secure.as_ref().and_then(|s| s.credential(request.peer));
                match via {
                    Some(via) => on_ingest(&ctx, &status, ingest.as_mut(), Some(&via), request).await,
                    // the session ended since: the device sends again
                    None => request.responder.respond(Response::new(Code::SERVICE_UNAVAILABLE)),
                }
            }
            request = incoming.recv() => match request {
                Some(request) => {
                    ctx.health.beat();
                    on_ingest(&ctx, &status, ingest.as_mut(), None, request).await;
                }
                // The driver also stops on shutdown; only otherwise is it a failure.
                None if ctx.shutdown.is_cancelled() => break Ok(()),
                None => break Err(AdapterError::new("the CoAP driver stopped")),
            },
            command = ctx.commands.recv(), if commands_open => match command {
                Some(request) => {
                    let coap = coap.clone();
                    let device = devices.get(&request.command.device).cloned();
                    tasks.spawn(async move {
                        let outcome = match device {
                            Some(device) => {
                                let deadline = request.command.deadline;
                                match tokio::time::timeout_at(deadline, execute(&coap, &device, &request.command)).await {
                                    Ok(outcome) => outcome,
                                    Err(_) => Err(ferrogate_sdk::CommandError::new(
                                        ferrogate_sdk::ErrorCode::Timeout,
                                        "the device did not answer before the command's deadline",
                                    )),
                                }
                            }
                            None => Err(ferrogate_sdk::CommandError::new(
                                ferrogate_sdk::ErrorCode::UnknownDevice,
                                format!("`{}` is not a configured CoAP device", request.command.device),
                            )),
                        };
                        request.respond(outcome);
                    });
                }
                None => commands_open = false,
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::error!(adapter = %ctx.name, "a CoAP task panicked");
                    }
                }
            }
        }
    };
    stop.cancel();
    // Tasks watch `stop`; give them a moment, then abandon the rest.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    result
}

/// Bad input is counted by the engine; add what is new to the adapter's
/// refusal counters (`malformed`, `rate_limited`, `rejected`,
/// `unknown_token`) and say so in the log, so a misbehaving device or a
/// flood is visible.
fn count_refusals(ctx: &AdapterContext, before: &crate::Stats, now: &crate::Stats) {
    let moved = [
        ("malformed", now.malformed.saturating_sub(before.malformed)),
        (
            "rate_limited",
            now.rate_limited.saturating_sub(before.rate_limited),
        ),
        (
            "rejected",
            now.rejected_requests
                .saturating_sub(before.rejected_requests),
        ),
        (
            "unknown_token",
            now.unknown_tokens.saturating_sub(before.unknown_tokens),
        ),
    ];
    if moved.iter().all(|(_, n)| *n == 0) {
        return;
    }
    for (reason, n) in moved {
        ctx.refusals.add(reason, n);
    }
    tracing::info!(
        adapter = %ctx.name,
        malformed = now.malformed,
        rate_limited = now.rate_limited,
        rejected = now.rejected_requests,
        unknown_tokens = now.unknown_tokens,
        duplicates = now.duplicates,
        retransmissions = now.retransmissions,
        "CoAP datagrams refused so far"
    );
}

fn attributes(device: &DevicePlan) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    out.insert("protocol".into(), "coap".into());
    if let Some(a) = device.address {
        out.insert("address".into(), a.to_string().into());
    }
    out
}

/// The next request from the DTLS listener; never when there is none.
async fn recv(incoming: Option<&mut tokio::sync::mpsc::Receiver<Incoming>>) -> Option<Incoming> {
    match incoming {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn on_ingest(
    ctx: &AdapterContext,
    status: &StatusBoard,
    ingest: Option<&mut Ingest>,
    via: Option<&PskCredential>,
    request: Incoming,
) {
    let Some(ingest) = ingest else {
        request.responder.respond(
            Response::new(Code::NOT_FOUND).with_diagnostic("this gateway accepts no readings"),
        );
        return;
    };
    let now = Timestamp::now();
    match ingest.accept(&request.request, via, now) {
        Err(refused) => {
            tracing::debug!(adapter = %ctx.name, peer = %request.peer, path = %request.request.path_string(),
                code = %refused.response.code, reason = refused.reason, "CoAP ingest request refused");
            ctx.refusals.count(refused.reason);
            request.responder.respond(refused.response);
        }
        Ok(accepted) => {
            if accepted.first_seen {
                let meta = DeviceMeta {
                    device: accepted.device.clone(),
                    attributes: [("protocol".to_string(), serde_json::Value::from("coap"))]
                        .into_iter()
                        .collect(),
                    ..DeviceMeta::default()
                };
                if ctx.uplink.send(Uplink::Meta(meta)).await.is_err() {
                    request
                        .responder
                        .respond(Response::new(Code::SERVICE_UNAVAILABLE));
                    return;
                }
            }
            status.report(&accepted.device, "ingest", Ok(())).await;
            let readings: Vec<Reading> = accepted
                .samples
                .into_iter()
                .map(|s| Reading::ok(s.point, s.value, s.ts))
                .collect();
            let sent = readings.is_empty()
                || ctx
                    .uplink
                    .send(Uplink::Telemetry(Telemetry {
                        device: accepted.device.clone(),
                        ts: now,
                        readings,
                    }))
                    .await
                    .is_ok();
            // Acknowledge only what the pipeline took: otherwise the device
            // should send again.
            let response = if sent {
                Response::new(Code::CHANGED)
            } else {
                Response::new(Code::SERVICE_UNAVAILABLE).with_diagnostic("gateway shutting down")
            };
            request.responder.respond(response);
        }
    }
}
