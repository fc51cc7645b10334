//! The LwM2M server core, sans-IO: a CoAP [`Endpoint`] for the wire, the
//! [`RegistrationTable`] for who is there, and the commands in flight. It is
//! fed datagrams, commands and instants; it hands out datagrams, uplinks,
//! command outcomes and its next deadline. The adapter moves bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogate_coap::{
    Code, Endpoint, EndpointConfig, Event, IncomingRequest, Method, RequestError, RequestId,
    Response, Transmit,
};
use ferrogate_sdk::time::saturating_add;
use ferrogate_sdk::{
    Command, CommandError, DeviceEvent, DeviceForgotten, DeviceMeta, DeviceOwners, DeviceState,
    DeviceStatus, ErrorCode, Outcome, PointError, PointErrorKind, PointMeta, Reading, Telemetry,
    Timestamp, Uplink, Value,
};

use crate::content::{self, ContentFormat, PathValue};
use crate::operations::{self, ClientView, Plan, Planned, Step};
use crate::path::{Path, PathPattern};
use crate::registration::{
    Caps, DEFAULT_FORGET_AFTER, ReRegistration, RegisterRequest, Registration, RegistrationError,
    RegistrationTable, Security, UpdateRequest, Version,
};
use crate::registry::{ObjectRegistry, PointNaming};
use ferrogate_dtls::{CredentialStore, PskCredential};

/// How the server maps clients to the gateway's model.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub naming: PointNaming,
    /// Paths observed on every client that has them, on registration.
    pub auto_observe: Vec<PathPattern>,
    /// Prepended to the endpoint name to make the device name.
    pub device_prefix: String,
    /// How long a queue-mode client is reachable after it was heard from.
    pub awake_window: Duration,
    /// Who may take over an endpoint registered from another address.
    pub re_registration: ReRegistration,
    /// How long an ended registration is remembered before its device is
    /// forgotten.
    pub forget_after: Duration,
    /// How long a Composite-Read (FETCH) may go unanswered before the
    /// client is taken for one without composite operations.
    pub composite_wait: Duration,
    /// Object instances one registration may announce; more is refused.
    pub max_instances: usize,
    /// Observations of one client at once (automatic and by command).
    pub max_observations: usize,
    /// Registrations in total and per source network.
    pub caps: Caps,
    /// The CoAP engine; NSTART is 1 (one unacknowledged request per
    /// client, RFC 7252 §4.7) unless set otherwise.
    pub coap: EndpointConfig,
}

/// Object instances one registration may announce by default.
pub const DEFAULT_MAX_INSTANCES: usize = 64;
/// Observations of one client by default.
pub const DEFAULT_MAX_OBSERVATIONS: usize = 64;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            naming: PointNaming::Registry,
            auto_observe: Vec::new(),
            device_prefix: String::new(),
            awake_window: Duration::from_secs(93),
            re_registration: ReRegistration::default(),
            forget_after: DEFAULT_FORGET_AFTER,
            composite_wait: DEFAULT_COMPOSITE_WAIT,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_observations: DEFAULT_MAX_OBSERVATIONS,
            caps: Caps::default(),
            coap: EndpointConfig {
                nstart: 1,
                ..EndpointConfig::default()
            },
        }
    }
}

/// How long a Composite-Read may go unanswered by default: Wakaama answers a
/// FETCH with an empty ACK and nothing after it.
pub const DEFAULT_COMPOSITE_WAIT: Duration = Duration::from_secs(1);

/// A command with the key the caller answers it by.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: u64,
    pub command: Command,
    pub deadline: Instant,
}

/// What the server hands out besides datagrams.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Uplink(Uplink),
    Completed {
        key: u64,
        outcome: Outcome,
    },
    /// A request from the network was refused, for this reason (a short
    /// snake_case word the adapter counts: `bad_name`, `bad_register`).
    Refused {
        reason: &'static str,
    },
}

/// A command being executed: its requests and what they gathered.
struct Running {
    job: Job,
    endpoint: Arc<str>,
    requests: Vec<RequestId>,
    values: BTreeMap<String, Value>,
    error: Option<CommandError>,
}

/// Why we sent a request.
#[derive(Debug, Clone)]
enum Purpose {
    /// An automatic or command-made observation; values become telemetry.
    Observation,
    /// Part of a command.
    Job(u64),
}

struct Sent {
    endpoint: Arc<str>,
    purpose: Purpose,
    what: Sending,
}

/// What was sent: an observation is kept small (there is one per observed
/// resource of every client); a command's request is kept whole.
enum Sending {
    Observation {
        path: Path,
        accept: Option<ContentFormat>,
    },
    Request(Box<Planned>),
}

impl Sending {
    fn new(planned: Planned, purpose: &Purpose) -> Sending {
        match (purpose, &planned.step) {
            (Purpose::Observation, Step::Read { path }) if planned.observe => {
                Sending::Observation {
                    path: *path,
                    accept: planned.accept,
                }
            }
            _ => Sending::Request(Box::new(planned)),
        }
    }

    fn planned(&self) -> Planned {
        match self {
            Sending::Observation { path, accept } => observe_request(*path, *accept),
            Sending::Request(p) => (**p).clone(),
        }
    }
}

fn observe_request(path: Path, accept: Option<ContentFormat>) -> Planned {
    let mut request = ferrogate_coap::Request::get(&path.to_string());
    request.accept = accept.map(ContentFormat::number);
    Planned {
        request,
        step: Step::Read { path },
        observe: true,
        accept,
    }
}

/// An established (or registering) observation of one client.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Observation {
    path: Path,
    id: RequestId,
}

pub struct Lwm2mServer {
    coap: Endpoint,
    table: RegistrationTable<Job>,
    registry: Arc<ObjectRegistry>,
    config: ServerConfig,
    sent: HashMap<RequestId, Sent>,
    running: HashMap<u64, Running>,
    deadlines: BTreeSet<(Instant, u64)>,
    observations: HashMap<Arc<str>, Vec<Observation>>,
    formats: HashMap<Arc<str>, ContentFormat>,
    /// Clients found to lack composite operations: their reads are GETs.
    no_composite: HashSet<Arc<str>>,
    /// Clients registered but not yet heard from again at their address
    /// (an Update, a Send, a response): the Register's source may be
    /// spoofed, so until then the server sends them at most one
    /// automatic request.
    unconfirmed: HashSet<Arc<str>>,
    /// When each Composite-Read in flight is given up for GETs.
    composite_waits: BTreeSet<(Instant, RequestId)>,
    owners: DeviceOwners,
    /// Point lists by object instances: a fleet of one kind of client
    /// shares one list in its devices' meta.
    point_lists: HashMap<Vec<Path>, Arc<[PointMeta]>>,
    outputs: VecDeque<Output>,
    /// Who has DTLS credentials: those endpoints are refused over NoSec.
    credentials: Option<Arc<dyn CredentialStore>>,
    /// The security of the datagram being handled (requests are handed
    /// out by the engine while it handles the datagram they came in).
    arriving: Security,
    /// The endpoint the arriving datagram's credential names (DTLS only).
    arriving_endpoint: Option<Arc<str>>,
}

/// Distinct object-instance sets whose point lists are kept for sharing;
/// past it the cache starts over (a fleet has a handful).
const POINT_LISTS_KEPT: usize = 256;

impl Lwm2mServer {
    pub fn new(config: ServerConfig, registry: Arc<ObjectRegistry>) -> Self {
        Lwm2mServer {
            coap: Endpoint::new(config.coap.clone()),
            table: RegistrationTable::new(config.awake_window)
                .with_policy(config.re_registration, config.forget_after)
                .with_caps(config.caps),
            registry,
            config,
            sent: HashMap::new(),
            running: HashMap::new(),
            deadlines: BTreeSet::new(),
            observations: HashMap::new(),
            formats: HashMap::new(),
            no_composite: HashSet::new(),
            unconfirmed: HashSet::new(),
            owners: DeviceOwners::default(),
            composite_waits: BTreeSet::new(),
            point_lists: HashMap::new(),
            outputs: VecDeque::new(),
            credentials: None,
            arriving: Security::NoSec,
            arriving_endpoint: None,
        }
    }

    /// The DTLS credentials: an endpoint that has one registers, updates
    /// and sends only over DTLS with it.
    pub fn with_credentials(mut self, credentials: Arc<dyn CredentialStore>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The security mode of the client registered from `peer`.
    pub fn security_of(&self, peer: SocketAddr) -> Option<&Security> {
        self.table.by_peer(peer).map(|r| &r.security)
    }

    /// The device names configured for other adapters: an endpoint may
    /// not take one.
    pub fn with_owners(mut self, owners: DeviceOwners) -> Self {
        self.owners = owners;
        self
    }

    pub fn registrations(&self) -> &RegistrationTable<Job> {
        &self.table
    }

    /// The device name of an endpoint.
    pub fn device_name(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.config.device_prefix)
    }

    fn endpoint_of<'a>(&self, device: &'a str) -> Option<&'a str> {
        device.strip_prefix(self.config.device_prefix.as_str())
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.coap.poll_transmit()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.coap.poll_timeout(),
            self.table.poll_timeout(),
            self.deadlines.first().map(|(t, _)| *t),
            self.composite_waits.first().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A datagram arrived from `peer` on the plain listener.
    pub fn handle(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        self.coap.handle(now, peer, datagram);
        self.drain_events(now);
    }

    /// A datagram arrived from `peer` over a DTLS session in which it
    /// proved `credential`.
    pub fn handle_dtls(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        credential: &PskCredential,
        datagram: &[u8],
    ) {
        self.arriving = Security::Psk {
            identity: Arc::from(credential.identity_text()),
        };
        self.arriving_endpoint = Some(credential.endpoint.clone());
        self.coap.handle(now, peer, datagram);
        self.drain_events(now);
        self.arriving = Security::NoSec;
        self.arriving_endpoint = None;
    }

    /// Time passed: retransmissions, lifetimes, held and running command
    /// deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.coap.handle_timeout(now);
        self.drain_events(now);
        for (reg, held) in self.table.expire(now) {
            tracing::info!(endpoint = %reg.endpoint, "LwM2M registration lifetime expired");
            self.client_gone(now, &reg, held, "lifetime expired", "expired");
        }
        while let Some(&(at, id)) = self.composite_waits.first() {
            if at > now {
                break;
            }
            self.composite_waits.remove(&(at, id));
            if self.sent.contains_key(&id) {
                self.composite_fallback(now, id, "no answer");
            }
        }
        for endpoint in self.table.forget(now) {
            let device = self.device_name(&endpoint);
            tracing::debug!(device = %device, "LwM2M client forgotten");
            self.outputs
                .push_back(Output::Uplink(Uplink::Forgotten(DeviceForgotten {
                    device,
                })));
        }
        for (endpoint, job) in self.table.expire_held(now) {
            self.complete(
                job.key,
                Err(CommandError::new(
                    ErrorCode::Timeout,
                    format!("queue-mode client `{endpoint}` did not wake up before the deadline"),
                )),
            );
        }
        let due: Vec<(Instant, u64)> = self
            .deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied()
            .collect();
        for (at, key) in due {
            self.deadlines.remove(&(at, key));
            if let Some(run) = self.running.remove(&key) {
                for id in &run.requests {
                    self.sent.remove(id);
                    let _ = self.coap.cancel(now, *id);
                }
                self.outputs.push_back(Output::Completed {
                    key,
                    outcome: Err(CommandError::new(
                        ErrorCode::Timeout,
                        format!(
                            "client `{}` did not answer before the deadline",
                            run.endpoint
                        ),
                    )),
                });
            }
        }
    }

    /// Execute a command: now if the client is reachable, or when it next
    /// wakes up (queue mode), within the command's deadline.
    pub fn command(&mut self, now: Instant, job: Job) {
        let Some(endpoint) = self.endpoint_of(&job.command.device).map(str::to_string) else {
            let msg = format!("`{}` is not an LwM2M device", job.command.device);
            return self.complete(
                job.key,
                Err(CommandError::new(ErrorCode::UnknownDevice, msg)),
            );
        };
        if self.table.by_endpoint(&endpoint).is_none() {
            let msg = format!("LwM2M client `{endpoint}` is not registered");
            return self.complete(
                job.key,
                Err(CommandError::new(ErrorCode::DeviceOffline, msg)),
            );
        }
        if job.deadline <= now {
            return self.complete(
                job.key,
                Err(CommandError::new(
                    ErrorCode::Expired,
                    "the deadline passed before the command was sent",
                )),
            );
        }
        if self.table.is_reachable(now, &endpoint) {
            self.start(now, &endpoint, job);
        } else {
            tracing::debug!(endpoint = %endpoint, command = %job.command.id, "holding command for sleeping queue-mode client");
            let deadline = job.deadline;
            if let Err(job) = self.table.hold(&endpoint, job, deadline) {
                self.complete(
                    job.key,
                    Err(CommandError::new(
                        ErrorCode::DeviceOffline,
                        "not registered",
                    )),
                );
            }
        }
    }

    fn view(&self, reg: &Registration) -> ClientView<'_> {
        ClientView {
            registry: &self.registry,
            naming: self.config.naming,
            format: self.format_for(reg),
            composite: reg.version >= Version::V1_1 && !self.no_composite.contains(&reg.endpoint),
            instances: reg.objects.paths(),
        }
    }

    /// The format to read in: what the client announced or was found to
    /// accept, else SenML CBOR for 1.1+ and TLV for 1.0.
    fn format_for(&self, reg: &Registration) -> ContentFormat {
        if let Some(f) = self.formats.get(&reg.endpoint) {
            return *f;
        }
        let announced = reg
            .objects
            .content_format
            .and_then(ContentFormat::from_number)
            .filter(|f| f.is_multi_value());
        match (announced, reg.version) {
            (Some(f), _) => f,
            (None, Version::V1_0) => ContentFormat::Tlv,
            (None, _) => ContentFormat::SenmlCbor,
        }
    }

    fn start(&mut self, now: Instant, endpoint: &str, job: Job) {
        let Some(reg) = self.table.by_endpoint(endpoint) else {
            return self.complete(
                job.key,
                Err(CommandError::new(
                    ErrorCode::DeviceOffline,
                    "not registered",
                )),
            );
        };
        let peer = reg.peer;
        let endpoint = reg.endpoint.clone();
        let plan = operations::plan(&job.command.op, &self.view(reg));
        let planned = match plan {
            Err(e) => return self.complete(job.key, Err(e)),
            Ok(Plan::CancelObserve(path)) => {
                let outcome = self.cancel_observation(now, &endpoint, path);
                return self.complete(job.key, outcome);
            }
            Ok(Plan::Requests(r)) => r,
        };
        let key = job.key;
        self.deadlines.insert((job.deadline, key));
        self.running.insert(
            key,
            Running {
                job,
                endpoint: endpoint.clone(),
                requests: Vec::new(),
                values: BTreeMap::new(),
                error: None,
            },
        );
        for p in planned {
            self.send(now, peer, &endpoint, p, Purpose::Job(key));
        }
        self.finish_if_done(key);
    }

    fn send(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        endpoint: &Arc<str>,
        planned: Planned,
        purpose: Purpose,
    ) {
        if planned.observe
            && let Step::Read { path } = planned.step
        {
            let list = self.observations.get(endpoint.as_ref());
            let count = list.map_or(0, Vec::len);
            let again = list.is_some_and(|l| l.iter().any(|o| o.path == path));
            if !again && count >= self.config.max_observations {
                if let Purpose::Job(key) = purpose {
                    self.fail_part(
                        key,
                        CommandError::new(
                            ErrorCode::Busy,
                            format!(
                                "`{endpoint}` already has {count} observations, the most allowed (max_observations)"
                            ),
                        ),
                    );
                }
                return;
            }
        }
        let mut request = planned.request.clone();
        // a client with an alternate root path (`</lwm2m>;rt="oma.lwm2m"`)
        // serves its objects below it
        if let Some(root) = self
            .table
            .by_endpoint(endpoint)
            .and_then(|r| r.objects.root.as_deref())
        {
            let mut path: Vec<String> = root
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            path.append(&mut request.path);
            request.path = path;
        }
        let result = if planned.observe {
            self.coap.observe(now, peer, request)
        } else {
            self.coap.request(now, peer, request)
        };
        match result {
            Ok(id) => {
                if planned.step == Step::Composite {
                    self.composite_waits
                        .insert((saturating_add(now, self.config.composite_wait), id));
                }
                if planned.observe
                    && let Step::Read { path } = planned.step
                {
                    let list = self.observations.entry(endpoint.clone()).or_default();
                    list.retain(|o| o.path != path);
                    list.push(Observation { path, id });
                    // most clients have one or two: no spare capacity
                    list.shrink_to_fit();
                }
                if let Purpose::Job(key) = purpose
                    && let Some(run) = self.running.get_mut(&key)
                {
                    run.requests.push(id);
                }
                let what = Sending::new(planned, &purpose);
                self.sent.insert(
                    id,
                    Sent {
                        endpoint: endpoint.clone(),
                        purpose,
                        what,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(endpoint = %endpoint, error = %e, "cannot send LwM2M request");
                if let Purpose::Job(key) = purpose {
                    self.fail_part(key, CommandError::new(ErrorCode::Busy, e.to_string()));
                }
            }
        }
    }

    fn cancel_observation(&mut self, now: Instant, endpoint: &str, path: Path) -> Outcome {
        let found = self.observations.get_mut(endpoint).and_then(|list| {
            list.iter()
                .position(|o| o.path == path)
                .map(|pos| list.remove(pos))
        });
        let Some(obs) = found else {
            return Err(CommandError::new(
                ErrorCode::BadRequest,
                format!("{path} is not observed"),
            ));
        };
        self.sent.remove(&obs.id);
        let _ = self.coap.cancel(now, obs.id);
        Ok(BTreeMap::new())
    }

    fn complete(&mut self, key: u64, outcome: Outcome) {
        self.outputs.push_back(Output::Completed { key, outcome });
    }

    fn fail_part(&mut self, key: u64, error: CommandError) {
        if let Some(run) = self.running.get_mut(&key) {
            run.error.get_or_insert(error);
        }
        self.finish_if_done(key);
    }

    /// Complete a command once none of its requests is outstanding.
    fn finish_if_done(&mut self, key: u64) {
        let Some(run) = self.running.get(&key) else {
            return;
        };
        if run
            .requests
            .iter()
            .any(|id| self.sent.contains_key(id) && !self.is_established_observation(id))
        {
            return;
        }
        if let Some(run) = self.running.remove(&key) {
            self.deadlines.remove(&(run.job.deadline, key));
            let outcome = match run.error {
                Some(e) => Err(e),
                None => Ok(run.values),
            };
            self.complete(key, outcome);
        }
    }

    /// An observation whose first answer came stays in `sent` for its
    /// notifications but no longer holds its command open.
    fn is_established_observation(&self, id: &RequestId) -> bool {
        self.sent
            .get(id)
            .is_some_and(|s| matches!(s.purpose, Purpose::Observation))
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.coap.poll_event() {
            match event {
                Event::Request(incoming) => self.on_request(now, incoming),
                Event::Response {
                    id,
                    peer: _,
                    response,
                } => self.on_response(now, id, response, true),
                Event::Notification {
                    id,
                    peer: _,
                    response,
                } => self.on_response(now, id, response, false),
                Event::Failed { id, peer: _, error } => self.on_failed(id, error),
                Event::RelationEnded { .. } => {}
            }
        }
    }

    // ------------------------------------------------------------ requests

    fn on_request(&mut self, now: Instant, incoming: IncomingRequest) {
        let req = &incoming.request;
        let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
        let response = match (req.method, path.as_slice()) {
            (Method::Post, ["rd"]) => self.on_register(now, &incoming),
            (Method::Post, ["rd", id]) => self.on_update(now, &incoming, &format!("rd/{id}")),
            (Method::Delete, ["rd", id]) => self.on_deregister(now, &incoming, &format!("rd/{id}")),
            (Method::Post, ["dp"]) => self.on_send(now, &incoming),
            (_, ["rd"] | ["rd", _] | ["dp"]) => Response::new(Code::METHOD_NOT_ALLOWED),
            _ => Response::new(Code::NOT_FOUND),
        };
        if let Err(e) = self.coap.respond(now, incoming.handle, response) {
            tracing::debug!(error = %e, "could not answer an LwM2M request");
        }
    }

    fn on_register(&mut self, now: Instant, incoming: &IncomingRequest) -> Response {
        let req = &incoming.request;
        let parsed =
            match RegisterRequest::parse(req.query.iter().map(String::as_str), &req.payload) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(peer = %incoming.peer, error = %e, "refused LwM2M registration");
                    let reason = match e {
                        RegistrationError::BadEndpoint(_) => "bad_name",
                        _ => "bad_register",
                    };
                    self.outputs.push_back(Output::Refused { reason });
                    return Response::new(Code::BAD_REQUEST).with_diagnostic(e.to_string());
                }
            };
        if let Some(refused) = self.too_many_instances(incoming, &parsed.objects) {
            return refused;
        }
        if let Some(refused) = self.unbound(incoming, &parsed.endpoint) {
            return refused;
        }
        let device = self.device_name(&parsed.endpoint);
        if let Some(owner) = self.owners.owner(&device) {
            tracing::warn!(peer = %incoming.peer, device = %device, owner = %owner, "refused LwM2M registration: the device name belongs to another adapter");
            self.outputs.push_back(Output::Refused {
                reason: "name_owned",
            });
            return Response::new(Code::FORBIDDEN)
                .with_diagnostic(format!("device `{device}` belongs to adapter `{owner}`"));
        }
        let registered =
            match self
                .table
                .register(now, incoming.peer, self.arriving.clone(), parsed)
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(peer = %incoming.peer, error = %e, "refused LwM2M registration");
                    let (reason, code) = match e {
                        RegistrationError::Full(_) => {
                            ("too_many_registrations", Code::SERVICE_UNAVAILABLE)
                        }
                        RegistrationError::PrefixFull(_) => {
                            ("too_many_from_network", Code::SERVICE_UNAVAILABLE)
                        }
                        _ => ("taken", Code::FORBIDDEN),
                    };
                    self.outputs.push_back(Output::Refused { reason });
                    return Response::new(code).with_diagnostic(e.to_string());
                }
            };
        if let Some(old) = &registered.replaced {
            self.drop_observations(now, &old.endpoint);
            self.formats.remove(&old.endpoint);
        }
        let Some(reg) = self.table.by_location(&registered.location).cloned() else {
            return Response::new(Code::INTERNAL_SERVER_ERROR);
        };
        tracing::info!(endpoint = %reg.endpoint, peer = %reg.peer, version = reg.version.as_str(), security = reg.security.mode(), "LwM2M client registered");
        self.unconfirmed.insert(reg.endpoint.clone());
        let device = self.device_name(&reg.endpoint);
        self.status(&device, DeviceState::Online, "registered");
        let moved_from = registered
            .replaced
            .as_ref()
            .map(|old| old.peer)
            .filter(|p| *p != reg.peer);
        self.event(&device, "registered", &reg, moved_from);
        self.meta(&reg);
        self.auto_observe(now, &reg);
        for job in registered.released {
            self.start(now, &reg.endpoint, job);
        }
        let mut response = Response::new(Code::CREATED);
        response.location_path = registered.location.split('/').map(str::to_string).collect();
        response
    }

    fn on_update(&mut self, now: Instant, incoming: &IncomingRequest, location: &str) -> Response {
        let req = &incoming.request;
        let parsed = match UpdateRequest::parse(req.query.iter().map(String::as_str), &req.payload)
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(peer = %incoming.peer, error = %e, "refused LwM2M update");
                self.outputs.push_back(Output::Refused {
                    reason: "bad_update",
                });
                return Response::new(Code::BAD_REQUEST).with_diagnostic(e.to_string());
            }
        };
        if let Some(objects) = &parsed.objects
            && let Some(refused) = self.too_many_instances(incoming, objects)
        {
            return refused;
        }
        if let Some(refused) = self.other_security(incoming, location) {
            return refused;
        }
        let updated = match self.table.update(now, location, incoming.peer, parsed) {
            Ok(u) => u,
            Err(e) => return self.refused_at_location(incoming, e),
        };
        let Some(reg) = self.table.by_location(location).cloned() else {
            return Response::new(Code::INTERNAL_SERVER_ERROR);
        };
        let device = self.device_name(&reg.endpoint);
        self.status(&device, DeviceState::Online, "updated");
        self.event(&device, "updated", &reg, None);
        if updated.objects_changed {
            self.meta(&reg);
        }
        if updated.objects_changed || self.unconfirmed.contains(&reg.endpoint) {
            self.unconfirmed.remove(&reg.endpoint);
            self.auto_observe(now, &reg);
        }
        for job in updated.released {
            self.start(now, &reg.endpoint, job);
        }
        Response::new(Code::CHANGED)
    }

    fn on_deregister(
        &mut self,
        now: Instant,
        incoming: &IncomingRequest,
        location: &str,
    ) -> Response {
        if let Some(refused) = self.other_security(incoming, location) {
            return refused;
        }
        match self.table.deregister(now, location, incoming.peer) {
            Ok((reg, held)) => {
                tracing::info!(endpoint = %reg.endpoint, "LwM2M client de-registered");
                self.client_gone(now, &reg, held, "deregistered", "deregistered");
                Response::new(Code::DELETED)
            }
            Err(e) => self.refused_at_location(incoming, e),
        }
    }

    /// An Update or De-register the table refused: 4.04 for an unknown
    /// location (the client registers again, Core 1.1 §6.2.2), 4.03 from
    /// another address than the registration's (a NAT-rebound client also
    /// registers again; someone else's guess goes nowhere).
    fn refused_at_location(
        &mut self,
        incoming: &IncomingRequest,
        e: RegistrationError,
    ) -> Response {
        if let RegistrationError::WrongSource(_) = e {
            tracing::warn!(peer = %incoming.peer, error = %e, "refused LwM2M request from another address");
            self.outputs.push_back(Output::Refused {
                reason: "wrong_source",
            });
            return Response::new(Code::FORBIDDEN).with_diagnostic(e.to_string());
        }
        Response::new(Code::NOT_FOUND).with_diagnostic(e.to_string())
    }

    /// A Register whose endpoint name is not the one its DTLS credential
    /// names, or a plain Register for an endpoint that has credentials:
    /// 4.03, counted.
    fn unbound(&mut self, incoming: &IncomingRequest, endpoint: &str) -> Option<Response> {
        let (reason, why) = match &self.arriving_endpoint {
            Some(bound) if &**bound != endpoint => (
                "credential_mismatch",
                format!("the DTLS credential belongs to endpoint `{bound}`"),
            ),
            Some(_) => return None,
            None if self
                .credentials
                .as_ref()
                .is_some_and(|c| c.is_protected(endpoint)) =>
            {
                (
                    "needs_dtls",
                    format!("endpoint `{endpoint}` registers over DTLS only"),
                )
            }
            None => return None,
        };
        tracing::warn!(peer = %incoming.peer, endpoint = %endpoint, reason, "refused LwM2M registration");
        self.outputs.push_back(Output::Refused { reason });
        Some(Response::new(Code::FORBIDDEN).with_diagnostic(why))
    }

    /// An Update or De-register that did not come with the security the
    /// registration was made with (a plain datagram from a DTLS client's
    /// address, another credential): 4.03, counted.
    fn other_security(&mut self, incoming: &IncomingRequest, location: &str) -> Option<Response> {
        let reg = self.table.by_location(location)?;
        if reg.security == self.arriving {
            return None;
        }
        tracing::warn!(peer = %incoming.peer, endpoint = %reg.endpoint, registered = reg.security.mode(), arrived = self.arriving.mode(), "refused LwM2M request with another security than its registration");
        self.outputs.push_back(Output::Refused {
            reason: "wrong_security",
        });
        Some(
            Response::new(Code::FORBIDDEN)
                .with_diagnostic("not the security this client registered with"),
        )
    }

    /// A Register or Update announcing more object instances than
    /// `max_instances`: one such datagram made the server send hundreds.
    fn too_many_instances(
        &mut self,
        incoming: &IncomingRequest,
        objects: &crate::registration::ObjectList,
    ) -> Option<Response> {
        let n = objects.paths().len();
        if n <= self.config.max_instances {
            return None;
        }
        tracing::warn!(peer = %incoming.peer, instances = n, max = self.config.max_instances, "refused LwM2M registration: too many object instances");
        self.outputs.push_back(Output::Refused {
            reason: "too_many_instances",
        });
        Some(Response::new(Code::BAD_REQUEST).with_diagnostic(format!(
            "{n} object instances announced, at most {} accepted",
            self.config.max_instances
        )))
    }

    /// The client was heard from at its registered address: what waited
    /// for that confirmation is sent.
    fn confirm(&mut self, now: Instant, endpoint: &Arc<str>) {
        if !self.unconfirmed.remove(endpoint) {
            return;
        }
        if let Some(reg) = self.table.by_endpoint(endpoint).cloned() {
            self.auto_observe(now, &reg);
        }
    }

    fn on_send(&mut self, now: Instant, incoming: &IncomingRequest) -> Response {
        let Some(reg) = self
            .table
            .by_peer(incoming.peer)
            .filter(|r| r.security == self.arriving)
            .cloned()
        else {
            return Response::new(Code::NOT_FOUND)
                .with_diagnostic("Send from a client that is not registered from this address");
        };
        self.table.touch(now, &reg.endpoint);
        self.confirm(now, &reg.endpoint);
        let req = &incoming.request;
        let Some(format) = req
            .content_format
            .and_then(ContentFormat::from_number)
            .filter(|f| matches!(f, ContentFormat::SenmlJson | ContentFormat::SenmlCbor))
        else {
            return Response::new(Code::UNSUPPORTED_CONTENT_FORMAT)
                .with_diagnostic("Send carries SenML JSON (110) or SenML CBOR (112)");
        };
        match content::decode(format, Path::ROOT, &req.payload, &self.registry) {
            Ok(values) => {
                self.telemetry(&reg.endpoint, values);
                Response::new(Code::CHANGED)
            }
            Err(e) => {
                let device = self.device_name(&reg.endpoint);
                tracing::warn!(device = %device, error = %e, "undecodable LwM2M Send");
                self.decode_error_event(&device, "/dp", &e.to_string());
                Response::new(Code::BAD_REQUEST).with_diagnostic(e.to_string())
            }
        }
    }

    // ------------------------------------------------------------ responses

    fn on_response(&mut self, now: Instant, id: RequestId, response: Response, first: bool) {
        let Some(sent) = self.sent.get(&id) else {
            return;
        };
        let endpoint = sent.endpoint.clone();
        let purpose = sent.purpose.clone();
        self.table.touch(now, &endpoint);
        if self.table.by_endpoint(&endpoint).is_none() {
            self.sent.remove(&id);
            return;
        }
        self.confirm(now, &endpoint);
        let Some(sent) = self.sent.get(&id) else {
            return;
        };
        let composite = matches!(&sent.what, Sending::Request(p) if p.step == Step::Composite);
        if composite
            && matches!(
                response.code,
                Code::BAD_REQUEST
                    | Code::NOT_FOUND
                    | Code::METHOD_NOT_ALLOWED
                    | Code::NOT_IMPLEMENTED
            )
        {
            return self.composite_fallback(now, id, "refused");
        }
        if response.code == Code::NOT_ACCEPTABLE {
            let planned = sent.what.planned();
            if let Some(next) = planned.accept.and_then(operations::fallback) {
                return self.step_down(now, id, &endpoint, purpose, planned, next);
            }
        }
        match purpose {
            Purpose::Observation => {
                let observed = match &sent.what {
                    Sending::Observation { path, accept } => Some((*path, *accept)),
                    Sending::Request(p) => match p.step {
                        Step::Read { path } => Some((path, p.accept)),
                        _ => None,
                    },
                };
                if !response.code.is_success() || (first && response.observe.is_none()) {
                    self.sent.remove(&id);
                    self.forget_observation(&endpoint, id);
                    if !response.code.is_success() {
                        tracing::warn!(endpoint = %endpoint, code = %response.code, "observation refused");
                    }
                }
                if response.code.is_success()
                    && let Some((path, accept)) = observed
                {
                    self.observed_values(&endpoint, path, accept, &response);
                }
            }
            Purpose::Job(key) => {
                let planned = sent.what.planned();
                let Some(reg) = self.table.by_endpoint(&endpoint) else {
                    return;
                };
                let part = if response.code.is_success() {
                    operations::outcome(&planned.step, &response, &self.view(reg))
                } else {
                    Err(operations::code_error(response.code, &planned.step))
                };
                if planned.observe && response.code.is_success() && response.observe.is_some() {
                    // the observation outlives its command: notifications
                    // become telemetry
                    if let Some(s) = self.sent.get_mut(&id) {
                        s.purpose = Purpose::Observation;
                        s.what = Sending::new(planned, &Purpose::Observation);
                    }
                } else {
                    self.sent.remove(&id);
                    if planned.observe {
                        self.forget_observation(&endpoint, id);
                    }
                }
                if let Some(run) = self.running.get_mut(&key) {
                    match part {
                        Ok(values) => run.values.extend(values),
                        Err(e) => {
                            run.error.get_or_insert(e);
                        }
                    }
                }
                self.finish_if_done(key);
            }
        }
    }

    /// 4.06: the client does not speak the format asked for; ask again in
    /// the next one and remember it for this client.
    fn step_down(
        &mut self,
        now: Instant,
        id: RequestId,
        endpoint: &Arc<str>,
        purpose: Purpose,
        planned: Planned,
        next: ContentFormat,
    ) {
        self.sent.remove(&id);
        self.forget_observation(endpoint, id);
        self.formats.insert(endpoint.clone(), next);
        if let Purpose::Job(key) = purpose
            && let Some(run) = self.running.get_mut(&key)
        {
            run.requests.retain(|r| *r != id);
        }
        let Some(reg) = self.table.by_endpoint(endpoint).cloned() else {
            return;
        };
        let mut retry = planned;
        retry.request.accept = Some(next.number());
        retry.accept = Some(next);
        if retry.step == Step::Composite {
            let paths = self.running_paths(&purpose, &reg);
            match content::encode_paths(next, &paths) {
                Ok(body) => retry.request = retry.request.with_payload(next.number(), body),
                // TLV cannot name paths: read them one by one
                Err(_) => {
                    if let Ok(Plan::Requests(plan)) = self.replan_reads(&paths, &reg, next) {
                        for p in plan {
                            self.send(now, reg.peer, endpoint, p, purpose.clone());
                        }
                    }
                    return;
                }
            }
        }
        self.send(now, reg.peer, endpoint, retry, purpose);
    }

    /// A Composite-Read the client refused or left unanswered: remember
    /// that it has no composite operations and read the same paths with
    /// one GET each.
    fn composite_fallback(&mut self, now: Instant, id: RequestId, why: &str) {
        let Some(sent) = self.sent.remove(&id) else {
            return;
        };
        let _ = self.coap.cancel(now, id);
        let endpoint = sent.endpoint;
        tracing::info!(endpoint = %endpoint, why, "LwM2M client has no Composite-Read; reading path by path");
        self.no_composite.insert(endpoint.clone());
        if let Purpose::Job(key) = sent.purpose
            && let Some(run) = self.running.get_mut(&key)
        {
            run.requests.retain(|r| *r != id);
        }
        let Some(reg) = self.table.by_endpoint(&endpoint).cloned() else {
            return;
        };
        let paths = self.running_paths(&sent.purpose, &reg);
        match self.replan_reads(&paths, &reg, self.format_for(&reg)) {
            Ok(Plan::Requests(plan)) => {
                for p in plan {
                    self.send(now, reg.peer, &endpoint, p, sent.purpose.clone());
                }
            }
            Ok(Plan::CancelObserve(_)) => {}
            Err(e) => {
                if let Purpose::Job(key) = sent.purpose {
                    self.fail_part(key, e);
                }
            }
        }
        if let Purpose::Job(key) = sent.purpose {
            self.finish_if_done(key);
        }
    }

    fn running_paths(&self, purpose: &Purpose, reg: &Registration) -> Vec<Path> {
        let Purpose::Job(key) = purpose else {
            return Vec::new();
        };
        let Some(run) = self.running.get(key) else {
            return Vec::new();
        };
        match &run.job.command.op {
            ferrogate_sdk::Operation::Read { points } if points.is_empty() => reg
                .objects
                .paths()
                .into_iter()
                .filter(|p| p.depth() == 2 && p.object() != Some(0))
                .collect(),
            ferrogate_sdk::Operation::Read { points } => points
                .iter()
                .filter_map(|p| operations::point_target(&self.registry, p).ok())
                .collect(),
            _ => Vec::new(),
        }
    }

    fn replan_reads(
        &self,
        paths: &[Path],
        reg: &Registration,
        format: ContentFormat,
    ) -> Result<Plan, CommandError> {
        let mut view = self.view(reg);
        view.format = format;
        view.composite = false;
        operations::plan(
            &ferrogate_sdk::Operation::Read {
                points: paths
                    .iter()
                    .map(|p| p.to_string().trim_start_matches('/').to_string())
                    .collect(),
            },
            &view,
        )
    }

    fn on_failed(&mut self, id: RequestId, error: RequestError) {
        let Some(sent) = self.sent.remove(&id) else {
            return;
        };
        self.forget_observation(&sent.endpoint, id);
        match sent.purpose {
            Purpose::Observation => {
                tracing::info!(endpoint = %sent.endpoint, error = %error, "observation ended");
            }
            Purpose::Job(key) => {
                let code = match error {
                    RequestError::Timeout => ErrorCode::Timeout,
                    _ => ErrorCode::DeviceException,
                };
                self.fail_part(key, CommandError::new(code, error.to_string()));
            }
        }
    }

    fn forget_observation(&mut self, endpoint: &str, id: RequestId) {
        if let Some(list) = self.observations.get_mut(endpoint) {
            list.retain(|o| o.id != id);
        }
    }

    // ------------------------------------------------------------ model

    fn observed_values(
        &mut self,
        endpoint: &str,
        path: Path,
        accept: Option<ContentFormat>,
        response: &Response,
    ) {
        let format = match operations::response_format(response, accept) {
            Ok(f) => f,
            Err(e) => {
                let device = self.device_name(endpoint);
                return self.decode_error_event(&device, &path.to_string(), &e.message);
            }
        };
        match content::decode(format, path, &response.payload, &self.registry) {
            Ok(values) => self.telemetry(endpoint, values),
            Err(e) => {
                let device = self.device_name(endpoint);
                tracing::warn!(device = %device, path = %path, error = %e, "undecodable notification");
                let point = self.registry.point_name(&path, self.config.naming);
                let ts = Timestamp::now();
                self.outputs
                    .push_back(Output::Uplink(Uplink::Telemetry(Telemetry {
                        device,
                        ts,
                        readings: vec![Reading::failed(
                            point,
                            PointError::new(PointErrorKind::Decode, e.to_string()),
                            ts,
                        )],
                    })));
            }
        }
    }

    fn telemetry(&mut self, endpoint: &str, values: Vec<PathValue>) {
        if values.is_empty() {
            return;
        }
        let ts = Timestamp::now();
        let readings = values
            .into_iter()
            .map(|v| {
                let at = match v.time {
                    // SenML: absolute when at least 2^28 s, else relative to now
                    Some(t) if t >= 268_435_456.0 => Timestamp((t * 1000.0) as u64),
                    Some(t) => Timestamp((ts.0 as f64 + t * 1000.0).max(0.0) as u64),
                    None => ts,
                };
                Reading::ok(
                    self.registry.point_name(&v.path, self.config.naming),
                    v.value.to_model(),
                    at,
                )
            })
            .collect();
        self.outputs
            .push_back(Output::Uplink(Uplink::Telemetry(Telemetry {
                device: self.device_name(endpoint),
                ts,
                readings,
            })));
    }

    fn decode_error_event(&mut self, device: &str, path: &str, message: &str) {
        self.outputs
            .push_back(Output::Uplink(Uplink::Event(DeviceEvent {
                device: device.to_string(),
                ts: Timestamp::now(),
                event: "decode_error".into(),
                data: BTreeMap::from([
                    ("path".to_string(), path.into()),
                    ("error".to_string(), message.into()),
                ]),
            })));
    }

    fn status(&mut self, device: &str, state: DeviceState, reason: &str) {
        self.outputs
            .push_back(Output::Uplink(Uplink::Status(DeviceStatus {
                device: device.to_string(),
                state,
                reason: Some(reason.to_string()),
                ts: Timestamp::now(),
            })));
    }

    fn event(
        &mut self,
        device: &str,
        event: &str,
        reg: &Registration,
        moved_from: Option<SocketAddr>,
    ) {
        let mut data = BTreeMap::from([
            ("endpoint".to_string(), reg.endpoint.to_string().into()),
            ("lifetime_s".to_string(), reg.lifetime.as_secs().into()),
            ("binding".to_string(), reg.binding.to_string().into()),
            ("lwm2m_version".to_string(), reg.version.as_str().into()),
            ("address".to_string(), reg.peer.to_string().into()),
            ("security".to_string(), reg.security.mode().into()),
        ]);
        if let Some(from) = moved_from {
            data.insert("moved_from".to_string(), from.to_string().into());
        }
        self.outputs
            .push_back(Output::Uplink(Uplink::Event(DeviceEvent {
                device: device.to_string(),
                ts: Timestamp::now(),
                event: event.to_string(),
                data,
            })));
    }

    fn meta(&mut self, reg: &Registration) {
        let instances: Vec<Path> = reg
            .objects
            .paths()
            .into_iter()
            .filter(|p| p.depth() == 2)
            .collect();
        let points = match self.point_lists.get(&instances) {
            Some(points) => points.clone(),
            None => {
                let points = self.point_list(&instances);
                if self.point_lists.len() >= POINT_LISTS_KEPT {
                    self.point_lists.clear();
                }
                self.point_lists.insert(instances, points.clone());
                points
            }
        };
        let objects: Vec<serde_json::Value> = reg
            .objects
            .entries
            .iter()
            .map(|(p, ver)| match ver {
                Some(v) => serde_json::json!({"path": p.to_string(), "ver": v}),
                None => serde_json::json!({"path": p.to_string()}),
            })
            .collect();
        let attributes = BTreeMap::from([
            (
                "lwm2m_endpoint".to_string(),
                reg.endpoint.to_string().into(),
            ),
            ("lwm2m_version".to_string(), reg.version.as_str().into()),
            ("binding".to_string(), reg.binding.to_string().into()),
            ("lifetime_s".to_string(), reg.lifetime.as_secs().into()),
            ("objects".to_string(), objects.into()),
            ("security".to_string(), reg.security.mode().into()),
        ]);
        self.outputs
            .push_back(Output::Uplink(Uplink::Meta(DeviceMeta {
                device: self.device_name(&reg.endpoint),
                points,
                operations: None,
                attributes,
            })));
    }

    /// The readable and writable resources of these object instances.
    fn point_list(&self, instances: &[Path]) -> Arc<[PointMeta]> {
        let mut points = Vec::new();
        for inst in instances {
            let Some(object) = inst.object().and_then(|o| self.registry.object(o)) else {
                continue;
            };
            if object.id == 0 {
                continue;
            }
            for res in object
                .resources
                .values()
                .filter(|r| r.operations.read || r.operations.write)
            {
                let Some(path) = inst.child(res.id) else {
                    continue;
                };
                points.push(PointMeta {
                    name: self.registry.point_name(&path, self.config.naming),
                    data_type: res.ty.as_str().to_string(),
                    unit: res.units.clone(),
                    writable: res.operations.write,
                    min: res.range.map(|r| r.0),
                    max: res.range.map(|r| r.1),
                    description: Some(format!("{} {}", path, res.name)),
                    address: Some(path.to_string()),
                });
            }
        }
        points.into()
    }

    // ------------------------------------------------------------ observations

    fn auto_observe(&mut self, now: Instant, reg: &Registration) {
        let format = self.format_for(reg);
        let instances = reg.objects.paths();
        let observed: Vec<Path> = self
            .observations
            .get(&reg.endpoint)
            .map(|l| l.iter().map(|o| o.path).collect())
            .unwrap_or_default();
        let wanted: Vec<Path> = self
            .config
            .auto_observe
            .iter()
            .flat_map(|p| p.expand(&instances))
            .filter(|p| !observed.contains(p))
            .collect();
        // an unconfirmed source gets one request: its answer confirms it
        let room = if self.unconfirmed.contains(&reg.endpoint) {
            usize::from(observed.is_empty())
        } else {
            self.config.max_observations.saturating_sub(observed.len())
        };
        for path in wanted.into_iter().take(room) {
            let planned = Planned {
                request: ferrogate_coap::Request::get(&path.to_string())
                    .with_accept(format.number()),
                step: Step::Read { path },
                observe: true,
                accept: Some(format),
            };
            self.send(now, reg.peer, &reg.endpoint, planned, Purpose::Observation);
        }
    }

    fn drop_observations(&mut self, now: Instant, endpoint: &str) {
        for obs in self.observations.remove(endpoint).unwrap_or_default() {
            self.sent.remove(&obs.id);
            let _ = self.coap.cancel(now, obs.id);
        }
    }

    /// A client de-registered or expired: fail what was held or running
    /// for it, stop observing, report it offline.
    fn client_gone(
        &mut self,
        now: Instant,
        reg: &Registration,
        held: Vec<Job>,
        reason: &str,
        event: &str,
    ) {
        self.drop_observations(now, &reg.endpoint);
        self.formats.remove(&reg.endpoint);
        self.no_composite.remove(&reg.endpoint);
        self.unconfirmed.remove(&reg.endpoint);
        for job in held {
            self.complete(
                job.key,
                Err(CommandError::new(
                    ErrorCode::DeviceOffline,
                    format!("client {reason}"),
                )),
            );
        }
        let keys: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, r)| r.endpoint == reg.endpoint)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(run) = self.running.remove(&key) {
                self.deadlines.remove(&(run.job.deadline, key));
                for id in run.requests {
                    self.sent.remove(&id);
                    let _ = self.coap.cancel(now, id);
                }
                self.complete(
                    key,
                    Err(CommandError::new(
                        ErrorCode::DeviceOffline,
                        format!("client {reason}"),
                    )),
                );
            }
        }
        let device = self.device_name(&reg.endpoint);
        self.status(&device, DeviceState::Offline, reason);
        self.event(&device, event, reg, None);
    }
}
