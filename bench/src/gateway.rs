//! Runs the ferrogate daemon under test: writes a config directory, starts
//! `ferrogate run`, waits until it is connected, scrapes its metrics.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;
use crate::broker::free_port;

/// The `[outbox]` settings every gateway under test runs with (`--fsync`,
/// `--commit-delay`), as TOML lines; unset = the defaults.
pub static OUTBOX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub struct Gateway {
    child: Child,
    pub metrics: u16,
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| BenchError::Io(p.display().to_string(), e))?;
    }
    std::fs::write(path, text).map_err(|e| BenchError::Io(path.display().to_string(), e))
}

impl Gateway {
    /// Writes `dir/gateway.toml` (broker on `mqtt_port`, state under `dir`)
    /// and `dir/conf.d/bench.toml` (= `devices`), plus `profiles`; starts
    /// `bin run --config dir` and waits for `ferrogate_mqtt_connected 1`.
    pub fn start(
        bin: &Path,
        dir: &Path,
        mqtt_port: u16,
        extra_gateway_toml: &str,
        devices: &str,
        profiles: &[(&str, String)],
    ) -> Result<Gateway, BenchError> {
        let _ = std::fs::remove_dir_all(dir);
        let metrics = free_port()?;
        let outbox = OUTBOX
            .get()
            .map(|lines| format!("\n[outbox]\n{lines}"))
            .unwrap_or_default();
        let gw = format!(
            "gateway_id = \"bench\"\nstate_dir = \"state\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\n\
             {extra_gateway_toml}{outbox}\n[control]\nsocket = \"{}/control.sock\"\n\n[metrics]\nbind = \"127.0.0.1:{metrics}\"\n\n\
             [log]\nlevel = \"warn\"\n",
            dir.display()
        );
        write(&dir.join("gateway.toml"), &gw)?;
        write(&dir.join("conf.d/bench.toml"), devices)?;
        for (name, text) in profiles {
            write(&dir.join(format!("profiles/{name}.toml")), text)?;
        }
        let log = std::fs::File::create(dir.join("gateway.log"))
            .map_err(|e| BenchError::Io("gateway.log".into(), e))?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                BenchError::Io(
                    format!("{} (cargo build --release -p ferrogate)", bin.display()),
                    e,
                )
            })?;
        let mut g = Gateway { child, metrics };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = g.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
                return Err(BenchError::Gateway(format!("exited with {status}: {log}")));
            }
            if let Ok(m) = g.scrape() {
                if m.get("ferrogate_mqtt_connected").copied() == Some(1.0) {
                    return Ok(g);
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout("the gateway to connect".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Metrics summed over labels: `name` -> value.
    pub fn scrape(&self) -> Result<HashMap<String, f64>, BenchError> {
        scrape(self.metrics)
    }

    pub fn stop(&mut self) {
        // SIGTERM first: the daemon flushes and exits within 5 s.
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// GET /metrics on 127.0.0.1:`port`, summing each series over its labels.
pub fn scrape(port: u16) -> Result<HashMap<String, f64>, BenchError> {
    let mut s =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| BenchError::Io("metrics".into(), e))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| BenchError::Io("metrics".into(), e))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| BenchError::Io("metrics".into(), e))?;
    let mut out = HashMap::new();
    for line in body.lines().filter(|l| l.starts_with("ferrogate_")) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    Ok(out)
}
