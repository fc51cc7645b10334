//! Out of file descriptors (EMFILE), the metrics endpoint backs off
//! instead of retrying `accept` in a hot loop (which once took 98 % CPU and
//! starved the MQTT session), and answers again once descriptors are free.
//!
//! Its own test binary: it lowers this process's RLIMIT_NOFILE.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferrogate::directory::Directory;
use ferrogate::metrics::{self, Counters, Histogram, Limits, Sources};
use ferrogate::north::NorthStatus;
use ferrogate::supervisor::StateHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

/// Counts the endpoint's "cannot accept" warnings.
struct AcceptFailures(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AcceptFailures {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}").contains("cannot accept") {
                    self.0 = true;
                }
            }
        }
        let mut m = Message(false);
        event.record(&mut m);
        if m.0 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    (r.rlim_cur, r.rlim_max)
}

fn set_nofile(soft: u64, hard: u64) {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_and_the_endpoint_recovers() {
    let failures = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(AcceptFailures(failures.clone()));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let sources = Sources {
        started: Instant::now(),
        counters: Arc::new(Counters::default()),
        uplink_latency: Arc::new(Histogram::default()),
        directory: Directory::default(),
        adapters: StateHandle::default(),
        north: Arc::new(|| NorthStatus {
            broker: "mqtt://127.0.0.1:1".into(),
            live: Default::default(),
            outbox: Default::default(),
        }),
        stall_after: Duration::from_secs(30),
        sparkplug: None,
    };
    let limits = Limits {
        max_connections: 1000,
        read_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let stop = CancellationToken::new();
    metrics::serve_with(&addr.to_string(), sources, limits, stop.clone())
        .await
        .unwrap();

    // Leave room for a few connections only, then take every descriptor:
    // clients that connect and stay silent hold one each, on both sides.
    let (soft, hard) = nofile();
    set_nofile(open_fds() + 16, hard);
    let mut clients = Vec::new();
    while let Ok(s) = TcpStream::connect(addr).await {
        clients.push(s);
        assert!(clients.len() < 100, "the descriptor limit did not bite");
    }
    // One more connection waits in the backlog, which the server cannot
    // accept: its accept fails with EMFILE for as long as this lasts.
    clients.pop();
    let waiting = TcpStream::connect(addr).await;
    assert!(waiting.is_ok(), "a descriptor was freed for it");
    let before = failures.load(Ordering::Relaxed);
    // Not synchronisation: the window in which failures are counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed = failures.load(Ordering::Relaxed) - before;
    // Backing off 10 ms, 20 ms, ... up to 1 s allows about 9 in 2 s; a hot
    // loop makes thousands.
    assert!(
        (1..=20).contains(&failed),
        "{failed} accept failures in 2 s"
    );

    // Descriptors free again: the endpoint answers.
    drop(clients);
    drop(waiting);
    set_nofile(soft, hard);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "the endpoint did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
}
