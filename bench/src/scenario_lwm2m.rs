//! Scenario 3: LwM2M. N clients (helper processes, up to 14 000 sockets
//! each) register at once with the gateway's LwM2M server, are observed
//! (`auto_observe = ["/3303/*/5700"]`), then send notifications at a fixed
//! total rate. Reports registrations/s, memory per registered client (RSS
//! growth / N), notifications/s that became telemetry and were acknowledged
//! by the broker, CPU and RSS while sustained.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::BenchError;
use crate::broker::{Broker, free_port};
use crate::gateway::Gateway;
use crate::helper::Helper;
use crate::proc::{Sampler, loadavg, rss_bytes};
use crate::stats::median;

pub struct Params {
    pub clients: u32,
    pub rate: f64,
    pub window: usize,
    pub secs: u64,
    pub runs: usize,
    pub warmup: u64,
}

const PER_PROCESS: u32 = 14_000;

fn get(m: &HashMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

pub async fn run(bin: &Path, work: &Path, p: &Params) -> Result<(), BenchError> {
    let broker = Broker::start(work)?;
    let port = free_port()?;
    let conf =
        format!("[lwm2m.server]\nbind = \"127.0.0.1:{port}\"\nauto_observe = [\"/3303/*/5700\"]\n");
    let gw = Gateway::start(bin, &work.join("gw"), broker.port, "", &conf, &[])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = rss_bytes(gw.pid())?;
    let processes = p.clients.div_ceil(PER_PROCESS);
    let mut helpers = Vec::new();
    let t0 = Instant::now();
    let mut first = 0;
    while first < p.clients {
        let count = PER_PROCESS.min(p.clients - first);
        helpers.push(Helper::spawn(&[
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
        ])?);
        first += count;
    }
    let mut cpu_storm = Sampler::start(gw.pid())?;
    let want = f64::from(p.clients);
    let deadline = t0 + Duration::from_secs(600);
    let mut online = 0.0;
    let mut last_print = Instant::now();
    while Instant::now() < deadline {
        online = get(&gw.scrape()?, "ferrogate_device_online");
        if online >= want {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            println!(
                "  storm: {online} online after {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        cpu_storm.sample();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let storm = t0.elapsed().as_secs_f64();
    let (storm_usage, _) = cpu_storm.finish()?;
    let rss1 = rss_bytes(gw.pid())?;
    println!(
        "lwm2m storm: {online} of {} clients registered in {storm:.1} s = {:.0} registrations/s ({processes} client processes), \
         cpu={:.1}%, RSS {:.1} -> {:.1} MB = {:.0} bytes per client, load={:.2}",
        p.clients,
        online / storm,
        storm_usage.cpu_pct,
        rss0 as f64 / 1e6,
        rss1 as f64 / 1e6,
        (rss1.saturating_sub(rss0)) as f64 / online.max(1.0),
        loadavg()
    );
    tokio::time::sleep(Duration::from_secs(p.warmup)).await;
    let (mut tel, mut acks, mut cpus, mut rsss) = (vec![], vec![], vec![], vec![]);
    for run in 1..=p.runs {
        let load = loadavg();
        let m0 = gw.scrape()?;
        let t = Instant::now();
        let mut g = Sampler::start(gw.pid())?;
        for _ in 0..p.secs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            g.sample();
        }
        let s = t.elapsed().as_secs_f64();
        let (u, _) = g.finish()?;
        let m1 = gw.scrape()?;
        let telemetry = (get(&m1, "ferrogate_device_telemetry_total")
            - get(&m0, "ferrogate_device_telemetry_total"))
            / s;
        let acked =
            (get(&m1, "ferrogate_mqtt_acks_total") - get(&m0, "ferrogate_mqtt_acks_total")) / s;
        println!(
            "lwm2m {} clients, offered {:.0} notifications/s, run {run}/{}: {telemetry:.0} telemetry/s, {acked:.0} MQTT msg/s acked, \
             cpu={:.1}% rss={:.1}MB outbox_depth={} online={} load={:.2}",
            p.clients,
            p.rate,
            p.runs,
            u.cpu_pct,
            u.rss_mean as f64 / 1e6,
            get(&m1, "ferrogate_outbox_depth"),
            get(&m1, "ferrogate_device_online"),
            (load + loadavg()) / 2.0
        );
        tel.push(telemetry);
        acks.push(acked);
        cpus.push(u.cpu_pct);
        rsss.push(u.rss_mean as f64 / 1e6);
    }
    println!(
        "lwm2m MEDIAN: {:.0} notifications/s became telemetry, {:.0} MQTT msg/s acked, cpu={:.1}% rss={:.1}MB",
        median(&tel),
        median(&acks),
        median(&cpus),
        median(&rsss)
    );
    drop(helpers);
    Ok(())
}
