//! `ferrogate-bench`: the benchmark harness of BENCHMARKS.md. Each scenario
//! starts its own broker, simulators and gateway, measures CPU (% of one
//! core), RSS, throughput and latency over several windows and prints every
//! window and the medians. Simulators run as child processes of this same
//! binary (`modbus-slaves`, `coap-clients`, `lwm2m-clients`).

mod broker;
mod gateway;
mod helper;
mod measure;
mod modbus_slave;
mod proc;
mod scenario_modbus;
mod scenario_pipeline;
mod sink;
mod stats;
mod thingsboard;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("/proc/{0}: {1}")]
    Proc(u32, String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("gateway: {0}")]
    Gateway(String),
}

#[derive(Parser)]
#[command(about = "ferrogate benchmark harness (see BENCHMARKS.md)")]
struct Cli {
    /// The ferrogate binary under test.
    #[arg(long, global = true, default_value = "target/release/ferrogate")]
    gateway: PathBuf,
    /// Scratch directory for configs, state and the broker.
    #[arg(long, global = true, default_value = "/tmp/ferrogate-bench")]
    work: PathBuf,
    /// Measurement windows (the median is reported).
    #[arg(long, global = true, default_value_t = 5)]
    runs: usize,
    /// Seconds per window.
    #[arg(long, global = true, default_value_t = 10)]
    secs: u64,
    /// Seconds of warm-up before the first window.
    #[arg(long, global = true, default_value_t = 5)]
    warmup: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scenario 1: Modbus TCP devices × registers polled to mosquitto.
    Modbus {
        #[arg(long, default_value_t = 1000)]
        devices: u16,
        #[arg(long, default_value_t = 100)]
        registers: u16,
        #[arg(long, default_value = "1s")]
        poll: String,
        #[arg(long, default_value_t = 21000)]
        base_port: u16,
    },
    /// ferrogate and the ThingsBoard IoT Gateway on the same Modbus slaves.
    VsThingsboard {
        /// `thingsboard-gateway` of its virtualenv.
        #[arg(long)]
        tb_bin: PathBuf,
        /// Its working directory (with config/logs.json).
        #[arg(long)]
        tb_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        devices: u16,
        #[arg(long, default_value_t = 100)]
        registers: u16,
        #[arg(long, default_value = "1s")]
        poll: String,
        #[arg(long, default_value_t = 23000)]
        base_port: u16,
    },
    /// Scenario 2: pipeline ceiling (simulator adapter) vs a bare rumqttc publisher.
    Pipeline {
        /// Simulated device counts to step through.
        #[arg(long, value_delimiter = ',', default_value = "10,50,100,200")]
        steps: Vec<u32>,
        #[arg(long, default_value_t = 10)]
        points: u32,
        #[arg(long, default_value = "1ms")]
        period: String,
    },
    /// Simulator: Modbus TCP slaves on consecutive ports (runs until killed).
    ModbusSlaves {
        #[arg(long)]
        base_port: u16,
        #[arg(long)]
        count: u16,
        #[arg(long, default_value_t = 100)]
        registers: u16,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrogate-bench: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("ferrogate-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), BenchError> {
    std::fs::create_dir_all(&cli.work).map_err(|e| BenchError::Io(cli.work.display().to_string(), e))?;
    match cli.cmd {
        Cmd::Modbus { devices, registers, poll, base_port } => {
            let p = scenario_modbus::Params {
                devices, registers, poll, base_port, secs: cli.secs, runs: cli.runs, warmup: cli.warmup,
            };
            scenario_modbus::run(&cli.gateway, &cli.work.join("modbus"), &p).await.map(|_| ())
        }
        Cmd::VsThingsboard { tb_bin, tb_dir, devices, registers, poll, base_port } => {
            let p = scenario_modbus::Params {
                devices, registers, poll, base_port, secs: cli.secs, runs: cli.runs, warmup: cli.warmup,
            };
            let peer = thingsboard::Peer { bin: tb_bin, dir: tb_dir };
            let c = thingsboard::run(&cli.gateway, &cli.work.join("vs-tb"), &peer, &p).await?;
            c.print();
            Ok(())
        }
        Cmd::Pipeline { steps, points, period } => {
            let p = scenario_pipeline::Params { steps, points, period, secs: cli.secs, runs: cli.runs, warmup: cli.warmup };
            scenario_pipeline::run(&cli.gateway, &cli.work.join("pipeline"), &p).await
        }
        Cmd::ModbusSlaves { base_port, count, registers } => {
            modbus_slave::run(base_port, count, registers).await
        }
    }
}
