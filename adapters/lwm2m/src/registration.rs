//! The registration table (Core 1.1 §6.2, Registration Interface), sans-IO:
//! fed with requests, source addresses and `Instant`s, it tracks who is
//! registered, where to reach them, when their lifetime runs out, and the
//! commands held for queue-mode clients until they next wake up.
//!
//! Identity is the endpoint name: a new Register for an endpoint replaces
//! the old registration, and an Update from a new source address (NAT
//! rebinding) moves the client without changing who it is.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogate_sdk::time::saturating_add;

use crate::link::Link;
use crate::path::Path;

/// Lifetime when a Register has no `lt` (Core 1.1 §6.2.1: 86400 s).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(86_400);

/// The LwM2M version a client registered with (`lwm2m=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        match text {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }
}

/// The binding mode (`b=`): transports and whether the client sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Binding {
    pub udp: bool,
    pub tcp: bool,
    pub sms: bool,
    pub non_ip: bool,
    /// Queue mode: `Q` in the 1.0 binding (`UQ`), or the 1.1 `Q` parameter.
    pub queue: bool,
}

impl Binding {
    /// `U`, `UQ`, `S`, `SQ`, `US`, `UQS` (1.0) or `U`, `T`, `S`, `N` and
    /// combinations (1.1).
    pub fn parse(text: &str) -> Option<Binding> {
        let mut b = Binding::default();
        if text.is_empty() {
            return None;
        }
        for c in text.chars() {
            match c {
                'U' => b.udp = true,
                'T' => b.tcp = true,
                'S' => b.sms = true,
                'N' => b.non_ip = true,
                'Q' => b.queue = true,
                _ => return None,
            }
        }
        Some(b)
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, c) in [
            (self.udp, 'U'),
            (self.tcp, 'T'),
            (self.sms, 'S'),
            (self.non_ip, 'N'),
            (self.queue, 'Q'),
        ] {
            if on {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// A Register or Update the table refuses (answered 4.00 or 4.04).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("missing endpoint name `ep`")]
    MissingEndpoint,
    #[error("endpoint name refused: {0}")]
    BadEndpoint(ferrogate_sdk::name::NameError),
    #[error("invalid query parameter `{0}`")]
    BadParameter(String),
    #[error("unsupported LwM2M version `{0}`")]
    UnsupportedVersion(String),
    #[error("object list: {0}")]
    ObjectList(String),
    #[error("no registration at location `{0}`")]
    UnknownLocation(String),
    /// A Register for an endpoint held from another address (4.03).
    #[error("endpoint `{endpoint}` is registered from another address")]
    Taken { endpoint: String },
    /// The table holds `max_registrations` already (5.03).
    #[error("the server holds {0} registrations, the most it takes")]
    Full(usize),
    /// The source's network (/24 for IPv4, /64 for IPv6) holds
    /// `max_per_prefix` registrations already (5.03).
    #[error("{0} registrations from this network already, the most it takes")]
    PrefixFull(usize),
    /// An Update or De-register from another address than the
    /// registration's (4.03): locations are not credentials.
    #[error("registration `{0}` belongs to another address")]
    WrongSource(String),
}

/// Whether a Register may take over an endpoint last registered from
/// another address (a rebooted client behind a new NAT port, or someone
/// claiming its name: without DTLS the two look the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReRegistration {
    /// Always: the new address replaces the old one.
    #[default]
    Allow,
    /// Only once the old registration has ended (de-registered, or its
    /// lifetime passed without an Update).
    AfterLifetime,
    /// Not while the gateway remembers the endpoint: registered, or ended
    /// less than `forget_after` ago.
    Refuse,
}

/// The parameters of a Register request (query string and payload).
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterRequest {
    pub endpoint: String,
    pub lifetime: Duration,
    pub version: Version,
    pub binding: Binding,
    pub sms: Option<String>,
    pub objects: ObjectList,
}

impl RegisterRequest {
    /// From the Uri-Query options and the link-format payload.
    pub fn parse<'a>(
        queries: impl IntoIterator<Item = &'a str>,
        payload: &[u8],
    ) -> Result<RegisterRequest, RegistrationError> {
        let mut endpoint = None;
        let mut lifetime = DEFAULT_LIFETIME;
        let mut version = Version::V1_0;
        let mut binding = Binding {
            udp: true,
            ..Binding::default()
        };
        let mut queue = false;
        let mut sms = None;
        for q in queries {
            let (k, v) = q.split_once('=').unwrap_or((q, ""));
            match k {
                "ep" if !v.is_empty() => endpoint = Some(v.to_string()),
                "lt" => lifetime = parse_lifetime(v)?,
                "lwm2m" => {
                    version = Version::parse(v)
                        .ok_or_else(|| RegistrationError::UnsupportedVersion(v.to_string()))?
                }
                "b" => {
                    binding = Binding::parse(v)
                        .ok_or_else(|| RegistrationError::BadParameter(q.to_string()))?
                }
                "Q" => queue = true,
                "sms" => sms = Some(v.to_string()),
                // other parameters (e.g. `d`, `et`) carry nothing we use
                _ => {}
            }
        }
        binding.queue |= queue;
        let endpoint = endpoint.ok_or(RegistrationError::MissingEndpoint)?;
        // the name becomes a device, an MQTT topic level and a log field
        ferrogate_sdk::name::check_device_name(&endpoint)
            .map_err(RegistrationError::BadEndpoint)?;
        Ok(RegisterRequest {
            endpoint,
            lifetime,
            version,
            binding,
            sms,
            objects: ObjectList::parse(payload)?,
        })
    }
}

/// The parameters of an Update: everything optional (Wakaama sends none).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateRequest {
    pub lifetime: Option<Duration>,
    pub binding: Option<Binding>,
    pub queue: Option<bool>,
    pub sms: Option<String>,
    pub objects: Option<ObjectList>,
}

impl UpdateRequest {
    pub fn parse<'a>(
        queries: impl IntoIterator<Item = &'a str>,
        payload: &[u8],
    ) -> Result<UpdateRequest, RegistrationError> {
        let mut req = UpdateRequest::default();
        for q in queries {
            let (k, v) = q.split_once('=').unwrap_or((q, ""));
            match k {
                "lt" => req.lifetime = Some(parse_lifetime(v)?),
                "b" => {
                    req.binding = Some(
                        Binding::parse(v)
                            .ok_or_else(|| RegistrationError::BadParameter(q.to_string()))?,
                    )
                }
                "Q" => req.queue = Some(true),
                "sms" => req.sms = Some(v.to_string()),
                _ => {}
            }
        }
        if !payload.is_empty() {
            req.objects = Some(ObjectList::parse(payload)?);
        }
        Ok(req)
    }
}

/// Longest lifetime a client may ask for: `lt` is an unsigned 32-bit
/// number of seconds (Core 1.1 §6.2.1, Table 6.2.1-1).
pub const MAX_LIFETIME: Duration = Duration::from_secs(u32::MAX as u64);

fn parse_lifetime(v: &str) -> Result<Duration, RegistrationError> {
    match v.parse::<u64>() {
        Ok(s) if s > 0 && s <= MAX_LIFETIME.as_secs() => Ok(Duration::from_secs(s)),
        _ => Err(RegistrationError::BadParameter(format!(
            "lt={v} (a lifetime is 1 to {} seconds)",
            MAX_LIFETIME.as_secs()
        ))),
    }
}

/// The objects and instances a client announced, and its alternate root
/// path and preferred content format (`</>;rt="oma.lwm2m";ct=110`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ObjectList {
    /// Object (`/3`) and instance (`/3/0`) paths, with object versions.
    pub entries: Vec<(Path, Option<String>)>,
    pub root: Option<String>,
    /// The `ct` the client announced on its root link.
    pub content_format: Option<u16>,
}

impl ObjectList {
    pub fn parse(payload: &[u8]) -> Result<ObjectList, RegistrationError> {
        let links =
            Link::parse_all(payload).map_err(|e| RegistrationError::ObjectList(e.to_string()))?;
        let mut list = ObjectList::default();
        // Links carry the alternate root as a prefix: strip it.
        for link in &links {
            if link.param("rt") == Some("oma.lwm2m") {
                let root = link.target.trim_end_matches('/');
                list.root = (!root.is_empty()).then(|| root.to_string());
                list.content_format = link
                    .param("ct")
                    .and_then(|ct| ct.split_whitespace().next()?.parse().ok());
            }
        }
        for link in links {
            if link.param("rt") == Some("oma.lwm2m") {
                continue;
            }
            let target = match &list.root {
                Some(root) => link
                    .target
                    .strip_prefix(root.as_str())
                    .unwrap_or(&link.target),
                None => &link.target,
            };
            let path =
                Path::parse(target).map_err(|e| RegistrationError::ObjectList(e.to_string()))?;
            if path.depth() == 0 || path.depth() > 2 {
                return Err(RegistrationError::ObjectList(format!(
                    "`{}` is not an object or instance",
                    link.target
                )));
            }
            list.entries
                .push((path, link.param("ver").map(str::to_string)));
        }
        Ok(list)
    }

    /// The instances, including objects announced with no instance
    /// (`</3303>` is an object with none yet).
    pub fn paths(&self) -> Vec<Path> {
        self.entries.iter().map(|(p, _)| *p).collect()
    }

    /// The distinct object ids.
    pub fn objects(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self
            .entries
            .iter()
            .filter_map(|(p, _)| p.object())
            .collect();
        ids.dedup();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// One registered client.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub endpoint: Arc<str>,
    /// How the client reached us: its Updates, De-register and Sends must
    /// come the same way.
    pub security: Security,
    /// The registration's id: its location is `rd/<id>`.
    pub id: u64,
    pub peer: SocketAddr,
    pub lifetime: Duration,
    pub version: Version,
    pub binding: Binding,
    pub sms: Option<String>,
    /// Shared by the clients that announced the same list (a fleet).
    pub objects: Arc<ObjectList>,
    pub registered_at: Instant,
    pub updated_at: Instant,
    /// When the client was last heard from (any message): a queue-mode
    /// client is reachable for a while after that.
    pub last_seen: Instant,
}

impl Registration {
    pub fn expires_at(&self) -> Instant {
        saturating_add(self.updated_at, self.lifetime)
    }

    /// The Location-Path handed out at registration, `rd/<id>` with the id
    /// in 16 hex digits: drawn at random, so a peer cannot guess another
    /// client's location.
    pub fn location(&self) -> String {
        format!("rd/{:016x}", self.id)
    }
}

/// The LwM2M security mode a client's messages came with (Core 1.1 §7.1,
/// object 0 resource 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// The plain listener.
    NoSec,
    /// DTLS with a pre-shared key; `identity` is the PSK identity, for logs
    /// and `lwm2m clients`.
    Psk { identity: Arc<str> },
}

impl Security {
    /// The mode's name in events and the CLI: `nosec` or `psk`.
    pub fn mode(&self) -> &'static str {
        match self {
            Security::NoSec => "nosec",
            Security::Psk { .. } => "psk",
        }
    }
}

/// The registration id of a location path `rd/<16 hex digits>`.
fn location_id(location: &str) -> Option<u64> {
    let hex = location.strip_prefix("rd/")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// A registration id from the OS's CSPRNG (falling back to the clock and
/// a counter if it fails, which Linux's getrandom does not).
fn random_id(fallback: u64) -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ fallback.rotate_left(32)
    })
}

/// The network a source address belongs to for the per-network cap: its
/// /24 (IPv4) or /64 (IPv6), the unit one site or one attacker holds.
fn prefix(peer: SocketAddr) -> u128 {
    match peer.ip() {
        std::net::IpAddr::V4(v4) => u128::from(u32::from(v4) >> 8),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4) >> 8),
            None => (u128::from(v6) >> 64) | (1 << 64),
        },
    }
}

/// How many registrations the table takes: in total and per network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub max_registrations: usize,
    pub max_per_prefix: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_registrations: 100_000,
            max_per_prefix: 10_000,
        }
    }
}

/// An endpoint whose registration ended, remembered until `forget_at`.
#[derive(Debug, Clone, Copy)]
struct Departed {
    peer: SocketAddr,
    forget_at: Instant,
}

/// A command waiting for a sleeping queue-mode client.
#[derive(Debug)]
struct Held<C> {
    command: C,
    deadline: Instant,
}

struct Entry<C> {
    reg: Registration,
    held: VecDeque<Held<C>>,
}

/// What a Register did.
#[derive(Debug)]
pub struct Registered<C> {
    pub location: String,
    /// The registration this one replaced (same endpoint registered again).
    pub replaced: Option<Registration>,
    /// Commands held for the endpoint, to send now that it is awake.
    pub released: Vec<C>,
}

/// What an Update did.
#[derive(Debug)]
pub struct Updated<C> {
    pub endpoint: Arc<str>,
    pub objects_changed: bool,
    pub released: Vec<C>,
}

/// Distinct object lists shared between registrations (a fleet has a
/// handful).
const OBJECT_LISTS_KEPT: usize = 256;

/// Registrations by id, endpoint and source address, with lifetimes and
/// held commands. `C` is whatever the caller holds for sleeping clients.
pub struct RegistrationTable<C> {
    /// Boxed: the table then costs little beside the registrations.
    entries: HashMap<u64, Box<Entry<C>>>,
    by_endpoint: HashMap<Arc<str>, u64>,
    by_peer: HashMap<SocketAddr, u64>,
    expiries: BTreeSet<(Instant, u64)>,
    held_deadlines: BTreeSet<(Instant, u64)>,
    /// Object lists in use, for sharing between registrations.
    object_lists: HashSet<Arc<ObjectList>>,
    next_id: u64,
    /// How long a queue-mode client stays reachable after it was last
    /// heard from (Core 1.1 §6.2.2: CoAP MAX_TRANSMIT_WAIT, 93 s).
    awake_window: Duration,
    re_registration: ReRegistration,
    /// How long an ended registration's endpoint is remembered before it
    /// is forgotten (its device removed).
    forget_after: Duration,
    departed: HashMap<Arc<str>, Departed>,
    forgets: BTreeSet<(Instant, Arc<str>)>,
    /// Ended registrations forgotten before their time (over the cap),
    /// handed out by the next [`forget`](RegistrationTable::forget).
    forget_early: Vec<Arc<str>>,
    caps: Caps,
    /// Registrations per source network, for `caps.max_per_prefix`.
    per_prefix: HashMap<u128, usize>,
}

/// How long an ended registration is remembered by default.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(3600);

impl<C> RegistrationTable<C> {
    pub fn new(awake_window: Duration) -> Self {
        RegistrationTable {
            entries: HashMap::new(),
            by_endpoint: HashMap::new(),
            by_peer: HashMap::new(),
            expiries: BTreeSet::new(),
            held_deadlines: BTreeSet::new(),
            object_lists: HashSet::new(),
            next_id: 0,
            awake_window,
            re_registration: ReRegistration::default(),
            forget_after: DEFAULT_FORGET_AFTER,
            departed: HashMap::new(),
            forgets: BTreeSet::new(),
            forget_early: Vec::new(),
            caps: Caps::default(),
            per_prefix: HashMap::new(),
        }
    }

    /// How many registrations to take, in total and per source network.
    pub fn with_caps(mut self, caps: Caps) -> Self {
        self.caps = caps;
        self
    }

    /// Who may take over an endpoint from another address, and how long
    /// an ended registration is remembered.
    pub fn with_policy(mut self, re_registration: ReRegistration, forget_after: Duration) -> Self {
        self.re_registration = re_registration;
        self.forget_after = forget_after;
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Handle a Register from `peer`.
    pub fn register(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        security: Security,
        req: RegisterRequest,
    ) -> Result<Registered<C>, RegistrationError> {
        let live = self
            .by_endpoint
            .get(req.endpoint.as_str())
            .and_then(|id| self.entries.get(id))
            .map(|e| e.reg.peer);
        let departed = self.departed.get(req.endpoint.as_str()).map(|d| d.peer);
        let taken = match self.re_registration {
            ReRegistration::Allow => false,
            ReRegistration::AfterLifetime => live.is_some_and(|p| p != peer),
            ReRegistration::Refuse => live.or(departed).is_some_and(|p| p != peer),
        };
        if taken {
            return Err(RegistrationError::Taken {
                endpoint: req.endpoint,
            });
        }
        // a client registering again replaces its own entry: not counted twice
        let again = self
            .by_endpoint
            .get(req.endpoint.as_str())
            .and_then(|id| self.entries.get(id))
            .map(|e| prefix(e.reg.peer));
        if again.is_none() && self.entries.len() >= self.caps.max_registrations {
            return Err(RegistrationError::Full(self.entries.len()));
        }
        let in_prefix = self.per_prefix.get(&prefix(peer)).copied().unwrap_or(0);
        if again != Some(prefix(peer)) && in_prefix >= self.caps.max_per_prefix {
            return Err(RegistrationError::PrefixFull(in_prefix));
        }
        if let Some(d) = self.departed.remove(req.endpoint.as_str()) {
            self.forgets
                .remove(&(d.forget_at, Arc::from(req.endpoint.as_str())));
        }
        let mut held = VecDeque::new();
        let replaced = match self.by_endpoint.get(req.endpoint.as_str()).copied() {
            Some(old) => self.remove(old).map(|e| {
                held = e.held;
                e.reg
            }),
            None => None,
        };
        self.next_id += 1;
        let mut id = random_id(self.next_id);
        while self.entries.contains_key(&id) {
            id = random_id(id);
        }
        // share the endpoint name between the registration and the index
        let endpoint: Arc<str> = match &replaced {
            Some(old) => old.endpoint.clone(),
            None => Arc::from(req.endpoint),
        };
        let reg = Registration {
            endpoint,
            security,
            id,
            peer,
            lifetime: req.lifetime,
            version: req.version,
            binding: req.binding,
            sms: req.sms,
            objects: self.share(req.objects),
            registered_at: now,
            updated_at: now,
            last_seen: now,
        };
        let released = held
            .drain(..)
            .filter(|h| h.deadline > now)
            .map(|h| h.command)
            .collect();
        let location = reg.location();
        self.insert(reg);
        Ok(Registered {
            location,
            replaced,
            released,
        })
    }

    /// Handle an Update at `location` from `peer`.
    pub fn update(
        &mut self,
        now: Instant,
        location: &str,
        peer: SocketAddr,
        req: UpdateRequest,
    ) -> Result<Updated<C>, RegistrationError> {
        let unknown = || RegistrationError::UnknownLocation(location.to_string());
        let id = location_id(location).ok_or_else(unknown)?;
        match self.entries.get(&id) {
            None => return Err(unknown()),
            Some(e) if e.reg.peer != peer => {
                return Err(RegistrationError::WrongSource(location.to_string()));
            }
            Some(_) => {}
        }
        let objects = req.objects.map(|list| self.share(list));
        let Some(entry) = self.entries.get_mut(&id) else {
            return Err(unknown());
        };
        let reg = &mut entry.reg;
        self.expiries.remove(&(reg.expires_at(), id));
        if let Some(lt) = req.lifetime {
            reg.lifetime = lt;
        }
        if let Some(b) = req.binding {
            // from 1.1 on, queue mode is the separate `Q` parameter
            let keep_queue = reg.version >= Version::V1_1 && reg.binding.queue;
            reg.binding = Binding {
                queue: b.queue || keep_queue,
                ..b
            };
        }
        if let Some(q) = req.queue {
            reg.binding.queue = q;
        }
        if req.sms.is_some() {
            reg.sms = req.sms;
        }
        let objects_changed = match objects {
            Some(list) if list != reg.objects => {
                reg.objects = list;
                true
            }
            _ => false,
        };
        reg.updated_at = now;
        reg.last_seen = now;
        let endpoint = reg.endpoint.clone();
        self.expiries.insert((reg.expires_at(), id));
        let released = self.release(now, id);
        Ok(Updated {
            endpoint,
            objects_changed,
            released,
        })
    }

    /// Handle a De-register from `peer`; the held commands come back to be
    /// failed.
    pub fn deregister(
        &mut self,
        now: Instant,
        location: &str,
        peer: SocketAddr,
    ) -> Result<(Registration, Vec<C>), RegistrationError> {
        let unknown = || RegistrationError::UnknownLocation(location.to_string());
        let id = location_id(location).ok_or_else(unknown)?;
        match self.entries.get(&id) {
            None => return Err(unknown()),
            Some(e) if e.reg.peer != peer => {
                return Err(RegistrationError::WrongSource(location.to_string()));
            }
            Some(_) => {}
        }
        let entry = self.remove(id).ok_or_else(unknown)?;
        self.depart(now, &entry.reg);
        Ok((
            entry.reg,
            entry.held.into_iter().map(|h| h.command).collect(),
        ))
    }

    /// Remember an ended registration's endpoint until it is forgotten.
    fn depart(&mut self, now: Instant, reg: &Registration) {
        let forget_at = saturating_add(now, self.forget_after);
        if let Some(old) = self.departed.insert(
            reg.endpoint.clone(),
            Departed {
                peer: reg.peer,
                forget_at,
            },
        ) {
            self.forgets.remove(&(old.forget_at, reg.endpoint.clone()));
        }
        self.forgets.insert((forget_at, reg.endpoint.clone()));
        // churn (register, leave, register another name) must not grow the
        // memory of ended registrations past the registrations cap: the
        // earliest are forgotten early
        while self.departed.len() > self.caps.max_registrations {
            let Some((_, endpoint)) = self.forgets.pop_first() else {
                break;
            };
            self.departed.remove(&endpoint);
            self.forget_early.push(endpoint);
        }
    }

    /// Endpoints whose registration ended `forget_after` ago and that did
    /// not register again: the caller removes their devices.
    pub fn forget(&mut self, now: Instant) -> Vec<Arc<str>> {
        let mut out = std::mem::take(&mut self.forget_early);
        while let Some((at, _)) = self.forgets.first() {
            if *at > now {
                break;
            }
            if let Some((_, endpoint)) = self.forgets.pop_first() {
                self.departed.remove(&endpoint);
                out.push(endpoint);
            }
        }
        out
    }

    /// How many ended registrations are remembered.
    pub fn departed_len(&self) -> usize {
        self.departed.len()
    }

    /// Note that `endpoint` was heard from (a response, a notification, a
    /// Send): a queue-mode client is awake again.
    pub fn touch(&mut self, now: Instant, endpoint: &str) {
        if let Some(id) = self.by_endpoint.get(endpoint)
            && let Some(e) = self.entries.get_mut(id)
        {
            e.reg.last_seen = now;
        }
    }

    /// Registrations whose lifetime has passed, removed, with their held
    /// commands.
    pub fn expire(&mut self, now: Instant) -> Vec<(Registration, Vec<C>)> {
        let due: Vec<u64> = self
            .expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        let gone: Vec<Entry<C>> = due.into_iter().filter_map(|id| self.remove(id)).collect();
        gone.into_iter()
            .map(|e| {
                self.depart(now, &e.reg);
                (e.reg, e.held.into_iter().map(|h| h.command).collect())
            })
            .collect()
    }

    /// Held commands whose deadline has passed, removed, with the endpoint
    /// each was for.
    pub fn expire_held(&mut self, now: Instant) -> Vec<(Arc<str>, C)> {
        let due: Vec<(Instant, u64)> = self
            .held_deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .copied()
            .collect();
        let mut out = Vec::new();
        for key in due {
            self.held_deadlines.remove(&key);
            if let Some(entry) = self.entries.get_mut(&key.1) {
                let (gone, keep): (Vec<_>, Vec<_>) =
                    entry.held.drain(..).partition(|h| h.deadline <= now);
                entry.held = keep.into();
                out.extend(
                    gone.into_iter()
                        .map(|h| (entry.reg.endpoint.clone(), h.command)),
                );
            }
        }
        out
    }

    /// The earliest instant at which [`expire`] or [`expire_held`] has
    /// something to do.
    ///
    /// [`expire`]: RegistrationTable::expire
    /// [`expire_held`]: RegistrationTable::expire_held
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.expiries.first().map(|(t, _)| *t),
            self.held_deadlines.first().map(|(t, _)| *t),
            self.forgets.first().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a command for `endpoint` can be sent now: the client is not
    /// in queue mode, or it was heard from within the awake window.
    pub fn is_reachable(&self, now: Instant, endpoint: &str) -> bool {
        self.by_endpoint(endpoint).is_some_and(|r| {
            !r.binding.queue || now.saturating_duration_since(r.last_seen) < self.awake_window
        })
    }

    /// Keep `command` until `endpoint` next registers or updates, or until
    /// `deadline`. Gives the command back if the endpoint is unknown.
    pub fn hold(&mut self, endpoint: &str, command: C, deadline: Instant) -> Result<(), C> {
        let Some(id) = self.by_endpoint.get(endpoint).copied() else {
            return Err(command);
        };
        let Some(entry) = self.entries.get_mut(&id) else {
            return Err(command);
        };
        entry.held.push_back(Held { command, deadline });
        self.held_deadlines.insert((deadline, id));
        Ok(())
    }

    /// How many commands are held for `endpoint`.
    pub fn held_count(&self, endpoint: &str) -> usize {
        self.by_endpoint
            .get(endpoint)
            .and_then(|id| self.entries.get(id))
            .map_or(0, |e| e.held.len())
    }

    pub fn by_location(&self, location: &str) -> Option<&Registration> {
        self.entries.get(&location_id(location)?).map(|e| &e.reg)
    }

    pub fn by_endpoint(&self, endpoint: &str) -> Option<&Registration> {
        self.by_endpoint
            .get(endpoint)
            .and_then(|id| self.entries.get(id))
            .map(|e| &e.reg)
    }

    /// The registration whose client last spoke from `peer`.
    pub fn by_peer(&self, peer: SocketAddr) -> Option<&Registration> {
        self.by_peer
            .get(&peer)
            .and_then(|id| self.entries.get(id))
            .map(|e| &e.reg)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Registration> {
        self.entries.values().map(|e| &e.reg)
    }

    /// The shared copy of `list`. Past [`OBJECT_LISTS_KEPT`] distinct
    /// lists, those no registration holds any more are let go, and new ones
    /// are no longer shared.
    fn share(&mut self, list: ObjectList) -> Arc<ObjectList> {
        if let Some(shared) = self.object_lists.get(&list) {
            return shared.clone();
        }
        if self.object_lists.len() >= OBJECT_LISTS_KEPT {
            self.object_lists.retain(|l| Arc::strong_count(l) > 1);
        }
        let shared = Arc::new(list);
        if self.object_lists.len() < OBJECT_LISTS_KEPT {
            self.object_lists.insert(shared.clone());
        }
        shared
    }

    fn insert(&mut self, reg: Registration) {
        let id = reg.id;
        self.expiries.insert((reg.expires_at(), id));
        self.by_endpoint.insert(reg.endpoint.clone(), id);
        self.by_peer.insert(reg.peer, id);
        *self.per_prefix.entry(prefix(reg.peer)).or_default() += 1;
        self.entries.insert(
            id,
            Box::new(Entry {
                reg,
                held: VecDeque::new(),
            }),
        );
    }

    fn remove(&mut self, id: u64) -> Option<Entry<C>> {
        let entry = *self.entries.remove(&id)?;
        self.expiries.remove(&(entry.reg.expires_at(), id));
        let net = prefix(entry.reg.peer);
        if let Some(n) = self.per_prefix.get_mut(&net) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_prefix.remove(&net);
            }
        }
        if self.by_endpoint.get(&entry.reg.endpoint) == Some(&id) {
            self.by_endpoint.remove(&entry.reg.endpoint);
        }
        if self.by_peer.get(&entry.reg.peer) == Some(&id) {
            self.by_peer.remove(&entry.reg.peer);
        }
        for h in &entry.held {
            self.held_deadlines.remove(&(h.deadline, id));
        }
        Some(entry)
    }

    fn release(&mut self, now: Instant, id: u64) -> Vec<C> {
        let Some(entry) = self.entries.get_mut(&id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for h in entry.held.drain(..) {
            self.held_deadlines.remove(&(h.deadline, id));
            // a command whose deadline passed is left for expire_held's
            // caller to answer; here it is simply not sent
            if h.deadline > now {
                out.push(h.command);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn register(
        table: &mut RegistrationTable<u32>,
        now: Instant,
        ep: &str,
        q: &[&str],
        port: u16,
    ) -> Registered<u32> {
        let mut queries = vec![format!("ep={ep}")];
        queries.extend(q.iter().map(|s| s.to_string()));
        let req = RegisterRequest::parse(
            queries.iter().map(String::as_str),
            b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>,</3303/0>,</3303/1>",
        )
        .unwrap();
        table
            .register(now, addr(port), Security::NoSec, req)
            .unwrap()
    }

    #[test]
    fn register_parses_query_and_objects() {
        let req = RegisterRequest::parse(
            ["lwm2m=1.1", "ep=node-1", "b=U", "lt=300", "Q"],
            b"</1>;ver=1.1,</1/0>,</3303/0>",
        )
        .unwrap();
        assert_eq!(req.endpoint, "node-1");
        assert_eq!(req.lifetime, Duration::from_secs(300));
        assert_eq!(req.version, Version::V1_1);
        assert!(req.binding.queue && req.binding.udp);
        assert_eq!(req.objects.objects(), [1, 3303]);
        assert_eq!(req.objects.entries[0].1.as_deref(), Some("1.1"));
        let legacy = RegisterRequest::parse(["ep=old", "b=UQ"], b"</3/0>").unwrap();
        assert_eq!(legacy.version, Version::V1_0);
        assert!(legacy.binding.queue);
        assert_eq!(legacy.lifetime, DEFAULT_LIFETIME);
        assert_eq!(
            RegisterRequest::parse(["lt=60"], b""),
            Err(RegistrationError::MissingEndpoint)
        );
        assert!(RegisterRequest::parse(["ep=a", "lt=x"], b"").is_err());
        assert!(RegisterRequest::parse(["ep=a", "lt=0"], b"").is_err());
        // the 64-bit maximum once made `Instant + lifetime` panic
        for lt in ["lt=18446744073709551615", "lt=4294967296"] {
            assert!(
                matches!(
                    RegisterRequest::parse(["ep=a", lt], b""),
                    Err(RegistrationError::BadParameter(_))
                ),
                "{lt}"
            );
            assert!(UpdateRequest::parse([lt], b"").is_err(), "{lt}");
        }
        for ep in ["ep=x\u{1}y", "ep=a/b", "ep=a+", "ep=#", "ep=a b"] {
            assert!(
                matches!(
                    RegisterRequest::parse([ep], b""),
                    Err(RegistrationError::BadEndpoint(_))
                ),
                "{ep:?}"
            );
        }
        let urn = RegisterRequest::parse(["ep=urn:imei:490154203237518"], b"").unwrap();
        assert_eq!(urn.endpoint, "urn:imei:490154203237518");
        let longest = RegisterRequest::parse(["ep=a", "lt=4294967295"], b"").unwrap();
        assert_eq!(longest.lifetime, MAX_LIFETIME);
        assert!(RegisterRequest::parse(["ep=a", "lwm2m=2.0"], b"").is_err());
        assert!(RegisterRequest::parse(["ep=a", "b=X"], b"").is_err());
        assert!(RegisterRequest::parse(["ep=a"], b"</3/0/1/2>").is_err());
        assert!(RegisterRequest::parse(["ep=a"], b"<3/0").is_err());
    }

    #[test]
    fn the_longest_lifetime_expires_without_overflow() {
        let t0 = Instant::now();
        let mut table = RegistrationTable::<u32>::new(Duration::from_secs(93));
        let loc = register(&mut table, t0, "a", &["lt=4294967295"], 1000).location;
        assert!(table.poll_timeout().is_some_and(|t| t > t0));
        assert!(table.expire(t0 + Duration::from_secs(86_400)).is_empty());
        assert!(table.by_location(&loc).is_some());
    }

    #[test]
    fn alternate_root_path_is_stripped() {
        let list =
            ObjectList::parse(b"</lwm2m>;rt=\"oma.lwm2m\",</lwm2m/1/0>,</lwm2m/3/0>").unwrap();
        assert_eq!(list.root.as_deref(), Some("/lwm2m"));
        assert_eq!(list.paths()[1].to_string(), "/3/0");
    }

    #[test]
    fn lifetime_expiry_and_update_extends_it() {
        let t0 = Instant::now();
        let mut table = RegistrationTable::<u32>::new(Duration::from_secs(93));
        let loc = register(&mut table, t0, "a", &["lt=60"], 1000).location;
        assert_eq!(table.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert!(table.expire(t0 + Duration::from_secs(59)).is_empty());
        table
            .update(
                t0 + Duration::from_secs(50),
                &loc,
                addr(1000),
                UpdateRequest::default(),
            )
            .unwrap();
        assert!(table.expire(t0 + Duration::from_secs(100)).is_empty());
        let gone = table.expire(t0 + Duration::from_secs(110));
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].0.endpoint, "a");
        assert!(table.is_empty());
        // what is left to do is forgetting it
        assert_eq!(
            table.poll_timeout(),
            Some(t0 + Duration::from_secs(110) + DEFAULT_FORGET_AFTER)
        );
        assert!(matches!(
            table.update(t0, &loc, addr(1000), UpdateRequest::default()),
            Err(RegistrationError::UnknownLocation(_))
        ));
    }

    #[test]
    fn re_registration_replaces_and_keeps_held_commands() {
        let t0 = Instant::now();
        let mut table = RegistrationTable::<u32>::new(Duration::from_secs(93));
        let first = register(&mut table, t0, "a", &["b=UQ"], 1000).location;
        let later = t0 + Duration::from_secs(200);
        assert!(!table.is_reachable(later, "a"));
        table.hold("a", 7, later + Duration::from_secs(60)).unwrap();
        let second = register(&mut table, later + Duration::from_secs(1), "a", &[], 1001);
        assert_ne!(second.location, first);
        assert_eq!(second.replaced.map(|r| r.location()), Some(first.clone()));
        assert_eq!(second.released, [7]);
        assert_eq!(table.len(), 1);
        assert!(table.by_location(&first).is_none());
        assert_eq!(table.by_peer(addr(1001)).map(|r| &*r.endpoint), Some("a"));
        assert!(table.by_peer(addr(1000)).is_none());
        assert!(table.hold("nobody", 1, later).is_err());
    }

    #[test]
    fn queue_mode_holds_until_update_within_deadline() {
        let t0 = Instant::now();
        let mut table = RegistrationTable::<u32>::new(Duration::from_secs(93));
        let loc = register(&mut table, t0, "q", &["lwm2m=1.1", "Q", "lt=3600"], 1000).location;
        assert!(table.is_reachable(t0 + Duration::from_secs(10), "q"));
        let asleep = t0 + Duration::from_secs(100);
        assert!(!table.is_reachable(asleep, "q"));
        table
            .hold("q", 1, asleep + Duration::from_secs(30))
            .unwrap();
        table
            .hold("q", 2, asleep + Duration::from_secs(300))
            .unwrap();
        assert_eq!(table.held_count("q"), 2);
        assert_eq!(table.poll_timeout(), Some(asleep + Duration::from_secs(30)));
        assert_eq!(
            table.expire_held(asleep + Duration::from_secs(31)),
            [(Arc::from("q"), 1)]
        );
        let up = table
            .update(
                asleep + Duration::from_secs(60),
                &loc,
                addr(1000),
                UpdateRequest::default(),
            )
            .unwrap();
        assert_eq!(up.released, [2]);
        assert_eq!(table.held_count("q"), 0);
        assert!(table.is_reachable(asleep + Duration::from_secs(61), "q"));
        assert_eq!(
            table.poll_timeout(),
            Some(t0 + Duration::from_secs(160) + Duration::from_secs(3600))
        );
    }

    #[test]
    fn update_and_deregister_only_from_the_registrations_address() {
        let t0 = Instant::now();
        let mut table = RegistrationTable::<u32>::new(Duration::from_secs(93));
        let loc = register(&mut table, t0, "n", &[], 1000).location;
        assert!(matches!(
            table.update(t0, &loc, addr(2000), UpdateRequest::default()),
            Err(RegistrationError::WrongSource(_))
        ));
        assert!(matches!(
            table.deregister(t0, &loc, addr(2000)),
            Err(RegistrationError::WrongSource(_))
        ));
        assert_eq!(table.by_endpoint("n").map(|r| r.peer), Some(addr(1000)));
        assert!(table.by_peer(addr(2000)).is_none());
        assert!(
            table
                .update(t0, &loc, addr(1000), UpdateRequest::default())
                .is_ok()
        );
    }

    #[test]
    fn locations_are_unguessable() {
        let t0 = Instant::now();
        let mut table = RegistrationTable::<u32>::new(Duration::from_secs(93));
        let a = register(&mut table, t0, "a", &[], 1000).location;
        let b = register(&mut table, t0, "b", &[], 1001).location;
        for loc in [&a, &b] {
            let hex = loc.strip_prefix("rd/").unwrap();
            assert_eq!(hex.len(), 16, "{loc}");
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()), "{loc}");
        }
        let (ia, ib) = (location_id(&a).unwrap(), location_id(&b).unwrap());
        // sequential ids (rd/1, rd/2) let anyone name another's location
        assert!(ia.abs_diff(ib) > 1_000_000, "{a} {b}");
        assert!(table.by_location("rd/1").is_none());
        assert!(location_id("rd/1").is_none());
    }

    fn policy_table(policy: ReRegistration) -> RegistrationTable<u32> {
        RegistrationTable::<u32>::new(Duration::from_secs(93))
            .with_policy(policy, Duration::from_secs(600))
    }

    fn try_register(
        table: &mut RegistrationTable<u32>,
        now: Instant,
        ep: &str,
        port: u16,
    ) -> Result<Registered<u32>, RegistrationError> {
        let req =
            RegisterRequest::parse([format!("ep={ep}").as_str(), "lt=60"], b"</3/0>").unwrap();
        table.register(now, addr(port), Security::NoSec, req)
    }

    #[test]
    fn re_registration_from_another_address_follows_the_policy() {
        let t0 = Instant::now();
        let ended = t0 + Duration::from_secs(61);
        let after_forget = ended + Duration::from_secs(601);
        // allow: a new address takes over at once
        let mut table = policy_table(ReRegistration::Allow);
        register(&mut table, t0, "e", &["lt=60"], 1000);
        assert!(try_register(&mut table, t0, "e", 2000).is_ok());
        assert_eq!(table.by_endpoint("e").map(|r| r.peer), Some(addr(2000)));

        // after_lifetime: not while the registration lives
        let mut table = policy_table(ReRegistration::AfterLifetime);
        register(&mut table, t0, "e", &["lt=60"], 1000);
        assert!(matches!(
            try_register(&mut table, t0, "e", 2000),
            Err(RegistrationError::Taken { .. })
        ));
        assert!(
            try_register(&mut table, t0, "e", 1000).is_ok(),
            "same address"
        );
        assert_eq!(table.expire(ended).len(), 1);
        assert!(try_register(&mut table, ended, "e", 2000).is_ok());

        // refuse: not until the ended registration is forgotten
        let mut table = policy_table(ReRegistration::Refuse);
        register(&mut table, t0, "e", &["lt=60"], 1000);
        assert_eq!(table.expire(ended).len(), 1);
        assert!(matches!(
            try_register(&mut table, ended, "e", 2000),
            Err(RegistrationError::Taken { .. })
        ));
        assert_eq!(table.departed_len(), 1);
        assert_eq!(table.forget(after_forget), [Arc::from("e")]);
        assert_eq!(table.departed_len(), 0);
        assert!(try_register(&mut table, after_forget, "e", 2000).is_ok());
    }

    #[test]
    fn registrations_are_capped_in_total_and_per_network() {
        let t0 = Instant::now();
        let mut table = RegistrationTable::<u32>::new(Duration::from_secs(93)).with_caps(Caps {
            max_registrations: 3,
            max_per_prefix: 2,
        });
        let at = |ip: [u8; 4], port| SocketAddr::from((ip, port));
        let reg = |table: &mut RegistrationTable<u32>, ep: &str, peer| {
            table.register(
                t0,
                peer,
                Security::NoSec,
                RegisterRequest::parse([format!("ep={ep}").as_str()], b"").unwrap(),
            )
        };
        assert!(reg(&mut table, "a", at([10, 0, 0, 1], 1)).is_ok());
        assert!(reg(&mut table, "b", at([10, 0, 0, 2], 1)).is_ok());
        assert!(matches!(
            reg(&mut table, "c", at([10, 0, 0, 3], 1)),
            Err(RegistrationError::PrefixFull(2))
        ));
        // registering again is no new registration
        assert!(reg(&mut table, "a", at([10, 0, 0, 1], 2)).is_ok());
        assert!(reg(&mut table, "c", at([10, 0, 1, 3], 1)).is_ok());
        assert!(matches!(
            reg(&mut table, "d", at([192, 168, 0, 1], 1)),
            Err(RegistrationError::Full(3))
        ));
        // a v6 /64 is one network, a v4-mapped address its v4 /24
        let v6 = |last: u16| {
            SocketAddr::from((
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last),
                1,
            ))
        };
        assert_eq!(prefix(v6(1)), prefix(v6(2)));
        assert_ne!(prefix(v6(1)), prefix(at([10, 0, 0, 1], 1)));
        let mapped: SocketAddr = "[::ffff:10.0.0.9]:1".parse().unwrap();
        assert_eq!(prefix(mapped), prefix(at([10, 0, 0, 1], 1)));
    }

    #[test]
    fn ended_registrations_are_forgotten_after_forget_after() {
        let t0 = Instant::now();
        let mut table = policy_table(ReRegistration::Allow);
        let loc = register(&mut table, t0, "gone", &["lt=60"], 1000).location;
        register(&mut table, t0, "expires", &["lt=60"], 1001);
        table.deregister(t0, &loc, addr(1000)).unwrap();
        assert_eq!(table.expire(t0 + Duration::from_secs(60)).len(), 1);
        assert_eq!(table.poll_timeout(), Some(t0 + Duration::from_secs(600)));
        assert_eq!(
            table.forget(t0 + Duration::from_secs(600)),
            [Arc::from("gone")]
        );
        assert_eq!(
            table.forget(t0 + Duration::from_secs(660)),
            [Arc::from("expires")]
        );
        assert_eq!(table.poll_timeout(), None);
        // registering again cancels the forgetting
        let mut table = policy_table(ReRegistration::Allow);
        let loc = register(&mut table, t0, "back", &["lt=60"], 1000).location;
        table.deregister(t0, &loc, addr(1000)).unwrap();
        register(
            &mut table,
            t0 + Duration::from_secs(1),
            "back",
            &["lt=6000"],
            1000,
        );
        assert!(table.forget(t0 + Duration::from_secs(700)).is_empty());
    }

    #[test]
    fn clients_with_the_same_objects_share_one_list() {
        let t0 = Instant::now();
        let mut table = RegistrationTable::<u32>::new(Duration::from_secs(93));
        let loc = register(&mut table, t0, "a", &[], 1000).location;
        register(&mut table, t0, "b", &[], 1001);
        let (a, b) = (
            table.by_endpoint("a").unwrap(),
            table.by_endpoint("b").unwrap(),
        );
        assert!(Arc::ptr_eq(&a.objects, &b.objects));
        let same = UpdateRequest::parse(
            [],
            b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>,</3303/0>,</3303/1>",
        )
        .unwrap();
        let up = table.update(t0, &loc, addr(1000), same).unwrap();
        assert!(!up.objects_changed);
        let fewer = UpdateRequest::parse([], b"</3/0>").unwrap();
        assert!(
            table
                .update(t0, &loc, addr(1000), fewer)
                .unwrap()
                .objects_changed
        );
        let (a, b) = (
            table.by_endpoint("a").unwrap(),
            table.by_endpoint("b").unwrap(),
        );
        assert!(!Arc::ptr_eq(&a.objects, &b.objects));
    }

    #[test]
    fn update_changes_lifetime_binding_and_objects() {
        let t0 = Instant::now();
        let mut table = RegistrationTable::<u32>::new(Duration::from_secs(93));
        let loc = register(&mut table, t0, "u", &["lt=60"], 1000).location;
        let req = UpdateRequest::parse(["lt=120", "b=UQ"], b"</3/0>,</3303/0>").unwrap();
        let up = table.update(t0, &loc, addr(1000), req).unwrap();
        assert!(up.objects_changed);
        let reg = table.by_location(&loc).unwrap();
        assert_eq!(reg.lifetime, Duration::from_secs(120));
        assert!(reg.binding.queue);
        assert_eq!(reg.objects.paths().len(), 2);
        let (gone, held) = table.deregister(t0, &loc, addr(1000)).unwrap();
        assert_eq!(&*gone.endpoint, "u");
        assert!(held.is_empty());
        assert!(table.deregister(t0, &loc, addr(1000)).is_err());
    }
}
