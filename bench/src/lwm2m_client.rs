//! LwM2M clients at scale for one helper process: each client is a UDP
//! socket that registers (`POST /rd?ep=..`), answers the server's observe
//! of `/3303/0/5700` with a first value, then sends NON notifications (as
//! Eclipse Wakaama does) at the process's share of the total rate.
//!
//! Clients are spread over many loopback addresses (`CLIENTS_PER_IP` per
//! address) because the server rate-limits per source IP.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coap_lite::{
    CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, Semaphore};

use crate::BenchError;

pub const CLIENTS_PER_IP: u32 = 400;

/// Observations stopped coming: the server will not observe the rest.
pub const SETTLED: Duration = Duration::from_secs(45);

/// The loopback address of client `i`: 127.1.x.y, `CLIENTS_PER_IP` each.
pub fn client_ip(i: u32) -> Ipv4Addr {
    let g = i / CLIENTS_PER_IP;
    Ipv4Addr::new(127, 1, (g / 250) as u8, (g % 250 + 1) as u8)
}

fn register(ep: &str, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    p.set_content_format(ContentFormat::ApplicationLinkFormat);
    for q in [format!("ep={ep}"), "lt=86400".into(), "lwm2m=1.1".into()] {
        p.add_option(CoapOption::UriQuery, q.into_bytes());
    }
    p.payload = b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>,</3303/0>".to_vec();
    p.to_bytes().unwrap_or_default()
}

fn content(kind: MessageType, mid: u16, token: &[u8], seq: u32, value: u32) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    p.set_observe_value(seq);
    p.set_content_format(ContentFormat::TextPlain);
    p.payload = format!("{}.5", 20 + value % 10).into_bytes();
    p.to_bytes().unwrap_or_default()
}

/// A registered, observed client: its socket and observation token.
struct Observed {
    index: u32,
    sock: Arc<UdpSocket>,
    token: Vec<u8>,
}

#[derive(Default)]
struct Progress {
    registered: AtomicU64,
    observed: AtomicU64,
    notified: AtomicU64,
}

/// One client: registers (retrying every 5 s), then answers requests.
async fn client(
    i: u32,
    server: SocketAddr,
    storm: Arc<Semaphore>,
    progress: Arc<Progress>,
    observed: Arc<Mutex<Vec<Observed>>>,
) {
    let Ok(sock) = UdpSocket::bind((client_ip(i), 0)).await else {
        return;
    };
    let sock = Arc::new(sock);
    let ep = format!("bench-{i}");
    let mut buf = [0u8; 1500];
    let permit = storm.acquire().await;
    let mut mid = (i as u16).wrapping_mul(7);
    'register: loop {
        let _ = sock.send_to(&register(&ep, mid), server).await;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => {
                    let Ok(p) = Packet::from_bytes(&buf[..n]) else {
                        continue;
                    };
                    if p.header.message_id == mid
                        && p.header.code == MessageClass::Response(ResponseType::Created)
                    {
                        progress.registered.fetch_add(1, Ordering::Relaxed);
                        break 'register;
                    }
                }
                _ => {
                    mid = mid.wrapping_add(1);
                    continue 'register;
                }
            }
        }
    }
    drop(permit);
    // Answer the server's requests: the observe gets the first value.
    let mut observed_once = false;
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let Ok(p) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        if p.header.code != MessageClass::Request(RequestType::Get) {
            continue;
        }
        let token = p.get_token().to_vec();
        let reply = content(
            MessageType::Acknowledgement,
            p.header.message_id,
            &token,
            1,
            i,
        );
        let _ = sock.send_to(&reply, from).await;
        // A retransmitted observe is answered again but counted once.
        if !observed_once
            && p.get_observe_value()
                .is_some_and(|o| o.is_ok_and(|v| v == 0))
        {
            observed_once = true;
            progress.observed.fetch_add(1, Ordering::Relaxed);
            observed.lock().await.push(Observed {
                index: i,
                sock: sock.clone(),
                token,
            });
        }
    }
}

/// Runs `count` clients from index `first`; registration `window` at once
/// per process; once they are observed, `rate` notifications/s in total.
/// Prints `ready`, then a progress line every second.
pub async fn run(
    server: SocketAddr,
    first: u32,
    count: u32,
    window: usize,
    rate: f64,
) -> Result<(), BenchError> {
    let storm = Arc::new(Semaphore::new(window));
    let progress = Arc::new(Progress::default());
    let observed = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    println!("ready");
    for i in first..first + count {
        tokio::spawn(client(
            i,
            server,
            storm.clone(),
            progress.clone(),
            observed.clone(),
        ));
    }
    let reporter = progress.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!(
                "progress registered={} observed={} notified={}",
                reporter.registered.load(Ordering::Relaxed),
                reporter.observed.load(Ordering::Relaxed),
                reporter.notified.load(Ordering::Relaxed)
            );
        }
    });
    // Notify only once every client is observed (or no more observations
    // came for `SETTLED`): the storm is measured alone.
    let mut last = (0, tokio::time::Instant::now());
    loop {
        let seen = progress.observed.load(Ordering::Relaxed);
        if seen >= u64::from(count) || (seen > 0 && seen == last.0 && last.1.elapsed() > SETTLED) {
            break;
        }
        if seen != last.0 {
            last = (seen, tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut clients = std::mem::take(&mut *observed.lock().await);
    // Consecutive notifications come from different addresses, as from a
    // real fleet: the server's per-address rate limit sees an even load.
    clients.sort_by_key(|c| (c.index % CLIENTS_PER_IP, c.index / CLIENTS_PER_IP));
    let tick = Duration::from_millis(10);
    let per_tick = rate / 100.0;
    let mut due = 0.0;
    let mut k = 0usize;
    let mut seq = 2u32;
    let mut mid = 0x8000u16;
    let mut ticker = tokio::time::interval(tick);
    loop {
        ticker.tick().await;
        due += per_tick;
        while due >= 1.0 {
            due -= 1.0;
            let c = &clients[k];
            mid = mid.wrapping_add(1);
            let _ = c
                .sock
                .send_to(
                    &content(MessageType::NonConfirmable, mid, &c.token, seq, k as u32),
                    server,
                )
                .await;
            progress.notified.fetch_add(1, Ordering::Relaxed);
            k += 1;
            if k == clients.len() {
                k = 0;
                seq += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_share_an_address_only_in_groups() {
        assert_eq!(client_ip(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(client_ip(CLIENTS_PER_IP - 1), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(client_ip(CLIENTS_PER_IP), Ipv4Addr::new(127, 1, 0, 2));
        assert_eq!(client_ip(99_999), Ipv4Addr::new(127, 1, 0, 250));
    }

    #[test]
    fn register_carries_the_endpoint_and_lifetime() {
        let p = Packet::from_bytes(&register("bench-3", 9)).expect("decodes");
        let q: Vec<_> = p
            .get_option(CoapOption::UriQuery)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        assert!(q.contains(&b"ep=bench-3".to_vec()));
        assert!(q.contains(&b"lt=86400".to_vec()));
    }
}
