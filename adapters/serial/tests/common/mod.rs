//! Test peers for the serial adapter: a socat pseudo-terminal pair with
//! stable link names (as /dev/serial/by-id/... links are), the instrument
//! end of it, and helpers to run the adapter and wait for its uplinks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrogate_sdk::testing::{TestHarness, build, context};
use ferrogate_sdk::{Uplink, UplinkEnvelope};
use ferrogate_serial::SerialKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_serial::SerialStream;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// A socat pty pair: the adapter opens `adapter_end`, the test plays the
/// instrument on `instrument_end`.
pub struct PtyPair {
    dir: PathBuf,
    child: Option<Child>,
}

impl PtyPair {
    pub fn new(test: &str) -> PtyPair {
        let dir =
            std::env::temp_dir().join(format!("ferrogate-serial-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let mut pair = PtyPair { dir, child: None };
        pair.start();
        pair
    }

    pub fn adapter_end(&self) -> PathBuf {
        self.dir.join("adapter")
    }

    pub fn instrument_end(&self) -> PathBuf {
        self.dir.join("instrument")
    }

    /// Start socat and wait until both links exist.
    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.adapter_end());
        let _ = std::fs::remove_file(self.instrument_end());
        let link = |p: &Path| format!("pty,raw,echo=0,link={}", p.display());
        let child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(link(&self.adapter_end()))
            .arg(link(&self.instrument_end()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run socat ({e}): install the Debian package `socat`")
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + DEADLINE;
        while !(self.adapter_end().exists() && self.instrument_end().exists()) {
            assert!(
                std::time::Instant::now() < deadline,
                "socat links did not appear in {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill socat: the port disappears as an unplugged USB adapter does.
    pub fn unplug(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.adapter_end());
        let _ = std::fs::remove_file(self.instrument_end());
    }

    /// Open the instrument's end of the line.
    pub fn instrument(&self) -> Instrument {
        let builder = tokio_serial::new(self.instrument_end().to_string_lossy(), 9600);
        let port = SerialStream::open(&builder).expect("open the instrument end");
        Instrument {
            port,
            buf: Vec::new(),
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        self.unplug();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The fake instrument: writes what the test says, reads what the adapter sends.
pub struct Instrument {
    port: SerialStream,
    buf: Vec<u8>,
}

impl Instrument {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.port.write_all(bytes).await.expect("instrument write");
        self.port.flush().await.expect("instrument flush");
    }

    /// Read until `terminator` arrives; returns what came before it.
    pub async fn receive(&mut self, terminator: &[u8]) -> Vec<u8> {
        let read = async {
            loop {
                if let Some(at) = self
                    .buf
                    .windows(terminator.len())
                    .position(|w| w == terminator)
                {
                    let line = self.buf[..at].to_vec();
                    self.buf.drain(..at + terminator.len());
                    return line;
                }
                let mut chunk = [0u8; 256];
                let n = self.port.read(&mut chunk).await.expect("instrument read");
                assert!(n > 0, "adapter end closed");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .unwrap_or_else(|_| panic!("instrument received nothing ending in {terminator:?}"))
    }
}

/// A running adapter built from TOML, and the test's side of its context.
pub struct Running {
    pub harness: TestHarness,
    pub task: JoinHandle<Result<(), ferrogate_sdk::AdapterError>>,
}

pub fn start(toml: &str) -> Running {
    let built = build(&SerialKind, toml, &[]).unwrap_or_else(|issues| {
        panic!(
            "config rejected: {}",
            issues
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(built.len(), 1);
    let built = built.into_iter().next().expect("one adapter");
    let (ctx, harness) = context(&built.name);
    let mut adapter = built.adapter;
    let task = tokio::spawn(async move { adapter.run(ctx).await });
    Running { harness, task }
}

impl Running {
    /// The next uplink matching `pred`, skipping others, within the deadline.
    pub async fn expect(&mut self, what: &str, mut pred: impl FnMut(&Uplink) -> bool) -> Uplink {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let next = tokio::time::timeout_at(deadline, self.harness.uplinks.recv()).await;
            match next {
                Ok(Some(UplinkEnvelope { uplink, .. })) if pred(&uplink) => return uplink,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("uplink closed while waiting for {what}"),
                Err(_) => panic!("no {what} within {DEADLINE:?}"),
            }
        }
    }

    /// Stop the adapter and check it exits Ok.
    pub async fn stop(self) {
        self.harness.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("adapter did not stop after shutdown")
            .expect("adapter task panicked");
        assert!(result.is_ok(), "adapter ended with {result:?}");
    }
}

pub fn is_status(u: &Uplink, state: ferrogate_sdk::DeviceState) -> bool {
    matches!(u, Uplink::Status(s) if s.state == state)
}

pub fn telemetry(u: &Uplink) -> Option<&ferrogate_sdk::Telemetry> {
    match u {
        Uplink::Telemetry(t) => Some(t),
        _ => None,
    }
}

pub fn value_of<'a>(
    t: &'a ferrogate_sdk::Telemetry,
    point: &str,
) -> Option<&'a ferrogate_sdk::Value> {
    t.readings
        .iter()
        .find(|r| &*r.point == point)
        .and_then(|r| r.value.as_ref().ok())
}
