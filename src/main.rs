//! The `ferrogate` binary: the daemon, the demo, config checking, and (in
//! later modules) the field-tech CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Multi-protocol IoT gateway: Modbus, CoAP, LwM2M and serial devices to MQTT.
#[derive(Debug, Parser)]
#[command(name = "ferrogate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway daemon.
    Run {
        /// Configuration directory (gateway.toml, conf.d/, profiles/).
        #[arg(long, short, default_value = "/etc/ferrogate")]
        config: PathBuf,
    },
    /// Run the gateway with an embedded MQTT broker and simulated devices.
    Demo {
        /// Port of the embedded broker.
        #[arg(long, default_value_t = 1883)]
        port: u16,
        /// Print only the first N messages, then exit (for scripts).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration directory; print every error as file:line:col.
    Check {
        #[arg(long, short, default_value = "/etc/ferrogate")]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { config, json },
        } => ferrogate::cli::config_check(&config, json),
        Command::Run { config } => ferrogate::daemon::main(&config),
        #[cfg(feature = "embedded-broker")]
        Command::Demo { port, count } => ferrogate::demo::main(port, count),
        #[cfg(not(feature = "embedded-broker"))]
        Command::Demo { .. } => {
            eprintln!("error: this build has no embedded broker (feature `embedded-broker`)");
            ExitCode::FAILURE
        }
    }
}
