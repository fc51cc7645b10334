//! The Sparkplug edge node: session rules, births and deaths, sequence
//! numbers, aliases, commands and held data, as a plain state machine.
//!
//! It is fed link events ([`EdgeNode::connect`], [`EdgeNode::connected`],
//! [`EdgeNode::subscribed`], [`EdgeNode::disconnected`]), the gateway's
//! uplinks, the messages received on its subscriptions (NCMD, DCMD, the
//! primary host's STATE), confirmed writes and the wall-clock time; it
//! hands out [`Event`]s: publishes, subscriptions and device writes. It
//! never touches a socket or a clock; the driver moves bytes.
//!
//! Rules kept here (Sparkplug B 3.0):
//! - the will is NDEATH with this connection's `bdSeq`; the NBIRTH carries
//!   the same one; `bdSeq` goes up by one (mod 256) per connection, and the
//!   driver persists the next one before it connects;
//! - NCMD and DCMD are subscribed (QoS 1) before the NBIRTH;
//! - NBIRTH has `seq` 0 and `Node Control/Rebirth`; every later node-scope
//!   message (DBIRTH, DDATA, DDEATH) takes the next `seq`, 0-255;
//! - a device is born (DBIRTH) once it has points and is online, dies
//!   (DDEATH) when it goes offline or is forgotten, and is born again when
//!   its points or a metric's datatype change;
//! - with a primary host configured nothing is published until its STATE
//!   says online; data that arrives while the node cannot publish is held
//!   (bounded, oldest dropped first) and sent after the next births with
//!   `is_historical`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ferrogate_sdk::{
    DeviceState, PointErrorKind, PointMeta, Reading, Telemetry, Timestamp, Uplink, Value,
};
use prost::Message;

use super::metric::{DataType, ValueError, quality_properties};
use super::proto::{Metric, MetricValue, Payload, PropertySet, PropertyValue, PropertyValueKind};
use super::topic::{CommandTopic, MessageType, Topics, host_state};

/// The node metric a host sets to ask for new births.
pub const REBIRTH: &str = "Node Control/Rebirth";
/// The node metric carrying the connection's birth/death sequence number.
pub const BD_SEQ: &str = "bdSeq";

/// What the edge node is, from the `[sparkplug]` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub group_id: String,
    pub edge_node_id: String,
    /// Publish only while this host application's STATE says online.
    pub primary_host_id: Option<String>,
    /// Metrics carry aliases in births; data messages use only the alias.
    pub aliases: bool,
    /// How many telemetry messages are held while the node cannot publish.
    pub hold_limit: usize,
}

/// One MQTT publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// A write a DCMD asks for, to go through the command router.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceWrite {
    /// Unique per node: `spb:{bdSeq}:{n}`.
    pub id: String,
    pub device: String,
    pub values: BTreeMap<String, Value>,
}

/// What the driver is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Publish(Publish),
    /// Subscribe to each topic with QoS 1, then call
    /// [`EdgeNode::subscribed`] once all are acknowledged.
    Subscribe(Vec<String>),
    Write(DeviceWrite),
}

/// The primary host application, as its STATE messages tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// No primary host is configured: publish whenever connected.
    NotConfigured,
    /// Configured, no STATE seen yet.
    Unknown,
    Online,
    Offline,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::NotConfigured => "not configured",
            HostState::Unknown => "unknown",
            HostState::Online => "online",
            HostState::Offline => "offline",
        }
    }
}

/// Counters and state for `ferrogate status` and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// This connection's bdSeq (the last one used, before any connection).
    pub bd_seq: u64,
    /// The seq the next node-scope message gets.
    pub seq: u64,
    pub connected: bool,
    pub born: bool,
    pub host: HostState,
    pub devices_born: usize,
    pub held: usize,
    pub held_dropped: u64,
    pub node_births: u64,
    pub device_births: u64,
    pub device_deaths: u64,
    pub rebirth_requests: u64,
    pub commands_refused: u64,
}

/// Why a message on the node's subscriptions was not acted on. Logged by
/// the driver; never a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("not a payload: {0}")]
    Payload(String),
    #[error("topic {0:?} is not this node's NCMD, DCMD or primary host STATE")]
    Topic(String),
    #[error("STATE payload is not {{\"online\": bool, \"timestamp\": ms}}")]
    State,
    #[error("DCMD for device {0:?}, which is not born")]
    UnknownDevice(String),
    #[error("no metric {0:?} on this node or device")]
    UnknownMetric(String),
    #[error("metric without a name or alias")]
    Unnamed,
    #[error("metric {metric:?}: {error}")]
    Value { metric: String, error: ValueError },
    #[error("metric {0:?} has no value")]
    NoValue(String),
    #[error("metric {metric:?}: datatype {code} is not one a command may carry")]
    DataType { metric: String, code: u32 },
    #[error("command with no metrics")]
    Empty,
}

/// What the node knows about one metric of a device.
#[derive(Debug, Clone)]
struct MetricState {
    /// The point's configured type, if it names one.
    declared: Option<DataType>,
    /// The datatype in the last DBIRTH (or the one the next will use).
    datatype: DataType,
    alias: u64,
    meta: Option<SharedMeta>,
    last: Option<(Result<Value, PointErrorKind>, Timestamp)>,
}

/// A point's metadata as the meta message gave it: a place in the list
/// the devices of one profile share, not a copy per device (1000 Modbus
/// devices of 100 points held 100k copies, about 30 MB).
#[derive(Debug, Clone)]
struct SharedMeta {
    list: Arc<[PointMeta]>,
    index: usize,
}

impl SharedMeta {
    fn get(&self) -> Option<&PointMeta> {
        self.list.get(self.index)
    }
}

#[derive(Debug, Clone, Default)]
struct Device {
    metrics: BTreeMap<Arc<str>, MetricState>,
    /// Order of the points in the meta, then points only telemetry named.
    order: Vec<Arc<str>>,
    online: bool,
    born: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    Connecting,
    Subscribing,
    Up,
}

/// Telemetry that arrived while the node could not publish.
#[derive(Debug, Clone)]
struct Held {
    device: String,
    readings: Vec<Reading>,
}

/// The edge node. See the module documentation.
#[derive(Debug)]
pub struct EdgeNode {
    config: NodeConfig,
    topics: Topics,
    /// The bdSeq of the current (or last) connection.
    bd_seq: u64,
    next_bd_seq: u64,
    seq: u8,
    link: Link,
    born: bool,
    host: HostState,
    host_timestamp: u64,
    devices: BTreeMap<String, Device>,
    next_alias: u64,
    held: VecDeque<Held>,
    events: VecDeque<Event>,
    writes: u64,
    status: NodeStatus,
}

impl EdgeNode {
    /// A node whose next connection uses `next_bd_seq` (persisted by the
    /// driver from [`EdgeNode::next_bd_seq`]; 0 on first start).
    pub fn new(config: NodeConfig, next_bd_seq: u64) -> EdgeNode {
        let host = if config.primary_host_id.is_some() {
            HostState::Unknown
        } else {
            HostState::NotConfigured
        };
        let next_bd_seq = next_bd_seq % 256;
        EdgeNode {
            topics: Topics::new(&config.group_id, &config.edge_node_id),
            config,
            bd_seq: next_bd_seq,
            next_bd_seq,
            seq: 0,
            link: Link::Down,
            born: false,
            host,
            host_timestamp: 0,
            devices: BTreeMap::new(),
            next_alias: 0,
            held: VecDeque::new(),
            events: VecDeque::new(),
            writes: 0,
            status: NodeStatus {
                bd_seq: next_bd_seq,
                seq: 0,
                connected: false,
                born: false,
                host,
                devices_born: 0,
                held: 0,
                held_dropped: 0,
                node_births: 0,
                device_births: 0,
                device_deaths: 0,
                rebirth_requests: 0,
                commands_refused: 0,
            },
        }
    }

    /// Start a connection: takes this connection's bdSeq and returns the
    /// will (NDEATH with it). The driver persists [`EdgeNode::next_bd_seq`]
    /// before connecting, so a restart never reuses it.
    pub fn connect(&mut self, now: Timestamp) -> Publish {
        self.bd_seq = self.next_bd_seq;
        self.next_bd_seq = (self.bd_seq + 1) % 256;
        self.link = Link::Connecting;
        self.death(now)
    }

    /// The bdSeq the connection after this one will use.
    pub fn next_bd_seq(&self) -> u64 {
        self.next_bd_seq
    }

    /// The broker accepted the connection (clean session).
    pub fn connected(&mut self) {
        self.link = Link::Subscribing;
        let mut topics = vec![
            self.topics.node(MessageType::NCmd),
            self.topics.device_commands(),
        ];
        if let Some(host) = &self.config.primary_host_id {
            topics.push(host_state(host));
        }
        self.events.push_back(Event::Subscribe(topics));
    }

    /// Every subscription was acknowledged: births, unless a primary host
    /// is configured and not online.
    pub fn subscribed(&mut self, now: Timestamp) {
        self.link = Link::Up;
        if self.host_allows() {
            self.birth(now);
        }
    }

    /// The connection is gone; the broker published the will.
    pub fn disconnected(&mut self) {
        self.link = Link::Down;
        self.unborn();
    }

    /// An intentional shutdown: the NDEATH to publish before DISCONNECT,
    /// if there is a connection to publish it on.
    pub fn shutdown(&mut self, now: Timestamp) -> Option<Publish> {
        let connected = matches!(self.link, Link::Subscribing | Link::Up);
        self.link = Link::Down;
        self.unborn();
        connected.then(|| self.death(now))
    }

    /// The next thing for the driver to do.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn status(&self) -> NodeStatus {
        let mut s = self.status.clone();
        s.bd_seq = self.bd_seq;
        s.seq = u64::from(self.seq);
        s.connected = matches!(self.link, Link::Subscribing | Link::Up);
        s.born = self.born;
        s.host = self.host;
        s.devices_born = self.devices.values().filter(|d| d.born).count();
        s.held = self.held.len();
        s
    }

    /// A message the adapters sent north.
    pub fn uplink(&mut self, uplink: &Uplink, now: Timestamp) {
        match uplink {
            Uplink::Meta(meta) => {
                let device = self
                    .devices
                    .entry(meta.device.clone())
                    .or_insert_with(|| Device {
                        online: true,
                        ..Device::default()
                    });
                let changed = learn_points(device, &meta.points, &mut self.next_alias);
                if changed && device.born {
                    device.born = false;
                }
                self.birth_device_if_due(&meta.device, now);
            }
            Uplink::Status(status) => {
                let online = status.state == DeviceState::Online;
                let device = self.devices.entry(status.device.clone()).or_default();
                device.online = online;
                if online {
                    self.birth_device_if_due(&status.device, now);
                } else if device.born {
                    device.born = false;
                    self.device_death(&status.device, now);
                }
            }
            Uplink::Telemetry(t) => self.telemetry(t, now),
            Uplink::Forgotten(f) => {
                if self.devices.remove(&f.device).is_some_and(|d| d.born) {
                    self.device_death(&f.device, now);
                }
                self.held.retain(|h| h.device != f.device);
            }
            Uplink::Event(_) => {}
        }
    }

    /// A write the device confirmed: reported with a DDATA of the
    /// confirmed values.
    pub fn write_confirmed(
        &mut self,
        device: &str,
        values: &BTreeMap<String, Value>,
        now: Timestamp,
    ) {
        let readings: Vec<Reading> = values
            .iter()
            .map(|(point, value)| Reading::ok(point.as_str(), value.clone(), now))
            .collect();
        self.telemetry(
            &Telemetry {
                device: device.to_string(),
                ts: now,
                readings,
            },
            now,
        );
    }

    /// A message received on one of the node's subscriptions.
    pub fn received(&mut self, topic: &str, payload: &[u8], now: Timestamp) -> Result<(), Refusal> {
        let outcome = self.dispatch(topic, payload, now);
        if outcome.is_err() {
            self.status.commands_refused += 1;
        }
        outcome
    }

    fn dispatch(&mut self, topic: &str, payload: &[u8], now: Timestamp) -> Result<(), Refusal> {
        if let Some(host) = &self.config.primary_host_id
            && topic == host_state(host)
        {
            return self.host_state(payload, now);
        }
        let target = self
            .topics
            .command(topic)
            .ok_or_else(|| Refusal::Topic(topic.chars().take(200).collect()))?;
        let payload = Payload::decode(payload).map_err(|e| Refusal::Payload(e.to_string()))?;
        if payload.metrics.is_empty() {
            return Err(Refusal::Empty);
        }
        match target {
            CommandTopic::Node => self.node_command(&payload, now),
            CommandTopic::Device(device) => self.device_command(device, &payload),
        }
    }

    fn node_command(&mut self, payload: &Payload, now: Timestamp) -> Result<(), Refusal> {
        for metric in &payload.metrics {
            let name = metric.name.as_deref().ok_or(Refusal::Unnamed)?;
            if name != REBIRTH {
                return Err(Refusal::UnknownMetric(name.chars().take(200).collect()));
            }
            match &metric.value {
                Some(MetricValue::Boolean(true)) => {
                    self.status.rebirth_requests += 1;
                    if self.link == Link::Up && self.host_allows() {
                        self.birth(now);
                    }
                }
                Some(MetricValue::Boolean(false)) => {}
                Some(_) => {
                    return Err(Refusal::Value {
                        metric: REBIRTH.into(),
                        error: ValueError::WrongField {
                            datatype: DataType::Boolean,
                        },
                    });
                }
                None => return Err(Refusal::NoValue(REBIRTH.into())),
            }
        }
        Ok(())
    }

    fn device_command(&mut self, device_name: String, payload: &Payload) -> Result<(), Refusal> {
        let device = self
            .devices
            .get(&device_name)
            .filter(|d| d.born)
            .ok_or_else(|| Refusal::UnknownDevice(device_name.clone()))?;
        let mut values = BTreeMap::new();
        for metric in &payload.metrics {
            let (point, state) = match (&metric.name, metric.alias) {
                (Some(name), _) => device
                    .metrics
                    .get_key_value(name.as_str())
                    .ok_or_else(|| Refusal::UnknownMetric(name.chars().take(200).collect()))?,
                (None, Some(alias)) => device
                    .metrics
                    .iter()
                    .find(|(_, m)| m.alias == alias)
                    .ok_or_else(|| Refusal::UnknownMetric(format!("alias {alias}")))?,
                (None, None) => return Err(Refusal::Unnamed),
            };
            let datatype = match metric.datatype {
                None => state.datatype,
                Some(code) => DataType::from_code(code).ok_or_else(|| Refusal::DataType {
                    metric: point.to_string(),
                    code,
                })?,
            };
            let wire = metric
                .value
                .as_ref()
                .ok_or_else(|| Refusal::NoValue(point.to_string()))?;
            let value = datatype.decode(wire).map_err(|error| Refusal::Value {
                metric: point.to_string(),
                error,
            })?;
            values.insert(point.to_string(), value);
        }
        self.writes += 1;
        let id = format!("spb:{}:{}", self.bd_seq, self.writes);
        self.events.push_back(Event::Write(DeviceWrite {
            id,
            device: device_name,
            values,
        }));
        Ok(())
    }

    /// Sparkplug 3.0 STATE: `{"online": bool, "timestamp": ms}` (retained).
    fn host_state(&mut self, payload: &[u8], now: Timestamp) -> Result<(), Refusal> {
        let json: serde_json::Value =
            serde_json::from_slice(payload).map_err(|_| Refusal::State)?;
        let online = json
            .get("online")
            .and_then(|v| v.as_bool())
            .ok_or(Refusal::State)?;
        let timestamp = json.get("timestamp").and_then(|v| v.as_u64()).unwrap_or(0);
        if timestamp < self.host_timestamp {
            // An older host session's state, delivered late.
            return Ok(());
        }
        self.host_timestamp = timestamp;
        let was = self.host;
        self.host = if online {
            HostState::Online
        } else {
            HostState::Offline
        };
        match (was, self.host) {
            (HostState::Online, HostState::Online) => {}
            (_, HostState::Online) if self.link == Link::Up => self.birth(now),
            (_, HostState::Offline) => self.unborn(),
            _ => {}
        }
        Ok(())
    }

    fn host_allows(&self) -> bool {
        matches!(self.host, HostState::NotConfigured | HostState::Online)
    }

    fn can_publish(&self) -> bool {
        self.link == Link::Up && self.born
    }

    fn unborn(&mut self) {
        self.born = false;
        for device in self.devices.values_mut() {
            device.born = false;
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        u64::from(seq)
    }

    fn publish(&mut self, topic: String, payload: &Payload) {
        self.events.push_back(Event::Publish(Publish {
            topic,
            payload: payload.encode_to_vec(),
            qos: 0,
            retain: false,
        }));
    }

    fn death(&self, now: Timestamp) -> Publish {
        let payload = Payload {
            timestamp: Some(now.0),
            metrics: vec![bd_seq_metric(self.bd_seq, now)],
            ..Payload::default()
        };
        Publish {
            topic: self.topics.node(MessageType::NDeath),
            payload: payload.encode_to_vec(),
            qos: 1,
            retain: false,
        }
    }

    /// NBIRTH, a DBIRTH per online device with points, then held data.
    fn birth(&mut self, now: Timestamp) {
        self.unborn();
        self.seq = 0;
        let payload = Payload {
            timestamp: Some(now.0),
            seq: Some(self.next_seq()),
            metrics: vec![
                bd_seq_metric(self.bd_seq, now),
                Metric {
                    name: Some(REBIRTH.into()),
                    timestamp: Some(now.0),
                    datatype: Some(DataType::Boolean.code()),
                    value: Some(MetricValue::Boolean(false)),
                    ..Metric::default()
                },
            ],
            ..Payload::default()
        };
        self.publish(self.topics.node(MessageType::NBirth), &payload);
        self.born = true;
        self.status.node_births += 1;
        let names: Vec<String> = self.devices.keys().cloned().collect();
        for name in &names {
            self.birth_device_if_due(name, now);
        }
        while let Some(held) = self.held.pop_front() {
            if self.devices.get(&held.device).is_some_and(|d| d.born) {
                self.data(&held.device, &held.readings, None, now);
            } else {
                self.status.held_dropped += 1;
            }
        }
    }

    fn birth_device_if_due(&mut self, name: &str, now: Timestamp) {
        if !self.can_publish() {
            return;
        }
        let Some(device) = self.devices.get_mut(name) else {
            return;
        };
        if device.born || !device.online || device.order.is_empty() {
            return;
        }
        device.born = true;
        let aliases = self.config.aliases;
        let metrics = device
            .order
            .iter()
            .filter_map(|point| device.metrics.get(point).map(|m| (point, m)))
            .map(|(point, m)| birth_metric(point, m, aliases, now))
            .collect();
        let payload = Payload {
            timestamp: Some(now.0),
            seq: Some(self.next_seq()),
            metrics,
            ..Payload::default()
        };
        self.publish(self.topics.device(MessageType::DBirth, name), &payload);
        self.status.device_births += 1;
    }

    fn device_death(&mut self, name: &str, now: Timestamp) {
        if !self.can_publish() {
            return;
        }
        let payload = Payload {
            timestamp: Some(now.0),
            seq: Some(self.next_seq()),
            ..Payload::default()
        };
        self.publish(self.topics.device(MessageType::DDeath, name), &payload);
        self.status.device_deaths += 1;
    }

    fn telemetry(&mut self, t: &Telemetry, now: Timestamp) {
        let device = self
            .devices
            .entry(t.device.clone())
            .or_insert_with(|| Device {
                online: true,
                ..Device::default()
            });
        let mut reborn = false;
        for reading in &t.readings {
            let value = reading.value.as_ref().map_err(|e| e.kind).cloned();
            let state = match device.metrics.get_mut(&reading.point) {
                Some(state) => state,
                None => {
                    device.order.push(reading.point.clone());
                    reborn = true;
                    device
                        .metrics
                        .entry(reading.point.clone())
                        .or_insert_with(|| new_metric(None, &mut self.next_alias))
                }
            };
            if let Ok(v) = &value {
                let datatype = DataType::for_value(v, state.declared);
                if datatype != state.datatype {
                    state.datatype = datatype;
                    reborn = true;
                }
            }
            state.last = Some((value, reading.ts));
        }
        let online = device.online;
        if reborn {
            device.born = false;
        }
        if !self.can_publish() {
            if self.held.len() >= self.config.hold_limit {
                self.held.pop_front();
                self.status.held_dropped += 1;
            }
            if self.config.hold_limit > 0 {
                self.held.push_back(Held {
                    device: t.device.clone(),
                    readings: t.readings.clone(),
                });
            }
            return;
        }
        if !online {
            return;
        }
        if self.devices.get(&t.device).is_some_and(|d| d.born) {
            self.data(&t.device, &t.readings, Some(t.ts), now);
        } else {
            // The DBIRTH carries these values.
            self.birth_device_if_due(&t.device, now);
        }
    }

    /// A DDATA of these readings (the device is born). Live data (`live`
    /// is the batch's time) has that time as the payload's timestamp and
    /// a metric timestamp only where a reading's differs; historical data
    /// has a timestamp on every metric. The datatype is left to the DBIRTH
    /// (Sparkplug 3.0: not sent in DATA messages).
    fn data(&mut self, name: &str, readings: &[Reading], live: Option<Timestamp>, now: Timestamp) {
        let Some(device) = self.devices.get(name) else {
            return;
        };
        let aliases = self.config.aliases;
        let metrics = readings
            .iter()
            .filter_map(|r| device.metrics.get(&r.point).map(|m| (r, m)))
            .map(|(reading, state)| {
                let mut metric = Metric {
                    timestamp: (live != Some(reading.ts)).then_some(reading.ts.0),
                    is_historical: live.is_none().then_some(true),
                    ..Metric::default()
                };
                if aliases {
                    metric.alias = Some(state.alias);
                } else {
                    metric.name = Some(reading.point.to_string());
                }
                match &reading.value {
                    Ok(v) if DataType::for_value(v, Some(state.datatype)) == state.datatype => {
                        metric.value = Some(state.datatype.encode(v));
                    }
                    // Held data of a datatype the device was since reborn
                    // without: null rather than a value of another type.
                    Ok(_) => metric.is_null = Some(true),
                    Err(e) => {
                        metric.is_null = Some(true);
                        metric.properties = Some(quality_properties(e.kind));
                    }
                }
                metric
            })
            .collect();
        let payload = Payload {
            timestamp: Some(live.unwrap_or(now).0),
            seq: Some(self.next_seq()),
            metrics,
            ..Payload::default()
        };
        self.publish(self.topics.device(MessageType::DData, name), &payload);
    }
}

fn new_metric(declared: Option<DataType>, next_alias: &mut u64) -> MetricState {
    let alias = *next_alias;
    *next_alias += 1;
    MetricState {
        declared,
        datatype: declared.unwrap_or(DataType::String),
        alias,
        meta: None,
        last: None,
    }
}

/// Take the device's points from its meta; whether anything a DBIRTH
/// says changed.
fn learn_points(device: &mut Device, points: &Arc<[PointMeta]>, next_alias: &mut u64) -> bool {
    let mut changed = false;
    let mut order: Vec<Arc<str>> = Vec::with_capacity(points.len());
    for (index, point) in points.iter().enumerate() {
        let declared = DataType::for_point(&point.data_type);
        let key: Arc<str> = match device.metrics.get_key_value(point.name.as_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(point.name.as_str()),
        };
        let state = device
            .metrics
            .entry(key.clone())
            .or_insert_with(|| new_metric(declared, next_alias));
        if state.meta.as_ref().and_then(SharedMeta::get) != Some(point) {
            changed = true;
            state.declared = declared;
            state.datatype = match &state.last {
                Some((Ok(v), _)) => DataType::for_value(v, declared),
                _ => declared.unwrap_or(state.datatype),
            };
            state.meta = Some(SharedMeta {
                list: points.clone(),
                index,
            });
        }
        order.push(key);
    }
    // Points only telemetry named stay, after the meta's.
    for point in &device.order {
        if !order.contains(point) {
            order.push(point.clone());
        }
    }
    changed |= order != device.order;
    device.order = order;
    changed
}

fn bd_seq_metric(bd_seq: u64, now: Timestamp) -> Metric {
    Metric {
        name: Some(BD_SEQ.into()),
        timestamp: Some(now.0),
        datatype: Some(DataType::Int64.code()),
        value: Some(MetricValue::Long(bd_seq)),
        ..Metric::default()
    }
}

/// A DBIRTH metric: name, alias, datatype, the last value (or null with
/// its Quality), and the point's unit, range and writability as
/// properties (`engUnit`, `engLow`, `engHigh`, `readOnly`, as Ignition
/// names them).
fn birth_metric(point: &str, state: &MetricState, aliases: bool, now: Timestamp) -> Metric {
    let mut properties = PropertySet::default();
    let mut property = |key: &str, datatype: DataType, value: PropertyValueKind| {
        properties.keys.push(key.to_string());
        properties.values.push(PropertyValue {
            r#type: Some(datatype.code()),
            is_null: None,
            value: Some(value),
        });
    };
    if let Some(meta) = state.meta.as_ref().and_then(SharedMeta::get) {
        if let Some(unit) = &meta.unit {
            property(
                "engUnit",
                DataType::String,
                PropertyValueKind::String(unit.clone()),
            );
        }
        if let Some(min) = meta.min {
            property("engLow", DataType::Double, PropertyValueKind::Double(min));
        }
        if let Some(max) = meta.max {
            property("engHigh", DataType::Double, PropertyValueKind::Double(max));
        }
        property(
            "readOnly",
            DataType::Boolean,
            PropertyValueKind::Boolean(!meta.writable),
        );
    }
    let mut metric = Metric {
        name: Some(point.to_string()),
        alias: aliases.then_some(state.alias),
        datatype: Some(state.datatype.code()),
        timestamp: Some(now.0),
        ..Metric::default()
    };
    match &state.last {
        Some((Ok(v), ts)) if DataType::for_value(v, Some(state.datatype)) == state.datatype => {
            metric.timestamp = Some(ts.0);
            metric.value = Some(state.datatype.encode(v));
        }
        Some((Err(kind), ts)) => {
            metric.timestamp = Some(ts.0);
            metric.is_null = Some(true);
            let quality = quality_properties(*kind);
            properties.keys.extend(quality.keys);
            properties.values.extend(quality.values);
        }
        _ => metric.is_null = Some(true),
    }
    if !properties.keys.is_empty() {
        metric.properties = Some(properties);
    }
    metric
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogate_sdk::{DeviceForgotten, DeviceMeta, DeviceStatus, PointError};
    use proptest::prelude::*;

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn config(aliases: bool, host: Option<&str>) -> NodeConfig {
        NodeConfig {
            group_id: "plant".into(),
            edge_node_id: "gw".into(),
            primary_host_id: host.map(str::to_string),
            aliases,
            hold_limit: 100,
        }
    }

    fn meta(device: &str) -> Uplink {
        Uplink::Meta(DeviceMeta {
            device: device.into(),
            points: vec![
                PointMeta {
                    name: "temp".into(),
                    data_type: "i16".into(),
                    unit: Some("C".into()),
                    ..PointMeta::default()
                },
                PointMeta {
                    name: "setpoint".into(),
                    data_type: "u16".into(),
                    writable: true,
                    min: Some(0.0),
                    max: Some(100.0),
                    ..PointMeta::default()
                },
            ]
            .into(),
            ..DeviceMeta::default()
        })
    }

    fn status(device: &str, state: DeviceState) -> Uplink {
        Uplink::Status(DeviceStatus {
            device: device.into(),
            state,
            reason: None,
            ts: T0,
        })
    }

    fn telemetry(device: &str, temp: Result<Value, PointError>, ts: Timestamp) -> Uplink {
        Uplink::Telemetry(Telemetry {
            device: device.into(),
            ts,
            readings: vec![Reading {
                point: "temp".into(),
                value: temp,
                ts,
            }],
        })
    }

    /// The publishes queued, decoded: (topic, payload).
    fn drain(node: &mut EdgeNode) -> Vec<(String, Payload)> {
        let mut out = Vec::new();
        while let Some(event) = node.poll_event() {
            if let Event::Publish(p) = event {
                out.push((p.topic, Payload::decode(p.payload.as_slice()).unwrap()));
            }
        }
        out
    }

    fn topics(published: &[(String, Payload)]) -> Vec<&str> {
        published.iter().map(|(t, _)| t.as_str()).collect()
    }

    fn metric<'a>(payload: &'a Payload, name: &str) -> &'a Metric {
        payload
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no metric {name} in {payload:?}"))
    }

    /// A node that is connected, subscribed and born, with device `boiler`
    /// born; the births drained.
    fn born(aliases: bool) -> EdgeNode {
        let mut node = EdgeNode::new(config(aliases, None), 5);
        node.connect(T0);
        node.connected();
        node.subscribed(T0);
        node.uplink(&meta("boiler"), T0);
        drain(&mut node);
        node
    }

    #[test]
    fn a_session_births_publishes_and_dies_in_order() {
        let mut node = EdgeNode::new(config(false, None), 5);
        let will = node.connect(T0);
        assert_eq!(will.topic, "spBv1.0/plant/NDEATH/gw");
        assert_eq!((will.qos, will.retain), (1, false));
        let will = Payload::decode(will.payload.as_slice()).unwrap();
        assert_eq!(metric(&will, BD_SEQ).value, Some(MetricValue::Long(5)));
        assert_eq!(will.seq, None);
        assert_eq!(node.next_bd_seq(), 6);

        node.connected();
        assert_eq!(
            node.poll_event(),
            Some(Event::Subscribe(vec![
                "spBv1.0/plant/NCMD/gw".into(),
                "spBv1.0/plant/DCMD/gw/+".into()
            ]))
        );
        assert_eq!(
            node.poll_event(),
            None,
            "nothing before the subscriptions are acknowledged"
        );
        node.uplink(&meta("boiler"), T0);
        assert!(drain(&mut node).is_empty());

        node.subscribed(T0);
        let births = drain(&mut node);
        assert_eq!(
            topics(&births),
            ["spBv1.0/plant/NBIRTH/gw", "spBv1.0/plant/DBIRTH/gw/boiler"]
        );
        let nbirth = &births[0].1;
        assert_eq!(nbirth.seq, Some(0));
        assert_eq!(metric(nbirth, BD_SEQ).value, Some(MetricValue::Long(5)));
        assert_eq!(
            metric(nbirth, REBIRTH).value,
            Some(MetricValue::Boolean(false))
        );
        assert_eq!(metric(nbirth, REBIRTH).alias, None);
        let dbirth = &births[1].1;
        assert_eq!(dbirth.seq, Some(1));
        let temp = metric(dbirth, "temp");
        assert_eq!(temp.datatype, Some(DataType::Int16.code()));
        assert_eq!(temp.is_null, Some(true), "no value read yet");
        let props = temp.properties.as_ref().unwrap();
        assert_eq!(props.keys, ["engUnit", "readOnly"]);
        let setpoint = metric(dbirth, "setpoint");
        assert_eq!(setpoint.datatype, Some(DataType::UInt16.code()));
        let props = setpoint.properties.as_ref().unwrap();
        assert_eq!(props.keys, ["engLow", "engHigh", "readOnly"]);
        assert_eq!(
            props.values[2].value,
            Some(PropertyValueKind::Boolean(false))
        );

        node.uplink(&telemetry("boiler", Ok(Value::Int(-5)), T0), T0);
        node.uplink(&status("boiler", DeviceState::Offline), T0);
        node.uplink(&telemetry("boiler", Ok(Value::Int(-6)), T0), T0);
        node.uplink(&status("boiler", DeviceState::Online), T0);
        let later = drain(&mut node);
        assert_eq!(
            topics(&later),
            [
                "spBv1.0/plant/DDATA/gw/boiler",
                "spBv1.0/plant/DDEATH/gw/boiler",
                "spBv1.0/plant/DBIRTH/gw/boiler"
            ]
        );
        let seqs: Vec<_> = later.iter().map(|(_, p)| p.seq).collect();
        assert_eq!(seqs, [Some(2), Some(3), Some(4)]);
        let ddata = metric(&later[0].1, "temp");
        assert_eq!(
            ddata.value,
            Some(MetricValue::Int(0xFFFB)),
            "-5 as 16-bit two's complement"
        );
        // The batch's time is the payload's; the datatype is the DBIRTH's.
        assert_eq!((ddata.timestamp, ddata.datatype), (None, None));
        assert_eq!(later[0].1.timestamp, Some(T0.0));
        // The DBIRTH after the return carries the last value.
        assert_eq!(
            metric(&later[2].1, "temp").value,
            Some(MetricValue::Int(0xFFFA))
        );

        let death = node.shutdown(T0).expect("NDEATH on shutdown");
        assert_eq!(death.topic, "spBv1.0/plant/NDEATH/gw");
        let death = Payload::decode(death.payload.as_slice()).unwrap();
        assert_eq!(metric(&death, BD_SEQ).value, Some(MetricValue::Long(5)));
        assert_eq!(node.shutdown(T0), None, "no second NDEATH");
    }

    #[test]
    fn seq_runs_0_to_255_and_wraps() {
        let mut node = born(false);
        let mut seqs = Vec::new();
        for i in 0..300 {
            node.uplink(&telemetry("boiler", Ok(Value::Int(i % 100)), T0), T0);
            seqs.extend(drain(&mut node).into_iter().map(|(_, p)| p.seq.unwrap()));
        }
        let expected: Vec<u64> = (2..302).map(|s| s % 256).collect();
        assert_eq!(seqs, expected);
    }

    #[test]
    fn a_failed_read_is_null_with_its_quality() {
        let mut node = born(false);
        let error = PointError::new(PointErrorKind::Timeout, "no answer");
        node.uplink(&telemetry("boiler", Err(error), T0), T0);
        let published = drain(&mut node);
        let temp = metric(&published[0].1, "temp");
        assert_eq!(temp.is_null, Some(true));
        assert_eq!(temp.value, None);
        let props = temp.properties.as_ref().unwrap();
        assert_eq!(props.keys, ["Quality"]);
        assert_eq!(props.values[0].value, Some(PropertyValueKind::Int(24)));
    }

    #[test]
    fn a_value_of_another_datatype_rebirths_the_device() {
        let mut node = born(false);
        node.uplink(&telemetry("boiler", Ok(Value::Float(21.5)), T0), T0);
        let published = drain(&mut node);
        assert_eq!(topics(&published), ["spBv1.0/plant/DBIRTH/gw/boiler"]);
        let temp = metric(&published[0].1, "temp");
        assert_eq!(temp.datatype, Some(DataType::Double.code()));
        assert_eq!(temp.value, Some(MetricValue::Double(21.5)));
        node.uplink(&telemetry("boiler", Ok(Value::Float(22.0)), T0), T0);
        assert_eq!(topics(&drain(&mut node)), ["spBv1.0/plant/DDATA/gw/boiler"]);
    }

    #[test]
    fn rebirth_on_ncmd_with_the_same_bd_seq() {
        let mut node = born(true);
        let aliases_before: Vec<_> = {
            node.received("spBv1.0/plant/NCMD/gw", &rebirth(), T0)
                .unwrap();
            let births = drain(&mut node);
            assert_eq!(
                topics(&births),
                ["spBv1.0/plant/NBIRTH/gw", "spBv1.0/plant/DBIRTH/gw/boiler"]
            );
            assert_eq!(births[0].1.seq, Some(0));
            assert_eq!(
                metric(&births[0].1, BD_SEQ).value,
                Some(MetricValue::Long(5))
            );
            births[1].1.metrics.iter().map(|m| m.alias).collect()
        };
        assert!(aliases_before.iter().all(Option::is_some));
        node.received("spBv1.0/plant/NCMD/gw", &rebirth(), T0)
            .unwrap();
        let births = drain(&mut node);
        let aliases_after: Vec<_> = births[1].1.metrics.iter().map(|m| m.alias).collect();
        assert_eq!(
            aliases_before, aliases_after,
            "aliases are stable across rebirths"
        );
        assert_eq!(node.status().rebirth_requests, 2);
        assert_eq!(node.status().node_births, 3);

        // Data carries the alias only.
        node.uplink(&telemetry("boiler", Ok(Value::Int(1)), T0), T0);
        let ddata = drain(&mut node);
        assert_eq!(ddata[0].1.metrics[0].name, None);
        assert_eq!(ddata[0].1.metrics[0].alias, aliases_before[0]);
    }

    fn rebirth() -> Vec<u8> {
        Payload {
            timestamp: Some(T0.0),
            metrics: vec![Metric {
                name: Some(REBIRTH.into()),
                datatype: Some(DataType::Boolean.code()),
                value: Some(MetricValue::Boolean(true)),
                ..Metric::default()
            }],
            ..Payload::default()
        }
        .encode_to_vec()
    }

    fn dcmd(
        name: Option<&str>,
        alias: Option<u64>,
        datatype: DataType,
        value: MetricValue,
    ) -> Vec<u8> {
        Payload {
            timestamp: Some(T0.0),
            metrics: vec![Metric {
                name: name.map(str::to_string),
                alias,
                datatype: Some(datatype.code()),
                value: Some(value),
                ..Metric::default()
            }],
            ..Payload::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn a_dcmd_write_becomes_a_command_and_its_confirmation_a_ddata() {
        let mut node = born(true);
        let topic = "spBv1.0/plant/DCMD/gw/boiler";
        let by_name = dcmd(
            Some("setpoint"),
            None,
            DataType::UInt16,
            MetricValue::Int(65),
        );
        node.received(topic, &by_name, T0).unwrap();
        let Some(Event::Write(write)) = node.poll_event() else {
            panic!("no write")
        };
        assert_eq!(write.device, "boiler");
        assert_eq!(
            write.values,
            BTreeMap::from([("setpoint".to_string(), Value::UInt(65))])
        );
        assert_eq!(write.id, "spb:5:1");

        // By alias: setpoint is the second point of the first device (alias 1).
        let by_alias = dcmd(None, Some(1), DataType::UInt16, MetricValue::Int(66));
        node.received(topic, &by_alias, T0).unwrap();
        let Some(Event::Write(write)) = node.poll_event() else {
            panic!("no write")
        };
        assert_eq!(write.values["setpoint"], Value::UInt(66));
        assert_ne!(write.id, "spb:5:1");

        node.write_confirmed("boiler", &write.values, T0);
        let published = drain(&mut node);
        assert_eq!(topics(&published), ["spBv1.0/plant/DDATA/gw/boiler"]);
        assert_eq!(published[0].1.metrics[0].alias, Some(1));
        assert_eq!(published[0].1.metrics[0].value, Some(MetricValue::Int(66)));
    }

    #[test]
    fn bad_commands_are_refused_with_a_reason() {
        let mut node = born(false);
        let topic = "spBv1.0/plant/DCMD/gw/boiler";
        let cases = [
            (
                "spBv1.0/plant/DCMD/gw/nobody",
                dcmd(
                    Some("setpoint"),
                    None,
                    DataType::UInt16,
                    MetricValue::Int(1),
                ),
                Refusal::UnknownDevice("nobody".into()),
            ),
            (
                topic,
                dcmd(Some("nope"), None, DataType::UInt16, MetricValue::Int(1)),
                Refusal::UnknownMetric("nope".into()),
            ),
            (
                topic,
                dcmd(
                    Some("setpoint"),
                    None,
                    DataType::UInt16,
                    MetricValue::Int(70_000),
                ),
                Refusal::Value {
                    metric: "setpoint".into(),
                    error: ValueError::OutOfRange {
                        datatype: DataType::UInt16,
                    },
                },
            ),
            (
                topic,
                vec![0xff, 0xff, 0xff],
                Refusal::Payload(String::new()),
            ),
        ];
        for (topic, payload, expected) in cases {
            let refused = node.received(topic, &payload, T0).unwrap_err();
            match (&refused, &expected) {
                (Refusal::Payload(_), Refusal::Payload(_)) => {}
                _ => assert_eq!(refused, expected),
            }
        }
        assert_eq!(node.poll_event(), None);
        assert_eq!(node.status().commands_refused, 4);
    }

    #[test]
    fn data_while_the_link_is_down_is_sent_as_historical_after_the_next_births() {
        let mut node = born(false);
        node.disconnected();
        let t1 = Timestamp(T0.0 + 1000);
        node.uplink(&telemetry("boiler", Ok(Value::Int(7)), t1), t1);
        assert!(drain(&mut node).is_empty());
        assert_eq!(node.status().held, 1);

        let will = node.connect(t1);
        let will = Payload::decode(will.payload.as_slice()).unwrap();
        assert_eq!(metric(&will, BD_SEQ).value, Some(MetricValue::Long(6)));
        node.connected();
        node.subscribed(t1);
        let published = drain(&mut node);
        assert_eq!(
            topics(&published),
            [
                "spBv1.0/plant/NBIRTH/gw",
                "spBv1.0/plant/DBIRTH/gw/boiler",
                "spBv1.0/plant/DDATA/gw/boiler"
            ]
        );
        assert_eq!(
            metric(&published[0].1, BD_SEQ).value,
            Some(MetricValue::Long(6))
        );
        let held = metric(&published[2].1, "temp");
        assert_eq!(held.is_historical, Some(true));
        assert_eq!(held.timestamp, Some(t1.0), "the original timestamp");
        assert_eq!(held.value, Some(MetricValue::Int(7)));
        assert_eq!(node.status().held, 0);
    }

    #[test]
    fn held_data_is_bounded_oldest_dropped_first() {
        let mut node = born(false);
        node.disconnected();
        for i in 0..150 {
            node.uplink(&telemetry("boiler", Ok(Value::Int(i)), T0), T0);
        }
        assert_eq!(node.status().held, 100);
        assert_eq!(node.status().held_dropped, 50);
        node.connect(T0);
        node.connected();
        node.subscribed(T0);
        let published = drain(&mut node);
        let first_held = metric(&published[2].1, "temp");
        assert_eq!(first_held.value, Some(MetricValue::Int(50)));
    }

    #[test]
    fn with_a_primary_host_nothing_is_published_until_it_is_online() {
        let mut node = EdgeNode::new(config(false, Some("scada")), 0);
        node.connect(T0);
        node.connected();
        let Some(Event::Subscribe(subs)) = node.poll_event() else {
            panic!("no subscribe")
        };
        assert_eq!(subs.last().map(String::as_str), Some("spBv1.0/STATE/scada"));
        node.subscribed(T0);
        node.uplink(&meta("boiler"), T0);
        node.uplink(&telemetry("boiler", Ok(Value::Int(1)), T0), T0);
        assert!(drain(&mut node).is_empty());
        assert_eq!(node.status().host, HostState::Unknown);

        let state = |online: bool, ts: u64| format!(r#"{{"online":{online},"timestamp":{ts}}}"#);
        node.received("spBv1.0/STATE/scada", state(true, 10).as_bytes(), T0)
            .unwrap();
        let published = drain(&mut node);
        assert_eq!(
            topics(&published),
            [
                "spBv1.0/plant/NBIRTH/gw",
                "spBv1.0/plant/DBIRTH/gw/boiler",
                "spBv1.0/plant/DDATA/gw/boiler"
            ]
        );
        assert_eq!(metric(&published[2].1, "temp").is_historical, Some(true));

        node.received("spBv1.0/STATE/scada", state(false, 20).as_bytes(), T0)
            .unwrap();
        node.uplink(&telemetry("boiler", Ok(Value::Int(2)), T0), T0);
        assert!(
            drain(&mut node).is_empty(),
            "held while the host is offline"
        );
        // A late STATE of an older host session changes nothing.
        node.received("spBv1.0/STATE/scada", state(true, 15).as_bytes(), T0)
            .unwrap();
        assert!(drain(&mut node).is_empty());
        node.received("spBv1.0/STATE/scada", state(true, 30).as_bytes(), T0)
            .unwrap();
        assert_eq!(drain(&mut node).len(), 3, "rebirth and the held data");
        assert_eq!(
            node.received("spBv1.0/STATE/scada", b"ONLINE", T0),
            Err(Refusal::State)
        );
    }

    #[test]
    fn a_forgotten_device_dies() {
        let mut node = born(false);
        node.uplink(
            &Uplink::Forgotten(DeviceForgotten {
                device: "boiler".into(),
            }),
            T0,
        );
        assert_eq!(
            topics(&drain(&mut node)),
            ["spBv1.0/plant/DDEATH/gw/boiler"]
        );
        assert_eq!(node.status().devices_born, 0);
    }

    proptest! {
        #[test]
        fn random_bytes_on_any_subscription_never_panic(
            topic in prop_oneof![
                Just("spBv1.0/plant/NCMD/gw".to_string()),
                Just("spBv1.0/plant/DCMD/gw/boiler".to_string()),
                Just("spBv1.0/STATE/scada".to_string()),
                "\\PC{0,40}",
            ],
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut node = EdgeNode::new(config(true, Some("scada")), 0);
            node.connect(T0);
            node.connected();
            node.subscribed(T0);
            node.uplink(&meta("boiler"), T0);
            let _ = node.received(&topic, &payload, T0);
            while node.poll_event().is_some() {}
        }
    }
}

/// Bytes on the wire per value, DDATA against the JSON contract's
/// telemetry, for a Modbus-like device of 100 u16 registers.
#[cfg(test)]
mod wire_size {
    use super::*;
    use ferrogate_sdk::DeviceMeta;

    const POINTS: usize = 100;

    fn device() -> (Uplink, Uplink) {
        let points: Vec<PointMeta> = (0..POINTS)
            .map(|i| PointMeta {
                name: format!("reg_{i:03}"),
                data_type: "u16".into(),
                ..PointMeta::default()
            })
            .collect();
        let ts = Timestamp(1_764_800_000_123);
        let readings = (0..POINTS)
            .map(|i| Reading::ok(format!("reg_{i:03}"), Value::UInt(1000 + i as u64 * 37), ts))
            .collect();
        (
            Uplink::Meta(DeviceMeta {
                device: "meter-0001".into(),
                points: points.into(),
                ..DeviceMeta::default()
            }),
            Uplink::Telemetry(Telemetry {
                device: "meter-0001".into(),
                ts,
                readings,
            }),
        )
    }

    fn ddata_bytes(aliases: bool) -> usize {
        let (meta, telemetry) = device();
        let mut node = EdgeNode::new(
            NodeConfig {
                group_id: "ferrogate".into(),
                edge_node_id: "bench".into(),
                primary_host_id: None,
                aliases,
                hold_limit: 10,
            },
            0,
        );
        node.connect(Timestamp(0));
        node.connected();
        node.subscribed(Timestamp(0));
        node.uplink(&meta, Timestamp(0));
        node.uplink(&telemetry, Timestamp(0));
        while node.poll_event().is_some() {}
        node.uplink(&telemetry, Timestamp(0));
        match node.poll_event() {
            Some(Event::Publish(p)) => p.topic.len() + p.payload.len(),
            other => panic!("no DDATA: {other:?}"),
        }
    }

    fn json_bytes() -> usize {
        let (_, telemetry) = device();
        let topics = crate::north::Topics::new("ferrogate/bench");
        crate::north::codec::encode_uplink(&topics, "bench", "modbus", &telemetry, 12345)
            .map(|e| e.topic.len() + e.payload.len())
            .sum()
    }

    #[test]
    fn ddata_with_aliases_costs_at_most_half_the_bytes_per_value_of_json() {
        let json = json_bytes() as f64 / POINTS as f64;
        let aliased = ddata_bytes(true) as f64 / POINTS as f64;
        let named = ddata_bytes(false) as f64 / POINTS as f64;
        eprintln!(
            "bytes per value: JSON {json:.1}, DDATA with aliases {aliased:.1}, DDATA with names {named:.1}"
        );
        assert!(
            aliased <= 0.5 * json,
            "DDATA {aliased:.1} B/value against JSON {json:.1}"
        );
    }
}
