//! CoAP devices pushing readings: each UDP socket is one device that POSTs
//! a text value to `/{device}/v` as confirmable requests, keeping a window
//! of requests outstanding and sending the next one as each answer comes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use tokio::net::UdpSocket;

/// Answers counted over all devices.
#[derive(Default)]
pub struct Answers {
    pub changed: AtomicU64,
    pub other: AtomicU64,
    pub lost_windows: AtomicU64,
    /// The last code other than 2.04, e.g. "5.03".
    pub last_other: std::sync::Mutex<String>,
}

pub fn post(device: &str, mid: u16, value: u64) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    p.add_option(CoapOption::UriPath, device.as_bytes().to_vec());
    p.add_option(CoapOption::UriPath, b"v".to_vec());
    p.payload = format!("{}.5", value % 1000).into_bytes();
    p.to_bytes().unwrap_or_default()
}

/// One device: POSTs forever with `window` requests in flight.
pub async fn device(server: SocketAddr, name: String, window: u16, answers: Arc<Answers>) {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else {
        return;
    };
    if sock.connect(server).await.is_err() {
        return;
    }
    let mut mid: u16 = 0;
    let mut buf = [0u8; 1500];
    loop {
        for _ in 0..window {
            mid = mid.wrapping_add(1);
            let _ = sock.send(&post(&name, mid, u64::from(mid))).await;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let Ok(p) = Packet::from_bytes(&buf[..n]) else {
                        continue;
                    };
                    if p.header.get_type() != MessageType::Acknowledgement {
                        continue;
                    }
                    if p.header.code == MessageClass::Response(ResponseType::Changed) {
                        answers.changed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        answers.other.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut last) = answers.last_other.lock() {
                            *last = p.header.get_code();
                        }
                    }
                    mid = mid.wrapping_add(1);
                    let _ = sock.send(&post(&name, mid, u64::from(mid))).await;
                }
                // Answers lost (or refused): start a fresh window.
                _ => {
                    answers.lost_windows.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_is_a_confirmable_request_to_the_device_path() {
        let p = Packet::from_bytes(&post("bench-1", 7, 21)).expect("decodes");
        assert_eq!(p.header.get_type(), MessageType::Confirmable);
        assert_eq!(p.header.message_id, 7);
        let path: Vec<_> = p
            .get_option(CoapOption::UriPath)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        assert_eq!(path, vec![b"bench-1".to_vec(), b"v".to_vec()]);
        assert_eq!(p.payload, b"21.5");
    }
}
