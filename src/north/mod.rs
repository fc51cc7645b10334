//! The northbound path: JSON codec and topics, the durable outbox, the
//! command intake and journal, and the MQTT session.
//!
//! ```text
//! adapters --uplink_tx--> writer --(seq, encode, group commit)--> outbox (disk)
//! router  --result_tx-->    |                                        |
//!                           +--wake--> session --publish--> broker --PUBACK--> outbox.ack
//!                                   (what to read, publish, ack and when: core::NorthCore)
//! broker --{root}/devices/+/cmd--> session --intake (decode, retained, response
//!   topic; busy when the queue is full)--> take_commands() --> daemon:
//!   journal.pending (fsync) --> PUBACK --> router --> journal.done --> result_tx
//! ```
//!
//! How the runtime uses it:
//!
//! ```ignore
//! let mut north = North::start(&gateway_id, &mqtt, &outbox, &state_dir, shutdown.clone()).await?;
//! let uplink = north.uplink_tx();          // one clone per adapter (UplinkSender::new)
//! let results = north.result_tx();         // the command router's answers
//! let mut commands = north.take_commands(); // requests from {root}/devices/+/cmd
//! let status = north.status();             // for the status API and metrics
//! north.shutdown().await;                  // flush, fsync, offline status, disconnect (< 5 s)
//! ```
//!
//! Guarantees: every message goes through the outbox ([`outbox`]) and leaves
//! it only on PUBACK (QoS 1); after a reconnect or restart unacknowledged
//! messages are sent again in their original order, so each device's
//! messages arrive in order (duplicates possible, counted as `resent`).
//! Telemetry `seq` is per device, starts at 1, is persisted, and has a gap
//! only where the full outbox dropped messages (counted as `dropped`) or a
//! message no broker could take was refused (topic with a wildcard, larger
//! than `max_packet_size`; counted as `refused`) or quarantined (the broker
//! dropped the connection each time it was sent; counted as `quarantined`).
//! Commands: PUBACKed only once journalled ([`journal`]); each gets exactly
//! one answer (`busy` rather than dropped).
//! `mqtt.url = "embedded"` is resolved by the runtime before calling
//! [`North::start`].

pub mod codec;
pub mod config;
pub mod core;
mod intake;
pub mod journal;
pub mod link;
pub mod outbox;
pub mod record;
mod seqbook;
mod session;
pub mod tls;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferrogate_sdk::{Outcome, UplinkEnvelope};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::core::CoreConfig;
use crate::histogram::Histogram;
use config::{BrokerAddr, MqttConfig, OutboxConfig};
use ferrogate_sdk::backoff::Backoff;
use link::{LinkOptions, Secret};
use outbox::{Outbox, OutboxStatus};

pub use codec::Topics;

/// Capacity of the adapters' uplink channel: when the outbox writer is
/// behind (or the disk refuses writes) adapters wait instead of losing data.
const UPLINK_CAPACITY: usize = 1024;
const RESULT_CAPACITY: usize = 256;
const COMMAND_CAPACITY: usize = 256;
/// The whole graceful shutdown must fit in the daemon's 5 s budget.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(3500);
/// How long a connection attempt may take before it is abandoned.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A seed for the reconnect jitter that differs between gateways started
/// together.
fn jitter_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// A command request received from MQTT, decoded (or refused, with the
/// reason the router answers).
#[derive(Debug, Clone)]
pub struct InboundCommand {
    /// The device, from the topic `{root}/devices/{device}/cmd`.
    pub device: String,
    /// The request body as received: what the command journal stores.
    pub payload: Vec<u8>,
    pub request: Result<codec::Request, codec::Refused>,
    /// The PUBACK, to send once the command is journalled (`None` when
    /// nothing is to be acknowledged).
    pub ack: Option<link::Ack>,
    /// MQTT 5 response topic and correlation data (empty if the request
    /// had none), when the request asked for an answer there and the topic
    /// is under `response_topic_prefix`.
    pub reply_to: Option<(String, Vec<u8>)>,
    /// When the gateway received it: the request's deadline counts from here.
    pub received: tokio::time::Instant,
}

/// A command's result, published on `cmd/result` and, if `reply_to` is set,
/// on the response topic with the correlation data.
#[derive(Debug)]
pub struct CommandResultMsg {
    pub device: String,
    pub id: String,
    pub outcome: Outcome,
    pub reply_to: Option<(String, Vec<u8>)>,
    /// Told once the result is stored in the outbox (from then on it
    /// reaches the broker whatever happens to the process).
    pub stored: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Connection facts and counters, shared by the session and `status()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    pub connected: bool,
    /// When `connected` last changed, Unix epoch ms.
    pub since_ms: Option<u64>,
    /// Why the last connection ended or failed.
    pub last_error: Option<String>,
    /// Publishes handed to the MQTT client (resends included).
    pub published: u64,
    /// PUBACKs received (or QoS 0 publishes written).
    pub acked: u64,
    /// PUBACKs with an MQTT 5 failure reason (not retried).
    pub rejected: u64,
    /// Connections lost or failed.
    pub reconnects: u64,
    /// Commands received on `{root}/devices/+/cmd`.
    pub commands_received: u64,
    /// Results stored for publishing (each command gets exactly one).
    pub commands_answered: u64,
    /// Commands answered `busy` because the router's queue was full.
    pub commands_busy: u64,
    /// Retained commands answered `bad_request` and not executed.
    pub commands_retained: u64,
}

/// What the status API shows about the northbound path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NorthStatus {
    pub broker: String,
    pub live: Live,
    pub outbox: OutboxStatus,
}

/// The northbound path could not start.
#[derive(Debug, thiserror::Error)]
pub enum NorthError {
    #[error(transparent)]
    Outbox(#[from] outbox::OpenError),
    #[error("invalid [mqtt] configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot read the MQTT password: {0}")]
    Password(String),
}

/// Locks a mutex, ignoring poisoning: the data is counters and a log whose
/// invariants hold between calls.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running northbound path.
pub struct North {
    broker: String,
    outbox: Arc<Mutex<Outbox>>,
    live: Arc<Mutex<Live>>,
    uplink_tx: mpsc::Sender<UplinkEnvelope>,
    result_tx: mpsc::Sender<CommandResultMsg>,
    commands: Option<mpsc::Receiver<InboundCommand>>,
    stop: CancellationToken,
    writer_stop: CancellationToken,
    writer: JoinHandle<()>,
    session: JoinHandle<()>,
    uplink_latency: Arc<Histogram>,
}

/// Largest password file read: a password, not a file read by mistake.
pub(crate) const MAX_PASSWORD_FILE: u64 = 64 * 1024;

/// The broker password from `password_file` or `password_env`, if any.
pub fn password(mqtt: &MqttConfig) -> Result<Option<Secret>, NorthError> {
    if let Some(path) = &mqtt.password_file {
        let bytes = ferrogate_sdk::config::read_named_file(path, MAX_PASSWORD_FILE)
            .map_err(|e| NorthError::Password(format!("{}: {e}", path.display())))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| NorthError::Password(format!("{}: not UTF-8 text", path.display())))?;
        return Ok(Some(Secret(
            text.trim_end_matches(['\r', '\n']).to_string(),
        )));
    }
    if let Some(var) = &mqtt.password_env {
        let text = std::env::var(var)
            .map_err(|_| NorthError::Password(format!("environment variable {var} is not set")))?;
        return Ok(Some(Secret(text)));
    }
    Ok(None)
}

impl North {
    /// Opens the outbox under `state_dir/outbox` (recovering and reporting
    /// damage) and starts the writer and the MQTT session. `shutdown`
    /// stops everything; [`North::shutdown`] does it gracefully.
    pub async fn start(
        gateway_id: &str,
        mqtt: &MqttConfig,
        outbox_cfg: &OutboxConfig,
        state_dir: &Path,
        shutdown: CancellationToken,
    ) -> Result<North, NorthError> {
        let problems: Vec<String> = mqtt
            .validate()
            .into_iter()
            .chain(outbox_cfg.validate())
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        if !problems.is_empty() {
            return Err(NorthError::Config(problems.join("; ")));
        }
        let addr = BrokerAddr::parse(&mqtt.url).map_err(NorthError::Config)?;
        let tls = if addr.tls {
            Some(tls::client_config(&mqtt.tls.clone().unwrap_or_default())?)
        } else {
            None
        };
        let credentials = match (&mqtt.username, password(mqtt)?) {
            (Some(u), p) => Some((u.clone(), p.unwrap_or(Secret(String::new())))),
            (None, _) => None,
        };
        let topics = Topics::new(
            mqtt.topic_root
                .clone()
                .unwrap_or_else(|| format!("ferrogate/{gateway_id}")),
        );
        let response_prefix = mqtt
            .response_topic_prefix
            .clone()
            .unwrap_or_else(|| topics.responses_prefix());
        let dir = state_dir.join("outbox");
        let ob = tokio::task::spawn_blocking({
            let dir = dir.clone();
            let cfg = outbox_cfg.clone();
            move || Outbox::open(&dir, &cfg)
        })
        .await
        .map_err(|e| {
            NorthError::Outbox(outbox::OpenError {
                path: dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })??;
        let outbox = Arc::new(Mutex::new(ob));
        {
            let st = lock(&outbox).status();
            for d in &st.damage {
                tracing::warn!(damage = %d, "outbox recovered from damage");
            }
            tracing::info!(depth = st.depth, bytes = st.bytes, "outbox opened");
        }
        let live = Arc::new(Mutex::new(Live::default()));
        let wake = Arc::new(Notify::new());
        let stop = shutdown.child_token();
        let writer_stop = shutdown.child_token();
        let (uplink_tx, uplink_rx) = mpsc::channel(UPLINK_CAPACITY);
        let (result_tx, result_rx) = mpsc::channel(RESULT_CAPACITY);
        let (command_tx, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let uplink_latency = Arc::new(Histogram::default());
        let writer = writer::Writer {
            outbox: outbox.clone(),
            topics: topics.clone(),
            gateway: gateway_id.to_string(),
            qos: mqtt.qos,
            fsync: outbox_cfg.fsync,
            fsync_interval: outbox_cfg.fsync_interval.0,
            commit_delay: outbox_cfg.commit_delay.0,
            max_packet_size: mqtt.max_packet_size,
            wake: wake.clone(),
            latency: uplink_latency.clone(),
            live: live.clone(),
        };
        let writer = tokio::spawn(writer.run(uplink_rx, result_rx, writer_stop.clone()));
        let session = session::Session {
            link: LinkOptions {
                addr,
                version: mqtt.version,
                client_id: mqtt
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("ferrogate-{gateway_id}")),
                keep_alive: mqtt.keep_alive.0,
                credentials,
                tls,
                max_packet_size: mqtt.max_packet_size,
                inflight: mqtt.inflight,
                will_topic: topics.gateway_status(),
                will_payload: codec::will(gateway_id),
                session_expiry: mqtt.session_expiry.0,
            },
            topics,
            gateway: gateway_id.to_string(),
            core: CoreConfig {
                qos: mqtt.qos,
                window: usize::from(mqtt.inflight),
                ack_timeout: mqtt.ack_timeout.0,
                backoff: Backoff {
                    min: mqtt.reconnect_min.0,
                    max: mqtt.reconnect_max.0,
                },
                connect_timeout: CONNECT_TIMEOUT,
                replay_rate: outbox_cfg.replay_rate,
                seed: jitter_seed(),
            },
            outbox: outbox.clone(),
            wake,
            live: live.clone(),
            commands: command_tx,
            intake: intake::Intake::new(response_prefix, mqtt.max_packet_size as usize),
            results: result_tx.clone(),
            unsent_answers: Default::default(),
        };
        let session = tokio::spawn(session.run(stop.clone()));
        Ok(North {
            broker: mqtt.url.clone(),
            outbox,
            live,
            uplink_tx,
            result_tx,
            commands: Some(command_rx),
            stop,
            writer_stop,
            writer,
            session,
            uplink_latency,
        })
    }

    /// Where adapters send their messages (bounded).
    /// How long messages waited between their adapter and the outbox
    /// writer.
    pub fn uplink_latency(&self) -> Arc<Histogram> {
        self.uplink_latency.clone()
    }

    pub fn uplink_tx(&self) -> mpsc::Sender<UplinkEnvelope> {
        self.uplink_tx.clone()
    }

    /// Where the command router sends results.
    pub fn result_tx(&self) -> mpsc::Sender<CommandResultMsg> {
        self.result_tx.clone()
    }

    /// The commands received from MQTT. Only the first call gets them.
    pub fn take_commands(&mut self) -> mpsc::Receiver<InboundCommand> {
        self.commands.take().unwrap_or_else(|| mpsc::channel(1).1)
    }

    /// A cloneable way to read [`North::status`] from other tasks (the
    /// control socket, metrics) while `North` itself stays with the daemon.
    pub fn status_source(&self) -> std::sync::Arc<dyn Fn() -> NorthStatus + Send + Sync> {
        let broker = self.broker.clone();
        let live = self.live.clone();
        let outbox = self.outbox.clone();
        std::sync::Arc::new(move || NorthStatus {
            broker: broker.clone(),
            live: lock(&live).clone(),
            outbox: lock(&outbox).status(),
        })
    }

    pub fn status(&self) -> NorthStatus {
        NorthStatus {
            broker: self.broker.clone(),
            live: lock(&self.live).clone(),
            outbox: lock(&self.outbox).status(),
        }
    }

    /// The last telemetry `seq` stored for `device` (written to the outbox,
    /// not necessarily sent yet).
    pub fn last_seq(&self, device: &str) -> Option<u64> {
        lock(&self.outbox).last_seq(device)
    }

    /// Graceful stop within [`SHUTDOWN_BUDGET`]: store what is queued, send
    /// what the broker will take, publish the offline status, disconnect,
    /// fsync and save the cursor and the seq book.
    pub async fn shutdown(self) {
        let North {
            outbox,
            stop,
            writer_stop,
            mut writer,
            mut session,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
        writer_stop.cancel();
        if tokio::time::timeout_at(deadline, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        stop.cancel();
        if tokio::time::timeout_at(deadline, &mut session)
            .await
            .is_err()
        {
            session.abort();
        }
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = lock(&outbox).close() {
                tracing::error!(error = %e, "outbox: final save failed");
            }
        })
        .await;
    }
}
