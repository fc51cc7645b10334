//! Chaos: while telemetry and commands flow, the gateway is killed with
//! SIGKILL or stopped with SIGTERM, the broker restarted, and the link
//! between them (a TCP proxy) cut or black-holed for a few seconds, at
//! random.
//! Afterwards no telemetry is lost or reordered (the `seq` is complete) and
//! every command is answered, with no client retry. Duplicates are counted,
//! not failures. `CHAOS_SECS` bounds it (default 15), `CHAOS_SEED` replays a
//! run (the seed is printed). Real mosquitto, real daemon binary.

mod common;
mod daemon;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Mosquitto, Proxy, Subscriber, assert_complete_in_order, seqs_by_device};
use daemon::{ConfigDir, Daemon, simulated_device};

const ROOT: &str = "ferrogate/gw-chaos";
const WAIT: Duration = Duration::from_secs(60);

/// xorshift64: a reproducible schedule from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn answered(sub: &Subscriber) -> BTreeSet<String> {
    sub.on(&format!("{ROOT}/devices/boiler/cmd/result"))
        .iter()
        .filter_map(|m| m.json()["id"].as_str().map(str::to_string))
        .collect()
}

fn body(i: u64) -> Vec<u8> {
    format!(
        r#"{{"id":"c{i}","op":"write","point":"setpoint","value":{},"timeout_ms":120000}}"#,
        i % 100
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_broker_restarts_lose_nothing_and_leave_nothing_unanswered() {
    let secs: u64 = std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("chaos: CHAOS_SECS={secs} CHAOS_SEED={seed}");
    let mut rng = Rng(seed);

    let mut broker = Mosquitto::start();
    // The gateway reaches the broker through the proxy; the test client
    // does not.
    let link = Proxy::start(broker.port).await;
    let config = ConfigDir::new(
        "gw-chaos",
        link.port,
        "5",
        &simulated_device("boiler", "100ms"),
    );
    let sub = Subscriber::start(broker.port, &format!("{ROOT}/#")).await;
    let mut gw = Some(Daemon::start(config.path()));
    sub.wait_for(&format!("{ROOT}/devices/boiler/meta"), WAIT, |_| true)
        .await;

    let cmd_topic = format!("{ROOT}/devices/boiler/cmd");
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    let mut faults = Vec::new();
    let mut next_fault = Instant::now() + Duration::from_millis(500 + rng.below(1500));
    let mut thaw_at: Option<Instant> = None;
    while Instant::now() < end {
        sub.publish(&cmd_topic, &body(sent), None).await;
        sent += 1;
        if thaw_at.is_some_and(|t| Instant::now() >= t) {
            // A hang ends either in a reset or with the path back (the
            // held bytes then arrive late, in order).
            if rng.below(2) == 0 {
                link.cut();
            }
            link.freeze(false);
            thaw_at = None;
        }
        if thaw_at.is_none() && Instant::now() >= next_fault {
            let fault = rng.below(5);
            match fault {
                0 => {
                    drop(gw.take()); // SIGKILL
                    gw = Some(Daemon::start(config.path()));
                    faults.push("kill -9");
                }
                1 => {
                    if let Some(mut g) = gw.take() {
                        g.signal("TERM");
                        assert!(
                            g.wait_exit(Duration::from_secs(6)).is_some(),
                            "no clean exit"
                        );
                    }
                    gw = Some(Daemon::start(config.path()));
                    faults.push("SIGTERM");
                }
                2 => {
                    broker.restart();
                    faults.push("broker restart");
                }
                3 => {
                    link.cut();
                    faults.push("link cut");
                }
                _ => {
                    // Black-holed: no byte moves either way, the sockets
                    // stay open, until the thaw.
                    link.freeze(true);
                    thaw_at = Some(Instant::now() + Duration::from_millis(1000 + rng.below(5000)));
                    faults.push("link hang");
                }
            }
            next_fault = Instant::now() + Duration::from_millis(500 + rng.below(1500));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    link.freeze(false);
    eprintln!("chaos: {sent} commands, faults {faults:?}");

    // Settle: every command answered, with no client retry.
    let all: BTreeSet<String> = (0..sent).map(|i| format!("c{i}")).collect();
    let settle = Instant::now() + WAIT;
    common::wait_until("answers settle", WAIT + Duration::from_secs(5), || {
        all.is_subset(&answered(&sub)) || Instant::now() > settle
    })
    .await;
    let missing: Vec<u64> = (0..sent)
        .filter(|i| !answered(&sub).contains(&format!("c{i}")))
        .collect();
    let answers = sub.on(&format!("{ROOT}/devices/boiler/cmd/result")).len();
    eprintln!(
        "chaos: {sent} commands, {answers} answers ({} duplicates), {} unanswered",
        (answers as u64).saturating_sub(sent - missing.len() as u64),
        missing.len()
    );
    assert!(missing.is_empty(), "unanswered: {missing:?}");

    // Telemetry: complete and in order up to the last seq delivered.
    let seqs = seqs_by_device(&sub.all()).remove("boiler").unwrap();
    let last = *seqs.iter().max().unwrap();
    let dups = assert_complete_in_order("boiler", &seqs, last);
    eprintln!("chaos: telemetry 1..={last} complete, {dups} duplicates");
}
