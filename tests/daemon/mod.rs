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
            .env("RUST_LOG", "warn")
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
