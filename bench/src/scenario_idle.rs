//! Scenario 6: the idle footprint. One Modbus device (10 registers polled
//! every second) to a private mosquitto; RSS and CPU after it settled, and
//! the size of the gateway binary under test.

use std::path::Path;
use std::time::Duration;

use crate::BenchError;
use crate::broker::Broker;
use crate::gateway::Gateway;
use crate::helper::Helper;
use crate::measure;
use crate::scenario_modbus::{Params, ferrogate_config, slave_args, stamp_keys};
use crate::sink::Sink;

pub async fn run(
    bin: &Path,
    work: &Path,
    secs: u64,
    runs: usize,
    warmup: u64,
) -> Result<(), BenchError> {
    let size = std::fs::metadata(bin)
        .map_err(|e| BenchError::Io(bin.display().to_string(), e))?
        .len();
    println!(
        "binary {}: {size} bytes ({:.2} MB)",
        bin.display(),
        size as f64 / 1e6
    );
    let p = Params {
        devices: 1,
        registers: 10,
        poll: "1s".into(),
        base_port: 22900,
        secs,
        runs,
        warmup,
        sparkplug: false,
    };
    let broker = Broker::start(work)?;
    let _slave = Helper::spawn(&slave_args(&p))?;
    let (profile, conf) = ferrogate_config(&p);
    let gw = Gateway::start(
        bin,
        &work.join("gw"),
        broker.port,
        "",
        &conf,
        &[("bench", profile)],
    )?;
    let sink = Sink::start(
        broker.port,
        &["ferrogate/bench/devices/+/telemetry"],
        stamp_keys(p.registers),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let ws = measure::windows(gw.pid(), None, &sink, secs, runs, "idle, one device").await?;
    let m = measure::medians(&ws);
    m.print("idle, one device MEDIAN");
    println!(
        "idle footprint: RSS {:.2} MB (peak VmHWM {:.2} MB), binary {:.2} MB",
        measure::mb(m.gateway.rss_mean),
        measure::mb(crate::proc::status_bytes(gw.pid(), "VmHWM")?),
        size as f64 / 1e6
    );
    Ok(())
}
