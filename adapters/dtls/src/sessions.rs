//! The per-peer DTLS session table, sans-IO: fed datagrams from the
//! network, plaintext to send and instants; it hands out datagrams to send,
//! [`SessionEvent`]s (plaintext received, with the credential its peer
//! proved) and its next deadline. One [`dimpl::Dtls`] per peer address.
//!
//! Bounds: at most `max_handshakes` handshakes in progress and
//! `max_sessions` established sessions, kept apart so that a flood of
//! ClientHellos only ever evicts other handshakes, never a session; past a
//! bound the oldest handshake or the longest-idle session goes, counted.
//! A handshake is only started by a ClientHello; dimpl answers it with a
//! HelloVerifyRequest cookie (RFC 6347 §4.2.1) before any key exchange.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dimpl::{Config, Dtls, Output, PskResolver};

use crate::credentials::{CredentialStore, PskCredential, PskKey};

/// The bounds of a [`SessionTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimits {
    /// Handshakes in progress at once; past it the oldest is dropped.
    pub max_handshakes: usize,
    /// Established sessions; past it the longest-idle one is dropped.
    pub max_sessions: usize,
    /// A session not heard from for this long is dropped.
    pub idle_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_handshakes: 1024,
            max_sessions: 100_000,
            idle_timeout: Duration::from_secs(24 * 3600),
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub peer: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What the table tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A handshake completed: `peer` proved `credential`.
    Established {
        peer: SocketAddr,
        credential: Arc<PskCredential>,
    },
    /// Decrypted application data (a CoAP message) from an established
    /// session.
    Plaintext {
        peer: SocketAddr,
        credential: Arc<PskCredential>,
        data: Vec<u8>,
    },
    /// The session or handshake with `peer` ended.
    Closed {
        peer: SocketAddr,
        reason: &'static str,
    },
}

/// Why [`SessionTable::send`] did not send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no DTLS session with {0}")]
    NoSession(SocketAddr),
    #[error("the DTLS session with {0} failed")]
    Failed(SocketAddr),
}

/// Hands dimpl the key for an identity and remembers which credential it
/// was, so the session knows whom it talks to. One resolver serves the
/// table; the table takes what was resolved after each call into dimpl.
struct Resolver {
    store: Arc<dyn CredentialStore>,
    resolved: Mutex<Option<Arc<PskCredential>>>,
}

impl PskResolver for Resolver {
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let credential = self.store.psk(identity)?;
        let key = credential.key.bytes().to_vec();
        *self.resolved.lock().unwrap_or_else(|e| e.into_inner()) = Some(credential);
        Some(key)
    }
}

/// The client role's resolver: the one key configured.
struct OwnKey(PskKey);

impl PskResolver for OwnKey {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        Some(self.0.bytes().to_vec())
    }
}

enum State {
    Handshaking { since: Instant },
    Established { credential: Arc<PskCredential> },
}

struct Peer {
    dtls: Dtls,
    state: State,
    /// What was resolved during the handshake (server role).
    credential: Option<Arc<PskCredential>>,
    last_heard: Instant,
    /// dimpl's next timer.
    wake: Option<Instant>,
    /// Plaintext handed out before the client's handshake completed is
    /// buffered by dimpl; this marks a client-role peer.
    client: bool,
}

/// The DTLS sessions of one listening socket.
pub struct SessionTable {
    limits: SessionLimits,
    server_config: Arc<Config>,
    resolver: Arc<Resolver>,
    peers: HashMap<SocketAddr, Peer>,
    wakes: BTreeSet<(Instant, SocketAddr)>,
    handshakes: BTreeSet<(Instant, SocketAddr)>,
    idle: BTreeSet<(Instant, SocketAddr)>,
    transmits: VecDeque<Datagram>,
    events: VecDeque<SessionEvent>,
    counts: BTreeMap<&'static str, u64>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable")
            .field("peers", &self.peers.len())
            .field("handshakes", &self.handshakes.len())
            .finish()
    }
}

/// The one cipher suite LwM2M's PSK mode and tinydtls have in common
/// (LwM2M 1.1 transport §5.2.8, RFC 7925 §4.2).
const SUITES: &[dimpl::crypto::Dtls12CipherSuite] =
    &[dimpl::crypto::Dtls12CipherSuite::PSK_AES128_CCM_8];

fn config_builder() -> dimpl::ConfigBuilder {
    Config::builder()
        .dtls12_cipher_suites(SUITES)
        .dtls13_cipher_suites(&[])
        // a CoAP message is at most 1152 bytes (RFC 7252 §4.6) plus the
        // record overhead; handshake flights are fragmented to this
        .mtu(1280)
}

impl SessionTable {
    pub fn new(limits: SessionLimits, store: Arc<dyn CredentialStore>) -> SessionTable {
        let resolver = Arc::new(Resolver {
            store,
            resolved: Mutex::new(None),
        });
        let server_config = config_builder()
            .use_server_cookie(true)
            .with_psk_server(None, resolver.clone())
            .build()
            // only the timing settings and the built-in provider are checked
            .expect("the DTLS server configuration is valid");
        SessionTable {
            limits,
            server_config: Arc::new(server_config),
            resolver,
            peers: HashMap::new(),
            wakes: BTreeSet::new(),
            handshakes: BTreeSet::new(),
            idle: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counts: BTreeMap::new(),
            buf: vec![0; 2048],
        }
    }

    /// Established sessions and handshakes in progress.
    pub fn len(&self) -> (usize, usize) {
        (
            self.peers.len() - self.handshakes.len(),
            self.handshakes.len(),
        )
    }

    /// The credential `peer` proved, when it has an established session.
    pub fn credential(&self, peer: SocketAddr) -> Option<&Arc<PskCredential>> {
        match &self.peers.get(&peer)?.state {
            State::Established { credential } => Some(credential),
            State::Handshaking { .. } => None,
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Counts by reason since the last call: failed handshakes, evictions,
    /// records from unknown peers (short snake_case words).
    pub fn take_counts(&mut self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut self.counts)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self
            .idle
            .first()
            .map(|(t, _)| ferrogate_sdk::time::saturating_add(*t, self.limits.idle_timeout));
        [self.wakes.first().map(|(t, _)| *t), idle]
            .into_iter()
            .flatten()
            .min()
    }

    /// A datagram arrived from `peer`.
    pub fn handle(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        let fresh_hello = is_client_hello(datagram);
        match self
            .peers
            .get(&peer)
            .map(|p| matches!(p.state, State::Established { .. }))
        {
            // a client that lost its session (rebooted) starts over from
            // the same address; the old session ends when the new one is
            // started, since dimpl ignores a second ClientHello
            Some(true) if fresh_hello => {
                self.remove(peer, "rehandshake");
                self.start_handshake(now, peer);
            }
            Some(_) => {}
            None if fresh_hello => self.start_handshake(now, peer),
            None => {
                self.count("dtls_no_session");
                return;
            }
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let result = p
            .dtls
            .handle_timeout(now)
            .and_then(|()| p.dtls.handle_packet(datagram));
        if let Some(resolved) = self
            .resolver
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            p.credential = Some(resolved);
        }
        match result {
            Ok(()) => {
                if let State::Established { .. } = p.state {
                    self.idle.remove(&(p.last_heard, peer));
                    p.last_heard = now;
                    self.idle.insert((now, peer));
                }
                self.drain(now, peer);
            }
            Err(e) => self.fail(peer, &e),
        }
    }

    /// Time passed: retransmit flights, give up handshakes, drop idle
    /// sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, peer)) = self.wakes.first() {
            if at > now {
                break;
            }
            self.wakes.remove(&(at, peer));
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            p.wake = None;
            match p.dtls.handle_timeout(now) {
                Ok(()) => self.drain(now, peer),
                Err(e) => self.fail(peer, &e),
            }
        }
        while let Some(&(heard, peer)) = self.idle.first() {
            if ferrogate_sdk::time::saturating_add(heard, self.limits.idle_timeout) > now {
                break;
            }
            self.count("dtls_session_idle");
            self.remove(peer, "idle");
        }
    }

    /// Encrypt `plaintext` to `peer`'s session (server role), or to the
    /// session being set up by [`Self::connect`] (client role: dimpl
    /// buffers it until the handshake completes).
    pub fn send(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        plaintext: &[u8],
    ) -> Result<(), SendError> {
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(SendError::NoSession(peer))?;
        if !p.client && !matches!(p.state, State::Established { .. }) {
            return Err(SendError::NoSession(peer));
        }
        match p
            .dtls
            .handle_timeout(now)
            .and_then(|()| p.dtls.send_application_data(plaintext))
        {
            Ok(_) => {
                self.drain(now, peer);
                Ok(())
            }
            Err(e) => {
                self.fail(peer, &e);
                Err(SendError::Failed(peer))
            }
        }
    }

    /// Start a client handshake with `peer` as `identity` with `key`
    /// (`coaps://` devices, the CLI). Plaintext may be sent at once.
    pub fn connect(&mut self, now: Instant, peer: SocketAddr, identity: &[u8], key: PskKey) {
        self.remove(peer, "reconnect");
        let config = config_builder()
            .with_psk_client(identity.to_vec(), Arc::new(OwnKey(key)))
            .build()
            .expect("the DTLS client configuration is valid");
        let mut dtls = Dtls::new_12_psk(Arc::new(config), now);
        dtls.set_active(true);
        // a fresh client has nothing to fail on; the error would surface
        // again on the next call
        let _ = dtls.handle_timeout(now);
        self.handshakes.insert((now, peer));
        self.peers.insert(
            peer,
            Peer {
                dtls,
                state: State::Handshaking { since: now },
                credential: None,
                last_heard: now,
                wake: None,
                client: true,
            },
        );
        self.drain(now, peer);
    }

    /// The client role's view of `identity`: the server is whoever answers
    /// with the key; the credential names the peer's address.
    fn client_credential(peer: SocketAddr) -> Arc<PskCredential> {
        Arc::new(PskCredential {
            endpoint: Arc::from(peer.to_string()),
            identity: Vec::new(),
            key: PskKey::new(Vec::new()),
        })
    }

    fn start_handshake(&mut self, now: Instant, peer: SocketAddr) {
        if self.handshakes.len() >= self.limits.max_handshakes
            && let Some(&(_, oldest)) = self.handshakes.first()
        {
            self.count("dtls_handshake_evicted");
            self.remove(oldest, "evicted");
        }
        self.handshakes.insert((now, peer));
        self.peers.insert(
            peer,
            Peer {
                dtls: Dtls::new_12_psk(self.server_config.clone(), now),
                state: State::Handshaking { since: now },
                credential: None,
                last_heard: now,
                wake: None,
                client: false,
            },
        );
    }

    /// Move everything dimpl has for `peer` out: datagrams, events, its
    /// next timer.
    fn drain(&mut self, now: Instant, peer: SocketAddr) {
        let Some(mut p) = self.peers.get_mut(&peer) else {
            return;
        };
        let mut established = false;
        loop {
            match p.dtls.poll_output(&mut self.buf) {
                Output::Packet(bytes) => self.transmits.push_back(Datagram {
                    peer,
                    bytes: bytes.to_vec(),
                }),
                Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                Output::Timeout(at) => {
                    if p.wake != Some(at) {
                        if let Some(old) = p.wake.take() {
                            self.wakes.remove(&(old, peer));
                        }
                        p.wake = Some(at);
                        self.wakes.insert((at, peer));
                    }
                    break;
                }
                Output::Connected => established = true,
                Output::ApplicationData(data) => {
                    if let State::Established { credential } = &p.state {
                        self.events.push_back(SessionEvent::Plaintext {
                            peer,
                            credential: credential.clone(),
                            data: data.to_vec(),
                        });
                    }
                }
                Output::CloseNotify => {
                    self.remove(peer, "close_notify");
                    return;
                }
                // certificates and SRTP keys: not in a PSK session;
                // Output is non-exhaustive
                _ => {}
            }
            if established {
                let credential = if p.client {
                    Self::client_credential(peer)
                } else {
                    match p.credential.clone() {
                        Some(c) => c,
                        None => {
                            // a PSK handshake cannot complete unresolved
                            self.fail_reason(peer, "dtls_unknown_identity");
                            return;
                        }
                    }
                };
                if let State::Handshaking { since } = p.state {
                    self.handshakes.remove(&(since, peer));
                }
                p.state = State::Established {
                    credential: credential.clone(),
                };
                p.last_heard = now;
                self.idle.insert((now, peer));
                self.events
                    .push_back(SessionEvent::Established { peer, credential });
                established = false;
                self.evict_sessions(peer);
                let Some(again) = self.peers.get_mut(&peer) else {
                    return;
                };
                p = again;
            }
        }
    }

    fn evict_sessions(&mut self, keep: SocketAddr) {
        while self.idle.len() > self.limits.max_sessions {
            let Some(&(_, oldest)) = self.idle.iter().find(|(_, p)| *p != keep) else {
                return;
            };
            self.count("dtls_session_evicted");
            self.remove(oldest, "evicted");
        }
    }

    fn fail(&mut self, peer: SocketAddr, error: &dimpl::Error) {
        let reason = match error {
            dimpl::Error::Timeout(_) => "dtls_handshake_timeout",
            dimpl::Error::PskError(_) => "dtls_unknown_identity",
            dimpl::Error::SecurityError(_) => "dtls_refused",
            dimpl::Error::CryptoError(_) => "dtls_bad_record",
            dimpl::Error::ConnectionClosed => "dtls_closed",
            _ => "dtls_protocol_error",
        };
        tracing::debug!(peer = %peer, error = %error, reason, "DTLS session failed");
        self.fail_reason(peer, reason);
    }

    fn fail_reason(&mut self, peer: SocketAddr, reason: &'static str) {
        self.count(reason);
        self.remove(peer, reason);
    }

    fn remove(&mut self, peer: SocketAddr, reason: &'static str) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        if let Some(at) = p.wake {
            self.wakes.remove(&(at, peer));
        }
        match p.state {
            State::Handshaking { since } => {
                self.handshakes.remove(&(since, peer));
            }
            State::Established { .. } => {
                self.idle.remove(&(p.last_heard, peer));
            }
        }
        self.events.push_back(SessionEvent::Closed { peer, reason });
    }

    fn count(&mut self, reason: &'static str) {
        *self.counts.entry(reason).or_insert(0) += 1;
    }
}

/// Whether `datagram` starts with a plaintext (epoch 0) ClientHello
/// record: the only thing that may start a handshake (RFC 6347 §4.1, §4.2.2).
fn is_client_hello(datagram: &[u8]) -> bool {
    // content type 22 (handshake), epoch 0, handshake type 1
    datagram.first() == Some(&22)
        && datagram.get(3..5) == Some(&[0, 0])
        && datagram.get(13) == Some(&1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Credentials;

    fn store() -> Arc<dyn CredentialStore> {
        Arc::new(Credentials::new([PskCredential {
            endpoint: Arc::from("meter-7"),
            identity: b"id-7".to_vec(),
            key: PskKey::new(b"0123456789abcdef".to_vec()),
        }]))
    }

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([127, 0, (i >> 8) as u8, i as u8], 40_000))
    }

    const SERVER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5684);

    /// Move datagrams both ways until neither side has any.
    fn pump(now: Instant, server: &mut SessionTable, client: &mut SessionTable, from: SocketAddr) {
        for _ in 0..32 {
            let mut moved = false;
            while let Some(d) = client.poll_transmit() {
                server.handle(now, from, &d.bytes);
                moved = true;
            }
            while let Some(d) = server.poll_transmit() {
                if d.peer == from {
                    client.handle(now, SERVER, &d.bytes);
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn events(t: &mut SessionTable) -> Vec<SessionEvent> {
        std::iter::from_fn(|| t.poll_event()).collect()
    }

    fn client(now: Instant, key: &[u8]) -> SessionTable {
        let mut c = SessionTable::new(SessionLimits::default(), Arc::new(Credentials::default()));
        c.connect(now, SERVER, b"id-7", PskKey::new(key.to_vec()));
        c
    }

    #[test]
    fn psk_handshake_binds_the_peer_to_its_credential() {
        let now = Instant::now();
        let mut server = SessionTable::new(SessionLimits::default(), store());
        let mut c = client(now, b"0123456789abcdef");
        c.send(now, SERVER, b"hello").unwrap();
        pump(now, &mut server, &mut c, addr(1));
        let got = events(&mut server);
        assert!(
            matches!(&got[0], SessionEvent::Established { peer, credential } if *peer == addr(1) && &*credential.endpoint == "meter-7"),
            "{got:?}"
        );
        assert!(
            matches!(&got[1], SessionEvent::Plaintext { data, .. } if data == b"hello"),
            "{got:?}"
        );
        assert_eq!(
            server.credential(addr(1)).map(|c| &*c.endpoint),
            Some("meter-7")
        );
        server.send(now, addr(1), b"back").unwrap();
        pump(now, &mut server, &mut c, addr(1));
        assert!(
            events(&mut c)
                .iter()
                .any(|e| matches!(e, SessionEvent::Plaintext { data, .. } if data == b"back"))
        );
        assert_eq!(server.len(), (1, 0));
    }

    #[test]
    fn a_wrong_key_never_establishes_and_is_counted() {
        let now = Instant::now();
        let mut server = SessionTable::new(SessionLimits::default(), store());
        let mut c = client(now, b"fedcba9876543210");
        c.send(now, SERVER, b"hello").unwrap();
        pump(now, &mut server, &mut c, addr(1));
        let got = events(&mut server);
        assert!(
            !got.iter().any(|e| matches!(
                e,
                SessionEvent::Established { .. } | SessionEvent::Plaintext { .. }
            )),
            "{got:?}"
        );
        assert!(server.credential(addr(1)).is_none());
        let counts = server.take_counts();
        assert_eq!(counts.values().sum::<u64>(), 1, "{counts:?}");
        assert_eq!(server.len(), (0, 0));
    }

    #[test]
    fn records_from_a_stranger_start_nothing() {
        let now = Instant::now();
        let mut server = SessionTable::new(SessionLimits::default(), store());
        // an application-data record, epoch 1, from nobody we know
        server.handle(
            now,
            addr(9),
            &[23, 254, 253, 0, 1, 0, 0, 0, 0, 0, 1, 0, 3, 1, 2, 3],
        );
        server.handle(now, addr(9), b"");
        assert!(server.poll_transmit().is_none());
        assert_eq!(server.take_counts().get("dtls_no_session"), Some(&2));
    }

    #[test]
    fn a_handshake_flood_evicts_handshakes_never_sessions() {
        let now = Instant::now();
        let limits = SessionLimits {
            max_handshakes: 8,
            ..SessionLimits::default()
        };
        let mut server = SessionTable::new(limits, store());
        let mut c = client(now, b"0123456789abcdef");
        pump(now, &mut server, &mut c, addr(1));
        assert_eq!(server.len(), (1, 0));
        // 100 ClientHellos from 100 addresses
        let hello = client(now, b"0123456789abcdef").poll_transmit().unwrap();
        for i in 0..100 {
            server.handle(now, addr(1000 + i), &hello.bytes);
        }
        assert_eq!(server.len(), (1, 8));
        assert_eq!(
            server.take_counts().get("dtls_handshake_evicted"),
            Some(&92)
        );
        events(&mut server);
        c.send(now, SERVER, b"still here").unwrap();
        pump(now, &mut server, &mut c, addr(1));
        assert!(
            events(&mut server).iter().any(
                |e| matches!(e, SessionEvent::Plaintext { data, .. } if data == b"still here")
            )
        );
    }

    #[test]
    fn an_unanswered_handshake_times_out_and_an_idle_session_goes() {
        let start = Instant::now();
        let limits = SessionLimits {
            idle_timeout: Duration::from_secs(60),
            ..SessionLimits::default()
        };
        let mut server = SessionTable::new(limits, store());
        let mut c = client(start, b"0123456789abcdef");
        pump(start, &mut server, &mut c, addr(1));
        let hello = client(start, b"x").poll_transmit().unwrap();
        server.handle(start, addr(2), &hello.bytes);
        assert_eq!(server.len(), (1, 1));
        let mut now = start;
        while let Some(t) = server.poll_timeout() {
            if t > start + Duration::from_secs(600) {
                break;
            }
            now = t.max(now);
            server.handle_timeout(now);
            while server.poll_transmit().is_some() {}
        }
        assert_eq!(server.len(), (0, 0));
        let counts = server.take_counts();
        assert_eq!(counts.get("dtls_session_idle"), Some(&1), "{counts:?}");
        assert_eq!(counts.get("dtls_handshake_timeout"), Some(&1), "{counts:?}");
    }
}
