//! A thin tokio shell around an [`Endpoint`]: one task owns the endpoint
//! and a [`Transport`], moves datagrams between them, fires its timers, and
//! turns its events into async answers.
//!
//! - [`CoapHandle`] (cloneable) sends requests and observations;
//! - [`Incoming`] requests arrive on a channel and are answered through
//!   their [`Responder`].
//!
//! The transport is a trait so DTLS can be slotted in later; UDP
//! ([`tokio::net::UdpSocket`]) implements it here.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use ferrogate_coap::driver::{self, CoapHandle};
//! use ferrogate_coap::{Code, EndpointConfig, Request, Response};
//!
//! let socket = tokio::net::UdpSocket::bind("0.0.0.0:5683").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let (coap, mut incoming) = driver::spawn(socket, EndpointConfig::default(), shutdown.clone());
//! // client role
//! let peer = "192.0.2.7:5683".parse().unwrap();
//! let _value = coap.request(peer, Request::get("/3/0/0")).await;
//! // server role, on the same socket
//! while let Some(req) = incoming.recv().await {
//!     req.responder.respond(Response::new(Code::CHANGED));
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::endpoint::{
    Endpoint, EndpointConfig, EndpointError, Event, RelationId, RequestError, RequestHandle,
    RequestId, Stats,
};
use crate::message::{Code, Request, Response};

/// How the driver sends and receives datagrams. `recv_from` must be cancel
/// safe (it is polled in a `select!`).
pub trait Transport: Send + Sync + 'static {
    fn send_to(
        &self,
        datagram: &[u8],
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Transport for tokio::net::UdpSocket {
    fn send_to(
        &self,
        datagram: &[u8],
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, datagram, peer)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
}

/// Why an async call on the driver failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("the CoAP driver has stopped")]
    Stopped,
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// One notification, or the error that ended the observation.
pub type Notification = Result<Response, RequestError>;

enum Command {
    Request {
        peer: SocketAddr,
        request: Request,
        reply: oneshot::Sender<Result<Response, DriverError>>,
    },
    Observe {
        peer: SocketAddr,
        request: Request,
        reply: oneshot::Sender<Result<Response, DriverError>>,
        notifications: mpsc::Sender<Notification>,
        id: oneshot::Sender<RequestId>,
    },
    Cancel(RequestId),
    Respond {
        handle: RequestHandle,
        response: Response,
        observe: Option<oneshot::Sender<Option<RelationId>>>,
    },
    Notify {
        relation: RelationId,
        response: Response,
        confirmable: bool,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    Stats(oneshot::Sender<Stats>),
}

/// Sends requests through the driver. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CoapHandle {
    tx: mpsc::Sender<Command>,
    /// Unbounded, for what must never be lost or block: answers,
    /// cancellations. Bounded in practice by the engine's caps.
    control: mpsc::UnboundedSender<Command>,
    local: SocketAddr,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl CoapHandle {
    /// The address the transport is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Send a request and wait for its (reassembled) response. Bound the
    /// wait with `tokio::time::timeout` if the RFC's 93 s is too long:
    /// dropping the future cancels the request before its next
    /// retransmission.
    pub async fn request(
        &self,
        peer: SocketAddr,
        request: Request,
    ) -> Result<Response, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Request {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Register an observation. Returns the first response; when it carries
    /// an Observe option, notifications follow on the [`Observation`].
    pub async fn observe(
        &self,
        peer: SocketAddr,
        request: Request,
    ) -> Result<Observation, DriverError> {
        let (reply, rx) = oneshot::channel();
        let (id_tx, id_rx) = oneshot::channel();
        let (ntx, nrx) = mpsc::channel(64);
        self.tx
            .send(Command::Observe {
                peer,
                request,
                reply,
                notifications: ntx,
                id: id_tx,
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
        let id = id_rx.await.ok();
        let first = rx.await.map_err(|_| DriverError::Stopped)??;
        Ok(Observation {
            id,
            first,
            notifications: nrx,
            control: self.control.clone(),
        })
    }

    /// The endpoint's counters.
    pub async fn stats(&self) -> Result<Stats, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Stats(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}

/// An observation we registered. Dropping it cancels the observation.
#[derive(Debug)]
pub struct Observation {
    id: Option<RequestId>,
    /// The response to the registration; `first.observe` is `None` when the
    /// peer did not accept the observation (no notifications will come).
    pub first: Response,
    notifications: mpsc::Receiver<Notification>,
    control: mpsc::UnboundedSender<Command>,
}

impl Observation {
    /// The next notification; `Some(Err(_))` when the observation was lost
    /// (timeout of a re-registration, RST, the peer ended it); `None` after
    /// that or when the peer never accepted it.
    pub async fn next(&mut self) -> Option<Notification> {
        self.notifications.recv().await
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.control.send(Command::Cancel(id));
        }
    }
}

/// A request a peer sent us.
#[derive(Debug)]
pub struct Incoming {
    pub peer: SocketAddr,
    pub request: Request,
    pub responder: Responder,
}

/// Answers one incoming request. Dropping it unanswered answers 5.00.
#[derive(Debug)]
pub struct Responder {
    handle: Option<RequestHandle>,
    control: mpsc::UnboundedSender<Command>,
}

impl Responder {
    pub fn respond(mut self, response: Response) {
        if let Some(handle) = self.handle.take() {
            let _ = self.control.send(Command::Respond {
                handle,
                response,
                observe: None,
            });
        }
    }

    /// Accept an observe registration; `None` when the engine declined
    /// (not a registration, not 2.xx, relation cap reached).
    pub async fn accept_observe(mut self, response: Response) -> Option<ObserveRelation> {
        let handle = self.handle.take()?;
        let (otx, orx) = oneshot::channel();
        self.control
            .send(Command::Respond {
                handle,
                response,
                observe: Some(otx),
            })
            .ok()?;
        let relation = orx.await.ok()??;
        Some(ObserveRelation {
            relation,
            control: self.control.clone(),
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = self.control.send(Command::Respond {
                handle,
                response: Response::new(Code::INTERNAL_SERVER_ERROR),
                observe: None,
            });
        }
    }
}

/// A peer observing one of our resources.
#[derive(Debug, Clone)]
pub struct ObserveRelation {
    relation: RelationId,
    control: mpsc::UnboundedSender<Command>,
}

impl ObserveRelation {
    /// Send a notification; fails once the relation has ended.
    pub async fn notify(&self, response: Response, confirmable: bool) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        // One notification in flight per caller: it waits for the answer.
        self.control
            .send(Command::Notify {
                relation: self.relation,
                response,
                confirmable,
                reply,
            })
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }
}

enum Waiter {
    Once(oneshot::Sender<Result<Response, DriverError>>),
    Observe {
        first: Option<oneshot::Sender<Result<Response, DriverError>>>,
        notifications: mpsc::Sender<Notification>,
    },
}

/// Start the driver task on the current tokio runtime. It runs until
/// `shutdown` is cancelled. Incoming requests that find the channel full
/// (or nobody listening) are answered 5.03.
pub fn spawn<T: Transport>(
    transport: T,
    config: EndpointConfig,
    shutdown: CancellationToken,
) -> (CoapHandle, mpsc::Receiver<Incoming>) {
    let (tx, rx) = mpsc::channel(256);
    let (control, control_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::channel(256);
    let local = transport
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let handle = CoapHandle {
        tx,
        control: control.clone(),
        local,
    };
    let task = Task {
        transport: Arc::new(transport),
        endpoint: Endpoint::new(config),
        commands: rx,
        control_rx,
        control,
        incoming: in_tx,
        waiters: HashMap::new(),
    };
    tokio::spawn(task.run(shutdown));
    (handle, in_rx)
}

struct Task<T> {
    transport: Arc<T>,
    endpoint: Endpoint,
    commands: mpsc::Receiver<Command>,
    control_rx: mpsc::UnboundedReceiver<Command>,
    control: mpsc::UnboundedSender<Command>,
    incoming: mpsc::Sender<Incoming>,
    waiters: HashMap<RequestId, Waiter>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl<T: Transport> Task<T> {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut buf = vec![0u8; 65_536];
        loop {
            self.flush().await;
            self.dispatch();
            self.flush().await;
            let deadline = self.endpoint.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            let transport = self.transport.clone();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = transport.recv_from(&mut buf) => match received {
                    Ok((n, peer)) => {
                        let datagram = buf.get(..n).unwrap_or_default();
                        self.endpoint.handle(now(), peer, datagram);
                    }
                    Err(error) => {
                        // ICMP port unreachable shows up here on Linux; the
                        // exchange's own timeout reports it.
                        tracing::debug!(%error, "CoAP transport receive error");
                    }
                },
                Some(command) = self.control_rx.recv() => self.on_command(command),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = sleep => {
                    let now = now();
                    self.cancel_abandoned(now);
                    self.endpoint.handle_timeout(now);
                }
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            if let Err(error) = self.transport.send_to(&t.datagram, t.peer).await {
                tracing::debug!(peer = %t.peer, %error, "CoAP send failed");
            }
        }
    }

    /// Requests whose caller stopped waiting (a timeout dropped the
    /// future) are cancelled before their next retransmission, so a dead
    /// device is not sent more than the caller asked for.
    fn cancel_abandoned(&mut self, now: std::time::Instant) {
        let abandoned: Vec<RequestId> = self
            .waiters
            .iter()
            .filter(|(_, w)| match w {
                Waiter::Once(reply) => reply.is_closed(),
                Waiter::Observe {
                    first: Some(reply), ..
                } => reply.is_closed(),
                Waiter::Observe { notifications, .. } => notifications.is_closed(),
            })
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            self.waiters.remove(&id);
            let _ = self.endpoint.cancel(now, id);
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Request {
                peer,
                request,
                reply,
            } => match self.endpoint.request(now, peer, request) {
                Ok(id) => {
                    self.waiters.insert(id, Waiter::Once(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Observe {
                peer,
                request,
                reply,
                notifications,
                id,
            } => match self.endpoint.observe(now, peer, request) {
                Ok(rid) => {
                    let _ = id.send(rid);
                    self.waiters.insert(
                        rid,
                        Waiter::Observe {
                            first: Some(reply),
                            notifications,
                        },
                    );
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Cancel(id) => {
                if self.waiters.remove(&id).is_some() {
                    let _ = self.endpoint.cancel(now, id);
                }
            }
            Command::Respond {
                handle,
                response,
                observe,
            } => match observe {
                None => {
                    let _ = self.endpoint.respond(now, handle, response);
                }
                Some(tx) => {
                    let relation = self
                        .endpoint
                        .accept_observe(now, handle, response)
                        .ok()
                        .flatten();
                    let _ = tx.send(relation);
                }
            },
            Command::Notify {
                relation,
                response,
                confirmable,
                reply,
            } => {
                let result = self
                    .endpoint
                    .notify(now, relation, response, confirmable)
                    .map_err(DriverError::from);
                let _ = reply.send(result);
            }
            Command::Stats(tx) => {
                let _ = tx.send(self.endpoint.stats().clone());
            }
        }
    }

    fn dispatch(&mut self) {
        let now = now();
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::Request(req) => {
                    let handle = req.handle;
                    let incoming = Incoming {
                        peer: req.peer,
                        request: req.request,
                        responder: Responder {
                            handle: Some(handle),
                            control: self.control.clone(),
                        },
                    };
                    if let Err(err) = self.incoming.try_send(incoming) {
                        let mut refused = match err {
                            mpsc::error::TrySendError::Full(i) => i,
                            mpsc::error::TrySendError::Closed(i) => i,
                        };
                        refused.responder.handle = None;
                        let _ = self.endpoint.respond(
                            now,
                            handle,
                            Response::new(Code::SERVICE_UNAVAILABLE).with_diagnostic("busy"),
                        );
                    }
                }
                Event::Response { id, response, .. } => match self.waiters.remove(&id) {
                    Some(Waiter::Once(reply)) => {
                        let _ = reply.send(Ok(response));
                    }
                    Some(Waiter::Observe {
                        first,
                        notifications,
                    }) => {
                        let accepted = response.observe.is_some() && response.code.is_success();
                        if let Some(first) = first {
                            let _ = first.send(Ok(response));
                        }
                        if accepted {
                            self.waiters.insert(
                                id,
                                Waiter::Observe {
                                    first: None,
                                    notifications,
                                },
                            );
                        }
                    }
                    None => {}
                },
                Event::Notification { id, response, .. } => {
                    if let Some(Waiter::Observe { notifications, .. }) = self.waiters.get(&id) {
                        match notifications.try_send(Ok(response)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                tracing::warn!(?id, "observer is slow, dropping a notification");
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                self.waiters.remove(&id);
                                let _ = self.endpoint.cancel(now, id);
                            }
                        }
                    }
                }
                Event::Failed { id, error, .. } => match self.waiters.remove(&id) {
                    Some(Waiter::Once(reply)) => {
                        let _ = reply.send(Err(error.into()));
                    }
                    Some(Waiter::Observe {
                        first: Some(first), ..
                    }) => {
                        let _ = first.send(Err(error.into()));
                    }
                    Some(Waiter::Observe { notifications, .. }) => {
                        let _ = notifications.try_send(Err(error));
                    }
                    None => {}
                },
                Event::RelationEnded {
                    relation,
                    peer,
                    reason,
                } => {
                    tracing::debug!(?relation, %peer, ?reason, "observe relation ended");
                }
            }
        }
    }
}
