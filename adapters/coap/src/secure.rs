//! The DTLS transport of the CoAP driver: one UDP socket and the
//! [`SessionTable`] of its peers behind the driver's [`Transport`] trait.
//! It only moves bytes: datagrams in go to the table, what the table
//! decrypted comes out of `recv_from`, what the engine sends goes into the
//! peer's session. Who a peer proved to be is asked with
//! [`DtlsSocket::credential`].

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ferrogate_dtls::{
    CredentialStore, Credentials, PskCredential, PskKey, SessionEvent, SessionLimits, SessionTable,
};
use tokio::net::UdpSocket;

use crate::driver::Transport;

/// The largest record accepted (a CoAP message of 1152 bytes plus the
/// record overhead fits; handshake flights are fragmented below it).
const MAX_RECORD: usize = 2048;

struct State {
    sessions: SessionTable,
    plaintext: VecDeque<(SocketAddr, Vec<u8>)>,
}

/// A UDP socket speaking DTLS 1.2 PSK to each peer.
pub struct DtlsSocket {
    socket: UdpSocket,
    state: Mutex<State>,
}

impl std::fmt::Debug for DtlsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsSocket")
            .field("local", &self.socket.local_addr().ok())
            .finish()
    }
}

impl DtlsSocket {
    /// The server role: peers handshake with a key of `store`.
    pub fn server(
        socket: UdpSocket,
        limits: SessionLimits,
        store: Arc<dyn CredentialStore>,
    ) -> Arc<DtlsSocket> {
        Arc::new(DtlsSocket {
            socket,
            state: Mutex::new(State {
                sessions: SessionTable::new(limits, store),
                plaintext: VecDeque::new(),
            }),
        })
    }

    /// The client role: one session with `server`, as `identity` with
    /// `key` (`coaps://` URIs). The handshake starts at once; requests
    /// sent before it completes wait for it.
    pub fn client(
        socket: UdpSocket,
        server: SocketAddr,
        identity: &[u8],
        key: PskKey,
    ) -> Arc<DtlsSocket> {
        let mut sessions =
            SessionTable::new(SessionLimits::default(), Arc::new(Credentials::default()));
        sessions.connect(Instant::now(), server, identity, key);
        let dtls = Arc::new(DtlsSocket {
            socket,
            state: Mutex::new(State {
                sessions,
                plaintext: VecDeque::new(),
            }),
        });
        {
            let mut state = dtls.state();
            dtls.pump(&mut state);
        }
        dtls
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The credential `peer` proved in its current session.
    pub fn credential(&self, peer: SocketAddr) -> Option<Arc<PskCredential>> {
        self.state().sessions.credential(peer).cloned()
    }

    /// Failed handshakes and dropped sessions by reason since the last call.
    pub fn take_counts(&self) -> BTreeMap<&'static str, u64> {
        self.state().sessions.take_counts()
    }

    /// Move the table's output: datagrams onto the socket (without
    /// waiting: a full socket buffer loses the datagram, as UDP may, and
    /// DTLS retransmits its flights), plaintext into the queue.
    fn pump(&self, state: &mut State) {
        while let Some(d) = state.sessions.poll_transmit() {
            if let Err(e) = self.socket.try_send_to(&d.bytes, d.peer) {
                tracing::debug!(peer = %d.peer, error = %e, "DTLS send failed");
            }
        }
        while let Some(event) = state.sessions.poll_event() {
            match event {
                SessionEvent::Plaintext { peer, data, .. } => {
                    state.plaintext.push_back((peer, data))
                }
                SessionEvent::Established { peer, credential } => {
                    tracing::debug!(peer = %peer, endpoint = %credential.endpoint, "DTLS session established");
                }
                SessionEvent::Closed { peer, reason } => {
                    tracing::debug!(peer = %peer, reason, "DTLS session closed");
                }
            }
        }
    }

    async fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut record = [0u8; MAX_RECORD];
        loop {
            let wake = {
                let mut state = self.state();
                if let Some((peer, data)) = state.plaintext.pop_front() {
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    return Ok((n, peer));
                }
                state.sessions.poll_timeout()
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            // both arms finish their work without awaiting again: dropping
            // this future between them loses nothing (cancel safety)
            tokio::select! {
                received = self.socket.recv_from(&mut record) => {
                    let (n, peer) = received?;
                    let mut state = self.state();
                    state.sessions.handle(Instant::now(), peer, record.get(..n).unwrap_or(&[]));
                    self.pump(&mut state);
                }
                () = sleep => {
                    let mut state = self.state();
                    state.sessions.handle_timeout(Instant::now());
                    self.pump(&mut state);
                }
            }
        }
    }

    fn send(&self, datagram: &[u8], peer: SocketAddr) -> io::Result<usize> {
        let mut state = self.state();
        let sent = state.sessions.send(Instant::now(), peer, datagram);
        self.pump(&mut state);
        sent.map(|()| datagram.len())
            .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))
    }
}

impl Transport for Arc<DtlsSocket> {
    fn send_to(
        &self,
        datagram: &[u8],
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        std::future::ready(self.send(datagram, peer))
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.receive(buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}
