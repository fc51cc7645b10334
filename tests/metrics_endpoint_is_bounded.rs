//! The `/metrics` endpoint under hostile clients: a request line split
//! across TCP segments is still answered; clients that never read hold at
//! most `max_connections` slots and are cut after the write timeout, and
//! connections over the cap are closed unanswered, so a scraper that
//! behaves gets its answer once the flood's slots time out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogate::directory::Directory;
use ferrogate::metrics::{self, Counters, Histogram, Limits, Sources};
use ferrogate::north::NorthStatus;
use ferrogate::supervisor::StateHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// Enough devices for a body of several megabytes: more than a client's
/// and the server's socket buffers together hold.
const DEVICES: usize = 50_000;

fn sources() -> Sources {
    let directory = Directory::default();
    directory.declare("bench", (0..DEVICES).map(|i| format!("device-{i:06}")));
    Sources {
        started: Instant::now(),
        counters: Arc::new(Counters::default()),
        uplink_latency: Arc::new(Histogram::default()),
        directory,
        adapters: StateHandle::default(),
        north: Arc::new(|| NorthStatus {
            broker: "mqtt://127.0.0.1:1".into(),
            live: Default::default(),
            outbox: Default::default(),
        }),
        stall_after: Duration::from_secs(30),
        sparkplug: None,
    }
}

async fn start(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
    // Find a free port, then serve on it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let stop = CancellationToken::new();
    metrics::serve_with(&addr.to_string(), sources(), limits, stop.clone())
        .await
        .expect("metrics endpoint starts");
    (addr, stop)
}

/// Read until the server closes; the status line and how many body bytes.
async fn read_answer(stream: &mut TcpStream) -> (String, usize) {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all);
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text
        .find("\r\n\r\n")
        .map(|i| all.len() - i - 4)
        .unwrap_or(0);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_line_in_two_segments_is_answered() {
    let (addr, stop) = start(Limits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"GET /met").await.unwrap();
    s.flush().await.unwrap();
    // Not synchronisation: the pause makes the kernel send two segments.
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"rics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_answer(&mut s).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body > DEVICES * 100, "body of {body} bytes");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_capped_and_cut() {
    let limits = Limits {
        max_connections: 4,
        write_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let (addr, stop) = start(limits.clone()).await;
    // Clients with a tiny receive window that ask and never read.
    let mut stuck = Vec::new();
    for _ in 0..limits.max_connections {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        stuck.push(s);
    }
    // Wait until each stuck client has the start of its answer: the slots
    // are taken.
    for s in &mut stuck {
        let mut first = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut first))
            .await
            .expect("the answer starts")
            .unwrap();
        assert_eq!(&first, b"HTTP/1.1 200 OK\r");
    }
    // Over the cap: closed unanswered, and quickly.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a connection over the cap must be closed at once: {closed:?}, {} bytes",
        buf.len()
    );
    // A well-behaved scraper gets the whole answer once the stuck clients'
    // slots are released by the write timeout (retrying until then).
    let deadline = Instant::now() + Duration::from_secs(30);
    let full = loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let (status, body) = read_answer(&mut s).await;
        if status == "HTTP/1.1 200 OK" {
            break body;
        }
        assert!(Instant::now() < deadline, "no full answer after the flood");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The stuck clients were cut: what they can still read ends before
    // the body does.
    let mut total = 0;
    for s in &mut stuck {
        let (_, got) = read_answer(s).await;
        total += got;
    }
    assert!(
        total < full * limits.max_connections,
        "stuck clients were not cut: read {total} of {} bytes",
        full * limits.max_connections
    );
    stop.cancel();
}
