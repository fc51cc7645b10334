//! Shared test helpers: a real pymodbus slave in a subprocess, a socat
//! pseudo-terminal pair, and a running adapter with the test's handles.
#![allow(dead_code)]

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{Instant, timeout};

use ferrogate_modbus::ModbusKind;
use ferrogate_sdk::testing::{self, TestHarness};
use ferrogate_sdk::{
    Command as SdkCommand, DeviceState, Operation, Outcome, Telemetry, Uplink, Value,
};

pub const WAIT: Duration = Duration::from_secs(15);

fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not on PATH: these tests need it (install {package})"
    );
}

/// A pymodbus slave running `tests/peers/slave.py`.
pub struct Slave {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pub port: u16,
}

impl Slave {
    pub async fn start(spec: serde_json::Value) -> Slave {
        require("python3", "python3 and `pip install pymodbus` (3.x)");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/slave.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(spec.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = timeout(WAIT, stdout.next_line())
            .await
            .expect("the pymodbus slave did not start in time (is `pymodbus` installed? pip install pymodbus)")
            .expect("read slave stdout")
            .expect("the pymodbus slave exited: is `pymodbus` 3.x installed? (pip install pymodbus)");
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected slave output: {line}"));
        Slave {
            child,
            stdin,
            stdout,
            port,
        }
    }

    async fn ask(&mut self, line: String) -> String {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to slave");
        let answer = timeout(WAIT, self.stdout.next_line())
            .await
            .expect("slave answer in time")
            .expect("slave stdout")
            .expect("slave exited");
        assert!(!answer.starts_with("ERROR"), "slave: {answer}");
        answer
    }

    /// Values the slave holds (`fc` 1, 2, 3 or 4 names the area).
    pub async fn get(&mut self, unit: u8, fc: u8, address: u16, count: u16) -> Vec<i64> {
        let answer = self.ask(format!("get {unit} {fc} {address} {count}")).await;
        answer
            .strip_prefix("VALUES")
            .unwrap_or_else(|| panic!("unexpected: {answer}"))
            .split_whitespace()
            .map(|v| v.parse().expect("number"))
            .collect()
    }

    pub async fn set(&mut self, unit: u8, fc: u8, address: u16, values: &[i64]) {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let answer = self
            .ask(format!("set {unit} {fc} {address} {}", values.join(" ")))
            .await;
        assert_eq!(answer, "OK");
    }

    pub async fn silent(&mut self, unit: u8, silent: bool) {
        let answer = self
            .ask(format!("silent {unit} {}", u8::from(silent)))
            .await;
        assert_eq!(answer, "OK");
    }

    /// Connections the slave accepted and refused (`refuse_second`).
    pub async fn connections(&mut self) -> (u64, u64) {
        let answer = self.ask("connections".into()).await;
        let mut n = answer
            .strip_prefix("CONNECTIONS")
            .unwrap_or_else(|| panic!("unexpected: {answer}"))
            .split_whitespace()
            .map(|v| v.parse().expect("number"));
        (n.next().expect("accepted"), n.next().expect("refused"))
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// A socat pseudo-terminal pair: `master` for the adapter, `slave` for pymodbus.
pub struct PtyPair {
    child: Child,
    _dir: TempDir,
    pub master: PathBuf,
    pub slave: PathBuf,
}

impl PtyPair {
    pub async fn open() -> PtyPair {
        require("socat", "the Debian package `socat`");
        let dir = TempDir::new();
        let master = dir.0.join("master");
        let slave = dir.0.join("slave");
        let child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", master.display()))
            .arg(format!("pty,raw,echo=0,link={}", slave.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start socat");
        let deadline = Instant::now() + WAIT;
        while !(master.exists() && slave.exists()) {
            assert!(
                Instant::now() < deadline,
                "socat did not create the pty pair"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        PtyPair {
            child,
            _dir: dir,
            master,
            slave,
        }
    }
}

impl PtyPair {
    /// Waits until at least `bytes` are waiting to be read at the master
    /// end (socat copies them across in its own time; under load that can
    /// be after the adapter's next read): FIONREAD of the terminal, which
    /// counts its input queue whoever has it open.
    pub async fn wait_for_input_at_master(&self, bytes: usize) {
        use std::os::fd::AsRawFd;
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&self.master)
            .expect("open the master end to look at its input queue");
        let deadline = Instant::now() + WAIT;
        loop {
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD writes one c_int through the pointer given.
            let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::FIONREAD, &mut queued) };
            assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
            if queued as usize >= bytes {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{bytes} bytes never reached the master end"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ferrogate-modbus-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running adapter built from `toml` (the first connection's).
pub struct Running {
    pub harness: TestHarness,
    pub task: tokio::task::JoinHandle<Result<(), ferrogate_sdk::AdapterError>>,
    pub notes: Vec<String>,
}

pub fn start(toml: &str) -> Running {
    start_with_profiles(toml, &[])
}

pub fn start_with_profiles(toml: &str, profiles: &[(&str, &str)]) -> Running {
    let mut built = match testing::build(&ModbusKind, toml, profiles) {
        Ok(b) => b,
        Err(issues) => panic!(
            "config rejected:\n{}",
            issues
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    };
    assert_eq!(built.len(), 1, "one connection expected");
    let built = built.remove(0);
    let (ctx, harness) = testing::context(&built.name);
    let (ctx, wakes) = ctx.with_reporting(built.policies);
    if let Some(wakes) = wakes {
        tokio::spawn(wakes);
    }
    let mut adapter = built.adapter;
    let task = tokio::spawn(async move { adapter.run(ctx).await });
    Running {
        harness,
        task,
        notes: built.notes,
    }
}

impl Running {
    /// The next uplink that `pick` accepts, skipping others.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Uplink) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let envelope = match timeout(left, self.harness.uplinks.recv()).await {
                Ok(Some(e)) => e,
                Ok(None) => panic!("adapter stopped while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            };
            if let Some(found) = pick(&envelope.uplink) {
                return found;
            }
        }
    }

    /// The next telemetry of `device`.
    pub async fn telemetry(&mut self, device: &str) -> Telemetry {
        self.wait_for(&format!("telemetry of {device}"), |u| match u {
            Uplink::Telemetry(t) if t.device == device => Some(t.clone()),
            _ => None,
        })
        .await
    }

    /// The next telemetry of `device` in which every point has a value.
    pub async fn good_telemetry(&mut self, device: &str) -> Telemetry {
        self.wait_for(&format!("error-free telemetry of {device}"), |u| match u {
            Uplink::Telemetry(t)
                if t.device == device && t.readings.iter().all(|r| r.value.is_ok()) =>
            {
                Some(t.clone())
            }
            _ => None,
        })
        .await
    }

    pub async fn status(&mut self, device: &str, state: DeviceState) -> Option<String> {
        self.wait_for(&format!("{device} {}", state.as_str()), |u| match u {
            Uplink::Status(s) if s.device == device && s.state == state => Some(s.reason.clone()),
            _ => None,
        })
        .await
    }

    pub async fn command(&self, device: &str, op: Operation) -> Outcome {
        self.harness
            .command(SdkCommand {
                id: "t".into(),
                device: device.into(),
                op,
                deadline: Instant::now() + Duration::from_secs(5),
            })
            .await
    }

    pub async fn stop(self) {
        self.harness.shutdown.cancel();
        let result = timeout(WAIT, self.task)
            .await
            .expect("adapter did not stop promptly after shutdown")
            .expect("adapter task panicked");
        assert!(result.is_ok(), "adapter ended with {result:?}");
    }
}

/// The value of `point` in `t`, panicking with the reading if it failed.
pub fn value(t: &Telemetry, point: &str) -> Value {
    let reading = t
        .readings
        .iter()
        .find(|r| &*r.point == point)
        .unwrap_or_else(|| panic!("no reading of {point} in {t:?}"));
    match &reading.value {
        Ok(v) => v.clone(),
        Err(e) => panic!("{point} failed: {e}"),
    }
}

/// Register words (as the slave stores them) of a big-endian byte string.
pub fn words(be: &[u8]) -> Vec<i64> {
    be.chunks(2)
        .map(|c| i64::from(u16::from_be_bytes([c[0], c[1]])))
        .collect()
}
