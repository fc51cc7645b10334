//! The outbox writer: takes adapters' messages and command results, assigns
//! telemetry `seq`, encodes them, and group-commits them to the outbox under
//! the fsync policy. A failed write (disk full, I/O error) is retried with
//! the same messages until it succeeds; meanwhile the bounded channels push
//! back on the adapters instead of losing data.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogate_sdk::{Timestamp, Uplink, UplinkEnvelope};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::codec::{self, Topics};
use super::config::FsyncPolicy;
use super::outbox::{NewMessage, Outbox};
use super::{CommandResultMsg, Live, lock};
use crate::histogram::Histogram;

/// Messages taken from the channels per commit.
const BATCH: usize = 1024;
/// Wait between attempts after a failed write.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Longest time spent retrying a failed write at shutdown.
const GIVE_UP_AT_SHUTDOWN: Duration = Duration::from_secs(1);

enum Item {
    Uplink(UplinkEnvelope),
    Result(CommandResultMsg),
}

pub(crate) struct Writer {
    pub outbox: Arc<Mutex<Outbox>>,
    pub topics: Topics,
    pub gateway: String,
    pub qos: u8,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    pub commit_delay: Duration,
    pub max_packet_size: u32,
    pub wake: Arc<Notify>,
    /// Adapter → taken here, per message.
    pub latency: Arc<Histogram>,
    /// Counts the command results taken for storage.
    pub live: Arc<Mutex<Live>>,
}

/// Why no broker would accept this message, if so. Storing it would block
/// the outbox: the publish would fail on every connection.
fn unpublishable(msg: &NewMessage, max_packet_size: u32) -> Option<String> {
    if msg.topic.contains(['+', '#', '\0']) || msg.topic.len() > usize::from(u16::MAX) {
        return Some(format!(
            "invalid topic `{}` (wildcard, NUL or too long)",
            msg.topic
        ));
    }
    // Fixed header, topic length, packet id and MQTT 5 properties.
    const OVERHEAD: usize = 32;
    let size = OVERHEAD
        + msg.topic.len()
        + msg.payload.len()
        + msg.correlation.as_ref().map_or(0, Vec::len);
    (size > max_packet_size as usize).then(|| {
        format!(
            "message on `{}` is {size} bytes, above max_packet_size {max_packet_size}",
            msg.topic
        )
    })
}

impl Writer {
    pub async fn run(
        self,
        mut uplinks: mpsc::Receiver<UplinkEnvelope>,
        mut results: mpsc::Receiver<CommandResultMsg>,
        stop: CancellationToken,
    ) {
        let this = Arc::new(self);
        let mut sync_tick =
            tokio::time::interval(this.fsync_interval.max(Duration::from_millis(1)));
        let mut envs = Vec::with_capacity(BATCH);
        loop {
            let mut items: Vec<Item> = Vec::new();
            tokio::select! {
                n = uplinks.recv_many(&mut envs, BATCH) => {
                    if n == 0 { break; }
                    this.took(&envs);
                    this.linger(&mut uplinks, &mut envs).await;
                    items.extend(envs.drain(..).map(Item::Uplink));
                }
                r = results.recv() => match r {
                    Some(r) => items.push(Item::Result(r)),
                    None => break,
                },
                _ = sync_tick.tick() => {
                    // The interval policy's fsync; with "always" this only
                    // retries an fsync that failed.
                    if !lock(&this.outbox).needs_sync() {
                        continue;
                    }
                    let ob = this.outbox.clone();
                    if let Ok(true) = tokio::task::spawn_blocking(move || sync(&ob)).await {
                        this.wake.notify_one();
                    }
                    continue;
                }
                _ = stop.cancelled() => break,
            }
            while items.len() < BATCH {
                match results.try_recv() {
                    Ok(r) => items.push(Item::Result(r)),
                    Err(_) => break,
                }
            }
            this.count_answers(&items);
            this.store(items, &stop, None).await;
        }
        // Shutdown: store whatever is already queued, then make it durable.
        let mut rest = Vec::new();
        while let Ok(e) = uplinks.try_recv() {
            rest.push(Item::Uplink(e));
        }
        while let Ok(r) = results.try_recv() {
            rest.push(Item::Result(r));
        }
        if !rest.is_empty() {
            this.count_answers(&rest);
            this.store(
                rest,
                &stop,
                Some(tokio::time::Instant::now() + GIVE_UP_AT_SHUTDOWN),
            )
            .await;
        }
    }

    fn count_answers(&self, items: &[Item]) {
        let answers = items
            .iter()
            .filter(|i| matches!(i, Item::Result(_)))
            .count();
        if answers > 0 {
            lock(&self.live).commands_answered += answers as u64;
        }
    }

    /// Gathers more of a burst into `envs` for up to `commit_delay`, until
    /// the batch is full or the channel closes.
    async fn linger(
        &self,
        uplinks: &mut mpsc::Receiver<UplinkEnvelope>,
        envs: &mut Vec<UplinkEnvelope>,
    ) {
        if self.commit_delay.is_zero() {
            return;
        }
        let until = tokio::time::Instant::now() + self.commit_delay;
        while envs.len() < BATCH {
            tokio::select! {
                n = uplinks.recv_many(envs, BATCH - envs.len()) => {
                    if n == 0 { return }
                    self.took(&envs[envs.len() - n..]);
                },
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }

    /// Counts how long `taken` waited since their adapters sent them.
    fn took(&self, taken: &[UplinkEnvelope]) {
        let now = std::time::Instant::now();
        for e in taken {
            self.latency
                .observe(now.saturating_duration_since(e.produced));
        }
    }

    /// Commits `items`, retrying on write errors (until `give_up`, if set).
    async fn store(
        self: &Arc<Self>,
        items: Vec<Item>,
        stop: &CancellationToken,
        mut give_up: Option<tokio::time::Instant>,
    ) {
        let mut items = items;
        loop {
            let me = self.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let stored = me.commit(&items);
                (items, stored)
            })
            .await;
            let Ok((mut back, stored)) = joined else {
                return;
            };
            let Err(done) = stored else {
                self.wake.notify_one();
                tell_stored(back);
                return;
            };
            tell_stored(back.drain(..done));
            items = back;
            let past = give_up.is_some_and(|g| tokio::time::Instant::now() >= g);
            if past {
                tracing::error!(
                    lost = items.len(),
                    "outbox still not writable at shutdown: messages not stored"
                );
                return;
            }
            if give_up.is_none() && stop.is_cancelled() {
                give_up = Some(tokio::time::Instant::now() + GIVE_UP_AT_SHUTDOWN);
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }

    /// One group commit. Blocking: runs on the blocking pool. A failed
    /// write reports how many of `items` were written before it, to retry
    /// only the rest.
    fn commit(&self, items: &[Item]) -> Result<(), usize> {
        let mut ob = lock(&self.outbox);
        let max = self.max_packet_size;
        let put = |ob: &mut Outbox, msg: NewMessage| match unpublishable(&msg, max) {
            Some(reason) => ob.refuse(reason),
            None => {
                ob.append(msg);
            }
        };
        let mut written = 0;
        for (i, item) in items.iter().enumerate() {
            if ob.buffer_full() {
                ob.commit().map_err(|_| written)?;
                written = i;
            }
            match item {
                Item::Uplink(env) => {
                    let seq = match &env.uplink {
                        Uplink::Telemetry(t) => ob.assign_seq(&t.device),
                        _ => 0,
                    };
                    let encoded = codec::encode_uplink(
                        &self.topics,
                        &self.gateway,
                        &env.adapter,
                        &env.uplink,
                        seq,
                    );
                    for e in encoded {
                        put(
                            &mut ob,
                            NewMessage {
                                topic: e.topic,
                                payload: e.payload,
                                qos: self.qos,
                                retain: e.retain,
                                device: env.uplink.device().to_string(),
                                seq,
                                correlation: None,
                            },
                        );
                    }
                }
                Item::Result(r) => {
                    let payload = codec::command_result(
                        &self.gateway,
                        &r.device,
                        &r.id,
                        &r.outcome,
                        Timestamp::now(),
                    );
                    if let Some((topic, corr)) = &r.reply_to {
                        put(
                            &mut ob,
                            NewMessage {
                                topic: topic.clone(),
                                payload: payload.clone(),
                                qos: self.qos,
                                retain: false,
                                device: r.device.clone(),
                                seq: 0,
                                correlation: (!corr.is_empty()).then(|| corr.clone()),
                            },
                        );
                    }
                    put(
                        &mut ob,
                        NewMessage {
                            topic: self.topics.device(&r.device, "cmd/result"),
                            payload,
                            qos: self.qos,
                            retain: false,
                            device: r.device.clone(),
                            seq: 0,
                            correlation: None,
                        },
                    );
                }
            }
        }
        ob.commit().map_err(|_| written)?;
        if self.fsync == FsyncPolicy::Always {
            let target = ob.sync_target();
            drop(ob);
            if let Some(t) = target {
                // On failure the data is written but not yet durable (nor
                // visible); the periodic sync retries it.
                let r = t.sync();
                lock(&self.outbox).synced(&t, &r);
            }
        }
        Ok(())
    }
}

/// Tells the senders of the command results among `written` that they are
/// in the outbox.
fn tell_stored(written: impl IntoIterator<Item = Item>) {
    for item in written {
        if let Item::Result(CommandResultMsg {
            stored: Some(tell), ..
        }) = item
        {
            let _ = tell.send(());
        }
    }
}

/// fsyncs what was written; true if that made new records visible.
fn sync(outbox: &Mutex<Outbox>) -> bool {
    let target = lock(outbox).sync_target();
    match target {
        Some(t) => {
            let r = t.sync();
            let ok = r.is_ok();
            lock(outbox).synced(&t, &r);
            ok
        }
        None => false,
    }
}
