//! Every decoder is total over arbitrary bytes (an `Err`, never a panic),
//! and every codec round-trips: `parse(emit(x)) == x`.

use ferrogate_lwm2m::cbor::Cbor;
use ferrogate_lwm2m::content::{self, ContentFormat};
use ferrogate_lwm2m::link::{Link, LinkParam, LinkValue};
use ferrogate_lwm2m::registration::{RegisterRequest, UpdateRequest};
use ferrogate_lwm2m::senml::{self, SenmlRecord, SenmlValue};
use ferrogate_lwm2m::tlv::{self, TlvContent, TlvKind, TlvRepr};
use ferrogate_lwm2m::{ObjectRegistry, Path, ResourceType, ResourceValue};
use proptest::prelude::*;

fn value_entry(kind: TlvKind) -> impl Strategy<Value = TlvRepr> {
    (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(move |(id, v)| {
        TlvRepr {
            kind,
            id,
            content: TlvContent::Value(v),
        }
    })
}

fn resource_entry() -> impl Strategy<Value = TlvRepr> {
    prop_oneof![
        value_entry(TlvKind::ResourceValue),
        (
            any::<u16>(),
            proptest::collection::vec(value_entry(TlvKind::ResourceInstance), 0..4)
        )
            .prop_map(|(id, c)| TlvRepr {
                kind: TlvKind::MultipleResource,
                id,
                content: TlvContent::Children(c),
            }),
    ]
}

fn tlv_entry() -> impl Strategy<Value = TlvRepr> {
    prop_oneof![
        resource_entry(),
        value_entry(TlvKind::ResourceInstance),
        (
            any::<u16>(),
            proptest::collection::vec(resource_entry(), 0..4)
        )
            .prop_map(|(id, c)| TlvRepr {
                kind: TlvKind::ObjectInstance,
                id,
                content: TlvContent::Children(c),
            }),
    ]
}

fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |f| f.is_finite())
}

fn resource_value() -> impl Strategy<Value = ResourceValue> {
    prop_oneof![
        ".{0,20}".prop_map(ResourceValue::String),
        any::<i64>().prop_map(ResourceValue::Integer),
        any::<u64>().prop_map(ResourceValue::Unsigned),
        finite().prop_map(ResourceValue::Float),
        any::<bool>().prop_map(ResourceValue::Boolean),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(ResourceValue::Opaque),
        any::<i64>().prop_map(ResourceValue::Time),
        (0u16..65535, 0u16..65535).prop_map(|(o, i)| ResourceValue::Objlnk(o, i)),
    ]
}

fn cbor() -> impl Strategy<Value = Cbor> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Cbor::Unsigned),
        any::<u64>().prop_map(Cbor::Negative),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Cbor::Bytes),
        ".{0,12}".prop_map(Cbor::Text),
        any::<bool>().prop_map(Cbor::Bool),
        Just(Cbor::Null),
        Just(Cbor::Undefined),
        finite().prop_map(Cbor::Float),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Cbor::Array),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Cbor::Map),
            (any::<u64>(), inner).prop_map(|(t, i)| Cbor::Tag(t, Box::new(i))),
        ]
    })
}

fn senml_value() -> impl Strategy<Value = SenmlValue> {
    prop_oneof![
        any::<i64>().prop_map(SenmlValue::Integer),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(SenmlValue::Unsigned),
        finite()
            .prop_filter("not integral", |f| f.fract() != 0.0)
            .prop_map(SenmlValue::Float),
        ".{0,12}".prop_map(SenmlValue::String),
        any::<bool>().prop_map(SenmlValue::Bool),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(SenmlValue::Data),
        "[0-9]{1,4}:[0-9]{1,4}".prop_map(SenmlValue::ObjLink),
    ]
}

fn senml_record() -> impl Strategy<Value = SenmlRecord> {
    (
        proptest::option::of("/[0-9/]{0,10}"),
        proptest::option::of(-1e9f64..1e9),
        proptest::option::of("[0-9/]{0,8}"),
        proptest::option::of(-1e6f64..1e6),
        proptest::option::of(senml_value()),
    )
        .prop_map(|(base_name, base_time, name, time, value)| SenmlRecord {
            base_name,
            base_time,
            name,
            time,
            value,
        })
}

fn link() -> impl Strategy<Value = Link> {
    let value = prop_oneof![
        "[a-zA-Z0-9.:/_-]{0,8}".prop_map(LinkValue::Token),
        ".{0,10}".prop_map(LinkValue::Quoted),
    ];
    let param = ("[a-z][a-z0-9]{0,5}", proptest::option::of(value))
        .prop_map(|(name, value)| LinkParam { name, value });
    ("/[0-9a-z/]{0,12}", proptest::collection::vec(param, 0..4))
        .prop_map(|(target, params)| Link { target, params })
}

const ALL_FORMATS: [ContentFormat; 8] = [
    ContentFormat::Text,
    ContentFormat::LinkFormat,
    ContentFormat::Opaque,
    ContentFormat::Cbor,
    ContentFormat::SenmlJson,
    ContentFormat::SenmlCbor,
    ContentFormat::Tlv,
    ContentFormat::Lwm2mJson,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tlv_round_trips(items in proptest::collection::vec(tlv_entry(), 0..5)) {
        let bytes = TlvRepr::emit_all(&items).unwrap();
        prop_assert_eq!(TlvRepr::parse_all(&bytes).unwrap(), items);
    }

    #[test]
    fn tlv_values_round_trip(value in resource_value()) {
        let bytes = tlv::encode_value(&value);
        prop_assert_eq!(tlv::decode_value(&bytes, value.resource_type()).unwrap(), value);
    }

    #[test]
    fn tlv_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(items) = TlvRepr::parse_all(&bytes) {
            // what parses re-encodes canonically to the same entries
            let again = TlvRepr::emit_all(&items).unwrap();
            prop_assert_eq!(TlvRepr::parse_all(&again).unwrap(), items.clone());
            for base in ["/3", "/3/0", "/3/0/6", "/3/0/6/1"] {
                let _ = TlvRepr::flatten(&items, Path::parse(base).unwrap());
            }
        }
        for ty in [ResourceType::String, ResourceType::Integer, ResourceType::UnsignedInteger, ResourceType::Float,
                   ResourceType::Boolean, ResourceType::Opaque, ResourceType::Time, ResourceType::Objlnk, ResourceType::None] {
            let _ = tlv::decode_value(&bytes, ty);
            let _ = ferrogate_lwm2m::text::decode(&bytes, Some(ty));
        }
    }

    #[test]
    fn cbor_round_trips(item in cbor()) {
        prop_assert_eq!(Cbor::parse(&item.to_vec()).unwrap(), item);
    }

    #[test]
    fn cbor_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(item) = Cbor::parse(&bytes) {
            prop_assert_eq!(Cbor::parse(&item.to_vec()).unwrap(), item.clone());
        }
    }

    #[test]
    fn senml_json_round_trips(records in proptest::collection::vec(senml_record(), 0..6)) {
        let bytes = senml::emit_json(&records).unwrap();
        prop_assert_eq!(senml::parse_json(&bytes).unwrap(), records);
    }

    #[test]
    fn senml_cbor_round_trips(records in proptest::collection::vec(senml_record(), 0..6)) {
        prop_assert_eq!(senml::parse_cbor(&senml::emit_cbor(&records)).unwrap(), records);
    }

    #[test]
    fn link_format_round_trips(links in proptest::collection::vec(link(), 0..5)) {
        let text = Link::emit_all(&links);
        prop_assert_eq!(Link::parse_all(text.as_bytes()).unwrap(), links);
    }

    #[test]
    fn text_values_round_trip(value in resource_value().prop_filter("has a text form", |v| !matches!(v, ResourceValue::Opaque(_)))) {
        let bytes = ferrogate_lwm2m::text::encode(&value).unwrap();
        prop_assert_eq!(ferrogate_lwm2m::text::decode(&bytes, Some(value.resource_type())).unwrap(), value);
    }

    #[test]
    fn content_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), base in 0usize..5) {
        let registry = ObjectRegistry::builtin();
        let bases = ["/", "/3", "/3/0", "/3303/0/5700", "/3/0/7/1"];
        let base = Path::parse(bases[base]).unwrap();
        for format in ALL_FORMATS {
            let _ = content::decode(format, base, &bytes, &registry);
        }
        let _ = senml::parse_json(&bytes);
        let _ = senml::parse_cbor(&bytes);
        let _ = ferrogate_lwm2m::lwm2m_json::parse(&bytes);
        let _ = Link::parse_all(&bytes);
    }

    #[test]
    fn text_shaped_input_never_panics(text in "[\\[\\]{}\"<>;,=:/a-z0-9 \\\\._-]{0,80}") {
        let registry = ObjectRegistry::builtin();
        for format in [ContentFormat::SenmlJson, ContentFormat::Lwm2mJson, ContentFormat::Text] {
            let _ = content::decode(format, Path::ROOT, text.as_bytes(), &registry);
        }
        let _ = Link::parse_all(text.as_bytes());
        let _ = Path::parse(&text);
        let _ = ferrogate_lwm2m::PathPattern::parse(&text);
        let _ = RegisterRequest::parse(text.split('&'), text.as_bytes());
        let _ = UpdateRequest::parse(text.split('&'), text.as_bytes());
        let _ = ObjectRegistry::default().load_xml(&text);
    }

    #[test]
    fn xml_shaped_input_never_panics(text in "(<[A-Za-z/]{1,12}( ID=\"[0-9]{0,6}\")?>|[a-zA-Z0-9 &;#.]{0,10}|<!\\[CDATA\\[x\\]\\]>){0,30}") {
        let _ = ObjectRegistry::default().load_xml(&text);
    }

    #[test]
    fn paths_round_trip(ids in proptest::collection::vec(0u16..65535, 0..=4)) {
        let path = Path::new(&ids).unwrap();
        prop_assert_eq!(Path::parse(&path.to_string()).unwrap(), path);
    }

    #[test]
    fn tlv_writes_round_trip_through_content(values in proptest::collection::btree_map((0u16..3, 0u16..65535), resource_value(), 1..5)) {
        // values for resources of an object no definition types: the TLV
        // tree carries exactly the bytes of each value, at its path
        let written: Vec<(Path, ResourceValue)> = values
            .into_iter()
            .map(|((inst, res), v)| (Path::new(&[31999, inst, res]).unwrap(), v))
            .collect();
        let base = Path::new(&[31999]).unwrap();
        let bytes = content::encode(ContentFormat::Tlv, base, &written).unwrap();
        let items = TlvRepr::parse_all(&bytes).unwrap();
        let back = TlvRepr::flatten(&items, base).unwrap();
        prop_assert_eq!(back.len(), written.len());
        for ((bp, raw), (p, v)) in back.iter().zip(&written) {
            prop_assert_eq!(bp, p);
            prop_assert_eq!(raw.to_vec(), tlv::encode_value(v));
        }
        prop_assert!(content::decode(ContentFormat::Tlv, base, &bytes, &ObjectRegistry::builtin()).is_ok());
    }
}

/// A CON POST to `path` with `queries` and a link-format payload.
fn post(mid: u16, path: &[&[u8]], queries: &[String], payload: &[u8]) -> Vec<u8> {
    use ferrogate_coap::message::option;
    let mut options: Vec<(u16, Vec<u8>)> = path
        .iter()
        .map(|p| (option::URI_PATH, p.to_vec()))
        .collect();
    if !payload.is_empty() {
        options.push((option::CONTENT_FORMAT, vec![40]));
    }
    options.extend(
        queries
            .iter()
            .map(|q| (option::URI_QUERY, q.as_bytes().to_vec())),
    );
    ferrogate_coap::Frame {
        kind: ferrogate_coap::Kind::Con,
        code: ferrogate_coap::Method::Post.code(),
        mid,
        token: mid.to_be_bytes().to_vec(),
        options,
        payload: payload.to_vec(),
    }
    .emit()
}

/// Registration queries as a client (or an attacker) writes them: any
/// lifetime up to `u64::MAX`, names with any byte, odd binding and version.
fn register_queries() -> impl Strategy<Value = Vec<String>> {
    let lifetime = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just(u32::MAX.to_string()),
        "[0-9a-z.-]{0,24}",
    ];
    (
        "[ -~\u{1}\u{80}-\u{ff}]{0,20}",
        lifetime,
        prop_oneof![Just("1.1"), Just("1.0"), Just("9")],
        prop_oneof![Just("U"), Just("UQ"), Just("Q"), Just("")],
    )
        .prop_map(|(ep, lt, lwm2m, b)| {
            vec![
                format!("ep={ep}"),
                format!("lt={lt}"),
                format!("lwm2m={lwm2m}"),
                format!("b={b}"),
            ]
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Register, Update and the clock run past every lifetime through the
    /// registration table (where a lifetime near `u64::MAX` once
    /// overflowed an `Instant` and aborted the gateway): never a panic.
    #[test]
    fn register_and_update_into_the_table_never_panic(
        register in register_queries(),
        update in register_queries(),
        objects in "(</[0-9]{1,5}(/[0-9]{1,5})?>,?){0,8}",
    ) {
        use ferrogate_lwm2m::server::{Lwm2mServer, ServerConfig};
        use std::time::{Duration, Instant};
        let mut server = Lwm2mServer::new(ServerConfig::default(), std::sync::Arc::new(ObjectRegistry::builtin()));
        let peer: std::net::SocketAddr = "192.0.2.7:56830".parse().unwrap();
        let now = Instant::now();
        server.handle(now, peer, &post(1, &[b"rd"], &register, objects.as_bytes()));
        let mut location = Vec::new();
        while let Some(t) = server.poll_transmit() {
            if let Ok(frame) = ferrogate_coap::Frame::parse(&t.datagram) {
                let found: Vec<Vec<u8>> = frame.options.iter()
                    .filter(|(n, _)| *n == ferrogate_coap::message::option::LOCATION_PATH)
                    .map(|(_, v)| v.clone())
                    .collect();
                if !found.is_empty() {
                    location = found;
                }
            }
        }
        while server.poll_output().is_some() {}
        if !location.is_empty() {
            let path: Vec<&[u8]> = location.iter().map(Vec::as_slice).collect();
            server.handle(now, peer, &post(2, &path, &update[1..], objects.as_bytes()));
        }
        for step in [1u64, 3600, u64::from(u32::MAX), u64::MAX / 4] {
            if let Some(later) = now.checked_add(Duration::from_secs(step)) {
                server.handle_timeout(later);
                while server.poll_transmit().is_some() {}
                while server.poll_output().is_some() {}
            }
        }
    }

    /// The server core fed arbitrary datagrams from a few peers, with clock
    /// steps between them: never a panic.
    #[test]
    fn the_server_core_takes_arbitrary_datagrams(
        steps in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..120)), 0..20),
    ) {
        use ferrogate_lwm2m::server::{Lwm2mServer, ServerConfig};
        use std::time::{Duration, Instant};
        let mut server = Lwm2mServer::new(ServerConfig::default(), std::sync::Arc::new(ObjectRegistry::builtin()));
        let mut now = Instant::now();
        for (who, datagram) in steps {
            if who % 8 == 0 {
                now += Duration::from_secs(u64::from(who) * 10);
                server.handle_timeout(now);
            } else {
                let peer = std::net::SocketAddr::from(([192, 0, 2, who % 4], 56830));
                server.handle(now, peer, &datagram);
            }
            while server.poll_transmit().is_some() {}
            while server.poll_output().is_some() {}
        }
    }
}
