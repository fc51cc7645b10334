//! The device directory: what the gateway knows about each device (which
//! adapter owns it, its points, online or offline, last seen), learned from
//! the uplink stream as it passes from the adapters to the northbound path.
//!
//! The [`observer`] sees each message as an adapter sends it: it updates
//! the directory and fans messages out to live watchers (`ferrogate
//! tail`); the message itself goes north unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use ferrogate_sdk::{DeviceMeta, DeviceState, Timestamp, Uplink, UplinkEnvelope, UplinkObserver};
use tokio::sync::{broadcast, watch};

/// One device as the runtime sees it.
#[derive(Debug, Clone)]
pub struct DeviceEntry {
    pub adapter: String,
    /// The device's points and allowed operations as last announced. Of
    /// its `attributes` only `security` (a word, for `lwm2m clients`) is
    /// kept: the rest are published north as they come, and an LwM2M
    /// client's object list alone costs kilobytes per device.
    pub meta: Option<DeviceMeta>,
    pub state: Option<DeviceState>,
    pub reason: Option<String>,
    pub last_seen: Option<Timestamp>,
    /// The last point error, for `ferrogate devices`.
    pub last_error: Option<String>,
    pub counts: DeviceCounts,
    online: OnlineFlag,
}

/// Whether a device is online, for those waiting for it to come back. The
/// channel is made for the first waiter (few devices ever have one) and
/// shared by every copy of the entry.
#[derive(Debug, Clone, Default)]
struct OnlineFlag(Arc<Mutex<Online>>);

#[derive(Debug)]
struct Online {
    up: bool,
    watchers: Option<watch::Sender<bool>>,
}

impl Default for Online {
    /// Unknown counts as online: the adapter decides.
    fn default() -> Self {
        Online {
            up: true,
            watchers: None,
        }
    }
}

impl OnlineFlag {
    fn lock(&self) -> std::sync::MutexGuard<'_, Online> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, up: bool) {
        let mut online = self.lock();
        online.up = up;
        if let Some(tx) = &online.watchers {
            tx.send_replace(up);
        }
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        let mut online = self.lock();
        let up = online.up;
        online
            .watchers
            .get_or_insert_with(|| watch::channel(up).0)
            .subscribe()
    }
}

/// What a device has sent, for metrics.
#[derive(Debug, Clone, Default)]
pub struct DeviceCounts {
    pub telemetry: u64,
    pub readings: u64,
    /// Failed reads by error kind (`timeout`, `device_exception`, ...).
    pub errors: BTreeMap<&'static str, u64>,
}

impl DeviceEntry {
    fn new(adapter: &str) -> Self {
        DeviceEntry {
            adapter: adapter.to_string(),
            meta: None,
            state: None,
            reason: None,
            last_seen: None,
            last_error: None,
            counts: DeviceCounts::default(),
            online: OnlineFlag::default(),
        }
    }

    /// Whether the device is known to be offline (unknown counts as online:
    /// the adapter decides).
    pub fn is_offline(&self) -> bool {
        self.state == Some(DeviceState::Offline)
    }

    /// A receiver that sees the device's online flag change.
    pub fn watch_online(&self) -> watch::Receiver<bool> {
        self.online.subscribe()
    }
}

/// The devices by name. The entries are boxed: a B-tree keeps its nodes
/// about two-thirds full, and an entry is ten times the size of a pointer.
pub type Devices = BTreeMap<String, Box<DeviceEntry>>;

/// Every known device, shared by the router, the control socket and metrics.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    devices: Arc<RwLock<Devices>>,
}

impl Directory {
    /// Register devices declared in configuration, before any uplink.
    pub fn declare(&self, adapter: &str, devices: impl IntoIterator<Item = String>) {
        let mut map = self.write();
        for d in devices {
            map.entry(d)
                .or_insert_with(|| Box::new(DeviceEntry::new(adapter)));
        }
    }

    /// After a reload: forget devices of adapters that are gone and devices
    /// no longer declared by an adapter that declares its devices; declare
    /// the new ones. Devices an adapter learns at run time (LwM2M) stay.
    /// Returns the devices forgotten: no adapter has them any more.
    pub fn reconcile(&self, declared: &[(String, Vec<String>)]) -> Vec<String> {
        let mut map = self.write();
        let mut forgotten = Vec::new();
        map.retain(|name, entry| {
            let keep = match declared.iter().find(|(a, _)| *a == entry.adapter) {
                None => false,
                Some((_, devices)) => devices.is_empty() || devices.contains(name),
            };
            // A device that moved to another adapter is not forgotten.
            if !keep && !declared.iter().any(|(_, devices)| devices.contains(name)) {
                forgotten.push(name.clone());
            }
            keep
        });
        for (adapter, devices) in declared {
            for d in devices {
                map.entry(d.clone())
                    .or_insert_with(|| Box::new(DeviceEntry::new(adapter)));
            }
        }
        forgotten
    }

    pub fn get(&self, device: &str) -> Option<DeviceEntry> {
        self.read().get(device).map(|e| (**e).clone())
    }

    pub fn snapshot(&self) -> BTreeMap<String, DeviceEntry> {
        self.read()
            .iter()
            .map(|(name, e)| (name.clone(), (**e).clone()))
            .collect()
    }

    /// Look at every device without copying them (the metrics endpoint
    /// reads a few fields of each); writers wait until `f` returns.
    pub fn with_devices<R>(&self, f: impl FnOnce(&Devices) -> R) -> R {
        f(&self.read())
    }

    /// Learn from one uplink message.
    pub fn observe(&self, envelope: &UplinkEnvelope) {
        // Events may come from the runtime itself (command audits): they
        // neither create devices nor change who owns one.
        if matches!(envelope.uplink, Uplink::Event(_)) {
            return;
        }
        let mut map = self.write();
        let device = envelope.uplink.device();
        if matches!(envelope.uplink, Uplink::Forgotten(_)) {
            map.remove(device);
            return;
        }
        let entry = match map.get_mut(device) {
            Some(e) => e,
            None => map
                .entry(device.to_string())
                .or_insert_with(|| Box::new(DeviceEntry::new(&envelope.adapter))),
        };
        match &envelope.uplink {
            Uplink::Meta(meta) => {
                if *entry.adapter != *envelope.adapter {
                    entry.adapter = envelope.adapter.to_string();
                }
                entry.meta = Some(DeviceMeta {
                    device: meta.device.clone(),
                    points: meta.points.clone(),
                    operations: meta.operations.clone(),
                    attributes: meta
                        .attributes
                        .get_key_value("security")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .into_iter()
                        .collect(),
                });
            }
            Uplink::Status(status) => {
                entry.state = Some(status.state);
                entry.reason = status.reason.clone();
                entry.online.set(status.state == DeviceState::Online);
                if status.state == DeviceState::Online {
                    entry.last_seen = Some(status.ts);
                }
            }
            Uplink::Telemetry(t) => {
                entry.counts.telemetry += 1;
                let ok_before = entry.counts.readings;
                let mut first_error = None;
                for r in &t.readings {
                    match &r.value {
                        Ok(_) => entry.counts.readings += 1,
                        Err(e) => {
                            *entry.counts.errors.entry(e.kind.as_str()).or_default() += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                if entry.counts.readings > ok_before {
                    entry.last_seen = Some(t.ts);
                }
                if let Some(err) = first_error {
                    entry.last_error = Some(err.to_string());
                }
            }
            Uplink::Event(_) | Uplink::Forgotten(_) => {}
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Devices> {
        self.devices.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Devices> {
        self.devices.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Live copies of the uplink stream for watchers; a slow watcher misses
/// messages (it is told how many), the north side never does.
pub type LiveFeed = broadcast::Sender<Arc<UplinkEnvelope>>;

/// What the runtime does with every uplink message as it is sent: the
/// directory learns from it, and live watchers (if any) get a copy.
pub fn observer(directory: Directory, live: LiveFeed) -> UplinkObserver {
    Arc::new(move |envelope: &UplinkEnvelope| {
        directory.observe(envelope);
        if live.receiver_count() > 0 {
            let _ = live.send(Arc::new(envelope.clone()));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogate_sdk::{DeviceStatus, PointMeta};

    fn envelope(uplink: Uplink) -> UplinkEnvelope {
        UplinkEnvelope {
            adapter: Arc::from("lwm2m"),
            uplink,
            produced: std::time::Instant::now(),
        }
    }

    fn status(state: DeviceState) -> UplinkEnvelope {
        envelope(Uplink::Status(DeviceStatus {
            device: "d".into(),
            state,
            reason: None,
            ts: Timestamp(1),
        }))
    }

    #[test]
    fn a_waiter_sees_the_device_come_back_in_every_copy() {
        let dir = Directory::default();
        dir.observe(&status(DeviceState::Offline));
        let copy = dir.get("d").unwrap();
        assert!(copy.is_offline());
        let mut online = copy.watch_online();
        assert!(!*online.borrow());
        dir.observe(&status(DeviceState::Online));
        assert!(online.has_changed().unwrap());
        assert!(*online.borrow_and_update());
        // a waiter that comes later starts from the current state
        assert!(*dir.get("d").unwrap().watch_online().borrow());
    }

    #[test]
    fn meta_keeps_points_operations_and_security_but_no_other_attributes() {
        let dir = Directory::default();
        let points: Arc<[PointMeta]> = Arc::from(vec![PointMeta {
            name: "t".into(),
            ..PointMeta::default()
        }]);
        dir.observe(&envelope(Uplink::Meta(DeviceMeta {
            device: "d".into(),
            points: points.clone(),
            operations: Some(vec!["read".into()]),
            attributes: BTreeMap::from([
                ("objects".to_string(), "[..]".into()),
                ("security".to_string(), "psk".into()),
            ]),
        })));
        let entry = dir.get("d").unwrap();
        assert_eq!(entry.adapter, "lwm2m");
        let meta = entry.meta.unwrap();
        assert!(Arc::ptr_eq(&meta.points, &points));
        assert_eq!(meta.operations, Some(vec!["read".to_string()]));
        assert_eq!(
            meta.attributes,
            BTreeMap::from([("security".to_string(), "psk".into())])
        );
    }

    #[test]
    fn telemetry_counts_readings_and_errors_and_keeps_the_first_error() {
        use ferrogate_sdk::{PointError, PointErrorKind, Reading, Telemetry};
        let dir = Directory::default();
        let telemetry = |ts, readings| {
            envelope(Uplink::Telemetry(Telemetry {
                device: "d".into(),
                ts: Timestamp(ts),
                readings,
            }))
        };
        let failed = |point: &str, kind, message: &str| {
            Reading::failed(point, PointError::new(kind, message), Timestamp(1))
        };
        dir.observe(&telemetry(
            10,
            vec![
                Reading::ok("a", ferrogate_sdk::Value::UInt(1), Timestamp(10)),
                failed("b", PointErrorKind::Timeout, "no answer"),
                failed("c", PointErrorKind::Decode, "garbage"),
            ],
        ));
        let entry = dir.get("d").unwrap();
        assert_eq!((entry.counts.telemetry, entry.counts.readings), (1, 1));
        assert_eq!(entry.counts.errors.get("timeout"), Some(&1));
        assert_eq!(entry.counts.errors.get("decode"), Some(&1));
        assert_eq!(entry.last_seen, Some(Timestamp(10)));
        assert!(entry.last_error.unwrap().contains("no answer"));
        // Nothing but errors: the device was not seen.
        dir.observe(&telemetry(
            20,
            vec![failed("a", PointErrorKind::Timeout, "again")],
        ));
        let entry = dir.get("d").unwrap();
        assert_eq!(entry.last_seen, Some(Timestamp(10)));
        assert_eq!(entry.counts.errors.get("timeout"), Some(&2));
        assert!(entry.last_error.unwrap().contains("again"));
    }
}
