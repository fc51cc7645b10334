//! The edge node's own MQTT session (clean, MQTT 3.1.1, separate from the
//! JSON contract's): moves bytes between rumqttc and the [`EdgeNode`],
//! persists `bdSeq` before each connection, feeds the node the uplinks the
//! adapters send (the directory's devices at start, then the live feed)
//! and hands DCMD writes to the command router. Decisions are the node's.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogate_sdk::backoff::Backoff;
use ferrogate_sdk::{DeviceStatus, Operation, Outcome, Timestamp, Uplink};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::SparkplugConfig;
use super::node::{EdgeNode, Event, NodeConfig, NodeStatus, Publish};
use crate::directory::{Directory, LiveFeed};
use crate::north::codec::Request;
use crate::north::config::{BrokerAddr, MqttConfig};
use crate::router::Router;

/// The file under the state directory holding the next connection's bdSeq.
pub const BD_SEQ_FILE: &str = "sparkplug-bdseq";
/// How long a clean stop waits for the NDEATH's PUBACK.
const DEATH_GRACE: Duration = Duration::from_secs(1);

/// What `ferrogate status` and metrics show.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugStatus {
    pub node: NodeStatus,
    pub broker: String,
    /// Uplinks the node missed because it fell behind the live feed.
    pub missed: u64,
    pub last_error: Option<String>,
}

impl SparkplugStatus {
    /// The `sparkplug` object of the control socket's `status` reply.
    pub fn to_json(&self) -> serde_json::Value {
        let n = &self.node;
        serde_json::json!({
            "broker": self.broker,
            "connected": n.connected,
            "born": n.born,
            "bd_seq": n.bd_seq,
            "seq": n.seq,
            "primary_host": n.host.as_str(),
            "devices_born": n.devices_born,
            "held": n.held,
            "held_dropped": n.held_dropped,
            "node_births": n.node_births,
            "device_births": n.device_births,
            "device_deaths": n.device_deaths,
            "rebirth_requests": n.rebirth_requests,
            "commands_refused": n.commands_refused,
            "missed": self.missed,
            "last_error": self.last_error,
        })
    }
}

impl SparkplugStatus {
    /// The `ferrogate_sparkplug_*` Prometheus samples.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let n = &self.node;
        let samples: [(&str, &str, &str, u64); 10] = [
            (
                "connected",
                "gauge",
                "1 while the Sparkplug session is connected.",
                u64::from(n.connected),
            ),
            (
                "bd_seq",
                "gauge",
                "The bdSeq of the current Sparkplug connection.",
                n.bd_seq,
            ),
            (
                "node_births_total",
                "counter",
                "NBIRTHs published.",
                n.node_births,
            ),
            (
                "device_births_total",
                "counter",
                "DBIRTHs published.",
                n.device_births,
            ),
            (
                "device_deaths_total",
                "counter",
                "DDEATHs published.",
                n.device_deaths,
            ),
            (
                "rebirth_requests_total",
                "counter",
                "NCMD Node Control/Rebirth requests received.",
                n.rebirth_requests,
            ),
            (
                "commands_refused_total",
                "counter",
                "NCMD, DCMD and STATE messages refused.",
                n.commands_refused,
            ),
            (
                "held",
                "gauge",
                "Telemetry messages held while the node cannot publish.",
                n.held as u64,
            ),
            (
                "held_dropped_total",
                "counter",
                "Held telemetry dropped (hold_limit, or the device not born).",
                n.held_dropped,
            ),
            (
                "missed_total",
                "counter",
                "Uplinks the edge node missed by falling behind.",
                self.missed,
            ),
        ];
        for (name, kind, help, value) in samples {
            let _ = writeln!(out, "# HELP ferrogate_sparkplug_{name} {help}");
            let _ = writeln!(out, "# TYPE ferrogate_sparkplug_{name} {kind}");
            let _ = writeln!(out, "ferrogate_sparkplug_{name} {value}");
        }
    }
}

/// Why the edge node could not start.
#[derive(Debug, thiserror::Error)]
pub enum SparkplugError {
    #[error("sparkplug broker url: {0}")]
    Url(String),
    #[error("cannot read the MQTT password: {0}")]
    Password(String),
}

/// The running edge node.
pub struct Sparkplug {
    task: JoinHandle<()>,
    status: Arc<Mutex<SparkplugStatus>>,
}

impl Sparkplug {
    /// Starts the edge node for the gateway's devices. `mqtt` is the
    /// resolved `[mqtt]` table (`embedded` already replaced by a url): its
    /// url, keep-alive and credentials are used unless `[sparkplug]` names
    /// its own url.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: &SparkplugConfig,
        gateway_id: &str,
        mqtt: &MqttConfig,
        state_dir: &Path,
        directory: Directory,
        live: LiveFeed,
        router: Router,
        stop: CancellationToken,
    ) -> Result<Sparkplug, SparkplugError> {
        let url = config.url.as_deref().unwrap_or(&mqtt.url);
        let addr = BrokerAddr::parse(url).map_err(SparkplugError::Url)?;
        if addr.tls {
            return Err(SparkplugError::Url("no TLS yet: use mqtt://".into()));
        }
        let password =
            crate::north::password(mqtt).map_err(|e| SparkplugError::Password(e.to_string()))?;
        let credentials = mqtt
            .username
            .clone()
            .map(|u| (u, password.map(|p| p.0).unwrap_or_default()));
        let bd_seq_path = state_dir.join(BD_SEQ_FILE);
        let node = EdgeNode::new(
            NodeConfig {
                group_id: config.group_id.clone(),
                edge_node_id: config
                    .edge_node_id
                    .clone()
                    .unwrap_or_else(|| gateway_id.to_string()),
                primary_host_id: config.primary_host_id.clone(),
                aliases: config.aliases,
                hold_limit: config.hold_limit,
            },
            read_bd_seq(&bd_seq_path),
        );
        let status = Arc::new(Mutex::new(SparkplugStatus {
            node: node.status(),
            broker: format!("mqtt://{}:{}", addr.host, addr.port),
            missed: 0,
            last_error: None,
        }));
        let driver = Driver {
            node,
            options: Options {
                addr,
                client_id: config
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("ferrogate-spb-{gateway_id}")),
                keep_alive: mqtt.keep_alive.0,
                max_packet_size: mqtt.max_packet_size as usize,
                credentials,
                reconnect: Backoff {
                    min: mqtt.reconnect_min.0,
                    max: mqtt.reconnect_max.0,
                },
            },
            bd_seq_path,
            uplinks: live.subscribe(),
            directory,
            router,
            status: status.clone(),
            stop,
        };
        Ok(Sparkplug {
            task: tokio::spawn(driver.run()),
            status,
        })
    }

    /// A snapshot of the session.
    pub fn status(&self) -> SparkplugStatus {
        lock(&self.status).clone()
    }

    /// The status, for whoever reports it later (control socket, metrics).
    pub fn status_source(&self) -> Arc<Mutex<SparkplugStatus>> {
        self.status.clone()
    }

    /// Waits for the task after `stop` was cancelled: NDEATH, DISCONNECT.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The next connection's bdSeq from the state directory; 0 when there is
/// none (first start) or it is unreadable (said in the log).
fn read_bd_seq(path: &Path) -> u64 {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(path = %path.display(), "unreadable Sparkplug bdSeq file; starting at 0");
            0
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the Sparkplug bdSeq file; starting at 0");
            0
        }
    }
}

/// Writes the next bdSeq durably (temporary file, fsync, rename) before
/// the connection that uses the current one, so a restart never reuses it.
fn write_bd_seq(path: &Path, next: u64) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{next}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

struct Options {
    addr: BrokerAddr,
    client_id: String,
    keep_alive: Duration,
    max_packet_size: usize,
    credentials: Option<(String, String)>,
    /// `[mqtt]`'s reconnect_min and reconnect_max.
    reconnect: Backoff,
}

/// What the connection's event loop reports.
enum LinkEvent {
    Connected,
    SubAck,
    PubAck,
    Message { topic: String, payload: Vec<u8> },
    Closed(String),
}

struct Driver {
    node: EdgeNode,
    options: Options,
    bd_seq_path: PathBuf,
    uplinks: broadcast::Receiver<Arc<ferrogate_sdk::UplinkEnvelope>>,
    directory: Directory,
    router: Router,
    status: Arc<Mutex<SparkplugStatus>>,
    stop: CancellationToken,
}

/// One connection: a fresh client and event loop, polled on its own task.
struct Connection {
    client: rumqttc::AsyncClient,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    poller: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Connection {
    fn open(o: &Options, will: &Publish) -> Connection {
        let mut opts = rumqttc::MqttOptions::new(&o.client_id, &o.addr.host, o.addr.port);
        opts.set_keep_alive(o.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(o.max_packet_size, o.max_packet_size)
            .set_last_will(rumqttc::LastWill::new(
                &will.topic,
                will.payload.clone(),
                rumqttc::QoS::AtLeastOnce,
                will.retain,
            ));
        if let Some((user, password)) = &o.credentials {
            opts.set_credentials(user, password);
        }
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 256);
        let (tx, events) = mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            loop {
                let event = match el.poll().await {
                    Ok(rumqttc::Event::Incoming(packet)) => match packet {
                        rumqttc::Packet::ConnAck(_) => LinkEvent::Connected,
                        rumqttc::Packet::SubAck(_) => LinkEvent::SubAck,
                        rumqttc::Packet::PubAck(_) => LinkEvent::PubAck,
                        rumqttc::Packet::Publish(p) => LinkEvent::Message {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                        },
                        _ => continue,
                    },
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                        let _ = tx.send(LinkEvent::Closed("disconnected".into()));
                        return;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(LinkEvent::Closed(e.to_string()));
                        return;
                    }
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Connection {
            client,
            events,
            poller,
        }
    }

    async fn next(&mut self) -> LinkEvent {
        self.events
            .recv()
            .await
            .unwrap_or_else(|| LinkEvent::Closed("event loop stopped".into()))
    }
}

/// What a DCMD write came to.
struct WriteDone {
    device: String,
    outcome: Outcome,
}

impl Driver {
    async fn run(mut self) {
        self.learn_directory();
        let (done_tx, mut done_rx) = mpsc::channel::<WriteDone>(64);
        let bounds = self.options.reconnect;
        let mut backoff = bounds.min;
        loop {
            let will = self.node.connect(Timestamp::now());
            if let Err(e) = write_bd_seq(&self.bd_seq_path, self.node.next_bd_seq()) {
                tracing::error!(path = %self.bd_seq_path.display(), error = %e,
                    "cannot persist the Sparkplug bdSeq: a restart may reuse this one");
            }
            let mut conn = Connection::open(&self.options, &will);
            let mut awaiting_subacks = 0usize;
            let closed = loop {
                tokio::select! {
                    _ = self.stop.cancelled() => {
                        self.shutdown(&mut conn).await;
                        return;
                    }
                    event = conn.next() => match event {
                        LinkEvent::Connected => {
                            backoff = bounds.min;
                            self.node.connected();
                        }
                        LinkEvent::SubAck => {
                            awaiting_subacks = awaiting_subacks.saturating_sub(1);
                            if awaiting_subacks == 0 {
                                self.node.subscribed(Timestamp::now());
                            }
                        }
                        LinkEvent::PubAck => {}
                        LinkEvent::Message { topic, payload } => {
                            if let Err(refusal) = self.node.received(&topic, &payload, Timestamp::now()) {
                                tracing::warn!(topic = %topic.chars().take(200).collect::<String>(),
                                    reason = %refusal, "Sparkplug message refused");
                            }
                        }
                        LinkEvent::Closed(e) => break e,
                    },
                    uplink = self.uplinks.recv() => self.take_uplink(uplink),
                    Some(done) = done_rx.recv() => self.take_write(done),
                }
                if let Err(e) = self.drain(&conn, &mut awaiting_subacks, &done_tx).await {
                    break e;
                }
            };
            self.node.disconnected();
            tracing::warn!(broker = %lock(&self.status).broker, error = %closed,
                "Sparkplug session closed; reconnecting");
            lock(&self.status).last_error = Some(closed);
            self.publish_status();
            drop(conn);
            let retry = tokio::time::sleep(backoff);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = &mut retry => break,
                    uplink = self.uplinks.recv() => self.take_uplink(uplink),
                    Some(done) = done_rx.recv() => self.take_write(done),
                }
                // Nothing to publish while down: the node holds data.
                while let Some(event) = self.node.poll_event() {
                    if let Event::Write(w) = event {
                        self.spawn_write(w, &done_tx);
                    }
                }
                self.publish_status();
            }
            backoff = bounds.next(backoff);
        }
    }

    /// Every device's meta and state as the directory has them: the
    /// devices announced before this task subscribed to the live feed, or
    /// while it lagged behind it.
    fn learn_directory(&mut self) {
        let now = Timestamp::now();
        for (device, entry) in self.directory.snapshot() {
            if let Some(meta) = entry.meta {
                self.node.uplink(&Uplink::Meta(meta), now);
            }
            if let Some(state) = entry.state {
                let status = DeviceStatus {
                    device,
                    state,
                    reason: entry.reason,
                    ts: now,
                };
                self.node.uplink(&Uplink::Status(status), now);
            }
        }
    }

    fn take_uplink(
        &mut self,
        uplink: Result<Arc<ferrogate_sdk::UplinkEnvelope>, broadcast::error::RecvError>,
    ) {
        match uplink {
            Ok(envelope) => self.node.uplink(&envelope.uplink, Timestamp::now()),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "Sparkplug edge node fell behind the uplinks; re-reading the directory"
                );
                lock(&self.status).missed += n;
                self.learn_directory();
            }
            // The gateway is stopping; `stop` follows.
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    fn take_write(&mut self, done: WriteDone) {
        match done.outcome {
            Ok(values) => self
                .node
                .write_confirmed(&done.device, &values, Timestamp::now()),
            Err(e) => {
                tracing::warn!(device = %done.device, error = %e, "Sparkplug DCMD write failed")
            }
        }
    }

    fn spawn_write(&self, write: super::node::DeviceWrite, done: &mpsc::Sender<WriteDone>) {
        let router = self.router.clone();
        let done = done.clone();
        tokio::spawn(async move {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            format!("{:?}", write.values).hash(&mut h);
            let request = Request {
                id: write.id,
                op: Operation::Write {
                    values: write.values,
                },
                timeout_ms: None,
                fingerprint: h.finish(),
            };
            let answer = router
                .execute(&write.device, request, tokio::time::Instant::now())
                .await;
            let _ = done
                .send(WriteDone {
                    device: write.device,
                    outcome: answer.outcome,
                })
                .await;
        });
    }

    /// Carries out what the node asked for.
    async fn drain(
        &mut self,
        conn: &Connection,
        awaiting_subacks: &mut usize,
        done: &mpsc::Sender<WriteDone>,
    ) -> Result<(), String> {
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::Publish(p) => publish(&conn.client, p).await?,
                Event::Subscribe(topics) => {
                    *awaiting_subacks = topics.len();
                    for topic in topics {
                        conn.client
                            .subscribe(topic, rumqttc::QoS::AtLeastOnce)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                Event::Write(w) => self.spawn_write(w, done),
            }
        }
        self.publish_status();
        Ok(())
    }

    fn publish_status(&self) {
        lock(&self.status).node = self.node.status();
    }

    /// NDEATH (QoS 1, acknowledged or a short grace), then DISCONNECT.
    async fn shutdown(&mut self, conn: &mut Connection) {
        if let Some(death) = self.node.shutdown(Timestamp::now())
            && publish(&conn.client, death).await.is_ok()
        {
            let acked = async {
                loop {
                    match conn.next().await {
                        LinkEvent::PubAck => return,
                        LinkEvent::Closed(_) => return,
                        _ => {}
                    }
                }
            };
            let _ = tokio::time::timeout(DEATH_GRACE, acked).await;
        }
        let _ = conn.client.disconnect().await;
        let _ = tokio::time::timeout(DEATH_GRACE, async {
            while !matches!(conn.next().await, LinkEvent::Closed(_)) {}
        })
        .await;
        self.publish_status();
    }
}

async fn publish(client: &rumqttc::AsyncClient, p: Publish) -> Result<(), String> {
    let qos = if p.qos == 0 {
        rumqttc::QoS::AtMostOnce
    } else {
        rumqttc::QoS::AtLeastOnce
    };
    client
        .publish(p.topic, qos, p.retain, p.payload)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bd_seq_survives_in_its_file_and_a_damaged_file_starts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BD_SEQ_FILE);
        assert_eq!(read_bd_seq(&path), 0, "first start");
        write_bd_seq(&path, 42).unwrap();
        assert_eq!(read_bd_seq(&path), 42);
        assert!(
            !path.with_extension("tmp").exists(),
            "the temporary file was renamed"
        );
        std::fs::write(&path, "not a number").unwrap();
        assert_eq!(read_bd_seq(&path), 0);
        let gone = dir.path().join("no-such-dir").join(BD_SEQ_FILE);
        assert!(
            write_bd_seq(&gone, 1).is_err(),
            "an unwritable state dir is an error, not a panic"
        );
    }
}
