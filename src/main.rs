//! The `ferrogate` binary: the daemon, the demo, config checking, the
//! field-tech commands against the running daemon, and shell completions
//! and a man page generated from these definitions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use ferrogate::cli::modbus;
use ferrogate::cli::remote::Remote;

/// Multi-protocol IoT gateway: Modbus, CoAP, LwM2M and serial devices to MQTT.
///
/// Exit codes: 0 success; 1 the operation failed (invalid configuration, a
/// command refused by the device or daemon); 2 usage error; 3 the daemon
/// could not be reached.
#[derive(Debug, Parser)]
#[command(name = "ferrogate", version, about, long_about)]
struct Cli {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        env = "FERROGATE_SOCKET",
        default_value = "/run/ferrogate/control.sock"
    )]
    socket: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
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
        /// Exit after printing this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Uptime, broker connection, outbox backlog, adapters, recent errors.
    Status,
    /// Devices with their adapter, state, last seen and last error.
    Devices {
        /// Only this adapter's devices.
        #[arg(long)]
        adapter: Option<String>,
    },
    /// A fresh read from the device (all points when none are named).
    Read { device: String, points: Vec<String> },
    /// Write a value; prints the result the device confirmed.
    Write {
        device: String,
        point: String,
        /// A number, true/false, or text.
        value: String,
    },
    /// Live readings, status changes and events as they happen.
    Tail {
        device: Option<String>,
        /// Only this point's readings.
        #[arg(long)]
        point: Option<String>,
    },
    /// Reload the configuration without dropping the MQTT session or the outbox.
    Reload,
    /// Change the daemon's log level (e.g. debug, or info,ferrogate_modbus=trace).
    LogLevel { level: String },
    /// LwM2M clients of the running daemon.
    Lwm2m {
        #[command(subcommand)]
        command: Lwm2mCommand,
    },
    /// Talk to a Modbus device directly (no daemon needed).
    Modbus {
        #[command(subcommand)]
        command: ModbusCommand,
    },
    /// Talk to a CoAP device directly (no daemon needed).
    Coap {
        #[command(subcommand)]
        command: CoapCommand,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration directory; print every error as file:line:col.
    Check {
        #[arg(long, short, default_value = "/etc/ferrogate")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ModbusCommand {
    /// Read registers or bits, optionally decoded as a type and byte order.
    Read {
        #[command(flatten)]
        link: modbus::Link,
        #[command(flatten)]
        range: modbus::Range,
        #[arg(long = "type", value_enum)]
        ty: Option<modbus::TypeArg>,
        #[arg(long, value_enum, default_value = "ABCD")]
        order: modbus::OrderArg,
    },
    /// Show a register range decoded as every type in all four byte orders.
    Probe {
        #[command(flatten)]
        link: modbus::Link,
        #[command(flatten)]
        range: modbus::Range,
    },
    /// Find which unit ids answer on a line.
    Scan {
        #[command(flatten)]
        link: modbus::Link,
        #[arg(long, default_value_t = 1)]
        from: u8,
        #[arg(long, default_value_t = 247)]
        to: u8,
        /// Holding register to ask each unit for.
        #[arg(long, default_value_t = 0)]
        address: u16,
    },
}

#[derive(Debug, Subcommand)]
enum CoapCommand {
    /// GET a resource: `coap://host[:port]/path[?query]`.
    Get {
        uri: String,
        /// Give up after this long.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Observe a resource and print every notification.
    Observe {
        uri: String,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Exit after this many notifications.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    ferrogate_sdk::config::ConfigDuration::parse(s).map(|d| d.0)
}

#[derive(Debug, Subcommand)]
enum Lwm2mCommand {
    /// Registered clients.
    Clients,
    /// Read an object, instance or resource path from a client.
    Read { endpoint: String, path: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let remote = Remote {
        socket: &cli.socket,
        json: cli.json,
    };
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { config },
        } => ferrogate::cli::config_check(&config, cli.json),
        Command::Run { config } => ferrogate::daemon::main(&config),
        #[cfg(feature = "embedded-broker")]
        Command::Demo { port, count } => ferrogate::demo::main(port, count),
        #[cfg(not(feature = "embedded-broker"))]
        Command::Demo { .. } => {
            eprintln!("error: this build has no embedded broker (feature `embedded-broker`)");
            ExitCode::FAILURE
        }
        Command::Status => remote.status(),
        Command::Devices { adapter } => remote.devices(adapter.as_deref()),
        Command::Read { device, points } => remote.read(&device, &points),
        Command::Write {
            device,
            point,
            value,
        } => remote.write(&device, &point, &value),
        Command::Tail { device, point } => remote.tail(device.as_deref(), point.as_deref()),
        Command::Reload => remote.reload(),
        Command::LogLevel { level } => remote.log_level(&level),
        Command::Lwm2m {
            command: Lwm2mCommand::Clients,
        } => remote.lwm2m_clients(),
        Command::Lwm2m {
            command: Lwm2mCommand::Read { endpoint, path },
        } => remote.command(&endpoint, serde_json::json!({"op": "read", "path": path})),
        Command::Modbus {
            command:
                ModbusCommand::Read {
                    link,
                    range,
                    ty,
                    order,
                },
        } => modbus::read_command(&link, &range, ty, order, cli.json),
        Command::Modbus {
            command: ModbusCommand::Probe { link, range },
        } => modbus::probe_command(&link, &range, cli.json),
        Command::Modbus {
            command:
                ModbusCommand::Scan {
                    link,
                    from,
                    to,
                    address,
                },
        } => modbus::scan_command(&link, from, to, address, cli.json),
        Command::Coap {
            command: CoapCommand::Get { uri, timeout },
        } => ferrogate::cli::coap::get(
            &uri,
            ferrogate::cli::coap::Options {
                json: cli.json,
                timeout,
            },
        ),
        Command::Coap {
            command:
                CoapCommand::Observe {
                    uri,
                    timeout,
                    count,
                },
        } => ferrogate::cli::coap::observe(
            &uri,
            ferrogate::cli::coap::Options {
                json: cli.json,
                timeout,
            },
            count,
        ),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ferrogate",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
