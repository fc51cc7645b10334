//! A torn or corrupted outbox (power cut mid-write, bit rot, garbage) never
//! stops the gateway from starting: the damage is reported in status and
//! everything intact is delivered, in order. Random file content never
//! panics.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ferrogate::north::config::OutboxConfig;
use ferrogate::north::outbox::Outbox;
use ferrogate::north::record::Record;
use ferrogate_sdk::{UplinkSender, Value};
use proptest::prelude::*;

const WAIT: Duration = Duration::from_secs(30);

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Byte offsets of the records in a segment file.
fn record_offsets(bytes: &[u8]) -> Vec<(usize, Record)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok((r, n)) = Record::parse(&bytes[at..]) {
        out.push((at, r));
        at += n;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_and_corrupt_record_are_skipped_and_reported() {
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "ferrogate/gwd/devices/+/telemetry").await;
    broker.stop();
    let state = tempfile::tempdir().unwrap();
    // 200 messages stored while the broker is away.
    let north = start_north("gwd", &broker.url(), state.path(), |_, _| {}).await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    for _ in 0..200 {
        up.send(telemetry("d", &[("x", Value::Int(1))]))
            .await
            .unwrap();
    }
    wait_until("200 stored", WAIT, || north.last_seq("d") == Some(200)).await;
    north.shutdown().await;

    // Damage: flip a byte inside record seq 50, tear the last record in half.
    let dir = state.path().join("outbox");
    let seg = segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let recs = record_offsets(&bytes);
    assert_eq!(recs.len(), 200);
    let (at50, r50) = &recs[49];
    assert_eq!(r50.seq, 50);
    bytes[at50 + 30] ^= 0xff;
    let (at200, _) = recs[199];
    bytes.truncate(at200 + 20);
    std::fs::write(&seg, &bytes).unwrap();

    broker.restart();
    let north = start_north("gwd", &broker.url(), state.path(), |_, _| {}).await;
    let damage = north.status().outbox.damage;
    assert_eq!(damage.len(), 2, "{damage:?}");
    assert!(damage[0].contains("checksum mismatch"), "{damage:?}");
    assert!(damage[1].contains("truncated"), "{damage:?}");
    wait_until("the intact records delivered", WAIT, || {
        seqs_by_device(&sub.all())
            .get("d")
            .is_some_and(|v| v.contains(&199))
    })
    .await;
    let mut got = seqs_by_device(&sub.all()).remove("d").unwrap();
    got.dedup();
    let want: Vec<u64> = (1..=199).filter(|s| *s != 50).collect();
    assert_eq!(got, want);
    // New data after recovery continues the sequence without reuse.
    let up = UplinkSender::new("sim", north.uplink_tx());
    up.send(telemetry("d", &[("x", Value::Int(1))]))
        .await
        .unwrap();
    wait_until("new message", WAIT, || {
        seqs_by_device(&sub.all())["d"].contains(&201)
    })
    .await;
    north.shutdown().await;
}

#[test]
fn garbage_cursor_and_seq_book_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acked"), b"nonsense").unwrap();
    std::fs::write(dir.path().join("seq.json"), b"{\"d\": ").unwrap();
    let mut ob = Outbox::open(dir.path(), &OutboxConfig::default()).unwrap();
    let st = ob.status();
    assert_eq!(st.damage.len(), 2, "{:?}", st.damage);
    assert_eq!(st.depth, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_segment_content_never_panics(
        files in proptest::collection::vec(
            (0u64..1000, proptest::collection::vec(any::<u8>(), 0..3000)), 1..4),
        prefix_valid in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (id, mut bytes) in files {
            if prefix_valid {
                // A valid record followed by garbage.
                let mut rec = Vec::new();
                Record { id, accepted_ms: 0, seq: 1, qos: 1, retain: false, device: "d".into(),
                         topic: "t".into(), correlation: None, payload: vec![1, 2, 3].into() }.emit(&mut rec);
                rec.extend_from_slice(&bytes);
                bytes = rec;
            }
            std::fs::write(dir.path().join(format!("{id:020}.seg")), bytes).unwrap();
        }
        let mut ob = Outbox::open(dir.path(), &OutboxConfig::default()).unwrap();
        let got = ob.next_unsent(10_000);
        // What survives is replayed in id order.
        prop_assert!(got.windows(2).all(|w| w[0].id < w[1].id));
        // After recovery the files hold only valid records: a second open
        // finds no further damage.
        drop(ob);
        let mut again = Outbox::open(dir.path(), &OutboxConfig::default()).unwrap();
        prop_assert!(again.status().damage.is_empty(), "{:?}", again.status().damage);
    }
}
