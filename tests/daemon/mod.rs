//! Running the real `ferrogate` binary in tests: a config directory in a
//! temp dir, the daemon as a child process, signals to it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A config directory with `gateway.toml` pointing at a broker port and
/// the given `conf.d/devices.toml`.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new(gateway_id: &str, port: u16, mqtt_version: &str, devices: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let gateway = format!(
            "gateway_id = \"{gateway_id}\"\nstate_dir = \"state\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nversion = \"{mqtt_version}\"\nkeep_alive = \"5s\"\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\n\n[control]\nsocket = \"{}\"\n\n[metrics]\nbind = \"\"\n",
            dir.path().join("control.sock").display()
        );
        std::fs::write(dir.path().join("gateway.toml"), gateway).unwrap();
        std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/devices.toml"), devices).unwrap();
        ConfigDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A simulated device with a counter and a writable setpoint.
pub fn simulated_device(name: &str, period: &str) -> String {
    format!(
        r#"
[[simulator.device]]
name = "{name}"
period = "{period}"

[[simulator.device.point]]
name = "count"
waveform = "counter"

[[simulator.device.point]]
name = "setpoint"
waveform = "setpoint"
min = 0.0
max = 100.0
"#
    )
}

/// The daemon as a child process; killed on drop.
pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrogate"));
        cmd.args(["run", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("FERROGATE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().expect("spawn ferrogate"),
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Wait for exit up to `timeout`; `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferrogate"))
}

/// pymodbus as an independent Modbus slave (the adapter's test peer),
/// listening on a free port; it exits when its stdin closes.
pub struct Slave {
    child: Child,
    pub port: u16,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Drop for Slave {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn pymodbus_slave(spec: serde_json::Value) -> Slave {
    use std::io::BufRead;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("adapters/modbus/tests/peers/slave.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(spec.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 (with pymodbus: pip install pymodbus)");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("slave did not start (is pymodbus installed?): {line:?}"));
    Slave {
        child,
        port,
        stdin,
        stdout,
    }
}

impl Slave {
    /// Ask the slave for its own view of registers: `get <unit> <fc> <address> <count>`.
    pub fn get(&mut self, unit: u8, fc: u8, address: u16, count: u16) -> Vec<i64> {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "get {unit} {fc} {address} {count}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix("VALUES")
            .unwrap_or_else(|| panic!("slave said {line:?}"))
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    }
}
