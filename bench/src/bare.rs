//! The reference a gateway's CPU is divided by: a bare rumqttc client in a
//! process of its own, publishing QoS 1 messages of a given size at a given
//! rate. Measured in the same run, on the same broker, its CPU per message
//! moves with the host the way the gateway's does, so the ratio of the two
//! is a figure one can compare across machines where % CPU is not.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

use crate::BenchError;
use crate::helper::Helper;
use crate::proc::thread_cpu_seconds;
use crate::stats::median;

/// Publishes are sent in a burst every tick, so that the reference's cost
/// is the publishing and acknowledging, not timer wake-ups (the gateway
/// also sends in bursts, one per poll phase step).
const TICK: Duration = Duration::from_millis(100);

/// The helper process: publishes `rate` messages/s of `bytes` bytes over
/// `topics` topics until killed; prints `ready` once connected and
/// `acked N` (a running total) ten times a second.
pub async fn run(port: u16, rate: f64, bytes: usize, topics: u32) -> Result<(), BenchError> {
    let mut opts = MqttOptions::new(
        format!("bench-bare-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(256);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 1024);
    let acks = Arc::new(AtomicU64::new(0));
    let counted = acks.clone();
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::PubAck(_))) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), connected_rx)
        .await
        .map_err(|_| BenchError::Timeout("bare publisher connect".into()))?
        .map_err(|_| BenchError::Gateway("bare publisher event loop ended".into()))?;
    println!("ready");
    let topics: Vec<String> = (0..topics.max(1))
        .map(|i| format!("bench/bare/d{i}/telemetry"))
        .collect();
    let payload = vec![b'x'; bytes];
    let per_tick = rate * TICK.as_secs_f64();
    let mut owed = 0.0;
    let mut next = 0usize;
    let mut tick = tokio::time::interval(TICK);
    let mut report = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                owed += per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    let topic = topics[next % topics.len()].clone();
                    next += 1;
                    if client.publish(topic, QoS::AtLeastOnce, false, payload.clone()).await.is_err() {
                        return Err(BenchError::Gateway("bare publisher: client closed".into()));
                    }
                }
            }
            _ = report.tick() => println!("acked {}", acks.load(Ordering::Relaxed)),
        }
    }
}

/// What the reference measured (medians over its windows).
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    pub acked_per_s: f64,
    pub cpu_pct: f64,
    /// CPU microseconds per acknowledged message.
    pub cpu_us_per_message: f64,
}

impl Reference {
    fn of(cpu_s: f64, acked: u64, window: Duration) -> Reference {
        Reference {
            acked_per_s: acked as f64 / window.as_secs_f64(),
            cpu_pct: 100.0 * cpu_s / window.as_secs_f64(),
            cpu_us_per_message: cpu_s * 1e6 / (acked.max(1) as f64),
        }
    }
}

/// Runs the reference at `rate` msg/s of `bytes` bytes for `runs` windows
/// of `secs` (after a second to settle); the median window.
pub async fn measure(
    port: u16,
    rate: f64,
    bytes: usize,
    topics: u32,
    secs: u64,
    runs: usize,
) -> Result<Reference, BenchError> {
    let acked = Arc::new(AtomicU64::new(0));
    let seen = acked.clone();
    let helper = Helper::spawn_with(
        &[
            "bare-publisher".into(),
            "--port".into(),
            port.to_string(),
            "--rate".into(),
            format!("{rate:.0}"),
            "--bytes".into(),
            bytes.to_string(),
            "--topics".into(),
            topics.to_string(),
        ],
        move |line| {
            if let Some(n) = line.strip_prefix("acked ").and_then(|n| n.parse().ok()) {
                seen.store(n, Ordering::Relaxed);
            }
        },
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut windows = Vec::new();
    for run in 1..=runs {
        let a0 = acked.load(Ordering::Relaxed);
        let cpu0 = thread_cpu_seconds(helper.pid())?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu_s = thread_cpu_seconds(helper.pid())? - cpu0;
        let n = acked.load(Ordering::Relaxed) - a0;
        let r = Reference::of(cpu_s, n, t0.elapsed());
        println!(
            "bare rumqttc QoS 1 reference run {run}/{runs}: {:.0} acked msg/s of {bytes} bytes, cpu={:.2}% ({:.2} µs/msg)",
            r.acked_per_s, r.cpu_pct, r.cpu_us_per_message
        );
        windows.push(r);
    }
    let m = |f: &dyn Fn(&Reference) -> f64| median(&windows.iter().map(f).collect::<Vec<_>>());
    Ok(Reference {
        acked_per_s: m(&|r| r.acked_per_s),
        cpu_pct: m(&|r| r.cpu_pct),
        cpu_us_per_message: m(&|r| r.cpu_us_per_message),
    })
}
