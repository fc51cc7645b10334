//! Scenario 1: Modbus TCP, N devices × R registers polled every period, to
//! a private mosquitto; gateway CPU and RSS, values/s delivered, latency
//! from the slave's answer to the subscriber.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::BenchError;
use crate::broker::Broker;
use crate::gateway::Gateway;
use crate::helper::Helper;
use crate::measure::{self, Window};
use crate::modbus_slave::STAMP_REGISTERS;
use crate::sink::{Sink, StampKeys};

pub struct Params {
    pub devices: u16,
    pub registers: u16,
    pub poll: String,
    pub base_port: u16,
    pub secs: u64,
    pub runs: usize,
    pub warmup: u64,
}

/// The stamp register names (`r{R-4}`..`r{R-1}`), as both gateways name them.
pub fn stamp_keys(registers: u16) -> StampKeys {
    let first = registers - STAMP_REGISTERS;
    Some([0, 1, 2, 3].map(|i| format!("r{}", first + i)))
}

/// `profiles/bench.toml` and `conf.d/bench.toml` for ferrogate: one TCP
/// connection and one device per slave, every register a u16 point.
pub fn ferrogate_config(p: &Params) -> (String, String) {
    let mut profile = String::new();
    for r in 0..p.registers {
        let _ = writeln!(
            profile,
            "[[point]]\nname = \"r{r}\"\naddress = {r}\ntype = \"u16\"\n"
        );
    }
    let mut conf = String::new();
    for d in 0..p.devices {
        let port = p.base_port + d;
        let _ = writeln!(
            conf,
            "[[modbus.connection]]\nname = \"c{d}\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"1s\"\n\n\
             [[modbus.device]]\nname = \"d{d}\"\nconnection = \"c{d}\"\nunit = 1\nprofile = \"bench\"\npoll = \"{}\"\n",
            p.poll
        );
    }
    (profile, conf)
}

pub fn slave_args(p: &Params) -> Vec<String> {
    vec![
        "modbus-slaves".into(),
        "--base-port".into(),
        p.base_port.to_string(),
        "--count".into(),
        p.devices.to_string(),
        "--registers".into(),
        p.registers.to_string(),
    ]
}

pub async fn run(bin: &Path, work: &Path, p: &Params) -> Result<Window, BenchError> {
    let broker = Broker::start(work)?;
    let _slaves = Helper::spawn(&slave_args(p))?;
    let (profile, conf) = ferrogate_config(p);
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
    let want = f64::from(p.devices);
    measure::wait_for(Duration::from_secs(120), "every device online", || {
        gw.scrape()
            .ok()
            .and_then(|m| m.get("ferrogate_device_online").copied())
            == Some(want)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(p.warmup)).await;
    let label = format!("modbus {}x{} @{}", p.devices, p.registers, p.poll);
    let ws = measure::windows(gw.pid(), Some(broker.pid()), &sink, p.secs, p.runs, &label).await?;
    let m = measure::medians(&ws);
    m.print(&format!("{label} MEDIAN"));
    if let Ok(metrics) = gw.scrape() {
        for k in [
            "ferrogate_device_read_errors_total",
            "ferrogate_outbox_dropped_total",
            "ferrogate_outbox_depth",
        ] {
            println!("  {k} = {}", metrics.get(k).copied().unwrap_or(f64::NAN));
        }
    }
    Ok(m)
}
