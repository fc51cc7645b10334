//! The device client: each configured resource is read by periodic GET or
//! by Observe, decoded into readings, and reported; commands (read, write,
//! execute) become GET, PUT and POST on the device's resources.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrogate_sdk::{
    Command, CommandError, ErrorCode, Operation, Outcome, PointError, PointErrorKind, Reading,
    Telemetry, Timestamp, Uplink, UplinkSender, Value,
};
use tokio_util::sync::CancellationToken;

use crate::config::{DevicePlan, Mode, ResourcePlan};
use crate::driver::{CoapHandle, DriverError};
use crate::endpoint::RequestError;
use crate::message::{Request, Response};
use crate::payload::{self, Sample};
use crate::status::StatusBoard;

/// Why reading a resource failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("device answered {0}")]
    Exception(String),
    #[error("{0}")]
    Decode(String),
    #[error("{0}")]
    Transport(String),
}

impl ReadError {
    fn point_error(&self) -> PointError {
        let kind = match self {
            ReadError::Timeout(_) => PointErrorKind::Timeout,
            ReadError::Exception(_) => PointErrorKind::DeviceException,
            ReadError::Decode(_) => PointErrorKind::Decode,
            ReadError::Transport(_) => PointErrorKind::Io,
        };
        PointError::new(kind, self.to_string())
    }

    fn command_error(&self) -> CommandError {
        let code = match self {
            ReadError::Timeout(_) => ErrorCode::Timeout,
            ReadError::Exception(_) | ReadError::Decode(_) => ErrorCode::DeviceException,
            ReadError::Transport(_) => ErrorCode::DeviceOffline,
        };
        CommandError::new(code, self.to_string())
    }

    /// Whether the device itself is unreachable (vs. it answered badly).
    fn is_offline(&self) -> bool {
        matches!(self, ReadError::Timeout(_) | ReadError::Transport(_))
    }
}

fn driver_error(e: DriverError, timeout: Duration) -> ReadError {
    match e {
        DriverError::Request(RequestError::Timeout) => ReadError::Timeout(timeout),
        other => ReadError::Transport(other.to_string()),
    }
}

/// Send one request with the device's timeout; a 4.xx/5.xx is an error
/// carrying the code (`4.04 Not Found`).
async fn exchange(
    coap: &CoapHandle,
    peer: SocketAddr,
    request: Request,
    timeout: Duration,
) -> Result<Response, ReadError> {
    match tokio::time::timeout(timeout, coap.request(peer, request)).await {
        Err(_) => Err(ReadError::Timeout(timeout)),
        Ok(Err(e)) => Err(driver_error(e, timeout)),
        Ok(Ok(response)) if response.code.is_success() => Ok(response),
        Ok(Ok(response)) => Err(ReadError::Exception(describe(&response))),
    }
}

fn describe(response: &Response) -> String {
    let diagnostic = String::from_utf8_lossy(&response.payload);
    if diagnostic.trim().is_empty() || response.content_format.is_some() {
        response.code.to_string()
    } else {
        format!("{} ({})", response.code, diagnostic.trim())
    }
}

fn samples_of(resource: &ResourcePlan, response: &Response) -> Result<Vec<Sample>, ReadError> {
    let samples = payload::decode(
        response.content_format,
        &response.payload,
        Some(&resource.point),
        Timestamp::now(),
    )
    .map_err(|e| ReadError::Decode(e.to_string()))?;
    let Some(data_type) = resource.data_type.as_deref() else {
        return Ok(samples);
    };
    samples
        .into_iter()
        .map(|s| {
            if s.point != resource.point {
                return Ok(s);
            }
            let value = payload::coerce(s.value, data_type).map_err(ReadError::Decode)?;
            Ok(Sample { value, ..s })
        })
        .collect()
}

fn get(resource: &ResourcePlan) -> Request {
    let mut request = Request::get(&resource.path);
    request.accept = resource.accept;
    request
}

/// Read one resource now.
pub async fn read_resource(
    coap: &CoapHandle,
    device: &DevicePlan,
    resource: &ResourcePlan,
) -> Result<Vec<Sample>, ReadError> {
    let Some(peer) = device.address else {
        return Err(ReadError::Transport("device has no address".into()));
    };
    let response = exchange(coap, peer, get(resource), device.timeout).await?;
    samples_of(resource, &response)
}

/// Everything one resource task needs.
#[derive(Clone)]
pub struct ResourceTask {
    pub coap: CoapHandle,
    pub device: Arc<DevicePlan>,
    pub resource: ResourcePlan,
    pub uplink: UplinkSender,
    pub status: StatusBoard,
    pub shutdown: CancellationToken,
}

impl ResourceTask {
    /// Run until shutdown: poll or observe the resource.
    pub async fn run(self) {
        match self.resource.mode {
            Mode::Poll => self.poll().await,
            Mode::Observe => self.observe().await,
            Mode::None => {}
        }
    }

    async fn publish(&self, outcome: Result<Vec<Sample>, ReadError>) {
        let now = Timestamp::now();
        let device = &self.device.name;
        let readings: Vec<Reading> = match &outcome {
            Ok(samples) => samples
                .iter()
                .map(|s| Reading::ok(s.point.clone(), s.value.clone(), s.ts))
                .collect(),
            Err(e) => vec![Reading::failed(
                self.resource.point.clone(),
                e.point_error(),
                now,
            )],
        };
        let health = match &outcome {
            Err(e) if e.is_offline() => Err(e.to_string()),
            _ => Ok(()),
        };
        if let Err(e) = &outcome {
            tracing::debug!(device = %device, path = %self.resource.path, error = %e, "CoAP read failed");
        }
        self.status
            .report(device, &self.resource.path, health)
            .await;
        if !readings.is_empty() {
            let _ = self
                .uplink
                .send(Uplink::Telemetry(Telemetry {
                    device: device.clone(),
                    ts: now,
                    readings,
                }))
                .await;
        }
    }

    async fn poll(self) {
        let mut ticker = tokio::time::interval(self.resource.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let outcome = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = read_resource(&self.coap, &self.device, &self.resource) => r,
            };
            self.publish(outcome).await;
        }
    }

    async fn observe(self) {
        let Some(peer) = self.device.address else {
            return;
        };
        let timeout = self.device.timeout;
        loop {
            let registration = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = tokio::time::timeout(timeout, self.coap.observe(peer, get(&self.resource))) => r,
            };
            match registration {
                Err(_) => self.publish(Err(ReadError::Timeout(timeout))).await,
                Ok(Err(e)) => self.publish(Err(driver_error(e, timeout))).await,
                Ok(Ok(mut observation)) => {
                    let first = observation.first.clone();
                    if !first.code.is_success() {
                        self.publish(Err(ReadError::Exception(describe(&first))))
                            .await;
                    } else {
                        self.publish(samples_of(&self.resource, &first)).await;
                        if first.observe.is_none() {
                            tracing::warn!(device = %self.device.name, path = %self.resource.path,
                                "device does not support Observe; reading it every period instead");
                        }
                        loop {
                            let next = tokio::select! {
                                _ = self.shutdown.cancelled() => return,
                                n = observation.next() => n,
                            };
                            match next {
                                Some(Ok(n)) if n.code.is_success() => {
                                    self.publish(samples_of(&self.resource, &n)).await;
                                }
                                Some(Ok(n)) => {
                                    self.publish(Err(ReadError::Exception(describe(&n)))).await;
                                }
                                Some(Err(e)) => {
                                    if first.observe.is_some() {
                                        self.observation_lost(e.to_string()).await;
                                    }
                                    break;
                                }
                                None => {
                                    if first.observe.is_some() {
                                        self.observation_lost("ended".into()).await;
                                    }
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.resource.period) => {}
            }
        }
    }

    async fn observation_lost(&self, why: String) {
        tracing::info!(device = %self.device.name, path = %self.resource.path, reason = %why, "observation lost; re-observing");
        self.status
            .report(
                &self.device.name,
                &self.resource.path,
                Err(format!("observation lost: {why}")),
            )
            .await;
    }
}

fn command_error(code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError::new(code, message)
}

/// Execute one command on `device`.
pub async fn execute(coap: &CoapHandle, device: &DevicePlan, command: &Command) -> Outcome {
    let Some(peer) = device.address else {
        return Err(command_error(
            ErrorCode::BadRequest,
            format!(
                "device `{}` only pushes readings; it has no address to send to",
                device.name
            ),
        ));
    };
    match &command.op {
        Operation::Read { points } => {
            let wanted: Vec<&ResourcePlan> = device
                .resources
                .iter()
                .filter(|r| {
                    if points.is_empty() {
                        r.mode != Mode::None
                    } else {
                        points.contains(&r.point)
                    }
                })
                .collect();
            for p in points {
                if !device.resources.iter().any(|r| &r.point == p) {
                    return Err(command_error(
                        ErrorCode::UnknownPoint,
                        format!("device `{}` has no resource for point `{p}`", device.name),
                    ));
                }
            }
            let mut values = BTreeMap::new();
            for resource in wanted {
                let samples = read_resource(coap, device, resource)
                    .await
                    .map_err(|e| e.command_error())?;
                for s in samples {
                    values.insert(s.point, s.value);
                }
            }
            Ok(values)
        }
        Operation::Write { values } => {
            let mut done = BTreeMap::new();
            for (point, value) in values {
                let Some(resource) = device.resources.iter().find(|r| &r.point == point) else {
                    return Err(command_error(
                        ErrorCode::UnknownPoint,
                        format!("no resource for point `{point}`"),
                    ));
                };
                if !resource.writable {
                    return Err(command_error(
                        ErrorCode::NotWritable,
                        format!("point `{point}` is not writable"),
                    ));
                }
                let typed = match resource.data_type.as_deref() {
                    Some(t) => payload::coerce(value.clone(), t)
                        .map_err(|e| command_error(ErrorCode::InvalidValue, e))?,
                    None => value.clone(),
                };
                let body = payload::encode(resource.encoding, point, &typed)
                    .map_err(|e| command_error(ErrorCode::InvalidValue, e.to_string()))?;
                let request = Request::put(&resource.path)
                    .with_payload(resource.encoding.content_format(), body);
                exchange(coap, peer, request, device.timeout)
                    .await
                    .map_err(|e| e.command_error())?;
                done.insert(point.clone(), value.clone());
            }
            Ok(done)
        }
        Operation::Protocol {
            op, path, value, ..
        } if op == "execute" => {
            let Some(target) = path.as_deref() else {
                return Err(command_error(
                    ErrorCode::BadRequest,
                    "execute needs a `path`",
                ));
            };
            let Some(resource) = device
                .resources
                .iter()
                .find(|r| r.path == target || r.point == target)
            else {
                return Err(command_error(
                    ErrorCode::UnknownPoint,
                    format!("no resource `{target}`"),
                ));
            };
            if !resource.execute {
                return Err(command_error(
                    ErrorCode::NotWritable,
                    format!(
                        "resource `{}` is not executable (set execute = true)",
                        resource.path
                    ),
                ));
            }
            let mut request = Request::post(&resource.path);
            if let Some(json) = value {
                let v = Value::from_json(json).ok_or_else(|| {
                    command_error(ErrorCode::InvalidValue, "execute value must be a scalar")
                })?;
                let body = payload::encode(resource.encoding, &resource.point, &v)
                    .map_err(|e| command_error(ErrorCode::InvalidValue, e.to_string()))?;
                request = request.with_payload(resource.encoding.content_format(), body);
            }
            let response = exchange(coap, peer, request, device.timeout)
                .await
                .map_err(|e| e.command_error())?;
            let mut out = BTreeMap::new();
            out.insert("code".to_string(), Value::String(response.code.to_string()));
            Ok(out)
        }
        other => Err(command_error(
            ErrorCode::BadRequest,
            format!(
                "operation `{}` is not supported by CoAP devices",
                other.name()
            ),
        )),
    }
}
