//! Side by side with the ThingsBoard IoT Gateway: the same Modbus slaves,
//! the same private mosquitto, the same subscriber; first ferrogate, then
//! the ThingsBoard gateway, each measured over the same windows.
//!
//! The ThingsBoard gateway is configured in its best form for this
//! workload: one wide-range key per device (`"0-99"`, `r${address}`) with
//! `maxRegistersPerRequest = 125`, so it makes one FC03 request per device
//! and poll like ferrogate does; in-memory storage, `ON_RECEIVED` reporting
//! (every value sent, as ferrogate does without `report_on_change`),
//! statistics and remote configuration off, logs at ERROR.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::BenchError;
use crate::broker::Broker;
use crate::gateway::Gateway;
use crate::helper::Helper;
use crate::measure::{self, Window};
use crate::scenario_modbus::{Params, ferrogate_config, slave_args, stamp_keys};
use crate::sink::Sink;

pub struct Peer {
    /// The `thingsboard-gateway` executable of its virtualenv.
    pub bin: PathBuf,
    /// Its working directory; must hold `config/logs.json`.
    pub dir: PathBuf,
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| BenchError::Gateway(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| BenchError::Io(path.display().to_string(), e))
}

fn thingsboard_config(peer: &Peer, p: &Params, broker_port: u16) -> Result<(), BenchError> {
    let config = peer.dir.join("config");
    let gateway = json!({
        "thingsboard": {
            "host": "127.0.0.1", "port": broker_port,
            "remoteShell": false, "remoteConfiguration": false, "latencyDebugMode": false,
            "statistics": {"enable": false, "statsSendPeriodInSeconds": 3600, "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": false, "filterFile": "list.json"},
            "maxPayloadSizeBytes": 65536, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 3600, "handleDeviceRenaming": false,
            "security": {"type": "accessToken", "accessToken": "bench"},
            "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": false}
        },
        "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
        "grpc": {"enabled": false},
        "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
    });
    let stamp_at = p.registers;
    let slaves: Vec<_> = (0..p.devices)
        .map(|d| {
            json!({
                "host": "127.0.0.1", "port": p.base_port + d, "type": "tcp", "method": "socket",
                "unitId": 1, "deviceName": format!("d{d}"), "deviceType": "default",
                "timeout": 1, "byteOrder": "BIG", "wordOrder": "BIG",
                "retries": 1, "retryOnEmpty": true, "retryOnInvalid": true,
                "pollPeriod": poll_ms(&p.poll),
                "connectAttemptTimeMs": 5000, "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 300000,
                "attributes": [],
                "timeseries": [{
                    "tag": "r${address}", "type": "16uint", "functionCode": 3, "objectsCount": 1,
                    "address": format!("0-{}", stamp_at - 1), "maxRegistersPerRequest": 125
                }],
                "attributeUpdates": [], "rpc": []
            })
        })
        .collect();
    write_json(&config.join("tb_gateway.json"), &gateway)?;
    write_json(
        &config.join("modbus.json"),
        &json!({"master": {"slaves": slaves}}),
    )
}

fn poll_ms(poll: &str) -> u64 {
    if let Some(ms) = poll.strip_suffix("ms") {
        ms.parse().unwrap_or(1000)
    } else if let Some(s) = poll.strip_suffix('s') {
        s.parse::<u64>().map_or(1000, |s| s * 1000)
    } else {
        1000
    }
}

struct PeerProcess(Child);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Comparison {
    pub ferrogate: Window,
    pub thingsboard: Window,
}

pub async fn run(
    bin: &Path,
    work: &Path,
    peer: &Peer,
    p: &Params,
) -> Result<Comparison, BenchError> {
    let broker = Broker::start(work)?;
    let _slaves = Helper::spawn(&slave_args(p))?;
    let sink_ferrogate = Sink::start(
        broker.port,
        &["ferrogate/bench/devices/+/telemetry"],
        stamp_keys(p.registers),
    )
    .await;
    let label = format!("{}x{} @{}", p.devices, p.registers, p.poll);

    let ferrogate = {
        let (profile, conf) = ferrogate_config(p);
        let gw = Gateway::start(
            bin,
            &work.join("gw"),
            broker.port,
            "",
            &conf,
            &[("bench", profile)],
        )?;
        let want = f64::from(p.devices);
        measure::wait_for(
            Duration::from_secs(120),
            "every ferrogate device online",
            || {
                gw.scrape()
                    .ok()
                    .and_then(|m| m.get("ferrogate_device_online").copied())
                    == Some(want)
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(p.warmup)).await;
        let ws = measure::windows(
            gw.pid(),
            Some(broker.pid()),
            &sink_ferrogate,
            p.secs,
            p.runs,
            &format!("ferrogate {label}"),
        )
        .await?;
        measure::medians(&ws)
    };

    let sink = Sink::start(
        broker.port,
        &["v1/gateway/telemetry", "v1/devices/me/rpc/request/+"],
        stamp_keys(p.registers),
    )
    .await;
    thingsboard_config(peer, p, broker.port)?;
    let child = Command::new(&peer.bin)
        .current_dir(&peer.dir)
        .env("TB_GW_CONFIG_DIR", peer.dir.join("config"))
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(peer.dir.join("stderr.log"))
                .map_err(|e| BenchError::Io("stderr.log".into(), e))?,
        )
        .spawn()
        .map_err(|e| BenchError::Io(peer.bin.display().to_string(), e))?;
    let tb = PeerProcess(child);
    // Running once every device sends: wait for a full second of values.
    let want = f64::from(p.devices) * f64::from(p.registers);
    let mut last = 0;
    measure::wait_for(
        Duration::from_secs(180),
        "the ThingsBoard gateway to send every device",
        || {
            let t = sink.take();
            let ok = t.values as f64 >= 0.9 * want && last > 0;
            last = t.values;
            if !ok {
                std::thread::sleep(Duration::from_millis(800));
            }
            ok
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(p.warmup)).await;
    let ws = measure::windows(
        tb.0.id(),
        Some(broker.pid()),
        &sink,
        p.secs,
        p.runs,
        &format!("thingsboard {label}"),
    )
    .await?;
    let thingsboard = measure::medians(&ws);
    Ok(Comparison {
        ferrogate,
        thingsboard,
    })
}

impl Comparison {
    pub fn print(&self) {
        let f = &self.ferrogate;
        let t = &self.thingsboard;
        println!();
        println!("| | ferrogate | ThingsBoard gateway | ratio (TB / ferrogate) |");
        println!("|---|---|---|---|");
        println!(
            "| values/s delivered | {:.0} | {:.0} | |",
            f.values_per_s, t.values_per_s
        );
        println!(
            "| CPU, % of one core | {:.2} | {:.2} | |",
            f.gateway.cpu_pct, t.gateway.cpu_pct
        );
        println!(
            "| CPU per delivered value, µs | {:.2} | {:.2} | {:.1}× |",
            f.cpu_us_per_value(),
            t.cpu_us_per_value(),
            t.cpu_us_per_value() / f.cpu_us_per_value()
        );
        println!(
            "| RSS, MB | {:.1} | {:.1} | {:.1}× |",
            measure::mb(f.gateway.rss_mean),
            measure::mb(t.gateway.rss_mean),
            t.gateway.rss_mean as f64 / f.gateway.rss_mean as f64
        );
        println!(
            "| latency p50, ms | {:.1} | {:.1} | {:.1}× |",
            f.p50_ms,
            t.p50_ms,
            t.p50_ms / f.p50_ms
        );
        println!(
            "| latency p99, ms | {:.1} | {:.1} | {:.1}× |",
            f.p99_ms,
            t.p99_ms,
            t.p99_ms / f.p99_ms
        );
        println!(
            "| broker CPU, % | {:.1} | {:.1} | |",
            f.broker.map_or(f64::NAN, |b| b.cpu_pct),
            t.broker.map_or(f64::NAN, |b| b.cpu_pct)
        );
        println!("| load average (1 min) | {:.2} | {:.2} | |", f.load, t.load);
    }
}
