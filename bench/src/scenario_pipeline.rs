//! Scenario 2: the pipeline's ceiling. Simulated devices (`simulator`
//! adapter, period down to 1 ms) push telemetry through adapter → outbox →
//! MQTT at QoS 1 to a private mosquitto, at increasing load; next to it, in
//! the same run and on the same broker, a bare rumqttc client publishing
//! QoS 1 as fast as PUBACKs come back. Throughput is counted from PUBACKs
//! (the gateway's `ferrogate_mqtt_acks_total`), with no subscriber, so the
//! broker does nothing but accept.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

use crate::BenchError;
use crate::broker::Broker;
use crate::gateway::Gateway;
use crate::proc::{Sampler, Usage, loadavg};
use crate::stats::median;

pub struct Params {
    pub steps: Vec<u32>,
    pub points: u32,
    pub period: String,
    pub secs: u64,
    pub runs: usize,
    pub warmup: u64,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    acks_per_s: f64,
    produced_per_s: f64,
    usage: Usage,
    broker: Usage,
    load: f64,
}

fn simulator_config(devices: u32, points: u32, period: &str) -> String {
    let mut s = String::new();
    for d in 0..devices {
        let _ = writeln!(
            s,
            "[[simulator.device]]\nname = \"s{d}\"\nperiod = \"{period}\"\n"
        );
        for p in 0..points {
            let _ = writeln!(
                s,
                "[[simulator.device.point]]\nname = \"p{p}\"\nwaveform = \"counter\"\nmin = 0.0\nmax = 1000000000.0\nstep = 1.0\n"
            );
        }
    }
    s
}

/// Counts the bare client's PUBACKs and publishes `payload` as fast as
/// the in-flight window allows until dropped.
struct BarePublisher {
    acks: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BarePublisher {
    async fn start(port: u16, payload: Vec<u8>, inflight: u16) -> BarePublisher {
        let mut opts = MqttOptions::new(
            format!("bench-bare-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_inflight(inflight);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(opts, 1024);
        let acks = Arc::new(AtomicU64::new(0));
        let counted = acks.clone();
        let poller = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let publisher = tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                i += 1;
                let topic = format!("bench/bare/d{}/telemetry", i % 100);
                if client
                    .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        BarePublisher {
            acks,
            tasks: vec![poller, publisher],
        }
    }
}

impl Drop for BarePublisher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Counter deltas per second over one window, sampling `pid` and the broker.
async fn window(
    pid: u32,
    broker: u32,
    secs: u64,
    mut counters: impl FnMut() -> (f64, f64),
) -> Result<Rate, BenchError> {
    let load = loadavg();
    let (a0, p0) = counters();
    let t0 = Instant::now();
    let mut g = Sampler::start(pid)?;
    let mut b = Sampler::start(broker)?;
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        g.sample();
        b.sample();
    }
    let (a1, p1) = counters();
    let s = t0.elapsed().as_secs_f64();
    Ok(Rate {
        acks_per_s: (a1 - a0) / s,
        produced_per_s: (p1 - p0) / s,
        usage: g.finish()?.0,
        broker: b.finish()?.0,
        load: (load + loadavg()) / 2.0,
    })
}

fn print(label: &str, r: &Rate) {
    println!(
        "{label}: {:.0} acked msg/s (produced {:.0}/s) cpu={:.1}% rss={:.1}MB broker_cpu={:.1}% load={:.2}",
        r.acks_per_s,
        r.produced_per_s,
        r.usage.cpu_pct,
        r.usage.rss_mean as f64 / 1e6,
        r.broker.cpu_pct,
        r.load
    );
}

fn med(rs: &[Rate]) -> Rate {
    let m = |f: &dyn Fn(&Rate) -> f64| median(&rs.iter().map(f).collect::<Vec<_>>());
    Rate {
        acks_per_s: m(&|r| r.acks_per_s),
        produced_per_s: m(&|r| r.produced_per_s),
        usage: Usage {
            cpu_pct: m(&|r| r.usage.cpu_pct),
            cpu_s: m(&|r| r.usage.cpu_s),
            rss_mean: m(&|r| r.usage.rss_mean as f64) as u64,
            rss_max: rs.iter().map(|r| r.usage.rss_max).max().unwrap_or(0),
        },
        broker: Usage {
            cpu_pct: m(&|r| r.broker.cpu_pct),
            ..Usage::default()
        },
        load: m(&|r| r.load),
    }
}

async fn bare(
    broker: &Broker,
    p: &Params,
    payload: &[u8],
    label: &str,
) -> Result<Vec<Rate>, BenchError> {
    let publisher = BarePublisher::start(broker.port, payload.to_vec(), 256).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut out = Vec::new();
    for run in 1..=p.runs {
        let acks = publisher.acks.clone();
        let r = window(std::process::id(), broker.pid(), p.secs, || {
            let a = acks.load(Ordering::Relaxed) as f64;
            (a, a)
        })
        .await?;
        print(
            &format!("bare rumqttc QoS 1 ({label}) run {run}/{}", p.runs),
            &r,
        );
        out.push(r);
    }
    Ok(out)
}

pub async fn run(bin: &Path, work: &Path, p: &Params) -> Result<(), BenchError> {
    let broker = Broker::start(work)?;
    // The size of one gateway telemetry message with this many points.
    let payload_len = 120 + 18 * p.points as usize;
    let payload = vec![b'x'; payload_len];
    println!(
        "bare publisher payload {payload_len} bytes, in-flight window 256 (the gateway's default)"
    );
    let mut bare_rates = bare(&broker, p, &payload, "before").await?;

    let mut best: Option<(u32, Rate)> = None;
    for &devices in &p.steps {
        let conf = simulator_config(devices, p.points, &p.period);
        let gw = Gateway::start(bin, &work.join("gw"), broker.port, "", &conf, &[])?;
        tokio::time::sleep(Duration::from_secs(p.warmup)).await;
        let mut rates = Vec::new();
        for run in 1..=p.runs {
            let r = window(gw.pid(), broker.pid(), p.secs, || {
                let m = gw.scrape().unwrap_or_default();
                (
                    m.get("ferrogate_mqtt_acks_total").copied().unwrap_or(0.0),
                    m.get("ferrogate_device_telemetry_total")
                        .copied()
                        .unwrap_or(0.0),
                )
            })
            .await?;
            print(
                &format!(
                    "gateway {devices} devices x {} points @{} run {run}/{}",
                    p.points, p.period, p.runs
                ),
                &r,
            );
            rates.push(r);
        }
        let m = med(&rates);
        print(&format!("gateway {devices} devices MEDIAN"), &m);
        if let Ok(metrics) = gw.scrape() {
            println!(
                "  outbox_depth={} dropped={} uplink latency mean={:.2}ms",
                metrics
                    .get("ferrogate_outbox_depth")
                    .copied()
                    .unwrap_or(f64::NAN),
                metrics
                    .get("ferrogate_outbox_dropped_total")
                    .copied()
                    .unwrap_or(f64::NAN),
                1000.0
                    * metrics
                        .get("ferrogate_uplink_latency_seconds_sum")
                        .copied()
                        .unwrap_or(f64::NAN)
                    / metrics
                        .get("ferrogate_uplink_latency_seconds_count")
                        .copied()
                        .unwrap_or(f64::NAN)
            );
        }
        if best.is_none_or(|(_, b)| m.acks_per_s > b.acks_per_s) {
            best = Some((devices, m));
        }
    }
    bare_rates.extend(bare(&broker, p, &payload, "after").await?);
    let bm = med(&bare_rates);
    print("bare rumqttc QoS 1 MEDIAN", &bm);
    if let Some((devices, g)) = best {
        println!(
            "ceiling: gateway {:.0} msg/s = {:.0} values/s ({devices} devices), gateway cpu {:.1}% broker cpu {:.1}%; \
             bare rumqttc {:.0} msg/s (broker cpu {:.1}%); gateway/bare = {:.0}%",
            g.acks_per_s,
            g.acks_per_s * f64::from(p.points),
            g.usage.cpu_pct,
            g.broker.cpu_pct,
            bm.acks_per_s,
            bm.broker.cpu_pct,
            100.0 * g.acks_per_s / bm.acks_per_s
        );
    }
    Ok(())
}
