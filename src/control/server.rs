//! The control socket server inside the daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ferrogate_sdk::{ErrorCode, Timestamp, Uplink};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::PROTOCOL_VERSION;
use crate::directory::{Directory, LiveFeed};
use crate::logging::LogHandle;
use crate::north::NorthStatus;
use crate::north::codec;
use crate::north::codec::{Topics, encode_uplink};
use crate::router::Router;
use crate::supervisor::StateHandle;

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// A reload request: the daemon answers with a summary or the config errors.
pub type ReloadRequest = oneshot::Sender<Result<Json, Vec<String>>>;

/// What the control socket reads from the running daemon.
#[derive(Clone)]
pub struct ControlState {
    pub gateway_id: String,
    pub started: Instant,
    pub router: Router,
    pub directory: Directory,
    pub adapters: StateHandle,
    pub north: Arc<dyn Fn() -> NorthStatus + Send + Sync>,
    pub live: LiveFeed,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub log: LogHandle,
    pub stall_after: std::time::Duration,
    /// The Sparkplug edge node's session, when `[sparkplug]` is enabled.
    pub sparkplug: Option<Arc<std::sync::Mutex<crate::sparkplug::SparkplugStatus>>>,
}

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("control socket {path}: {source}")]
pub struct ControlError {
    path: PathBuf,
    source: std::io::Error,
}

/// Bind the socket (replacing a stale one) with `mode`, and serve until
/// `stop` is cancelled; the socket file is removed then.
pub async fn serve(
    path: &Path,
    mode: u32,
    state: ControlState,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let err = |source| ControlError {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket file left by a killed daemon: remove it only if nobody answers.
    if path.exists() && UnixStream::connect(path).await.is_err() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    let path = path.to_path_buf();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let state = state.clone();
                        let stop = stop.clone();
                        tokio::spawn(async move { connection(stream, state, stop).await });
                    }
                    Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn connection(stream: UnixStream, state: ControlState, stop: CancellationToken) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64);
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            r = limited.read_line(&mut line) => r,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') => {
                let _ = send(
                    &mut write,
                    &failure(
                        ErrorCode::BadRequest,
                        "request line too long or not terminated",
                    ),
                )
                .await;
                return;
            }
            Ok(_) => {}
        }
        let request: Json = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let reply = failure(ErrorCode::BadRequest, &format!("not JSON: {e}"));
                if send(&mut write, &reply).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if request["v"].as_u64() != Some(PROTOCOL_VERSION) {
            let reply = failure(
                ErrorCode::BadRequest,
                &format!(
                    "unsupported protocol version {}; this daemon speaks {PROTOCOL_VERSION}",
                    request["v"]
                ),
            );
            if send(&mut write, &reply).await.is_err() {
                return;
            }
            continue;
        }
        if request["cmd"] == "tail" {
            tail(&mut write, &state, &request, &stop).await;
            return;
        }
        let reply = handle(&state, &request).await;
        if send(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, value: &Json) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

fn success(result: Json) -> Json {
    json!({"v": PROTOCOL_VERSION, "ok": true, "result": result})
}

fn failure(code: ErrorCode, message: &str) -> Json {
    json!({"v": PROTOCOL_VERSION, "ok": false, "error": {"code": code.as_str(), "message": message}})
}

async fn handle(state: &ControlState, request: &Json) -> Json {
    match request["cmd"].as_str().unwrap_or("") {
        "status" => success(status(state)),
        "devices" => success(devices(state, request["adapter"].as_str())),
        "points" => points(state, request["device"].as_str()),
        "read" => {
            let mut body = json!({"id": command_id(), "op": "read"});
            if let Some(points) = request.get("points") {
                body["points"] = points.clone();
            }
            if let Some(t) = request.get("timeout_ms") {
                body["timeout_ms"] = t.clone();
            }
            command(state, request, body).await
        }
        "write" => {
            let body = json!({
                "id": command_id(),
                "op": "write",
                "point": request["point"],
                "value": request["value"],
            });
            command(state, request, body).await
        }
        "command" => {
            let mut body = request["request"].clone();
            if body.is_object() && body.get("id").is_none() {
                body["id"] = command_id().into();
            }
            command(state, request, body).await
        }
        "reload" => {
            let (tx, rx) = oneshot::channel();
            if state.reload.send(tx).await.is_err() {
                return failure(ErrorCode::Busy, "the daemon is shutting down");
            }
            match rx.await {
                Ok(Ok(summary)) => success(summary),
                Ok(Err(errors)) => failure(
                    ErrorCode::BadRequest,
                    &format!(
                        "new configuration rejected, the old one keeps running:\n{}",
                        errors.join("\n")
                    ),
                ),
                Err(_) => failure(ErrorCode::Busy, "reload abandoned"),
            }
        }
        "log-level" => match request["level"].as_str() {
            Some(level) => match state.log.set(level) {
                Ok(()) => success(json!({"level": level})),
                Err(e) => failure(ErrorCode::InvalidValue, &e),
            },
            None => failure(ErrorCode::BadRequest, "log-level needs `level`"),
        },
        other => failure(
            ErrorCode::BadRequest,
            &format!(
                "unknown cmd `{other}`; expected status, devices, points, read, write, command, tail, reload, log-level"
            ),
        ),
    }
}

/// A unique id for a command from the socket: the idempotency cache must
/// never take two CLI commands for one redelivered request.
fn command_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("cli-{}-{n}", Timestamp::now().0)
}

async fn command(state: &ControlState, request: &Json, body: Json) -> Json {
    let Some(device) = request["device"].as_str() else {
        return failure(ErrorCode::BadRequest, "missing `device`");
    };
    let answer = match codec::request_from_json(&body) {
        Ok(req) => {
            state
                .router
                .execute(device, req, tokio::time::Instant::now())
                .await
        }
        Err(refused) => return failure(refused.error.code, &refused.error.message),
    };
    match answer.outcome {
        Ok(values) => success(Json::Object(
            values.into_iter().map(|(k, v)| (k, v.to_json())).collect(),
        )),
        Err(e) => failure(e.code, &e.message),
    }
}

fn status(state: &ControlState) -> Json {
    let north = (state.north)();
    let adapters = state.adapters.snapshot();
    let devices = state.directory.snapshot();
    let online = devices
        .values()
        .filter(|d| d.state == Some(ferrogate_sdk::DeviceState::Online))
        .count();
    let mut recent_errors = Vec::new();
    if let Some(e) = &north.live.last_error {
        recent_errors.push(json!({"source": "mqtt", "message": e}));
    }
    for d in &north.outbox.damage {
        recent_errors.push(json!({"source": "outbox", "message": d}));
    }
    if let Some(e) = &north.outbox.last_write_error {
        recent_errors.push(json!({"source": "outbox", "message": e}));
    }
    let adapters_json: Vec<Json> = adapters
        .iter()
        .map(|(name, s)| {
            if let Some((ts, e)) = &s.last_error {
                recent_errors.push(json!({"source": name, "ts": ts.0, "message": e}));
            }
            let owned: Vec<_> = devices.values().filter(|d| &d.adapter == name).collect();
            json!({
                "name": name,
                "state": s.state.as_str(),
                "restarts": s.restarts,
                "stalled": s.health.since_last_beat() > state.stall_after,
                "last_progress_ms_ago": s.health.since_last_beat().as_millis() as u64,
                "last_error": s.last_error.as_ref().map(|(_, e)| e),
                "devices_online": owned.iter().filter(|d| d.state == Some(ferrogate_sdk::DeviceState::Online)).count(),
                "devices_total": owned.len(),
                "refused": s.refusals.snapshot(),
            })
        })
        .collect();
    json!({
        "gateway": state.gateway_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "mqtt": {
            "broker": north.broker,
            "connected": north.live.connected,
            "since_ms": north.live.since_ms,
            "last_error": north.live.last_error,
            "published": north.live.published,
            "acked": north.live.acked,
            "reconnects": north.live.reconnects,
            "commands_received": north.live.commands_received,
            "commands_answered": north.live.commands_answered,
            "commands_busy": north.live.commands_busy,
            "commands_retained": north.live.commands_retained,
        },
        "outbox": {
            "depth": north.outbox.depth,
            "bytes": north.outbox.bytes,
            "oldest_age_ms": north.outbox.oldest_age_ms,
            "dropped": north.outbox.dropped,
            "dropped_retained": north.outbox.dropped_retained,
            "dropped_other": north.outbox.dropped_other,
            "resent": north.outbox.resent,
            "write_errors": north.outbox.write_errors,
            "quarantined": north.outbox.quarantined,
            "last_quarantined": north.outbox.last_quarantined,
        },
        "adapters": adapters_json,
        "devices": {"online": online, "total": devices.len()},
        "recent_errors": recent_errors,
        "sparkplug": state.sparkplug.as_ref().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).to_json()),
    })
}

fn devices(state: &ControlState, adapter: Option<&str>) -> Json {
    let list: Vec<Json> = state
        .directory
        .snapshot()
        .into_iter()
        .filter(|(_, d)| adapter.is_none_or(|a| adapter_matches(&d.adapter, a)))
        .map(|(name, d)| {
            json!({
                "name": name,
                "adapter": d.adapter,
                "state": d.state.map(|s| s.as_str()).unwrap_or("unknown"),
                "reason": d.reason,
                "last_seen": d.last_seen.map(|t| t.0),
                "last_error": d.last_error,
                "security": d.meta.as_ref().and_then(|m| m.attributes.get("security")),
            })
        })
        .collect();
    Json::Array(list)
}

/// `--adapter modbus` names the kind and matches every `modbus/<connection>`
/// instance; a full instance name matches only itself.
fn adapter_matches(instance: &str, wanted: &str) -> bool {
    instance == wanted
        || instance
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A device's point map as its adapter announced it (its meta).
fn points(state: &ControlState, device: Option<&str>) -> Json {
    let Some(device) = device else {
        return failure(ErrorCode::BadRequest, "missing `device`");
    };
    let Some(entry) = state.directory.get(device) else {
        return failure(ErrorCode::UnknownDevice, &format!("no device `{device}`"));
    };
    let Some(meta) = entry.meta else {
        return failure(
            ErrorCode::DeviceOffline,
            &format!("device `{device}` has not announced its points yet"),
        );
    };
    let points: Vec<Json> = meta
        .points
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "type": p.data_type,
                "unit": p.unit,
                "writable": p.writable,
                "min": p.min,
                "max": p.max,
                "description": p.description,
                "address": p.address,
            })
        })
        .collect();
    success(json!({"device": device, "adapter": entry.adapter, "points": points}))
}

async fn tail(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    state: &ControlState,
    request: &Json,
    stop: &CancellationToken,
) {
    let device = request["device"].as_str().map(str::to_string);
    let point = request["point"].as_str().map(str::to_string);
    if let Some(d) = device
        .as_deref()
        .filter(|d| state.directory.get(d).is_none())
    {
        let reply = failure(
            ErrorCode::UnknownDevice,
            &format!("no device `{d}` (see `ferrogate devices`)"),
        );
        let _ = send(write, &reply).await;
        return;
    }
    let mut feed = state.live.subscribe();
    if send(
        write,
        &json!({"v": PROTOCOL_VERSION, "ok": true, "stream": true}),
    )
    .await
    .is_err()
    {
        return;
    }
    let topics = Topics::new(format!("ferrogate/{}", state.gateway_id));
    loop {
        let envelope = tokio::select! {
            _ = stop.cancelled() => return,
            r = feed.recv() => r,
        };
        let envelope = match envelope {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let line = json!({"v": PROTOCOL_VERSION, "event": {"kind": "lagged", "missed": n}});
                if send(write, &line).await.is_err() {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        let uplink = &envelope.uplink;
        if device.as_deref().is_some_and(|d| d != uplink.device()) {
            continue;
        }
        if let (Some(p), Uplink::Telemetry(t)) = (&point, uplink) {
            if !t.readings.iter().any(|r| *r.point == **p) {
                continue;
            }
        } else if point.is_some() && !matches!(uplink, Uplink::Telemetry(_)) {
            continue;
        }
        let payload = tail_payload(&topics, &state.gateway_id, &envelope.adapter, uplink);
        let (kind, _) = crate::north::codec::leaf(uplink);
        let line = json!({"v": PROTOCOL_VERSION, "event": {
            "kind": kind,
            "adapter": &*envelope.adapter,
            "device": uplink.device(),
            "payload": payload,
        }});
        if send(write, &line).await.is_err() {
            return;
        }
    }
}

/// The payload a tail line shows: what goes north, except `seq`. The live
/// feed sees a message before the pipeline numbers it, and a tail must
/// never show a number the message does not get on MQTT.
fn tail_payload(topics: &Topics, gateway: &str, adapter: &str, uplink: &Uplink) -> Json {
    // A forgotten device's first message (its cleared status) is empty: null.
    let mut payload: Json = encode_uplink(topics, gateway, adapter, uplink, 0)
        .next()
        .and_then(|e| serde_json::from_slice(&e.payload).ok())
        .unwrap_or(Json::Null);
    if let (Uplink::Telemetry(_), Some(fields)) = (uplink, payload.as_object_mut()) {
        fields.remove("seq");
    }
    payload
}
