//! The `GET /metrics` HTTP endpoint: reads a request head (however it is
//! split across TCP segments), answers from a body rendered at most once
//! per [`Limits::cache_for`] on a blocking thread and shared by every
//! scrape, and bounds what a client can cost: a connection cap, read and
//! write timeouts, and a backoff when `accept` fails (EMFILE).
//!
//! Hand-written rather than hyper: one path, one method, `Connection:
//! close`; the bounds below are the whole job, and the hyper in the tree
//! (0.14, via the demo broker) is optional and two majors old.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogate_sdk::backoff::Backoff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Sources, render};

/// Longest request head read before answering 431.
const MAX_HEAD: usize = 8 * 1024;

/// What bounds the endpoint. [`Limits::default`] is what the daemon uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// How long a client may take to send its request line.
    pub read_timeout: Duration,
    /// How long a client may take to read the whole answer.
    pub write_timeout: Duration,
    /// How long one rendered body answers every scrape.
    pub cache_for: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            cache_for: Duration::from_secs(1),
        }
    }
}

/// What a request head asks for, as far as it has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// No complete request line yet.
    Incomplete,
    Metrics,
    /// Another method or path.
    Other,
    /// The request line is longer than [`MAX_HEAD`].
    TooLarge,
}

/// Decide on the bytes of a request received so far (RFC 9112 §3: the
/// request line ends at the first LF).
fn parse_head(buf: &[u8]) -> Head {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_HEAD {
            Head::TooLarge
        } else {
            Head::Incomplete
        };
    };
    let line = String::from_utf8_lossy(&buf[..end]);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split('?').next().unwrap_or(t));
    if method == Some("GET") && path == Some("/metrics") {
        Head::Metrics
    } else {
        Head::Other
    }
}

/// The last rendered body and when it was rendered. The lock is held while
/// rendering, so concurrent scrapes wait for one render and share it.
#[derive(Default)]
struct BodyCache(Mutex<Option<(Instant, Arc<String>)>>);

impl BodyCache {
    async fn body(&self, sources: &Sources, fresh_for: Duration) -> Arc<String> {
        let mut cached = self.0.lock().await;
        if let Some((at, body)) = &*cached {
            if at.elapsed() < fresh_for {
                return body.clone();
            }
        }
        let sources = sources.clone();
        // Rendering walks every device: keep it off the runtime's threads.
        let body = Arc::new(
            tokio::task::spawn_blocking(move || render(&sources))
                .await
                .unwrap_or_default(),
        );
        *cached = Some((Instant::now(), body.clone()));
        body
    }
}

/// Waits after failed `accept`s: doubling from 10 ms to 1 s, reset by a
/// success. Out of file descriptors, retrying at once only spins.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    fn failed(&mut self) -> Duration {
        const BOUNDS: Backoff = Backoff {
            min: Duration::from_millis(10),
            max: Duration::from_secs(1),
        };
        self.failures = self.failures.saturating_add(1);
        BOUNDS.delay(self.failures)
    }

    fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// Serve `GET /metrics` on `bind` until `stop`. Anything else is 404.
pub async fn serve(
    bind: &str,
    sources: Sources,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_with(bind, sources, Limits::default(), stop).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    bind: &str,
    sources: Sources,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(bind).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics endpoint listening");
    let cache = Arc::new(BodyCache::default());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    Ok(tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    backoff.succeeded();
                    stream
                }
                Err(e) => {
                    let wait = backoff.failed();
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "metrics endpoint cannot accept");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            // Over the cap the connection is closed unanswered: a scraper
            // retries, and a flood costs one accept each.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let (sources, cache, limits) = (sources.clone(), cache.clone(), limits.clone());
            tokio::spawn(async move {
                answer(stream, &sources, &cache, &limits).await;
                drop(slot);
            });
        }
    }))
}

async fn answer(mut stream: TcpStream, sources: &Sources, cache: &BodyCache, limits: &Limits) {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(limits.read_timeout, async {
        let mut chunk = [0u8; 1024];
        loop {
            match parse_head(&buf) {
                Head::Incomplete => {}
                done => return Some(done),
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let Ok(Some(head)) = read else {
        return;
    };
    let (status, kind, body) = match head {
        Head::Metrics => (
            "200 OK",
            "text/plain; version=0.0.4",
            cache.body(sources, limits.cache_for).await,
        ),
        Head::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain",
            Arc::new("request line too long\n".to_string()),
        ),
        Head::Other | Head::Incomplete => (
            "404 Not Found",
            "text/plain",
            Arc::new("try /metrics\n".to_string()),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(limits.write_timeout, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_may_come_in_pieces() {
        assert_eq!(parse_head(b""), Head::Incomplete);
        assert_eq!(parse_head(b"GET /met"), Head::Incomplete);
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r"), Head::Incomplete);
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\n"), Head::Metrics);
        assert_eq!(parse_head(b"GET /metrics?x=1 HTTP/1.1\r\n"), Head::Metrics);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n"), Head::Other);
        assert_eq!(parse_head(b"POST /metrics HTTP/1.1\r\n"), Head::Other);
        assert_eq!(parse_head(b"\xff\xfe\n"), Head::Other);
        assert_eq!(parse_head(&[b'a'; MAX_HEAD]), Head::TooLarge);
    }

    proptest::proptest! {
        /// Total over any bytes; incomplete only while no line ended and
        /// the head is under the cap.
        #[test]
        fn any_request_bytes_are_decided(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..MAX_HEAD + 64)) {
            let head = parse_head(&bytes);
            let waiting = !bytes.contains(&b'\n') && bytes.len() < MAX_HEAD;
            proptest::prop_assert_eq!(head == Head::Incomplete, waiting);
        }
    }

    #[test]
    fn accept_failures_back_off_to_a_second() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(10));
    }
}
