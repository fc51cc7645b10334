//! Disk full: write errors are reported in status, the gateway keeps
//! running (adapters wait rather than lose data), and once space returns
//! (from outside, or by delivering the backlog) it recovers by itself and
//! delivers everything with no `seq` gap.
//!
//! Uses a 4 MiB tmpfs, so it needs root: as another user it says so and
//! skips (CI runs as root).

mod common;

use std::time::Duration;

use common::*;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(60);

/// A 4 MiB tmpfs, unmounted on drop.
struct Mounted(tempfile::TempDir);

impl Mounted {
    /// Mounts it, or `None` (said) when not root.
    fn tmpfs() -> Option<Mounted> {
        if !running_as_root("mounting a 4 MiB tmpfs") {
            return None;
        }
        let mnt = tempfile::tempdir().unwrap();
        assert!(
            mount_tmpfs(mnt.path(), "4m"),
            "this test mounts a 4 MiB tmpfs and must run as root (with CAP_SYS_ADMIN)"
        );
        Some(Mounted(mnt))
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    /// Fills it up to `free_kib` KiB of free space.
    fn leave_free(&self, free_kib: usize) {
        std::fs::write(
            self.path().join("filler"),
            vec![0u8; (4096 - free_kib) * 1024],
        )
        .unwrap();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        umount(self.0.path());
    }
}

/// Sends telemetry `x = 0..n` of device `d`, waiting whenever the north
/// side does (more than the uplink channel holds).
fn produce(north: &ferrogate::north::North, n: u64) -> tokio::task::JoinHandle<()> {
    let up = UplinkSender::new("sim", north.uplink_tx());
    tokio::spawn(async move {
        for i in 0..n {
            up.send(telemetry("d", &[("x", Value::UInt(i))]))
                .await
                .unwrap();
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_then_space_returns() {
    let Some(mnt) = Mounted::tmpfs() else { return };
    mnt.leave_free(256);

    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwx/devices/+/telemetry").await;
    broker.stop();
    let state = mnt.path().join("state");
    let north = start_north("gwx", &broker.url(), &state, |_, o| {
        o.segment_bytes = 64 * 1024;
        o.max_bytes = 64 * 1024 * 1024;
    })
    .await;
    // More than the uplink channel holds, so the producer must wait.
    let n: u64 = 10_000;
    let producer = produce(&north, n);
    wait_until("a write error reported", WAIT, || {
        north.status().outbox.last_write_error.is_some()
    })
    .await;
    let st = north.status().outbox;
    assert!(st.write_errors >= 1);
    let err = st.last_write_error.unwrap();
    assert!(
        err.contains("No space left") || err.contains("os error 28"),
        "{err}"
    );
    assert!(
        !producer.is_finished(),
        "the adapter waits while the disk is full"
    );

    std::fs::remove_file(mnt.path().join("filler")).unwrap();
    producer.await.unwrap();
    wait_until("recovered and everything stored", WAIT, || {
        north.last_seq("d") == Some(n) && north.status().outbox.last_write_error.is_none()
    })
    .await;

    broker.restart();
    wait_until("everything delivered", WAIT, || {
        seqs_by_device(&sub.all())
            .get("d")
            .is_some_and(|v| v.contains(&n))
    })
    .await;
    assert_complete_in_order("d", &seqs_by_device(&sub.all())["d"], n);
    north.shutdown().await;
}

/// The deadlock of issue 18: with the disk full and the broker back, the
/// backlog drains, its segments are deleted (the reserve pays for saving
/// the seq book and the cursor first), writes resume by themselves without
/// a restart, and a restart afterwards re-sends nothing already delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_recovers_by_delivering_the_backlog() {
    let Some(mnt) = Mounted::tmpfs() else { return };
    // ~1.5 MiB free: the 1 MiB reserve and about 512 KiB of outbox.
    mnt.leave_free(1536);

    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwy/devices/+/telemetry").await;
    broker.stop();
    let state = mnt.path().join("state");
    let north = start_north("gwy", &broker.url(), &state, |_, o| {
        o.segment_bytes = 64 * 1024;
        o.max_bytes = 64 * 1024 * 1024;
    })
    .await;
    let n: u64 = 10_000;
    let producer = produce(&north, n);
    wait_until("the disk is full", WAIT, || {
        north.status().outbox.last_write_error.is_some()
    })
    .await;
    assert!(!producer.is_finished());

    // Space never comes back from outside: only delivering frees it.
    broker.restart();
    producer.await.unwrap();
    wait_until("everything delivered", WAIT, || {
        seqs_by_device(&sub.all())
            .get("d")
            .is_some_and(|v| v.contains(&n))
    })
    .await;
    assert_complete_in_order("d", &seqs_by_device(&sub.all())["d"], n);
    wait_until("drained and healthy", WAIT, || {
        let st = north.status().outbox;
        st.depth == 0 && st.last_write_error.is_none()
    })
    .await;
    north.shutdown().await;

    // A restart re-sends nothing that was delivered.
    let delivered = sub.all().len();
    let north = start_north("gwy", &broker.url(), &state, |_, o| {
        o.segment_bytes = 64 * 1024;
    })
    .await;
    UplinkSender::new("sim", north.uplink_tx())
        .send(telemetry("d", &[("x", Value::UInt(n))]))
        .await
        .unwrap();
    wait_until("the next message delivered", WAIT, || {
        seqs_by_device(&sub.all())
            .get("d")
            .is_some_and(|v| v.contains(&(n + 1)))
    })
    .await;
    assert_eq!(
        sub.all().len(),
        delivered + 1,
        "a delivered message was sent again"
    );
    north.shutdown().await;
}

/// The same at the outbox itself, with the disk filled to the last byte:
/// acknowledging the backlog deletes its segments (saving the seq book of
/// 2,000 devices first, out of the reserve), so space comes back.
#[test]
fn acknowledging_on_a_disk_full_to_the_last_byte_frees_space() {
    use ferrogate::north::config::OutboxConfig;
    use ferrogate::north::outbox::{NewMessage, Outbox};
    use std::io::Write;
    let Some(mnt) = Mounted::tmpfs() else { return };
    let cfg = OutboxConfig {
        segment_bytes: 64 * 1024,
        ..OutboxConfig::default()
    };
    let mut ob = Outbox::open(&mnt.path().join("outbox"), &cfg).unwrap();
    for i in 0..4000u64 {
        let device = format!("device-with-a-long-name-{:04}", i % 2000);
        let seq = ob.assign_seq(&device);
        ob.append(NewMessage {
            topic: format!("r/devices/{device}/telemetry"),
            payload: vec![b'x'; 200],
            qos: 1,
            retain: false,
            device,
            seq,
            correlation: None,
        });
        if ob.buffer_full() {
            ob.commit().unwrap();
        }
    }
    ob.commit().unwrap();
    ob.sync_now().unwrap();
    // Fill the disk to the last byte.
    let mut filler = std::fs::File::create(mnt.path().join("filler")).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    while filler.write_all(&[0u8; 1]).is_ok() {}
    let before = ob.status();
    let sent = ob.next_unsent(10_000);
    assert_eq!(sent.len(), 4000);
    for r in &sent {
        ob.ack(r.id);
    }
    let after = ob.status();
    assert_eq!(
        after.write_errors, before.write_errors,
        "{:?}",
        after.last_write_error
    );
    assert!(
        after.bytes < before.bytes / 4,
        "acknowledged segments deleted: {} -> {} bytes",
        before.bytes,
        after.bytes
    );
    ob.save_floor().unwrap();
}
