//! Disk full: write errors are reported in status, the gateway keeps
//! running (adapters wait rather than lose data), and once space returns
//! it recovers and delivers everything with no `seq` gap.
//!
//! Uses a 4 MiB tmpfs, so it needs root: as another user it says so and
//! skips (CI runs as root).

mod common;

use std::time::Duration;

use common::*;
use ferrogate_sdk::{UplinkSender, Value};

const WAIT: Duration = Duration::from_secs(60);

struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        umount(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_then_space_returns() {
    if !running_as_root("mounting a 4 MiB tmpfs") {
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    assert!(
        mount_tmpfs(mnt.path(), "4m"),
        "this test mounts a 4 MiB tmpfs and must run as root (with CAP_SYS_ADMIN)"
    );
    let _guard = Mounted(mnt.path().to_path_buf());
    // Leave ~256 KiB free.
    let filler = mnt.path().join("filler");
    std::fs::write(&filler, vec![0u8; (4096 - 256) * 1024]).unwrap();

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
    let producer = {
        let up = UplinkSender::new("sim", north.uplink_tx());
        tokio::spawn(async move {
            for i in 0..n {
                up.send(telemetry("d", &[("x", Value::UInt(i))]))
                    .await
                    .unwrap();
            }
        })
    };
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

    std::fs::remove_file(&filler).unwrap();
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
