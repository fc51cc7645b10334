//! Prometheus metrics: counters the runtime keeps ([`Counters`]) and the text
//! exposition of everything status knows; [`endpoint`] serves it over HTTP
//! (`GET /metrics`), bound to loopback by default.
//!
//! Series (all prefixed `ferrogate_`): `up`, `build_info`, `uptime_seconds`;
//! `mqtt_connected`, `mqtt_publishes_total`, `mqtt_acks_total`,
//! `mqtt_reconnects_total`; `commands_received_total`,
//! `commands_answered_total`, `commands_busy_total`; `outbox_depth`, `outbox_bytes`,
//! `outbox_oldest_age_seconds`, `outbox_dropped_total` (telemetry),
//! `outbox_dropped_retained_total`, `outbox_dropped_other_total`, `outbox_resent_total`,
//! `outbox_write_errors_total`, `outbox_quarantined_total`; `adapter_up`, `adapter_stalled`,
//! `adapter_restarts_total`, `adapter_refused_total{reason}`; `device_online`, `device_readings_total`,
//! `device_read_errors_total{kind}`, `device_telemetry_total`;
//! `commands_total{result}`; `uplink_latency_seconds` (histogram: adapter
//! produced a message → the outbox writer took it);
//! `process_resident_memory_bytes`, `process_cpu_seconds_total`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrogate_sdk::{DeviceState, ErrorCode};

pub mod endpoint;

pub use endpoint::{Limits, serve, serve_with};

pub use crate::histogram::Histogram;

use crate::directory::Directory;
use crate::north::NorthStatus;
use crate::supervisor::{RunState, StateHandle};

/// Counters kept by the runtime itself.
#[derive(Debug, Default)]
pub struct Counters {
    commands_ok: AtomicU64,
    commands_failed: [AtomicU64; ErrorCode::ALL.len()],
}

impl Counters {
    pub fn command(&self, result: Result<(), ErrorCode>) {
        match result {
            Ok(()) => self.commands_ok.fetch_add(1, Ordering::Relaxed),
            Err(code) => {
                let i = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
                self.commands_failed[i].fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Everything a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub started: Instant,
    pub counters: Arc<Counters>,
    pub uplink_latency: Arc<Histogram>,
    pub directory: Directory,
    pub adapters: StateHandle,
    pub north: Arc<dyn Fn() -> NorthStatus + Send + Sync>,
    pub stall_after: Duration,
    /// The Sparkplug edge node's session, when enabled.
    pub sparkplug: Option<Arc<std::sync::Mutex<crate::sparkplug::SparkplugStatus>>>,
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of the current state.
pub fn render(s: &Sources) -> String {
    let mut out = String::with_capacity(4096);
    let mut gauge = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP ferrogate_{name} {help}");
        let _ = writeln!(out, "# TYPE ferrogate_{name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "ferrogate_{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    gauge("up", "gauge", "1 while the gateway runs.", one(1.0));
    gauge(
        "build_info",
        "gauge",
        "Version of this build.",
        vec![(
            format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
            1.0,
        )],
    );
    gauge(
        "uptime_seconds",
        "gauge",
        "Seconds since start.",
        one(s.started.elapsed().as_secs_f64()),
    );

    let north = (s.north)();
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    gauge(
        "mqtt_connected",
        "gauge",
        "1 while connected to the broker.",
        one(b(north.live.connected)),
    );
    gauge(
        "mqtt_publishes_total",
        "counter",
        "Publishes handed to the MQTT client.",
        one(north.live.published as f64),
    );
    gauge(
        "mqtt_acks_total",
        "counter",
        "Publishes the broker acknowledged.",
        one(north.live.acked as f64),
    );
    gauge(
        "mqtt_reconnects_total",
        "counter",
        "Connections lost or failed.",
        one(north.live.reconnects as f64),
    );
    gauge(
        "commands_received_total",
        "counter",
        "Commands received on the cmd topics.",
        one(north.live.commands_received as f64),
    );
    gauge(
        "commands_answered_total",
        "counter",
        "Command results stored for publishing (cmd/result).",
        one(north.live.commands_answered as f64),
    );
    gauge(
        "commands_busy_total",
        "counter",
        "Commands answered busy because the gateway could not queue them.",
        one(north.live.commands_busy as f64),
    );
    let ob = &north.outbox;
    gauge(
        "outbox_depth",
        "gauge",
        "Messages not yet acknowledged by the broker.",
        one(ob.depth as f64),
    );
    gauge(
        "outbox_bytes",
        "gauge",
        "Bytes of outbox on disk.",
        one(ob.bytes as f64),
    );
    gauge(
        "outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest unacknowledged message.",
        one(ob.oldest_age_ms.unwrap_or(0) as f64 / 1000.0),
    );
    gauge(
        "outbox_dropped_total",
        "counter",
        "Telemetry messages dropped because the outbox was full (the seq gap).",
        one(ob.dropped as f64),
    );
    gauge(
        "outbox_dropped_retained_total",
        "counter",
        "Retained status/meta messages dropped because the outbox was full.",
        one(ob.dropped_retained as f64),
    );
    gauge(
        "outbox_dropped_other_total",
        "counter",
        "Events and command results dropped because the outbox was full.",
        one(ob.dropped_other as f64),
    );
    gauge(
        "outbox_resent_total",
        "counter",
        "Messages sent again after a reconnect or restart.",
        one(ob.resent as f64),
    );
    gauge(
        "outbox_write_errors_total",
        "counter",
        "Failed outbox writes or fsyncs.",
        one(ob.write_errors as f64),
    );
    gauge(
        "outbox_quarantined_total",
        "counter",
        "Messages the broker kept refusing, moved to the dead-letter file.",
        one(ob.quarantined as f64),
    );

    let adapters = s.adapters.snapshot();
    let per_adapter = |f: &dyn Fn(&crate::supervisor::AdapterState) -> f64| {
        adapters
            .iter()
            .map(|(name, st)| (format!("{{adapter=\"{}\"}}", label(name)), f(st)))
            .collect::<Vec<_>>()
    };
    gauge(
        "adapter_up",
        "gauge",
        "1 while the adapter runs.",
        per_adapter(&|st| b(st.state == RunState::Running)),
    );
    gauge(
        "adapter_stalled",
        "gauge",
        "1 when the adapter loop made no progress for stall_after.",
        per_adapter(&|st| b(st.health.since_last_beat() > s.stall_after)),
    );
    gauge(
        "adapter_restarts_total",
        "counter",
        "Restarts after failures.",
        per_adapter(&|st| st.restarts as f64),
    );
    gauge(
        "adapter_refused_total",
        "counter",
        "Network input the adapter refused, by reason.",
        adapters
            .iter()
            .flat_map(|(name, st)| {
                st.refusals.snapshot().into_iter().map(move |(reason, n)| {
                    (
                        format!("{{adapter=\"{}\",reason=\"{reason}\"}}", label(name)),
                        n as f64,
                    )
                })
            })
            .collect(),
    );

    // Each device's labels are made once for its four series, and the
    // directory is read in place: a copy of it costs as much as the
    // directory itself.
    s.directory.with_devices(|devices| {
        let labels: Vec<String> = devices
            .iter()
            .map(|(name, e)| {
                format!(
                    "adapter=\"{}\",device=\"{}\"",
                    label(&e.adapter),
                    label(name)
                )
            })
            .collect();
        let per_device = |f: &dyn Fn(&crate::directory::DeviceEntry) -> f64| {
            labels
                .iter()
                .zip(devices.values())
                .map(|(l, e)| (format!("{{{l}}}"), f(e)))
                .collect::<Vec<_>>()
        };
        gauge(
            "device_online",
            "gauge",
            "1 when the device is online.",
            per_device(&|e| b(e.state == Some(DeviceState::Online))),
        );
        gauge(
            "device_telemetry_total",
            "counter",
            "Telemetry messages from the device.",
            per_device(&|e| e.counts.telemetry as f64),
        );
        gauge(
            "device_readings_total",
            "counter",
            "Point values read successfully.",
            per_device(&|e| e.counts.readings as f64),
        );
        gauge(
            "device_read_errors_total",
            "counter",
            "Failed point reads by kind.",
            labels
                .iter()
                .zip(devices.values())
                .flat_map(|(l, e)| {
                    e.counts
                        .errors
                        .iter()
                        .map(move |(kind, v)| (format!("{{{l},kind=\"{kind}\"}}"), *v as f64))
                })
                .collect(),
        );
    });
    let mut commands = vec![(
        "{result=\"ok\"}".to_string(),
        s.counters.commands_ok.load(Ordering::Relaxed) as f64,
    )];
    for (code, n) in ErrorCode::ALL.iter().zip(&s.counters.commands_failed) {
        commands.push((
            format!("{{result=\"{code}\"}}"),
            n.load(Ordering::Relaxed) as f64,
        ));
    }
    gauge(
        "commands_total",
        "counter",
        "Commands answered, by result.",
        commands,
    );
    let (rss, cpu) = process_usage();
    gauge(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory.",
        one(rss),
    );
    gauge(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time.",
        one(cpu),
    );
    s.uplink_latency
        .render("ferrogate_uplink_latency_seconds", &mut out);
    if let Some(sparkplug) = &s.sparkplug {
        let status = sparkplug.lock().unwrap_or_else(|e| e.into_inner());
        status.render_metrics(&mut out);
    }
    out
}

/// Resident bytes and CPU seconds of this process, from /proc.
pub fn process_usage() -> (f64, f64) {
    let page = 4096.0;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<f64>().ok())
        })
        .map(|pages| pages * page)
        .unwrap_or(0.0);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}
