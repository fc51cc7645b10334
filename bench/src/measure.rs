//! One measurement window: CPU and RSS of the process under test (and of
//! the broker), its syscalls and instructions per delivered value (where
//! `perf` can count them), what the sink received, repeated `runs` times;
//! medians.

use std::time::Duration;

use crate::BenchError;
use crate::counters::{PerUnit, PerfStat};
use crate::proc::{Sampler, Usage, loadavg};
use crate::sink::Sink;
use crate::stats::median;

/// What one window measured.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub secs: f64,
    pub gateway: Usage,
    pub broker: Option<Usage>,
    pub messages_per_s: f64,
    pub values_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub load: f64,
    /// The gateway's syscalls and instructions per delivered value.
    pub per_value: PerUnit,
    /// Mean telemetry payload, bytes.
    pub payload_bytes: f64,
    /// JSON telemetry on the wire (topic + payload) per value.
    pub json_bytes_per_value: f64,
    /// Sparkplug B DDATA per second and on the wire per value, when the
    /// gateway is also a Sparkplug edge node.
    pub spb_values_per_s: f64,
    pub spb_bytes_per_value: Option<f64>,
}

impl Window {
    /// Gateway CPU-microseconds spent per delivered value.
    pub fn cpu_us_per_value(&self) -> f64 {
        self.gateway.cpu_s * 1e6 / (self.values_per_s * self.secs)
    }

    pub fn print(&self, label: &str) {
        let broker = self
            .broker
            .map(|b| format!(" broker_cpu={:.1}%", b.cpu_pct))
            .unwrap_or_default();
        println!(
            "{label}: {:.0} msg/s {:.0} values/s cpu={:.1}% ({:.2} µs/value) rss={:.1}MB (max {:.1}) p50={:.1}ms p99={:.1}ms{broker} load={:.2} per value: {}",
            self.messages_per_s,
            self.values_per_s,
            self.gateway.cpu_pct,
            self.cpu_us_per_value(),
            mb(self.gateway.rss_mean),
            mb(self.gateway.rss_max),
            self.p50_ms,
            self.p99_ms,
            self.load,
            self.per_value
        );
        if let Some(spb) = self.spb_bytes_per_value {
            println!(
                "{label}: wire bytes per value: JSON {:.1}, Sparkplug B {spb:.1} ({:.2}x JSON) at {:.0} Sparkplug values/s",
                self.json_bytes_per_value,
                spb / self.json_bytes_per_value.max(f64::MIN_POSITIVE),
                self.spb_values_per_s
            );
        }
    }
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Measures `runs` consecutive windows of `secs` each.
pub async fn windows(
    pid: u32,
    broker: Option<u32>,
    sink: &Sink,
    secs: u64,
    runs: usize,
    label: &str,
) -> Result<Vec<Window>, BenchError> {
    let mut out = Vec::new();
    for run in 1..=runs {
        let _ = sink.take();
        let load = loadavg();
        let mut g = Sampler::start(pid)?;
        let perf = PerfStat::start(pid);
        let mut b = broker.map(Sampler::start).transpose()?;
        for _ in 0..secs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            g.sample();
            if let Some(b) = b.as_mut() {
                b.sample();
            }
        }
        let (gateway, elapsed) = g.finish()?;
        let counts = perf.finish();
        let broker = b.map(|b| b.finish().map(|(u, _)| u)).transpose()?;
        let mut t = sink.take();
        let s = elapsed.as_secs_f64();
        let w = Window {
            secs: s,
            gateway,
            broker,
            messages_per_s: t.messages as f64 / s,
            values_per_s: t.values as f64 / s,
            p50_ms: t.latency.percentile_ms(50.0),
            p99_ms: t.latency.percentile_ms(99.0),
            load: (load + loadavg()) / 2.0,
            per_value: counts.per(t.values as f64),
            payload_bytes: t.bytes as f64 / (t.messages.max(1) as f64),
            json_bytes_per_value: (t.bytes + t.topic_bytes) as f64 / (t.values.max(1) as f64),
            spb_values_per_s: t.spb_values as f64 / s,
            spb_bytes_per_value: (t.spb_values > 0)
                .then(|| t.spb_bytes as f64 / t.spb_values as f64),
        };
        w.print(&format!("{label} run {run}/{runs}"));
        out.push(w);
    }
    Ok(out)
}

/// The median of each field over the runs.
pub fn medians(ws: &[Window]) -> Window {
    let m = |f: &dyn Fn(&Window) -> f64| median(&ws.iter().map(f).collect::<Vec<_>>());
    let usage = |f: &dyn Fn(&Window) -> Option<Usage>| -> Option<Usage> {
        let us: Vec<Usage> = ws.iter().filter_map(f).collect();
        (!us.is_empty()).then(|| Usage {
            cpu_pct: median(&us.iter().map(|u| u.cpu_pct).collect::<Vec<_>>()),
            cpu_s: median(&us.iter().map(|u| u.cpu_s).collect::<Vec<_>>()),
            rss_mean: median(&us.iter().map(|u| u.rss_mean as f64).collect::<Vec<_>>()) as u64,
            rss_max: us.iter().map(|u| u.rss_max).max().unwrap_or(0),
        })
    };
    Window {
        secs: m(&|w| w.secs),
        gateway: usage(&|w| Some(w.gateway)).unwrap_or_default(),
        broker: usage(&|w| w.broker),
        messages_per_s: m(&|w| w.messages_per_s),
        values_per_s: m(&|w| w.values_per_s),
        p50_ms: m(&|w| w.p50_ms),
        p99_ms: m(&|w| w.p99_ms),
        load: m(&|w| w.load),
        per_value: PerUnit {
            syscalls: median_of(ws.iter().map(|w| w.per_value.syscalls)),
            instructions: median_of(ws.iter().map(|w| w.per_value.instructions)),
        },
        payload_bytes: m(&|w| w.payload_bytes),
        json_bytes_per_value: m(&|w| w.json_bytes_per_value),
        spb_values_per_s: m(&|w| w.spb_values_per_s),
        spb_bytes_per_value: median_of(ws.iter().map(|w| w.spb_bytes_per_value)),
    }
}

/// The median of the values present, or `None` when none is.
pub fn median_of(vs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let vs: Vec<f64> = vs.flatten().collect();
    (!vs.is_empty()).then(|| median(&vs))
}

/// Waits until `cond` holds, polling every 200 ms, up to `limit`.
pub async fn wait_for(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<(), BenchError> {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            return Err(BenchError::Timeout(what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
