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
        /// While the configuration is invalid (a fresh install), say why and
        /// wait for it to pass `config check` instead of exiting.
        #[arg(long)]
        wait_for_config: bool,
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
        /// Only this adapter's devices: a kind (`modbus` matches every
        /// `modbus/<connection>`) or one instance.
        #[arg(long)]
        adapter: Option<String>,
    },
    /// A device's point map: name, type, unit, writable, range.
    Points {
        /// The device, as `ferrogate devices` lists it.
        device: String,
    },
    /// A fresh read from the device (all points when none are named); the
    /// points that failed are shown with their error (exit 1).
    Read {
        /// The device, as `ferrogate devices` lists it.
        device: String,
        /// Points to read (all when none are named).
        points: Vec<String>,
    },
    /// Write a value; prints the result the device confirmed.
    Write {
        /// The device, as `ferrogate devices` lists it.
        device: String,
        /// A writable point (see `ferrogate points DEVICE`).
        point: String,
        /// A number, true/false, or text.
        value: String,
    },
    /// Live readings, status changes and events as they happen, each with
    /// its time (UTC).
    Tail {
        /// Only this device's messages.
        device: Option<String>,
        /// Only this point's readings.
        #[arg(long)]
        point: Option<String>,
    },
    /// Reload the configuration without dropping the MQTT session or the outbox.
    Reload,
    /// Change the daemon's log level (e.g. debug, or info,ferrogate_modbus=trace).
    LogLevel {
        /// A level or filter: error, warn, info, debug, trace, or per module.
        level: String,
    },
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
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write it with a page per subcommand.
    Man {
        /// Write ferrogate.1 and the ferrogate-*.1 pages it refers to into
        /// this directory instead of printing ferrogate(1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration directory; print every error as file:line:col.
    Check {
        /// Configuration directory (gateway.toml, conf.d/, profiles/).
        #[arg(long, short, default_value = "/etc/ferrogate")]
        config: PathBuf,
        /// Also print the notes (resolved addresses, serial line load,
        /// where each profile came from), not only the summary.
        #[arg(long, short)]
        verbose: bool,
        /// Then try it: connect to the broker once and poll every device
        /// once, reporting each; starts nothing else.
        #[arg(long)]
        connect: bool,
        /// With --connect: how long to wait for the broker and the devices.
        #[arg(long, default_value = "10s", value_parser = parse_duration, requires = "connect")]
        connect_timeout: std::time::Duration,
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
        /// Decode the registers as this type (--count values of it).
        #[arg(long = "type", value_enum)]
        ty: Option<modbus::TypeArg>,
        /// Byte order of --type values (ABCD = big-endian).
        #[arg(long, value_enum, default_value = "ABCD")]
        order: modbus::OrderArg,
        #[command(flatten)]
        poll: modbus::Poll,
    },
    /// Write holding registers or coils.
    Write {
        #[command(flatten)]
        link: modbus::Link,
        #[command(flatten)]
        target: modbus::WriteTarget,
    },
    /// Show a register range decoded as every type in all four byte orders.
    Probe {
        #[command(flatten)]
        link: modbus::Link,
        #[command(flatten)]
        range: modbus::Range,
    },
    /// Find which unit ids answer on a line, printing each as it answers.
    Scan {
        #[command(flatten)]
        link: modbus::Link,
        /// Unit ids to try: `1-32`, `5`, or a list `1,3,10-12`.
        #[arg(long, default_value = "1-247", value_parser = modbus::Units::parse)]
        units: modbus::Units,
        /// Holding register to ask each unit for.
        #[arg(long, default_value_t = 0)]
        address: u16,
    },
    /// The requests each poll cycle sends, from the configuration: function,
    /// unit, start, count, points served, bridged gaps, line time.
    Plan {
        /// The configuration directory.
        #[arg(long, short, default_value = "/etc/ferrogate")]
        config: PathBuf,
        /// Only this device.
        device: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CoapCommand {
    /// GET a resource: `coap[s]://host[:port]/path[?query]`.
    Get {
        /// `coap://host[:port]/path[?query]`, or `coaps://` (DTLS 1.2 PSK).
        uri: String,
        /// Give up after this long.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        psk: PskArgs,
    },
    /// Observe a resource and print every notification.
    Observe {
        /// `coap://host[:port]/path[?query]`, or `coaps://` (DTLS 1.2 PSK).
        uri: String,
        /// Give up when no notification arrives for this long.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Exit after this many notifications.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        psk: PskArgs,
    },
}

/// The pre-shared key of a `coaps://` URI.
#[derive(Debug, clap::Args)]
struct PskArgs {
    /// PSK identity to present (coaps://).
    #[arg(long, requires = "psk_key")]
    psk_identity: Option<String>,
    /// The pre-shared key, in hex (coaps://).
    #[arg(long, requires = "psk_identity", value_parser = parse_psk_key)]
    psk_key: Option<ferrogate_dtls::PskKey>,
}

impl PskArgs {
    fn into_psk(self) -> Option<ferrogate::cli::coap::Psk> {
        Some(ferrogate::cli::coap::Psk {
            identity: self.psk_identity?,
            key: self.psk_key?,
        })
    }
}

fn parse_psk_key(s: &str) -> Result<ferrogate_dtls::PskKey, String> {
    ferrogate_dtls::credentials::parse_hex_key(s)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    ferrogate_sdk::config::ConfigDuration::parse(s).map(|d| d.0)
}

#[derive(Debug, Subcommand)]
enum Lwm2mCommand {
    /// Registered clients.
    Clients,
    /// Read an object, instance or resource path from a client.
    Read {
        /// The client's endpoint name.
        endpoint: String,
        /// An object, instance or resource path, e.g. /3303/0/5700.
        path: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // `ferrogate status | head`: a closed pipe ends the command quietly,
        // as it does any Unix tool, instead of a panic in `println!`. The
        // daemon keeps ignoring SIGPIPE (a CLI client hanging up must not
        // kill it).
        // SAFETY: restoring the default disposition of one signal before
        // any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let remote = Remote {
        socket: &cli.socket,
        json: cli.json,
    };
    match cli.command {
        Command::Config {
            command:
                ConfigCommand::Check {
                    config,
                    verbose,
                    connect,
                    connect_timeout,
                },
        } => ferrogate::cli::config_check(
            &config,
            ferrogate::cli::CheckOptions {
                verbose,
                connect: connect.then_some(connect_timeout),
            },
            cli.json,
        ),
        Command::Run {
            config,
            wait_for_config,
        } => ferrogate::daemon::main(&config, wait_for_config),
        #[cfg(feature = "embedded-broker")]
        Command::Demo { port, count } => ferrogate::demo::main(port, count),
        #[cfg(not(feature = "embedded-broker"))]
        Command::Demo { .. } => {
            eprintln!("error: this build has no embedded broker (feature `embedded-broker`)");
            ExitCode::FAILURE
        }
        Command::Status => remote.status(),
        Command::Devices { adapter } => remote.devices(adapter.as_deref()),
        Command::Points { device } => remote.points(&device),
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
                    poll,
                },
        } => modbus::read_command(&link, &range, ty, order, &poll, cli.json),
        Command::Modbus {
            command: ModbusCommand::Write { link, target },
        } => modbus::write_command(&link, &target, cli.json),
        Command::Modbus {
            command: ModbusCommand::Probe { link, range },
        } => modbus::probe_command(&link, &range, cli.json),
        Command::Modbus {
            command:
                ModbusCommand::Scan {
                    link,
                    units,
                    address,
                },
        } => modbus::scan_command(&link, &units.0, address, cli.json),
        Command::Modbus {
            command: ModbusCommand::Plan { config, device },
        } => modbus::plan_command(&config, device.as_deref(), cli.json),
        Command::Coap {
            command: CoapCommand::Get { uri, timeout, psk },
        } => ferrogate::cli::coap::get(
            &uri,
            ferrogate::cli::coap::Options {
                json: cli.json,
                timeout,
                psk: psk.into_psk(),
            },
        ),
        Command::Coap {
            command:
                CoapCommand::Observe {
                    uri,
                    timeout,
                    count,
                    psk,
                },
        } => ferrogate::cli::coap::observe(
            &uri,
            ferrogate::cli::coap::Options {
                json: cli.json,
                timeout,
                psk: psk.into_psk(),
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
        Command::Man { dir } => {
            let written = match dir {
                Some(dir) => clap_mangen::generate_to(Cli::command(), dir),
                None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand, argument and flag says what it is for in `--help`.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && path.contains(' ') && cmd.get_name() != "help" {
                missing.push(path.clone());
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        let mut cmd = Cli::command();
        cmd.build();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
