//! The `[coap]` configuration: its TOML shape (deserialized entry by entry
//! through the SDK so errors carry `file:line:col`) and its validation into
//! a [`CoapPlan`] the adapter runs from.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrogate_sdk::PointMeta;
use ferrogate_sdk::config::{ConfigDuration, ConfigIssue, Located, Pos, Section};
use serde::Deserialize;

use crate::endpoint::{EndpointConfig, RateLimit, TransmissionParams};
use ferrogate_dtls::{DtlsListener, ListenerToml};

use crate::message::split_path;
use crate::pattern::{NamePattern, PathTemplate};
use crate::payload::Encoding;

/// `[coap.server]`: the ingest server devices push readings to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address to listen on; required (no default wildcard).
    pub bind: Option<String>,
    /// Path templates tried in order: `{device}` and optional `{point}`.
    #[serde(default = "default_paths")]
    pub paths: Vec<String>,
    /// Unknown devices whose name matches one of these patterns (`*`, `?`)
    /// are accepted; others get 4.03 Forbidden.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Datagrams per second accepted from one source address.
    #[serde(default = "default_rate")]
    pub rate_limit: f64,
    /// Most distinct devices let in by `allow` patterns; more get 5.03.
    #[serde(default = "default_max_allowed")]
    pub max_allowed_devices: usize,
    /// The DTLS 1.2 PSK listener of the ingest server.
    pub dtls_bind: Option<String>,
    /// The PSK credentials file (device name = the credential's endpoint).
    pub credentials: Option<String>,
    pub max_dtls_handshakes: Option<usize>,
    pub max_dtls_sessions: Option<usize>,
    pub dtls_idle_timeout: Option<ConfigDuration>,
}

fn default_max_allowed() -> usize {
    10_000
}

fn default_paths() -> Vec<String> {
    vec!["/{device}/{point}".to_string(), "/{device}".to_string()]
}

fn default_rate() -> f64 {
    100.0
}

/// `[coap.protocol]`: engine tunables (RFC 7252 §4.8 and limits).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolConfig {
    pub ack_timeout: Option<ConfigDuration>,
    pub ack_random_factor: Option<f64>,
    pub max_retransmit: Option<u32>,
    /// NSTART: CON requests to one device awaiting their ACK at once (1).
    pub nstart: Option<usize>,
    /// Block size for block-wise transfers: 16, 32, ... 1024.
    pub block_size: Option<usize>,
    /// Largest body reassembled from blocks, in bytes.
    pub max_body: Option<usize>,
    pub max_observe_relations: Option<usize>,
    pub max_block_transfers: Option<usize>,
    pub max_block_transfers_per_source: Option<usize>,
}

/// `[coap.client]`: where the device client binds when there is no
/// server (with a server, one socket serves both).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    #[serde(default = "default_client_bind")]
    pub bind: String,
}

fn default_client_bind() -> String {
    "0.0.0.0:0".to_string()
}

/// How a resource is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Mode {
    /// Periodic GET every `period`.
    #[serde(rename = "poll")]
    #[default]
    Poll,
    /// Observe (RFC 7641), re-observed after `period` when lost.
    #[serde(rename = "observe")]
    Observe,
    /// Not read; only written or executed.
    #[serde(rename = "none")]
    None,
}

/// `[[coap.device]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    /// `host:port` of the device, for polled/observed/written resources.
    pub address: Option<String>,
    /// How long one request may take, retransmissions included.
    pub timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub resource: Vec<ResourceConfig>,
    /// Points the device pushes to the ingest server (metadata only).
    #[serde(default)]
    pub point: Vec<PointConfig>,
}

/// `[[coap.device.resource]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub path: String,
    /// Point name for a single-value payload (default: last path segment).
    pub point: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    pub period: Option<ConfigDuration>,
    /// Content format asked for with Accept.
    pub accept: Option<Encoding>,
    /// Encoding of written values (default text).
    pub encoding: Option<Encoding>,
    #[serde(default)]
    pub writable: bool,
    /// POST to this resource on an `execute` command.
    #[serde(default)]
    pub execute: bool,
    #[serde(rename = "type")]
    pub data_type: Option<String>,
    pub unit: Option<String>,
    pub description: Option<String>,
    /// Range a written value must be in (checked before anything is sent).
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// `[[coap.device.point]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: Option<String>,
    pub unit: Option<String>,
    pub description: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct CoapPlan {
    pub endpoint: EndpointConfig,
    pub bind: SocketAddr,
    pub ingest: Option<IngestPlan>,
    pub devices: Vec<DevicePlan>,
}

#[derive(Debug, Clone)]
pub struct IngestPlan {
    pub paths: Vec<PathTemplate>,
    pub allow: Vec<NamePattern>,
    /// Most distinct devices let in by `allow` patterns.
    pub max_allowed: usize,
    /// The DTLS listener; a device with a credential is accepted only
    /// through it.
    pub dtls: Option<DtlsListener>,
}

#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub name: String,
    pub pos: Pos,
    pub address: Option<SocketAddr>,
    pub timeout: Duration,
    pub resources: Vec<ResourcePlan>,
    pub points: Arc<[PointMeta]>,
}

#[derive(Debug, Clone)]
pub struct ResourcePlan {
    pub path: String,
    pub point: String,
    pub mode: Mode,
    pub period: Duration,
    pub accept: Option<u16>,
    pub encoding: Encoding,
    pub writable: bool,
    pub execute: bool,
    /// Configured point type: single values are converted to it.
    pub data_type: Option<String>,
}

const KEYS: [&str; 4] = ["server", "client", "protocol", "device"];
const TYPES: [&str; 11] = [
    "bool", "i16", "u16", "i32", "u32", "i64", "u64", "f32", "f64", "string", "bytes",
];

fn parse_or_issue<T: serde::de::DeserializeOwned>(
    node: Option<ferrogate_sdk::config::Node<'_>>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Located<T>> {
    match node?.parse::<T>() {
        Ok(v) => Some(v),
        Err(issue) => {
            issues.push(issue);
            None
        }
    }
}

fn socket(
    text: &str,
    origin: &ferrogate_sdk::config::Origin,
    field: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            issues.push(
                origin
                    .issue(field, format!("`{text}` is not an IP address and port"))
                    .with_hint("write it as \"192.0.2.10:5683\" or \"[2001:db8::1]:5683\""),
            );
            None
        }
    }
}

/// Validate the `[coap]` section. Every problem is reported.
pub fn plan(section: &Section<'_>) -> Result<CoapPlan, Vec<ConfigIssue>> {
    let mut issues = section.unknown_keys(&KEYS);
    let server = match section.single("server") {
        Ok(node) => parse_or_issue::<ServerConfig>(node, &mut issues),
        Err(issue) => {
            issues.push(issue);
            None
        }
    };
    let client = match section.single("client") {
        Ok(node) => parse_or_issue::<ClientConfig>(node, &mut issues),
        Err(issue) => {
            issues.push(issue);
            None
        }
    };
    let protocol = match section.single("protocol") {
        Ok(node) => parse_or_issue::<ProtocolConfig>(node, &mut issues),
        Err(issue) => {
            issues.push(issue);
            None
        }
    };

    let mut endpoint = EndpointConfig {
        nstart: 1,
        ..EndpointConfig::default()
    };
    if let Some(p) = &protocol {
        if let Some(n) = p.nstart {
            if n == 0 {
                issues.push(p.origin.issue("nstart", "nstart must be at least 1"));
            }
            endpoint.nstart = n;
        }
        let mut t = TransmissionParams::default();
        if let Some(d) = p.ack_timeout {
            if d.0.is_zero() {
                issues.push(
                    p.origin
                        .issue("ack_timeout", "ack_timeout must be more than 0"),
                );
            }
            t.ack_timeout = d.0;
        }
        if let Some(f) = p.ack_random_factor {
            if !(1.0..=4.0).contains(&f) {
                issues.push(
                    p.origin
                        .issue(
                            "ack_random_factor",
                            "ack_random_factor must be between 1.0 and 4.0",
                        )
                        .with_hint("RFC 7252 §4.8 uses 1.5"),
                );
            }
            t.ack_random_factor = f;
        }
        if let Some(n) = p.max_retransmit {
            if n > 10 {
                issues.push(
                    p.origin
                        .issue("max_retransmit", "max_retransmit must be at most 10"),
                );
            }
            t.max_retransmit = n;
        }
        endpoint.transmission = t;
        if let Some(size) = p.block_size {
            match (0u8..=6).find(|s| (16usize << s) == size) {
                Some(szx) => {
                    endpoint.block_szx = szx;
                    endpoint.max_payload = size;
                }
                None => issues.push(
                    p.origin
                        .issue(
                            "block_size",
                            format!("block_size {size} is not a CoAP block size"),
                        )
                        .with_hint("use 16, 32, 64, 128, 256, 512 or 1024"),
                ),
            }
        }
        if let Some(n) = p.max_body {
            endpoint.max_body = n;
        }
        if let Some(n) = p.max_observe_relations {
            endpoint.max_observe_relations = n;
        }
        if let Some(n) = p.max_block_transfers {
            endpoint.max_block_transfers = n;
        }
        if let Some(n) = p.max_block_transfers_per_source {
            endpoint.max_block_transfers_per_source = n;
        }
    }

    let mut ingest = None;
    let mut bind = None;
    if let Some(s) = &server {
        bind = match &s.bind {
            Some(text) => socket(text, &s.origin, "bind", &mut issues),
            None => {
                issues.push(ferrogate_sdk::config::bind_required(
                    &s.origin,
                    "[coap.server]",
                    5683,
                ));
                None
            }
        };
        let mut paths = Vec::new();
        for (i, p) in s.paths.iter().enumerate() {
            match PathTemplate::parse(p) {
                Ok(t) => paths.push(t),
                Err(e) => issues.push(s.origin.issue(&format!("paths.{i}"), e).with_hint(
                    "a template is a path with `{device}` once and `{point}` at most once, e.g. \"/ingest/{device}/{point}\"",
                )),
            }
        }
        if s.paths.is_empty() {
            issues.push(s.origin.issue("paths", "paths must not be empty"));
        }
        let mut allow = Vec::new();
        for (i, p) in s.allow.iter().enumerate() {
            match NamePattern::parse(p) {
                Ok(pat) => allow.push(pat),
                Err(e) => issues.push(s.origin.issue(&format!("allow.{i}"), e)),
            }
        }
        if !(s.rate_limit.is_finite() && s.rate_limit > 0.0) {
            issues.push(s.origin.issue(
                "rate_limit",
                "rate_limit must be a positive number of datagrams per second",
            ));
        }
        endpoint.rate_limit = Some(RateLimit {
            per_second: s.rate_limit,
            burst: (s.rate_limit * 2.0).max(10.0),
        });
        let dtls = DtlsListener::from_config(
            &ListenerToml {
                dtls_bind: s.dtls_bind.as_deref(),
                credentials: s.credentials.as_deref(),
                max_dtls_handshakes: s.max_dtls_handshakes,
                max_dtls_sessions: s.max_dtls_sessions,
                dtls_idle_timeout: s.dtls_idle_timeout,
            },
            &s.origin,
            &mut issues,
        );
        ingest = Some(IngestPlan {
            paths,
            allow,
            max_allowed: s.max_allowed_devices,
            dtls,
        });
    } else {
        endpoint.rate_limit = None;
    }
    if bind.is_none() {
        bind = match &client {
            Some(c) => socket(&c.bind, &c.origin, "bind", &mut issues),
            None => default_client_bind().parse().ok(),
        };
    }

    let mut devices = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for node in section.list("device") {
        let Some(dev) = parse_or_issue::<DeviceConfig>(Some(node), &mut issues) else {
            continue;
        };
        if !names.insert(dev.name.clone()) {
            let message = format!("device `{}` is defined twice", dev.name);
            issues.push(dev.origin.issue("name", message));
            continue;
        }
        if let Some(d) = device_plan(&dev, &mut issues) {
            devices.push(d);
        }
    }
    match bind {
        Some(bind) if issues.is_empty() => Ok(CoapPlan {
            endpoint,
            bind,
            ingest,
            devices,
        }),
        _ => Err(issues),
    }
}

fn device_plan(dev: &Located<DeviceConfig>, issues: &mut Vec<ConfigIssue>) -> Option<DevicePlan> {
    let before = issues.len();
    let o = &dev.origin;
    if dev.name.is_empty() || dev.name.contains(['/', '+', '#']) {
        issues.push(o.issue(
            "name",
            "device names must be non-empty and contain no `/`, `+` or `#`",
        ));
    }
    let address = dev
        .address
        .as_deref()
        .and_then(|a| socket(a, o, "address", issues));
    let timeout = dev.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(5));
    if timeout.is_zero() {
        issues.push(o.issue("timeout", "timeout must be more than 0"));
    }
    let mut points = BTreeSet::new();
    let mut resources = Vec::new();
    let mut metas = Vec::new();
    for (i, r) in dev.resource.iter().enumerate() {
        let at = |f: &str| format!("resource.{i}.{f}");
        if !r.path.starts_with('/') {
            issues.push(o.issue(
                &at("path"),
                format!("resource path `{}` must start with `/`", r.path),
            ));
        }
        let point = r
            .point
            .clone()
            .or_else(|| split_path(&r.path).last().cloned())
            .unwrap_or_default();
        if point.is_empty() {
            issues.push(o.issue(&at("point"), "the resource needs a `point` name"));
        } else if !points.insert(point.clone()) {
            issues.push(o.issue(
                &at("point"),
                format!("point `{point}` is defined twice on device `{}`", dev.name),
            ));
        }
        if dev.address.is_none() {
            issues.push(
                o.issue(&at("path"), "a device with resources needs an `address`")
                    .with_hint("add address = \"192.0.2.10:5683\" to the device"),
            );
        }
        let period = r.period.map(|d| d.0).unwrap_or(Duration::from_secs(10));
        if period.is_zero() {
            issues.push(o.issue(&at("period"), "period must be more than 0"));
        }
        if r.encoding.is_some() && !(r.writable || r.execute) {
            issues.push(o.issue(&at("encoding"), "`encoding` is for written or executed resources; set writable = true or execute = true"));
        }
        check_type(r.data_type.as_deref(), o, &at("type"), issues);
        if let (Some(lo), Some(hi)) = (r.min, r.max) {
            if lo > hi {
                issues.push(o.issue(&at("min"), format!("min {lo} is above max {hi}")));
            }
        }
        resources.push(ResourcePlan {
            path: r.path.clone(),
            point: point.clone(),
            mode: r.mode,
            period,
            accept: r.accept.map(Encoding::content_format),
            encoding: r.encoding.unwrap_or(Encoding::Text),
            writable: r.writable,
            execute: r.execute,
            data_type: r.data_type.clone(),
        });
        metas.push(PointMeta {
            name: point,
            data_type: r.data_type.clone().unwrap_or_else(|| "auto".into()),
            unit: r.unit.clone(),
            writable: r.writable,
            min: r.min,
            max: r.max,
            description: r.description.clone(),
            address: Some(r.path.clone()),
        });
    }
    for (i, p) in dev.point.iter().enumerate() {
        if !points.insert(p.name.clone()) {
            issues.push(o.issue(
                &format!("point.{i}.name"),
                format!(
                    "point `{}` is defined twice on device `{}`",
                    p.name, dev.name
                ),
            ));
        }
        check_type(
            p.data_type.as_deref(),
            o,
            &format!("point.{i}.type"),
            issues,
        );
        metas.push(PointMeta {
            name: p.name.clone(),
            data_type: p.data_type.clone().unwrap_or_else(|| "auto".into()),
            unit: p.unit.clone(),
            writable: false,
            min: None,
            max: None,
            description: p.description.clone(),
            address: None,
        });
    }
    (issues.len() == before).then(|| DevicePlan {
        name: dev.name.clone(),
        pos: o.entry(),
        address,
        timeout,
        resources,
        points: metas.into(),
    })
}

fn check_type(
    t: Option<&str>,
    o: &ferrogate_sdk::config::Origin,
    field: &str,
    issues: &mut Vec<ConfigIssue>,
) {
    if let Some(t) = t {
        if !TYPES.contains(&t) {
            issues.push(
                o.issue(field, format!("unknown type `{t}`"))
                    .with_hint(format!("expected one of: {}", TYPES.join(", "))),
            );
        }
    }
}
