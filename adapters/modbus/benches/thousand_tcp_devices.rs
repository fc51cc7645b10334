//! Benchmark: N simulated Modbus TCP devices (default 1000), each with 100
//! holding registers mapped as 100 u16 points, polled every second
//! (100k values/s). Reports the adapter process's CPU (% of one core),
//! RSS, values/s, and the time from the simulator sending a response to
//! its telemetry entering the uplink channel (p50/p99; includes the
//! loopback hop, so it is an upper bound of the adapter's own latency).
//!
//! The simulator is this binary re-executed as a child process, so its
//! CPU is not counted. Each device has its own TCP connection (its own
//! line scheduler). Registers 0..=3 carry the simulator's CLOCK_MONOTONIC
//! nanoseconds at send time, which this process compares with the
//! envelope's `produced` instant on the same clock.
//!
//! Run: `cargo bench -p ferrogate-modbus --bench thousand_tcp_devices`
//! Env: DEVICES (1000), POINTS (100 per device), SECONDS (30 measured,
//! after 5 s warm-up), PROFILE=1 (all devices use one profile, so they
//! share one point map, instead of each listing its points inline),
//! RUNTIME=current (a current-thread tokio runtime instead of multi-thread).

use std::io::{BufRead, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use ferrogate_modbus::ModbusKind;
use ferrogate_sdk::{AdapterContext, CommandInbox, Health, Uplink, UplinkSender, Value};

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    if std::env::args().any(|a| a == "simulate") {
        simulate();
        return;
    }
    let devices: usize = env("DEVICES", 1000);
    let seconds: u64 = env("SECONDS", 30);
    let points: usize = env("POINTS", 100);
    let shared: bool = env("PROFILE", 0u8) == 1;
    let mut sim = Command::new(std::env::current_exe().expect("current exe"))
        .arg("simulate")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the simulator");
    let mut line = String::new();
    BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("simulator port");
    let port: u16 = line.trim().parse().expect("port number");

    let mut map = String::new();
    for r in 0..points {
        let table = if shared {
            "point"
        } else {
            "modbus.device.point"
        };
        map.push_str(&format!("[[{table}]]\nname = \"r{r}\"\naddress = {r}\n"));
    }
    let mut toml = String::new();
    for d in 0..devices {
        toml.push_str(&format!(
            "[[modbus.connection]]\nname = \"c{d}\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"1s\"\n\
             [[modbus.device]]\nname = \"d{d}\"\nconnection = \"c{d}\"\nunit = 1\npoll = \"1s\"\n"
        ));
        if shared {
            toml.push_str("profile = \"meter\"\n");
        } else {
            toml.push_str(&map);
        }
    }
    let single = std::env::var("RUNTIME").is_ok_and(|r| r == "current");
    let runtime = if single {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .expect("runtime");
    runtime.block_on(async move {
        let (before, _) = memory_kb();
        let profiles: &[(&str, &str)] = if shared { &[("meter", &map)] } else { &[] };
        let built = match ferrogate_sdk::testing::build(&ModbusKind, &toml, profiles) {
            Ok(b) => b,
            Err(issues) => panic!("{issues:?}"),
        };
        drop(toml);
        drop(map);
        let (after, peak) = memory_kb();
        // Parsing 100k points leaves freed heap that glibc keeps; give it back
        // so the figures below are the running adapters' own.
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
        let (trimmed, _) = memory_kb();
        println!(
            "rss before config {:.1} MB, after build {:.1} MB (peak {:.1} MB), after malloc_trim {:.1} MB",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            peak as f64 / 1024.0,
            trimmed as f64 / 1024.0
        );
        let (tx, mut rx) = mpsc::channel(4096);
        let shutdown = CancellationToken::new();
        let mut inboxes = Vec::new();
        for b in built {
            let (cmd_tx, cmd_rx) = mpsc::channel(8);
            inboxes.push(cmd_tx);
            let ctx = AdapterContext {
                name: b.name.clone(),
                uplink: UplinkSender::new(Arc::<str>::from(b.name.as_str()), tx.clone()),
                commands: CommandInbox::new(cmd_rx),
                shutdown: shutdown.clone(),
                health: Health::default(),
                refusals: Default::default(),
                owners: Default::default(),
            };
            let mut adapter = b.adapter;
            tokio::spawn(async move { adapter.run(ctx).await });
        }
        drop(tx);
        println!(
            "{devices} devices × {points} registers ({}, {} runtime), poll 1s; warming up 5 s, measuring {seconds} s",
            if shared { "one shared profile" } else { "inline point maps" },
            if single { "current-thread" } else { "multi-thread" }
        );
        let warmup_end = Instant::now() + Duration::from_secs(5);
        let end = warmup_end + Duration::from_secs(seconds);
        let mut measuring = false;
        let mut cpu_start = 0.0;
        let mut wall_start = Instant::now();
        let mut values = 0u64;
        let mut errors = 0u64;
        let mut latencies: Vec<u64> = Vec::new();
        loop {
            let now = Instant::now();
            if !measuring && now >= warmup_end {
                measuring = true;
                cpu_start = cpu_seconds();
                wall_start = now;
            }
            if now >= end {
                break;
            }
            let Ok(Some(envelope)) = tokio::time::timeout(end - now, rx.recv()).await else {
                continue;
            };
            let Uplink::Telemetry(t) = envelope.uplink else {
                continue;
            };
            if !measuring {
                continue;
            }
            let produced_ns = monotonic_ns() - envelope.produced.elapsed().as_nanos() as u64;
            let mut sent_ns = 0u64;
            for r in t.readings.iter().take(4) {
                if let Ok(Value::UInt(v)) = r.value {
                    sent_ns = (sent_ns << 16) | v;
                }
            }
            latencies.push(produced_ns.saturating_sub(sent_ns));
            for r in &t.readings {
                if r.value.is_ok() {
                    values += 1;
                } else {
                    errors += 1;
                }
            }
        }
        let wall = wall_start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_start;
        let (rss, hwm) = memory_kb();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p) as usize)
                .map_or(0.0, |ns| *ns as f64 / 1e6)
        };
        println!(
            "values/s          {:.0} ({errors} errors)",
            values as f64 / wall
        );
        println!("telemetry msgs/s  {:.0}", latencies.len() as f64 / wall);
        println!("cpu               {:.1}% of one core", cpu / wall * 100.0);
        println!(
            "rss               {:.1} MB (peak {:.1} MB)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        println!(
            "response → uplink p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        shutdown.cancel();
        drop(inboxes);
    });
    let _ = sim.kill();
    let _ = sim.wait();
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let mut stat = String::new();
    std::fs::File::open("/proc/self/stat")
        .and_then(|mut f| f.read_to_string(&mut stat))
        .expect("/proc/self/stat");
    // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// (VmRSS, VmHWM) in kB.
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The device simulator: answers FC03 on every connection with 100
/// registers, the first four holding the send time.
fn simulate() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("{}", listener.local_addr().expect("addr").port());
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut request = [0u8; 12];
                let mut response = vec![0u8; 9 + 200];
                let mut counter = 0u16;
                loop {
                    if socket.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    let count = u16::from_be_bytes([request[10], request[11]]).min(125) as usize;
                    response.resize(9 + count * 2, 0);
                    response[0..2].copy_from_slice(&request[0..2]);
                    response[2..4].copy_from_slice(&[0, 0]);
                    response[4..6].copy_from_slice(&((3 + count * 2) as u16).to_be_bytes());
                    response[6] = request[6];
                    response[7] = 3;
                    response[8] = (count * 2) as u8;
                    counter = counter.wrapping_add(1);
                    for r in 4..count {
                        let v = counter.wrapping_add(r as u16);
                        response[9 + r * 2..11 + r * 2].copy_from_slice(&v.to_be_bytes());
                    }
                    let now = monotonic_ns();
                    response[9..17].copy_from_slice(&now.to_be_bytes());
                    if socket.write_all(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}
