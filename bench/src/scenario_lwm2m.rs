//! Scenario 3: LwM2M. N clients (helper processes, up to 14 000 sockets
//! each) register at once with the gateway's LwM2M server, are observed
//! (`auto_observe = ["/3303/*/5700"]`), then send notifications at a fixed
//! total rate. Reports registrations/s, memory per registered client (RSS
//! growth / N), notifications/s that became telemetry and were acknowledged
//! by the broker, CPU and RSS while sustained.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::BenchError;
use crate::broker::{Broker, free_port};
use crate::gateway::Gateway;
use crate::helper::Helper;
use crate::lwm2m_client::SETTLED;
use crate::measure;
use crate::proc::{Sampler, loadavg, rss_bytes};
use crate::sink::Sink;

pub struct Params {
    pub clients: u32,
    pub rate: f64,
    pub window: usize,
    pub secs: u64,
    pub runs: usize,
    pub warmup: u64,
}

const PER_PROCESS: u32 = 14_000;

/// What one helper process last reported: registered, observed, notified.
type Progress = Arc<[AtomicU64; 3]>;

fn parse_progress(line: &str, p: &Progress) {
    for (i, key) in ["registered=", "observed=", "notified="].iter().enumerate() {
        if let Some(v) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
        {
            p[i].store(v, Ordering::Relaxed);
        }
    }
}

fn total(ps: &[Progress], i: usize) -> u64 {
    ps.iter().map(|p| p[i].load(Ordering::Relaxed)).sum()
}

pub async fn run(bin: &Path, work: &Path, p: &Params) -> Result<(), BenchError> {
    let broker = Broker::start(work)?;
    let port = free_port()?;
    // every client comes from the loopback: lift the per-network cap (a
    // site's clients come from many networks; here they share one)
    let conf = format!(
        "[lwm2m.server]\nbind = \"127.0.0.1:{port}\"\nauto_observe = [\"/3303/*/5700\"]\nmax_registrations = 1000000\nmax_registrations_per_network = 1000000\n"
    );
    let gw = Gateway::start(bin, &work.join("gw"), broker.port, "", &conf, &[])?;
    let sink = Sink::start(broker.port, &["ferrogate/bench/devices/+/telemetry"], None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = rss_bytes(gw.pid())?;
    let mut helpers = Vec::new();
    let mut progress: Vec<Progress> = Vec::new();
    let t0 = Instant::now();
    let mut first = 0;
    while first < p.clients {
        let count = PER_PROCESS.min(p.clients - first);
        let mine: Progress = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let theirs = mine.clone();
        helpers.push(Helper::spawn_with(
            &[
                "lwm2m-clients".into(),
                "--server".into(),
                format!("127.0.0.1:{port}"),
                "--first".into(),
                first.to_string(),
                "--count".into(),
                count.to_string(),
                "--window".into(),
                p.window.to_string(),
                "--rate".into(),
                (p.rate * f64::from(count) / f64::from(p.clients)).to_string(),
            ],
            move |line| parse_progress(line, &theirs),
        )?);
        progress.push(mine);
        first += count;
    }
    // Progress is counted by the clients: scraping the gateway's metrics
    // during the storm would load it (they grow with the device count).
    let mut cpu_storm = Sampler::start(gw.pid())?;
    let want = u64::from(p.clients);
    let deadline = t0 + Duration::from_secs(900);
    let mut registered_at = None;
    let mut last_print = Instant::now();
    let mut last_observed = (0, Instant::now());
    while total(&progress, 1) < want && Instant::now() < deadline {
        let observed = total(&progress, 1);
        if observed != last_observed.0 {
            last_observed = (observed, Instant::now());
        } else if observed > 0 && last_observed.1.elapsed() > SETTLED {
            println!("  storm: observations stopped at {observed} of {want}");
            break;
        }
        if registered_at.is_none() && total(&progress, 0) >= want {
            registered_at = Some(t0.elapsed().as_secs_f64());
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!(
                "  storm: {} registered, {} observed after {:.0} s",
                total(&progress, 0),
                total(&progress, 1),
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
            cpu_storm.sample();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let observed = total(&progress, 1);
    let storm = last_observed.1.duration_since(t0).as_secs_f64();
    let registered = total(&progress, 0);
    let (storm_usage, _) = cpu_storm.finish()?;
    let rss1 = rss_bytes(gw.pid())?;
    let reg_s = registered_at.unwrap_or(storm);
    println!(
        "lwm2m storm: {registered} of {} clients registered in {reg_s:.1} s = {:.0} registrations/s, {observed} observed after {storm:.1} s \
         ({} client processes); gateway cpu={:.1}%, RSS {:.1} -> {:.1} MB = {:.0} bytes per client, load={:.2}",
        p.clients,
        registered as f64 / reg_s,
        helpers.len(),
        storm_usage.cpu_pct,
        rss0 as f64 / 1e6,
        rss1 as f64 / 1e6,
        rss1.saturating_sub(rss0) as f64 / (registered.max(1) as f64),
        loadavg()
    );
    tokio::time::sleep(Duration::from_secs(p.warmup)).await;
    let n0 = total(&progress, 2);
    let t = Instant::now();
    let label = format!(
        "lwm2m {} clients, {:.0} notifications/s offered",
        p.clients, p.rate
    );
    let ws = measure::windows(gw.pid(), Some(broker.pid()), &sink, p.secs, p.runs, &label).await?;
    let offered = (total(&progress, 2) - n0) as f64 / t.elapsed().as_secs_f64();
    let m = measure::medians(&ws);
    m.print(&format!("{label} MEDIAN (msg/s = notifications delivered as telemetry; latency = ts to subscriber, ms resolution)"));
    println!("  notifications actually sent by the clients: {offered:.0}/s");
    if let Ok(metrics) = gw.scrape() {
        for k in [
            "ferrogate_outbox_depth",
            "ferrogate_outbox_dropped_total",
            "ferrogate_device_online",
        ] {
            println!("  {k} = {}", metrics.get(k).copied().unwrap_or(f64::NAN));
        }
    }
    drop(helpers);
    Ok(())
}
