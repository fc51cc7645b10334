//! `ferrogate-bench`: the benchmark harness of BENCHMARKS.md. Each scenario
//! starts its own broker, simulators and gateway, measures CPU (% of one
//! core), RSS, throughput and latency over several windows and prints every
//! window and the medians. Simulators run as child processes of this same
//! binary (`modbus-slaves`, `coap-clients`, `lwm2m-clients`).

mod bare;
mod broker;
mod coap_client;
mod counters;
mod gateway;
mod helper;
mod lwm2m_client;
mod measure;
mod modbus_slave;
mod proc;
mod scenario_coap;
mod scenario_idle;
mod scenario_lwm2m;
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
    /// The gateway's outbox fsync policy: always (its default) or interval.
    #[arg(long, global = true)]
    fsync: Option<String>,
    /// The gateway's outbox commit delay, e.g. "5ms" (default: its own).
    #[arg(long, global = true)]
    commit_delay: Option<String>,
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
        /// Also run the gateway as a Sparkplug B edge node (aliases on),
        /// next to JSON; prints bytes on the wire per value of each.
        #[arg(long)]
        sparkplug: bool,
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
    /// Scenario 4: CoAP ingest requests/s.
    Coap {
        /// Devices (one UDP socket each).
        #[arg(long, default_value_t = 64)]
        devices: u32,
        /// Requests outstanding per device.
        #[arg(long, default_value_t = 8)]
        window: u16,
    },
    /// Scenario 3: LwM2M registration storm, then sustained notifications.
    Lwm2m {
        #[arg(long, default_value_t = 100_000)]
        clients: u32,
        /// Notifications per second offered in total.
        #[arg(long, default_value_t = 20_000.0)]
        rate: f64,
        /// Registrations in flight per client process.
        #[arg(long, default_value_t = 500)]
        window: usize,
    },
    /// Simulator: LwM2M clients (one helper process of the lwm2m scenario).
    Lwm2mClients {
        #[arg(long)]
        server: std::net::SocketAddr,
        #[arg(long)]
        first: u32,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 500)]
        window: usize,
        #[arg(long)]
        rate: f64,
    },
    /// Scenario 6: idle RSS with one device, and the binary's size.
    Idle,
    /// Reference: a bare rumqttc QoS 1 publisher at a fixed rate (runs until killed).
    BarePublisher {
        #[arg(long)]
        port: u16,
        /// Messages per second.
        #[arg(long)]
        rate: f64,
        /// Payload bytes per message.
        #[arg(long)]
        bytes: usize,
        /// Topics to spread the messages over.
        #[arg(long, default_value_t = 100)]
        topics: u32,
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
    let outbox: String = [("fsync", &cli.fsync), ("commit_delay", &cli.commit_delay)]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key} = \"{v}\"\n")))
        .collect();
    if !outbox.is_empty() {
        let _ = gateway::OUTBOX.set(outbox);
    }
    std::fs::create_dir_all(&cli.work)
        .map_err(|e| BenchError::Io(cli.work.display().to_string(), e))?;
    match cli.cmd {
        Cmd::Modbus {
            devices,
            registers,
            poll,
            base_port,
            sparkplug,
        } => {
            let p = scenario_modbus::Params {
                devices,
                registers,
                poll,
                base_port,
                secs: cli.secs,
                runs: cli.runs,
                warmup: cli.warmup,
                sparkplug,
            };
            scenario_modbus::run(&cli.gateway, &cli.work.join("modbus"), &p)
                .await
                .map(|_| ())
        }
        Cmd::VsThingsboard {
            tb_bin,
            tb_dir,
            devices,
            registers,
            poll,
            base_port,
        } => {
            let p = scenario_modbus::Params {
                devices,
                registers,
                poll,
                base_port,
                secs: cli.secs,
                runs: cli.runs,
                warmup: cli.warmup,
                sparkplug: false,
            };
            let peer = thingsboard::Peer {
                bin: tb_bin,
                dir: tb_dir,
            };
            let c = thingsboard::run(&cli.gateway, &cli.work.join("vs-tb"), &peer, &p).await?;
            c.print();
            Ok(())
        }
        Cmd::Pipeline {
            steps,
            points,
            period,
        } => {
            let p = scenario_pipeline::Params {
                steps,
                points,
                period,
                secs: cli.secs,
                runs: cli.runs,
                warmup: cli.warmup,
            };
            scenario_pipeline::run(&cli.gateway, &cli.work.join("pipeline"), &p).await
        }
        Cmd::Coap { devices, window } => {
            let p = scenario_coap::Params {
                devices,
                window,
                secs: cli.secs,
                runs: cli.runs,
                warmup: cli.warmup,
            };
            scenario_coap::run(&cli.gateway, &cli.work.join("coap"), &p).await
        }
        Cmd::Lwm2m {
            clients,
            rate,
            window,
        } => {
            let p = scenario_lwm2m::Params {
                clients,
                rate,
                window,
                secs: cli.secs,
                runs: cli.runs,
                warmup: cli.warmup,
            };
            scenario_lwm2m::run(&cli.gateway, &cli.work.join("lwm2m"), &p).await
        }
        Cmd::Lwm2mClients {
            server,
            first,
            count,
            window,
            rate,
        } => lwm2m_client::run(server, first, count, window, rate).await,
        Cmd::Idle => {
            scenario_idle::run(
                &cli.gateway,
                &cli.work.join("idle"),
                cli.secs,
                cli.runs,
                cli.warmup,
            )
            .await
        }
        Cmd::BarePublisher {
            port,
            rate,
            bytes,
            topics,
        } => bare::run(port, rate, bytes, topics).await,
        Cmd::ModbusSlaves {
            base_port,
            count,
            registers,
        } => modbus_slave::run(base_port, count, registers).await,
    }
}
