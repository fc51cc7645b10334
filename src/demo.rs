//! `ferrogate demo`: the gateway with an embedded MQTT broker and the
//! simulated devices of `config/demo`, printing every message that reaches
//! the broker, so a newcomer sees data flow with nothing else installed.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::config;

const GATEWAY_TOML: &str = include_str!("../config/demo/gateway.toml");
const DEVICES_TOML: &str = include_str!("../config/demo/conf.d/demo.toml");

/// Run the demo until Ctrl-C, or until `count` messages were printed.
pub fn main(port: u16, count: Option<u64>) -> ExitCode {
    let log = crate::logging::init("warn");
    match run(port, count, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_config(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("conf.d"))?;
    std::fs::write(dir.join("gateway.toml"), GATEWAY_TOML)?;
    std::fs::write(dir.join("conf.d/demo.toml"), DEVICES_TOML)
}

/// The demo's scratch directory (config, outbox, control socket), removed
/// however the demo ends, a failed start included.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(port: u16, count: Option<u64>, log: crate::logging::LogHandle) -> Result<(), String> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("ferrogate-demo-{}", std::process::id())));
    let base = &scratch.0;
    let config_dir = base.join("config");
    write_config(&config_dir).map_err(|e| format!("cannot write the demo config: {e}"))?;
    let mut loaded = config::load(&config_dir, &crate::kinds::all()).map_err(|issues| {
        issues
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    loaded.gateway.state_dir = base.join("state");
    loaded.gateway.control.socket = base.join("control.sock");
    crate::daemon::start_embedded_broker(&mut loaded.gateway.mqtt, port)
        .map_err(|e| e.to_string())?;
    let root = format!("ferrogate/{}", loaded.gateway.gateway_id);
    banner(port, &root, &loaded.gateway.control.socket);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // `scratch` goes after the runtime, when this returns.
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let viewer = tokio::spawn(print_flow(port, root, count, stop.clone()));
        let result = crate::daemon::run(loaded, config_dir.clone(), log, stop.clone()).await;
        viewer.abort();
        result.map_err(|e| e.to_string())
    })
}

fn banner(port: u16, root: &str, socket: &Path) {
    println!(
        "ferrogate demo: embedded MQTT broker on 127.0.0.1:{port}, simulated devices meter-1 and boiler-1"
    );
    println!(
        "  watch from another terminal:  mosquitto_sub -h 127.0.0.1 -p {port} -t '{root}/#' -v"
    );
    println!(
        "  write the boiler setpoint:    mosquitto_pub -h 127.0.0.1 -p {port} -t '{root}/devices/boiler-1/cmd' -m \"{{\\\"id\\\":\\\"$(date +%s%N)\\\",\\\"op\\\":\\\"write\\\",\\\"point\\\":\\\"setpoint\\\",\\\"value\\\":65}}\""
    );
    println!(
        "    (a fresh id each time: a repeated id returns the first result without writing again)"
    );
    println!(
        "  the CLI against this gateway: ferrogate status --socket {}",
        socket.display()
    );
    println!("  stop with Ctrl-C\n");
}

/// Subscribe to everything under the gateway's root and print it.
async fn print_flow(port: u16, root: String, count: Option<u64>, stop: CancellationToken) {
    let mut options = MqttOptions::new(
        format!("ferrogate-demo-viewer-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 64);
    let mut printed = 0u64;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Err(e) = client.subscribe(format!("{root}/#"), QoS::AtMostOnce).await {
                    eprintln!("viewer: cannot subscribe: {e}");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                println!("{}  {}", p.topic, String::from_utf8_lossy(&p.payload));
                printed += 1;
                if count.is_some_and(|c| printed >= c) {
                    stop.cancel();
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
