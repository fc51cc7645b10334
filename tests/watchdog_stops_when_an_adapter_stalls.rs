//! The systemd watchdog is fed only while every adapter makes progress: a
//! stalled adapter stops the pings (so systemd restarts the service) and the
//! status line and `ferrogate status` name it. Uses a fake notify socket.

mod common;
mod daemon;

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrogate::config;
use ferrogate_sdk::{Adapter, AdapterContext, AdapterError, BoxFuture, BuiltAdapter};
use tokio_util::sync::CancellationToken;

/// Beats every 20 ms until `stall` is set, then hangs without beating.
struct Staller {
    stall: Arc<AtomicBool>,
}

impl Adapter for Staller {
    fn run(&mut self, ctx: AdapterContext) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            loop {
                if !self.stall.load(Ordering::SeqCst) {
                    ctx.health.beat();
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
    }
}

fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the socket timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn stalled_adapter_stops_watchdog_pings() {
    let broker = common::Mosquitto::start();
    let config = daemon::ConfigDir::new("gw-wd", broker.port, "5", "");
    let gateway = std::fs::read_to_string(config.path().join("gateway.toml")).unwrap();
    std::fs::write(
        config.path().join("gateway.toml"),
        gateway + "\n[supervisor]\nstall_after = \"300ms\"\n",
    )
    .unwrap();
    let notify_path = config.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // SAFETY: set before any other thread of this test process exists (the
    // runtime is built below); this file holds a single test.
    unsafe {
        std::env::set_var("NOTIFY_SOCKET", &notify_path);
        std::env::set_var("WATCHDOG_USEC", "200000");
    }

    let mut loaded = config::load(config.path(), &ferrogate::kinds::all()).unwrap();
    let stall = Arc::new(AtomicBool::new(false));
    loaded.adapters.push(BuiltAdapter {
        name: "staller".into(),
        devices: Vec::new(),
        notes: Vec::new(),
        fingerprint: 0,
        policies: Default::default(),
        adapter: Box::new(Staller {
            stall: stall.clone(),
        }),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let daemon = runtime.spawn(ferrogate::daemon::run(
        loaded,
        config.path().to_path_buf(),
        Default::default(),
        stop.clone(),
    ));

    assert_eq!(next(&notify), "READY=1");
    // Healthy: the pings come.
    let mut pings = 0;
    while pings < 3 {
        if next(&notify) == "WATCHDOG=1" {
            pings += 1;
        }
    }
    // Stalled: once the stall is noticed, no tick pings any more.
    stall.store(true, Ordering::SeqCst);
    loop {
        let msg = next(&notify);
        if msg.starts_with("STATUS=stalled") {
            assert_eq!(msg, "STATUS=stalled: staller");
            break;
        }
        assert_eq!(msg, "WATCHDOG=1");
    }
    for _ in 0..3 {
        assert_eq!(next(&notify), "STATUS=stalled: staller");
    }
    let status = std::process::Command::new(daemon::binary())
        .arg("--socket")
        .arg(config.path().join("control.sock"))
        .args(["--json", "status"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let staller = status["result"]["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "staller")
        .unwrap()
        .clone();
    assert_eq!(staller["stalled"], true);

    // Progress again: the pings resume.
    stall.store(false, Ordering::SeqCst);
    while next(&notify) != "WATCHDOG=1" {}
    stop.cancel();
    runtime.block_on(daemon).unwrap().unwrap();
}
