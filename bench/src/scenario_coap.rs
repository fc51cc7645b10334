//! Scenario 4: CoAP ingest. Devices POST readings to the gateway's CoAP
//! server as fast as it answers; requests/s answered 2.04, MQTT messages
//! acknowledged by the broker, gateway CPU and RSS.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::BenchError;
use crate::broker::{Broker, free_port};
use crate::coap_client::{Answers, device};
use crate::gateway::Gateway;
use crate::proc::{Sampler, loadavg};
use crate::stats::median;

pub struct Params {
    pub devices: u32,
    pub window: u16,
    pub secs: u64,
    pub runs: usize,
    pub warmup: u64,
}

pub async fn run(bin: &Path, work: &Path, p: &Params) -> Result<(), BenchError> {
    let broker = Broker::start(work)?;
    // A UDP port: take a free TCP port number and hope UDP's is free too.
    let port = free_port()?;
    // Every device sends from 127.0.0.1: the per-source-IP rate limit is
    // lifted, as it would be for a fleet behind one NAT address.
    let conf = format!(
        "[coap.server]\nbind = \"127.0.0.1:{port}\"\npaths = [\"/{{device}}/{{point}}\"]\nallow = [\"bench-*\"]\nrate_limit = 100000000\n"
    );
    let gw = Gateway::start(bin, &work.join("gw"), broker.port, "", &conf, &[])?;
    let answers = Arc::new(Answers::default());
    let server = ([127, 0, 0, 1], port).into();
    let tasks: Vec<_> = (0..p.devices)
        .map(|d| {
            tokio::spawn(device(
                server,
                format!("bench-{d}"),
                p.window,
                answers.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(p.warmup)).await;
    let (mut reqs, mut acks, mut cpus, mut rsss) = (vec![], vec![], vec![], vec![]);
    for run in 1..=p.runs {
        let load = loadavg();
        let m0 = gw.scrape()?;
        let a0 = answers.changed.load(Ordering::Relaxed);
        let o0 = answers.other.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let mut g = Sampler::start(gw.pid())?;
        for _ in 0..p.secs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            g.sample();
        }
        let s = t0.elapsed().as_secs_f64();
        let (u, _) = g.finish()?;
        let m1 = gw.scrape()?;
        let changed = (answers.changed.load(Ordering::Relaxed) - a0) as f64 / s;
        let other = (answers.other.load(Ordering::Relaxed) - o0) as f64 / s;
        let get =
            |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
        let acked =
            (get(&m1, "ferrogate_mqtt_acks_total") - get(&m0, "ferrogate_mqtt_acks_total")) / s;
        println!(
            "coap ingest {} devices window {} run {run}/{}: {changed:.0} req/s answered 2.04 ({other:.0}/s other codes), \
             {acked:.0} MQTT msg/s acked, cpu={:.1}% rss={:.1}MB outbox_depth={} load={:.2}",
            p.devices,
            p.window,
            p.runs,
            u.cpu_pct,
            u.rss_mean as f64 / 1e6,
            get(&m1, "ferrogate_outbox_depth"),
            (load + loadavg()) / 2.0
        );
        reqs.push(changed);
        acks.push(acked);
        cpus.push(u.cpu_pct);
        rsss.push(u.rss_mean as f64 / 1e6);
    }
    println!(
        "coap ingest MEDIAN: {:.0} req/s answered 2.04, {:.0} MQTT msg/s acked, cpu={:.1}% rss={:.1}MB; lost windows {}, last other code {:?}",
        median(&reqs),
        median(&acks),
        median(&cpus),
        median(&rsss),
        answers.lost_windows.load(Ordering::Relaxed),
        answers
            .last_other
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}
