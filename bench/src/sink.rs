//! The subscriber at the end of the pipeline: counts telemetry messages and
//! values delivered by the broker, measures end-to-end latency, and plays
//! the ThingsBoard server's part for the ThingsBoard gateway (it answers the
//! `getSessionLimits` RPC, without which that gateway sends nothing).
//!
//! Latency: when a message carries the four stamp registers of our Modbus
//! slaves, latency = arrival − the slave's response time (µs); otherwise
//! arrival − the message's `ts` (ms resolution).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value as Json;

use crate::modbus_slave::{now_us, stamp_from};
use crate::stats::Latencies;

#[derive(Debug, Default)]
pub struct Tally {
    pub messages: u64,
    pub values: u64,
    /// Payload bytes of the telemetry messages counted.
    pub bytes: u64,
    /// Topic bytes of the telemetry messages counted.
    pub topic_bytes: u64,
    /// Sparkplug B DDATA messages, the metrics they carried and their
    /// bytes on the wire (topic + payload).
    pub spb_messages: u64,
    pub spb_values: u64,
    pub spb_bytes: u64,
    pub latency: Latencies,
    pub rpc_answered: u64,
}

#[derive(Clone)]
pub struct Sink {
    tally: Arc<Mutex<Tally>>,
}

/// The point names holding the stamp (most significant word first).
pub type StampKeys = Option<[String; 4]>;

const SESSION_LIMITS: &str =
    r#"{"maxPayloadSize":65536,"maxInflightMessages":100,"rateLimits":{},"gatewayRateLimits":{}}"#;

impl Sink {
    /// Subscribes to `filters` on 127.0.0.1:`port` and counts until the
    /// process ends. Resolves once the subscription is acknowledged.
    pub async fn start(port: u16, filters: &[&str], stamp: StampKeys) -> Sink {
        static SINKS: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "bench-sink-{}-{}",
            std::process::id(),
            SINKS.fetch_add(1, Ordering::Relaxed)
        );
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut events) = AsyncClient::new(opts, 1024);
        for f in filters {
            let _ = client.subscribe(*f, QoS::AtMostOnce).await;
        }
        let tally = Arc::new(Mutex::new(Tally::default()));
        let sink = Sink {
            tally: tally.clone(),
        };
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let mut acks_left = filters.len();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        acks_left = acks_left.saturating_sub(1);
                        if acks_left == 0 {
                            if let Some(tx) = subscribed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let arrived = now_us();
                        let topic = p.topic.clone();
                        if let Some(id) = topic.strip_prefix("v1/devices/me/rpc/request/") {
                            // Answered a moment later: an immediate answer can
                            // beat that gateway's own subscription to responses.
                            let client = client.clone();
                            let topic = format!("v1/devices/me/rpc/response/{id}");
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                let _ = client
                                    .publish(topic, QoS::AtLeastOnce, false, SESSION_LIMITS)
                                    .await;
                            });
                            if let Ok(mut t) = tally.lock() {
                                t.rpc_answered += 1;
                            }
                            continue;
                        }
                        if topic.starts_with("spBv1.0/") {
                            if topic.contains("/DDATA/") {
                                if let Ok(mut t) = tally.lock() {
                                    t.spb_messages += 1;
                                    t.spb_values += sparkplug_metrics(&p.payload);
                                    t.spb_bytes += (topic.len() + p.payload.len()) as u64;
                                }
                            }
                            continue;
                        }
                        let Ok(json) = serde_json::from_slice::<Json>(&p.payload) else {
                            continue;
                        };
                        if let Ok(mut t) = tally.lock() {
                            let before = t.messages;
                            count(&mut t, &topic, &json, arrived, &stamp);
                            if t.messages > before {
                                t.bytes += p.payload.len() as u64;
                                t.topic_bytes += topic.len() as u64;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), subscribed_rx).await;
        sink
    }

    /// Returns what was counted since the last call and starts afresh.
    pub fn take(&self) -> Tally {
        self.tally
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}

/// The metrics in a Sparkplug B payload: occurrences of field 2 at its top
/// level (Tahu's `Payload.metrics`), found by walking the protobuf wire
/// format without decoding the metrics themselves. 0 for a malformed one.
fn sparkplug_metrics(payload: &[u8]) -> u64 {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut i = 0;
    let mut metrics = 0;
    while i < payload.len() {
        let Some(key) = varint(payload, &mut i) else {
            return 0;
        };
        let skip = match key & 7 {
            0 => varint(payload, &mut i).map(|_| 0),
            1 => Some(8),
            2 => varint(payload, &mut i),
            5 => Some(4),
            _ => None,
        };
        let Some(skip) = skip else {
            return 0;
        };
        if key >> 3 == 2 && key & 7 == 2 {
            metrics += 1;
        }
        i += skip as usize;
    }
    if i == payload.len() { metrics } else { 0 }
}

/// One telemetry object: `{"values": {...}, "ts": ms}` (both gateways).
fn count_values(t: &mut Tally, msg: &Json, arrived: u64, stamp: &StampKeys) {
    let Some(values) = msg.get("values").and_then(Json::as_object) else {
        return;
    };
    t.messages += 1;
    t.values += values.len() as u64;
    let stamped = stamp.as_ref().and_then(|keys| {
        let mut w = [0u64; 4];
        for (slot, k) in w.iter_mut().zip(keys) {
            *slot = values.get(k)?.as_f64()? as u64;
        }
        Some(stamp_from(w))
    });
    let sent = stamped.or_else(|| msg.get("ts")?.as_u64().map(|ms| ms * 1000));
    if let Some(sent) = sent {
        t.latency.push(arrived.saturating_sub(sent));
    }
}

fn count(t: &mut Tally, topic: &str, json: &Json, arrived: u64, stamp: &StampKeys) {
    if topic == "v1/gateway/telemetry" {
        // {"device": [{"ts": .., "values": {..}}, ...], ...}
        for series in json.as_object().into_iter().flat_map(|o| o.values()) {
            for msg in series.as_array().into_iter().flatten() {
                count_values(t, msg, arrived, stamp);
            }
        }
    } else if topic.ends_with("/telemetry") {
        count_values(t, json, arrived, stamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> StampKeys {
        Some(["r6".into(), "r7".into(), "r8".into(), "r9".into()])
    }

    #[test]
    fn ferrogate_telemetry_counts_values_and_stamp_latency() {
        let mut t = Tally::default();
        let sent: u64 = 1_700_000_000_000_000;
        let w = |i: u32| (sent >> (48 - 16 * i)) & 0xffff;
        let json = serde_json::json!({"ts": 1, "values": {"r0": 1, "r6": w(0), "r7": w(1), "r8": w(2), "r9": w(3)}});
        count(
            &mut t,
            "ferrogate/bench/devices/d1/telemetry",
            &json,
            sent + 1500,
            &keys(),
        );
        assert_eq!((t.messages, t.values), (1, 5));
        assert_eq!(t.latency.percentile_ms(50.0), 1.5);
    }

    #[test]
    fn sparkplug_metrics_are_counted_from_the_wire_format() {
        // timestamp (1: varint), two metrics (2: length-delimited), seq (3)
        let payload = [
            0x08, 0x96, 0x01, 0x12, 0x02, 0x18, 0x01, 0x12, 0x00, 0x18, 0x05,
        ];
        assert_eq!(sparkplug_metrics(&payload), 2);
        assert_eq!(sparkplug_metrics(&payload[..5]), 0, "truncated");
        assert_eq!(sparkplug_metrics(&[]), 0);
    }

    #[test]
    fn thingsboard_gateway_telemetry_counts_each_device_batch() {
        let mut t = Tally::default();
        let json = serde_json::json!({"d1": [{"ts": 1000, "values": {"a": 1, "b": 2}}], "d2": [{"ts": 1000, "values": {"a": 1}}]});
        count(&mut t, "v1/gateway/telemetry", &json, 3_000_000, &None);
        assert_eq!((t.messages, t.values), (2, 3));
        assert_eq!(t.latency.percentile_ms(100.0), 2000.0);
    }
}
