//! Scenario 1: Modbus TCP, N devices × R registers polled every period, to
//! a private mosquitto; gateway CPU and RSS, values/s delivered, latency
//! from the slave's answer to the subscriber; then, in the same run, a bare
//! rumqttc publisher sending the gateway's message rate and size, which the
//! gateway's CPU is divided by (the figure host speed moves least).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::BenchError;
use crate::bare;
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
    /// Also a Sparkplug B edge node (with aliases), next to JSON.
    pub sparkplug: bool,
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

/// The gateway against the reference: its CPU per delivered value divided
/// by the reference's CPU per message, and its CPU at the same message rate
/// and size as a multiple of the reference's.
fn print_normalised(label: &str, m: &Window, r: &bare::Reference) {
    println!(
        "{label} NORMALISED: gateway {:.3} µs/value / bare publisher {:.2} µs/msg ({:.0} msg/s of {:.0} bytes) = {:.4}; gateway cpu {:.1}% = {:.2}x the bare publisher's {:.2}%; per value: {}",
        m.cpu_us_per_value(),
        r.cpu_us_per_message,
        r.acked_per_s,
        m.payload_bytes,
        m.cpu_us_per_value() / r.cpu_us_per_message.max(f64::MIN_POSITIVE),
        m.gateway.cpu_pct,
        m.gateway.cpu_pct / r.cpu_pct.max(f64::MIN_POSITIVE),
        r.cpu_pct,
        m.per_value
    );
}

pub async fn run(bin: &Path, work: &Path, p: &Params) -> Result<Window, BenchError> {
    let broker = Broker::start(work)?;
    let _slaves = Helper::spawn(&slave_args(p))?;
    let (profile, conf) = ferrogate_config(p);
    let sparkplug = if p.sparkplug {
        "\n[sparkplug]\nenabled = true\naliases = true\n"
    } else {
        ""
    };
    let gw = Gateway::start(
        bin,
        &work.join("gw"),
        broker.port,
        sparkplug,
        &conf,
        &[("bench", profile)],
    )?;
    let mut filters = vec!["ferrogate/bench/devices/+/telemetry"];
    if p.sparkplug {
        filters.push("spBv1.0/+/DDATA/#");
    }
    let sink = Sink::start(broker.port, &filters, stamp_keys(p.registers)).await;
    let want = f64::from(p.devices);
    measure::wait_for(Duration::from_secs(120), "every device online", || {
        gw.scrape()
            .ok()
            .and_then(|m| m.get("ferrogate_device_online").copied())
            == Some(want)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(p.warmup)).await;
    let label = format!(
        "modbus {}x{} @{}{}",
        p.devices,
        p.registers,
        p.poll,
        if p.sparkplug { " +sparkplug" } else { "" }
    );
    let ws = measure::windows(gw.pid(), Some(broker.pid()), &sink, p.secs, p.runs, &label).await?;
    let m = measure::medians(&ws);
    m.print(&format!("{label} MEDIAN"));
    let reference = bare::measure(
        broker.port,
        m.messages_per_s,
        m.payload_bytes.round() as usize,
        u32::from(p.devices),
        p.secs,
        p.runs,
    )
    .await?;
    print_normalised(&label, &m, &reference);
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
