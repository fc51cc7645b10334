//! The LwM2M bootstrap server (LwM2M 1.1 Bootstrap interface, §5.2 and
//! §6.1), sans-IO: a CoAP [`Endpoint`] for the wire and one provisioning
//! sequence per client in progress. It is fed datagrams and instants; it
//! hands out datagrams, what happened to each client and its next deadline.
//!
//! A client asks with `POST /bs?ep=NAME`; the server answers 2.04 and then
//! drives the client: Bootstrap-Discover of the Security object (to learn
//! which instances are bootstrap-server accounts, which must survive),
//! Bootstrap-Delete of `/0` and `/1`, Bootstrap-Write of one Security and one
//! Server instance (the device-management server the client's account
//! names), and Bootstrap-Finish. The client then registers at that server.
//!
//! Writes go in the format the client asked for (`pct=`), else SenML JSON
//! to a 1.1 client and TLV to a 1.0 one (by what Discover says); a write
//! refused with 4.00 or 4.15 is sent once more in the other format (Eclipse
//! Wakaama's client, for one, is often built without TLV).

pub mod account;
pub mod adapter;
pub mod config;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogate_coap::{
    Code, Endpoint, EndpointConfig, Event, IncomingRequest, Method, Request, RequestId, Response,
    Transmit, content_format,
};
use ferrogate_sdk::time::saturating_add;

use crate::content::{self, ContentFormat};
use crate::link::Link;
pub use account::{Account, Accounts, Security};

/// How long one client's whole sequence may take before it is given up.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Sequences in progress at once; a bootstrap request beyond is answered
/// 5.03 (the client retries later).
pub const DEFAULT_MAX_SESSIONS: usize = 1024;

/// What the bootstrap server tells its shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The client acknowledged Bootstrap-Finish: it now has the account.
    Bootstrapped {
        endpoint: String,
        peer: SocketAddr,
        server_uri: String,
    },
    /// A sequence ended without Bootstrap-Finish.
    Failed {
        endpoint: String,
        peer: SocketAddr,
        reason: String,
    },
    /// A bootstrap request was refused (a counter name: `bad_name`,
    /// `unknown_endpoint`, `busy`, `not_found`).
    Refused { reason: &'static str },
}

/// The steps of one client's sequence, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Discover,
    DeleteSecurity,
    DeleteServer,
    WriteSecurity,
    WriteServer,
    Finish,
}

impl Step {
    fn next(self) -> Option<Step> {
        Some(match self {
            Step::Discover => Step::DeleteSecurity,
            Step::DeleteSecurity => Step::DeleteServer,
            Step::DeleteServer => Step::WriteSecurity,
            Step::WriteSecurity => Step::WriteServer,
            Step::WriteServer => Step::Finish,
            Step::Finish => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Step::Discover => "Bootstrap-Discover /0",
            Step::DeleteSecurity => "Bootstrap-Delete /0",
            Step::DeleteServer => "Bootstrap-Delete /1",
            Step::WriteSecurity => "Bootstrap-Write of the Security instance",
            Step::WriteServer => "Bootstrap-Write of the Server instance",
            Step::Finish => "Bootstrap-Finish",
        }
    }
}

/// One client being provisioned.
#[derive(Debug)]
struct Session {
    endpoint: String,
    account: Arc<Account>,
    step: Step,
    request: Option<RequestId>,
    /// The Security instance the account is written to: the lowest id no
    /// bootstrap-server account of the client uses.
    security_instance: u16,
    /// The format of the writes: `pct=`, or chosen after Discover.
    format: Option<ContentFormat>,
    /// A write was already re-sent in the other format.
    stepped_down: bool,
    deadline: Instant,
}

/// The bootstrap server's tunables.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub session_timeout: Duration,
    pub max_sessions: usize,
    pub coap: EndpointConfig,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            max_sessions: DEFAULT_MAX_SESSIONS,
            coap: EndpointConfig {
                nstart: 1,
                ..EndpointConfig::default()
            },
        }
    }
}

/// The bootstrap server core.
pub struct BootstrapServer {
    endpoint: Endpoint,
    accounts: Arc<Accounts>,
    config: BootstrapConfig,
    sessions: HashMap<SocketAddr, Session>,
    by_request: HashMap<RequestId, SocketAddr>,
    outputs: VecDeque<Output>,
}

impl BootstrapServer {
    pub fn new(config: BootstrapConfig, accounts: Arc<Accounts>) -> Self {
        BootstrapServer {
            endpoint: Endpoint::new(config.coap.clone()),
            accounts,
            config,
            sessions: HashMap::new(),
            by_request: HashMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Clients being provisioned now.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint.poll_transmit()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.sessions.values().map(|s| s.deadline).min();
        match (self.endpoint.poll_timeout(), sessions) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        self.endpoint.handle(now, peer, datagram);
        self.drain_events(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.drain_events(now);
        let expired: Vec<(SocketAddr, Step)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(peer, s)| (*peer, s.step))
            .collect();
        for (peer, step) in expired {
            let reason = format!(
                "{}: no answer within the sequence's time limit of {:?}",
                step.name(),
                self.config.session_timeout
            );
            self.fail(peer, reason);
        }
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::Request(incoming) => self.on_request(now, incoming),
                Event::Response { id, response, .. } => self.on_response(now, id, response),
                Event::Failed { id, error, .. } => {
                    if let Some(peer) = self.by_request.remove(&id) {
                        let step = self.sessions.get(&peer).map(|s| s.step.name());
                        self.fail(peer, format!("{}: {error}", step.unwrap_or("request")));
                    }
                }
                Event::Notification { .. } | Event::RelationEnded { .. } => {}
            }
        }
    }

    fn on_request(&mut self, now: Instant, incoming: IncomingRequest) {
        let req = &incoming.request;
        let response = if req.method == Method::Post && req.path == ["bs"] {
            self.on_bootstrap_request(now, incoming.peer, req)
        } else {
            self.outputs.push_back(Output::Refused {
                reason: "not_found",
            });
            Response::new(Code::NOT_FOUND)
                .with_diagnostic("a bootstrap server serves POST /bs?ep=NAME only")
        };
        let _ = self.endpoint.respond(now, incoming.handle, response);
        self.start_pending(now);
    }

    /// Answers `POST /bs?ep=NAME`; the sequence starts once the answer is
    /// queued (see [`Self::start_pending`]).
    fn on_bootstrap_request(&mut self, now: Instant, peer: SocketAddr, req: &Request) -> Response {
        let refuse = |out: &mut VecDeque<Output>, reason, code, text: String| {
            out.push_back(Output::Refused { reason });
            Response::new(code).with_diagnostic(text)
        };
        let Some(endpoint) = req.query_value("ep").map(str::to_string) else {
            return refuse(
                &mut self.outputs,
                "bad_name",
                Code::BAD_REQUEST,
                "the `ep` query parameter is missing".into(),
            );
        };
        if let Err(e) = ferrogate_sdk::name::check_device_name(&endpoint) {
            return refuse(
                &mut self.outputs,
                "bad_name",
                Code::BAD_REQUEST,
                format!("endpoint name refused: {e}"),
            );
        }
        let Some(account) = self.accounts.for_endpoint(&endpoint) else {
            return refuse(
                &mut self.outputs,
                "unknown_endpoint",
                Code::BAD_REQUEST,
                format!("no bootstrap account for endpoint `{endpoint}`"),
            );
        };
        // A client that asks again (it lost our answer or gave up) starts over.
        if let Some(old) = self.sessions.remove(&peer) {
            if let Some(id) = old.request {
                self.by_request.remove(&id);
                let _ = self.endpoint.cancel(now, id);
            }
        }
        if self.sessions.len() >= self.config.max_sessions {
            return refuse(
                &mut self.outputs,
                "busy",
                Code::SERVICE_UNAVAILABLE,
                "too many clients are being bootstrapped; retry later".into(),
            );
        }
        let format = req
            .query_value("pct")
            .and_then(|n| n.parse::<u16>().ok())
            .and_then(ContentFormat::from_number)
            .filter(|f| {
                matches!(
                    f,
                    ContentFormat::Tlv | ContentFormat::SenmlJson | ContentFormat::SenmlCbor
                )
            });
        self.sessions.insert(
            peer,
            Session {
                endpoint,
                account,
                step: Step::Discover,
                request: None,
                security_instance: 0,
                format,
                stepped_down: false,
                deadline: saturating_add(now, self.config.session_timeout),
            },
        );
        Response::new(Code::CHANGED)
    }

    /// Sends the current step of every session that has no request out.
    fn start_pending(&mut self, now: Instant) {
        let idle: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.request.is_none())
            .map(|(peer, _)| *peer)
            .collect();
        for peer in idle {
            self.send_step(now, peer);
        }
    }

    fn send_step(&mut self, now: Instant, peer: SocketAddr) {
        let Some(session) = self.sessions.get(&peer) else {
            return;
        };
        let request = match step_request(session) {
            Ok(r) => r,
            Err(e) => {
                let step = session.step.name();
                self.fail(peer, format!("{step} cannot be encoded: {e}"));
                return;
            }
        };
        match self.endpoint.request(now, peer, request) {
            Ok(id) => {
                self.by_request.insert(id, peer);
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.request = Some(id);
                }
            }
            Err(e) => {
                let step = session.step.name();
                self.fail(peer, format!("{step} could not be sent: {e}"));
            }
        }
    }

    fn on_response(&mut self, now: Instant, id: RequestId, response: Response) {
        let Some(peer) = self.by_request.remove(&id) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        session.request = None;
        let step = session.step;
        match step {
            // A client without Bootstrap-Discover (LwM2M 1.0) keeps its
            // bootstrap account in instance 0 by convention.
            Step::Discover => {
                let links = if response.code == Code::CONTENT {
                    Link::parse_all(&response.payload).unwrap_or_default()
                } else {
                    Vec::new()
                };
                let bootstrap_ids = if links.is_empty() {
                    vec![0]
                } else {
                    bootstrap_accounts(&links)
                };
                session.security_instance = (0..=u16::MAX)
                    .find(|id| !bootstrap_ids.contains(id))
                    .unwrap_or(u16::MAX);
                session.format.get_or_insert(write_format(&links));
            }
            Step::WriteSecurity | Step::WriteServer
                if !session.stepped_down
                    && matches!(
                        response.code,
                        Code::BAD_REQUEST | Code::UNSUPPORTED_CONTENT_FORMAT
                    ) =>
            {
                session.stepped_down = true;
                session.format = Some(match session.format {
                    Some(ContentFormat::Tlv) => ContentFormat::SenmlJson,
                    _ => ContentFormat::Tlv,
                });
                self.send_step(now, peer);
                return;
            }
            // Deleting what is not there is fine (4.04 from some clients).
            Step::DeleteSecurity | Step::DeleteServer
                if response.code.is_success() || response.code == Code::NOT_FOUND => {}
            _ if response.code.is_success() => {}
            _ => {
                let text = String::from_utf8_lossy(&response.payload).into_owned();
                let reason = format!("{} answered {}{}", step.name(), response.code, diag(&text));
                self.fail(peer, reason);
                return;
            }
        }
        match step.next() {
            Some(next) => {
                session.step = next;
                self.send_step(now, peer);
            }
            None => {
                if let Some(done) = self.sessions.remove(&peer) {
                    self.outputs.push_back(Output::Bootstrapped {
                        endpoint: done.endpoint,
                        peer,
                        server_uri: done.account.server_uri.clone(),
                    });
                }
            }
        }
    }

    fn fail(&mut self, peer: SocketAddr, reason: String) {
        if let Some(s) = self.sessions.remove(&peer) {
            if let Some(id) = s.request {
                self.by_request.remove(&id);
            }
            self.outputs.push_back(Output::Failed {
                endpoint: s.endpoint,
                peer,
                reason,
            });
        }
    }
}

fn diag(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

/// The request of a session's current step.
fn step_request(s: &Session) -> Result<Request, content::ContentError> {
    let format = s.format.unwrap_or(ContentFormat::Tlv);
    let write =
        |object: u16, instance: u16, values: Vec<_>| -> Result<Request, content::ContentError> {
            let base =
                crate::path::Path::new(&[object, instance]).unwrap_or(crate::path::Path::ROOT);
            let body = content::encode(format, base, &values)?;
            Ok(Request::put(&format!("/{object}/{instance}")).with_payload(format.number(), body))
        };
    Ok(match s.step {
        Step::Discover => Request::get("/0").with_accept(content_format::LINK_FORMAT),
        Step::DeleteSecurity => Request::delete("/0"),
        Step::DeleteServer => Request::delete("/1"),
        Step::WriteSecurity => write(
            0,
            s.security_instance,
            s.account.security_values(s.security_instance),
        )?,
        Step::WriteServer => write(1, 0, s.account.server_values())?,
        Step::Finish => Request::post("/bs"),
    })
}

/// The Security instances a Bootstrap-Discover of `/0` lists without an
/// `ssid`: bootstrap-server accounts (LwM2M 1.1 §5.2.7.1).
fn bootstrap_accounts(links: &[Link]) -> Vec<u16> {
    links
        .iter()
        .filter(|l| l.param("ssid").is_none())
        .filter_map(|l| match l.path()?.ids() {
            [0, instance] => Some(*instance),
            _ => None,
        })
        .collect()
}

/// SenML JSON unless Discover's `</>` says the client speaks LwM2M 1.0
/// (or there was no Discover answer): then TLV, the 1.0 format.
fn write_format(links: &[Link]) -> ContentFormat {
    let version = links
        .iter()
        .find(|l| l.target == "/")
        .and_then(|l| l.param("lwm2m").or(l.param("lwm2mv")));
    match version {
        Some(v) if !v.starts_with("1.0") => ContentFormat::SenmlJson,
        _ => ContentFormat::Tlv,
    }
}

#[cfg(test)]
mod tests;
