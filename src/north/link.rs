//! One MQTT connection on rumqttc, MQTT 3.1.1 or 5 behind one type.
//!
//! Each connection gets a fresh client and event loop: rumqttc keeps
//! queued and unacknowledged publishes across reconnects (or silently drops
//! them), which would break the outbox's mapping of packet ids to records.
//! A new client per connection means the order of `Outgoing::Publish(pkid)`
//! events is exactly the order of this connection's publishes. The event
//! loop is polled on its own task, so publishing never waits on itself.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::bytes::Bytes;

use super::config::{BrokerAddr, MqttVersion};
use super::record::Record;

/// Largest packet taken from an MQTT 3.1.1 broker (MQTT 5 brokers are told
/// `max_packet_size` and send nothing larger).
const MAX_INCOMING_V311: usize = 64 << 20;

/// Everything needed to open a connection.
#[derive(Clone)]
pub struct LinkOptions {
    pub addr: BrokerAddr,
    pub version: MqttVersion,
    pub client_id: String,
    pub keep_alive: Duration,
    pub credentials: Option<(String, Secret)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub max_packet_size: u32,
    pub inflight: u16,
    pub will_topic: String,
    pub will_payload: Vec<u8>,
    /// How long the broker keeps the session (subscriptions and commands
    /// queued for us) while we are away; zero for a clean session.
    pub session_expiry: Duration,
}

/// Acknowledges one incoming publish: with manual acks the PUBACK goes out
/// only when [`Ack::send`] is called (a command once it is journalled), so
/// a command the gateway has not stored is redelivered by the broker.
#[derive(Clone)]
pub struct Ack(Box<AckOn>);

#[derive(Clone)]
enum AckOn {
    V4(rumqttc::AsyncClient, rumqttc::Publish),
    V5(rumqttc::v5::AsyncClient, m5::Publish),
}

impl Ack {
    /// Sends the PUBACK (nothing for QoS 0). If the connection is gone the
    /// broker redelivers the message on the next one.
    pub async fn send(self) {
        let _ = match &*self.0 {
            AckOn::V4(c, p) => c.ack(p).await.map_err(|e| e.to_string()),
            AckOn::V5(c, p) => c.ack(p).await.map_err(|e| e.to_string()),
        };
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pkid = match &*self.0 {
            AckOn::V4(_, p) => p.pkid,
            AckOn::V5(_, p) => p.pkid,
        };
        write!(f, "Ack({pkid})")
    }
}

/// A password: never shown by `Debug` or logs.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Debug for LinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkOptions")
            .field("addr", &self.addr)
            .field("version", &self.version)
            .field("client_id", &self.client_id)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// What the connection reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// The broker accepted the connection.
    Connected,
    /// A publish went on the wire with this packet id (0 for QoS 0), in
    /// the order the publishes were requested.
    Sent(u16),
    /// The broker acknowledged packet `pkid`; `rejected` carries an MQTT 5
    /// failure reason.
    Acked { pkid: u16, rejected: Option<String> },
    /// A message on a subscribed topic.
    Message {
        topic: String,
        payload: Vec<u8>,
        /// Sent by the broker from its retained store.
        retain: bool,
        response_topic: Option<String>,
        correlation: Option<Vec<u8>>,
        ack: Ack,
    },
    /// The connection ended.
    Closed(String),
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A live connection attempt.
pub struct Link {
    client: Client,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    poller: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Dropping the event loop closes the socket without DISCONNECT.
        self.poller.abort();
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    if q == 0 {
        rumqttc::QoS::AtMostOnce
    } else {
        rumqttc::QoS::AtLeastOnce
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    if q == 0 {
        rumqttc::v5::mqttbytes::QoS::AtMostOnce
    } else {
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce
    }
}

/// What one poll of an event loop yields.
enum Step {
    Event(LinkEvent),
    /// Nothing the session needs (pings, subscribe acks, ...).
    Skip,
    /// The connection ended, with the reason.
    End(String),
}

/// The one body of both versions' event-loop tasks: passes `step` on;
/// false once the connection ended or nobody listens.
fn forward(tx: &mpsc::UnboundedSender<LinkEvent>, step: Step) -> bool {
    match step {
        Step::Event(ev) => tx.send(ev).is_ok(),
        Step::Skip => true,
        Step::End(reason) => {
            let _ = tx.send(LinkEvent::Closed(reason));
            false
        }
    }
}

fn v4_step(
    polled: Result<rumqttc::Event, rumqttc::ConnectionError>,
    acker: &rumqttc::AsyncClient,
) -> Step {
    use rumqttc::{Event, Outgoing, Packet};
    match polled {
        Ok(Event::Incoming(Packet::ConnAck(_))) => Step::Event(LinkEvent::Connected),
        Ok(Event::Incoming(Packet::PubAck(a))) => Step::Event(LinkEvent::Acked {
            pkid: a.pkid,
            rejected: None,
        }),
        Ok(Event::Incoming(Packet::Publish(p))) => Step::Event(LinkEvent::Message {
            topic: p.topic.clone(),
            payload: p.payload.to_vec(),
            retain: p.retain,
            response_topic: None,
            correlation: None,
            ack: Ack(Box::new(AckOn::V4(acker.clone(), p))),
        }),
        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Step::Event(LinkEvent::Sent(pkid)),
        Ok(Event::Outgoing(Outgoing::Disconnect)) => Step::End("disconnected".into()),
        Ok(_) => Step::Skip,
        Err(e) => Step::End(e.to_string()),
    }
}

fn v5_step(
    polled: Result<rumqttc::v5::Event, rumqttc::v5::ConnectionError>,
    acker: &rumqttc::v5::AsyncClient,
) -> Step {
    use rumqttc::Outgoing;
    use rumqttc::v5::Event;
    match polled {
        Ok(Event::Incoming(m5::Packet::ConnAck(_))) => Step::Event(LinkEvent::Connected),
        Ok(Event::Incoming(m5::Packet::PubAck(a))) => Step::Event(LinkEvent::Acked {
            pkid: a.pkid,
            rejected: match a.reason {
                m5::PubAckReason::Success | m5::PubAckReason::NoMatchingSubscribers => None,
                other => Some(format!("{other:?}")),
            },
        }),
        Ok(Event::Incoming(m5::Packet::Publish(p))) => {
            let props = p.properties.clone().unwrap_or_default();
            Step::Event(LinkEvent::Message {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload.to_vec(),
                retain: p.retain,
                response_topic: props.response_topic,
                correlation: props.correlation_data.map(|b| b.to_vec()),
                ack: Ack(Box::new(AckOn::V5(acker.clone(), p))),
            })
        }
        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Step::Event(LinkEvent::Sent(pkid)),
        Ok(Event::Outgoing(Outgoing::Disconnect)) => Step::End("disconnected".into()),
        Ok(_) => Step::Skip,
        Err(e) => Step::End(e.to_string()),
    }
}

impl Link {
    /// Starts connecting; [`LinkEvent::Connected`] or [`LinkEvent::Closed`]
    /// follows.
    pub fn open(o: &LinkOptions) -> Link {
        let transport = match &o.tls {
            Some(cfg) => Transport::tls_with_config(TlsConfiguration::Rustls(cfg.clone())),
            None => Transport::tcp(),
        };
        let (tx, events) = mpsc::unbounded_channel();
        // Room for a full window plus birth and subscribe: publish() never
        // waits for long.
        let cap = o.inflight as usize + 16;
        let (client, poller) = match o.version {
            MqttVersion::V311 => {
                let mut opts = rumqttc::MqttOptions::new(&o.client_id, &o.addr.host, o.addr.port);
                opts.set_keep_alive(o.keep_alive)
                    .set_clean_session(o.session_expiry.is_zero())
                    .set_manual_acks(true)
                    // MQTT 3.1.1 cannot tell the broker our limit, and a
                    // packet above rumqttc's drops the connection, after
                    // which a persistent session (or a retained message)
                    // brings it back at once: a reconnect loop. Take up to
                    // MAX_INCOMING_V311 and let the intake refuse what is
                    // above `max_packet_size`.
                    .set_max_packet_size(
                        (o.max_packet_size as usize).max(MAX_INCOMING_V311),
                        o.max_packet_size as usize,
                    )
                    .set_inflight(o.inflight)
                    .set_transport(transport)
                    .set_last_will(rumqttc::LastWill::new(
                        &o.will_topic,
                        o.will_payload.clone(),
                        rumqttc::QoS::AtLeastOnce,
                        true,
                    ));
                if let Some((u, p)) = &o.credentials {
                    opts.set_credentials(u, &p.0);
                }
                let (client, mut el) = rumqttc::AsyncClient::new(opts, cap);
                let acker = client.clone();
                let poller =
                    tokio::spawn(
                        async move { while forward(&tx, v4_step(el.poll().await, &acker)) {} },
                    );
                (Client::V4(client), poller)
            }
            MqttVersion::V5 => {
                let mut opts =
                    rumqttc::v5::MqttOptions::new(&o.client_id, &o.addr.host, o.addr.port);
                let expiry = u32::try_from(o.session_expiry.as_secs()).unwrap_or(u32::MAX);
                opts.set_keep_alive(o.keep_alive)
                    .set_clean_start(expiry == 0)
                    .set_session_expiry_interval((expiry > 0).then_some(expiry))
                    .set_manual_acks(true)
                    .set_max_packet_size(Some(o.max_packet_size))
                    .set_outgoing_inflight_upper_limit(o.inflight)
                    .set_transport(transport)
                    .set_last_will(m5::LastWill::new(
                        &o.will_topic,
                        o.will_payload.clone(),
                        qos5(1),
                        true,
                        None,
                    ));
                if let Some((u, p)) = &o.credentials {
                    opts.set_credentials(u, &p.0);
                }
                let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, cap);
                let acker = client.clone();
                let poller =
                    tokio::spawn(
                        async move { while forward(&tx, v5_step(el.poll().await, &acker)) {} },
                    );
                (Client::V5(client), poller)
            }
        };
        Link {
            client,
            events,
            poller,
        }
    }

    /// The next event; `Closed` once the connection is gone.
    pub async fn next(&mut self) -> LinkEvent {
        self.events
            .recv()
            .await
            .unwrap_or_else(|| LinkEvent::Closed("event loop stopped".into()))
    }

    /// An event that is already waiting, if any.
    pub fn try_next(&mut self) -> Option<LinkEvent> {
        self.events.try_recv().ok()
    }

    /// Queues a stored record for publishing.
    pub async fn publish(&self, r: Record) -> Result<(), String> {
        self.publish_parts(&r.topic, r.qos, r.retain, r.payload, r.correlation)
            .await
    }

    /// Queues a publish. Correlation data is sent only over MQTT 5.
    pub async fn publish_parts(
        &self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: impl Into<Bytes>,
        correlation: Option<Vec<u8>>,
    ) -> Result<(), String> {
        match &self.client {
            Client::V4(c) => c
                .publish_bytes(topic, qos4(qos), retain, payload.into())
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let props = m5::PublishProperties {
                    correlation_data: correlation.map(Into::into),
                    ..Default::default()
                };
                c.publish_with_properties(topic, qos5(qos), retain, payload, props)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    pub async fn subscribe(&self, filter: &str) -> Result<(), String> {
        match &self.client {
            Client::V4(c) => c
                .subscribe(filter, qos4(1))
                .await
                .map_err(|e| e.to_string()),
            // Retain as published: a retained command is recognisable
            // even when it arrives live, so it is never executed.
            Client::V5(c) => c
                .subscribe_many([m5::Filter {
                    preserve_retain: true,
                    ..m5::Filter::new(filter, qos5(1))
                }])
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Sends DISCONNECT (the broker then discards the last will).
    pub async fn disconnect(&self) {
        let _ = match &self.client {
            Client::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let o = LinkOptions {
            addr: BrokerAddr::parse("mqtt://h:1883").unwrap(),
            version: MqttVersion::V5,
            client_id: "c".into(),
            keep_alive: Duration::from_secs(30),
            credentials: Some(("user".into(), Secret("hunter2".into()))),
            tls: None,
            max_packet_size: 1024,
            inflight: 1,
            will_topic: "t".into(),
            will_payload: vec![],
            session_expiry: Duration::ZERO,
        };
        let shown = format!("{o:?} {:?}", o.credentials);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("user"));
    }
}
