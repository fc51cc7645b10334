//! Outbox and replay benchmarks (not timed tests; numbers to report).
//!
//! `cargo bench --bench north_outbox` (release). Environment:
//! - `NORTH_BENCH_N`: backlog size for the replay (default 1_000_000);
//! - `NORTH_BENCH_BROKER`: `host:port` of a mosquitto (default
//!   127.0.0.1:1883; a private one is started on a free port if nothing
//!   listens there).
//!
//! Measures: append throughput per fsync policy; replay of the backlog at
//! QoS 1 through `North`, next to bare rumqttc publishing the same number
//! of QoS 1 messages on one connection; RSS with the full backlog.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrogate::north::North;
use ferrogate::north::config::{FsyncPolicy, MqttConfig, MqttVersion, OutboxConfig};
use ferrogate::north::outbox::{NewMessage, Outbox};
use tokio_util::sync::CancellationToken;

const PAYLOAD: usize = 200;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn message(i: u64) -> NewMessage {
    NewMessage {
        topic: format!("ferrogate/bench/devices/d{}/telemetry", i % 10),
        payload: vec![b'x'; PAYLOAD],
        qos: 1,
        retain: false,
        device: format!("d{}", i % 10),
        seq: i + 1,
        correlation: None,
    }
}

fn outbox_cfg(fsync: FsyncPolicy) -> OutboxConfig {
    OutboxConfig {
        fsync,
        max_bytes: 4 * 1024 * 1024 * 1024,
        ..OutboxConfig::default()
    }
}

/// Appends `n` messages in group commits of `batch`, the way the writer
/// does; `interval` fsyncs every 200 ms, `always` after each commit.
fn append(dir: &Path, fsync: FsyncPolicy, n: u64, batch: u64) -> f64 {
    let mut ob = Outbox::open(dir, &outbox_cfg(fsync)).expect("open");
    let start = Instant::now();
    let mut last_sync = Instant::now();
    let mut i = 0;
    while i < n {
        for _ in 0..batch.min(n - i) {
            ob.append(message(i));
            i += 1;
        }
        ob.commit().expect("commit");
        match fsync {
            FsyncPolicy::Always => ob.sync_now().expect("sync"),
            FsyncPolicy::Interval => {
                if last_sync.elapsed() >= Duration::from_millis(200) {
                    ob.sync_now().expect("sync");
                    last_sync = Instant::now();
                }
            }
        }
    }
    ob.close().expect("close");
    n as f64 / start.elapsed().as_secs_f64()
}

fn broker() -> (String, u16, Option<Child>) {
    let spec = std::env::var("NORTH_BENCH_BROKER").unwrap_or_else(|_| "127.0.0.1:1883".into());
    if TcpStream::connect(&spec).is_ok() {
        let (h, p) = spec.rsplit_once(':').expect("host:port");
        return (h.to_string(), p.parse().expect("port"), None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conf = std::env::temp_dir().join(format!("north-bench-{port}.conf"));
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .expect("conf");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto on PATH (apt-get install mosquitto)");
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    ("127.0.0.1".into(), port, Some(child))
}

/// Bare rumqttc: `n` QoS 1 publishes on one connection, until all PUBACKs.
async fn bare_rumqttc(host: &str, port: u16, n: u64, version: MqttVersion) -> f64 {
    let start = Instant::now();
    match version {
        MqttVersion::V311 => {
            let mut o = rumqttc::MqttOptions::new("bench-bare", host, port);
            o.set_inflight(256).set_max_packet_size(1 << 20, 1 << 20);
            let (c, mut el) = rumqttc::AsyncClient::new(o, 512);
            tokio::spawn(async move {
                for i in 0..n {
                    let t = format!("bench/bare/d{}", i % 10);
                    if c.publish(t, rumqttc::QoS::AtLeastOnce, false, vec![b'x'; PAYLOAD])
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let mut acked = 0;
            while acked < n {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = el.poll().await {
                    acked += 1;
                }
            }
        }
        MqttVersion::V5 => {
            use rumqttc::v5::mqttbytes::QoS;
            let mut o = rumqttc::v5::MqttOptions::new("bench-bare5", host, port);
            o.set_outgoing_inflight_upper_limit(256)
                .set_max_packet_size(Some(1 << 20));
            let (c, mut el) = rumqttc::v5::AsyncClient::new(o, 512);
            tokio::spawn(async move {
                for i in 0..n {
                    let t = format!("bench/bare/d{}", i % 10);
                    if c.publish(t, QoS::AtLeastOnce, false, vec![b'x'; PAYLOAD])
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let mut acked = 0;
            while acked < n {
                if let Ok(rumqttc::v5::Event::Incoming(
                    rumqttc::v5::mqttbytes::v5::Packet::PubAck(_),
                )) = el.poll().await
                {
                    acked += 1;
                }
            }
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Replays a backlog of `n` through `North`; returns (msgs/s, peak RSS KiB).
async fn replay(host: &str, port: u16, n: u64, version: MqttVersion) -> (f64, f64, u64, u64) {
    let state = tempfile::tempdir().expect("tempdir");
    {
        let mut ob = Outbox::open(
            &state.path().join("outbox"),
            &outbox_cfg(FsyncPolicy::Interval),
        )
        .expect("open");
        for i in 0..n {
            ob.append(message(i));
            if i % 1024 == 1023 {
                ob.commit().expect("commit");
            }
        }
        ob.close().expect("close");
    }
    let mqtt = MqttConfig {
        url: format!("mqtt://{host}:{port}"),
        version,
        ..MqttConfig::default()
    };
    let opening = Instant::now();
    let north = North::start(
        "bench",
        &mqtt,
        &outbox_cfg(FsyncPolicy::Interval),
        state.path(),
        CancellationToken::new(),
    )
    .await
    .expect("start");
    let open_s = opening.elapsed().as_secs_f64();
    let start = Instant::now();
    let rss_backlog = rss_kib();
    let mut peak = rss_backlog;
    loop {
        let st = north.status();
        peak = peak.max(rss_kib());
        if st.outbox.depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    north.shutdown().await;
    (rate, open_s, rss_backlog, peak)
}

fn main() {
    let n: u64 = std::env::var("NORTH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let base_rss = rss_kib();
    println!("payload {PAYLOAD} bytes, backlog {n} messages, RSS at start {base_rss} KiB");

    let only_replay = std::env::var("NORTH_BENCH_ONLY").is_ok_and(|v| v == "replay");
    if !only_replay {
        appends(tmp.path(), n);
    }
    drop(tmp);
    replays(n);
}

fn appends(tmp: &Path, n: u64) {
    let r = append(&tmp.join("interval"), FsyncPolicy::Interval, n, 1024);
    println!("append, fsync=interval (200ms), group commits of 1024: {r:.0} msg/s");
    let r = append(
        &tmp.join("always"),
        FsyncPolicy::Always,
        n.min(200_000),
        1024,
    );
    println!("append, fsync=always, group commits of 1024:           {r:.0} msg/s");
    let r = append(&tmp.join("always1"), FsyncPolicy::Always, 2_000, 1);
    println!("append, fsync=always, one message per commit:          {r:.0} msg/s");
    let r = append(&tmp.join("interval1"), FsyncPolicy::Interval, 200_000, 1);
    println!("append, fsync=interval, one message per commit:        {r:.0} msg/s");
}

fn replays(n: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (host, port, child) = broker();
    println!("broker {host}:{port}");
    rt.block_on(async {
        for version in [MqttVersion::V311, MqttVersion::V5] {
            let bare = bare_rumqttc(&host, port, n, version).await;
            println!("{version:?}: bare rumqttc QoS 1, {n} publishes: {bare:.0} msg/s");
            let (rate, open_s, rss_backlog, peak) = replay(&host, port, n, version).await;
            println!(
                "{version:?}: North replay of {n} backlog at QoS 1: {rate:.0} msg/s after opening the outbox in {open_s:.2} s; RSS with backlog open {rss_backlog} KiB, peak during replay {peak} KiB"
            );
        }
    });
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}
