//! The Sparkplug edge node takes any bytes on any of its subscriptions
//! (NCMD, DCMD, the primary host's STATE, or a topic it never subscribed
//! to): acted on or refused with a reason, never a panic.
#![no_main]

use ferrogate::sparkplug::node::{EdgeNode, NodeConfig};
use ferrogate_sdk::{DeviceMeta, PointMeta, Timestamp, Uplink};
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 4] = [
    "spBv1.0/g/NCMD/n",
    "spBv1.0/g/DCMD/n/meter",
    "spBv1.0/STATE/host",
    "spBv1.0/g/DCMD/n/nobody",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let mut node = EdgeNode::new(
        NodeConfig {
            group_id: "g".into(),
            edge_node_id: "n".into(),
            primary_host_id: Some("host".into()),
            aliases: pick & 0x80 != 0,
            hold_limit: 4,
        },
        0,
    );
    let now = Timestamp(1);
    node.connect(now);
    node.connected();
    node.subscribed(now);
    let _ = node.received("spBv1.0/STATE/host", br#"{"online":true,"timestamp":1}"#, now);
    let point = |name: &str, data_type: &str| PointMeta {
        name: name.into(),
        data_type: data_type.into(),
        writable: true,
        ..PointMeta::default()
    };
    node.uplink(
        &Uplink::Meta(DeviceMeta {
            device: "meter".into(),
            points: vec![point("a", "i16"), point("b", "f32"), point("c", "string")].into(),
            ..DeviceMeta::default()
        }),
        now,
    );
    let _ = node.received(TOPICS[usize::from(pick & 3)], payload, now);
    while node.poll_event().is_some() {}
});
