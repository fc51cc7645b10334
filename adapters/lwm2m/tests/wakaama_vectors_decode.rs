//! Every datagram an Eclipse Wakaama client exchanged with a test harness
//! (tests/vectors/wakaama-session.json, provenance in its README) decodes
//! with this crate to what two independent decoders found: registration,
//! TLV / SenML JSON / SenML CBOR / text reads, discover, notifications,
//! Send, update and de-register. The CoAP layer is decoded with coap-lite.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};
use ferrogate_lwm2m::content::{self, ContentFormat};
use ferrogate_lwm2m::link::Link;
use ferrogate_lwm2m::registration::{
    RegisterRequest, RegistrationTable, Security, UpdateRequest, Version,
};
use ferrogate_lwm2m::{ObjectRegistry, Path};
use serde_json::Value as J;

struct Vector {
    name: String,
    packet: Packet,
    expected: Option<J>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("vectors/wakaama-session.json");
    let doc: Vec<J> = serde_json::from_str(text).expect("vector file is JSON");
    doc.into_iter()
        .map(|e| {
            let name = e["name"].as_str().expect("name").to_string();
            let hex = e["hex"].as_str().expect("hex");
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
                .collect();
            let packet = Packet::from_bytes(&bytes)
                .unwrap_or_else(|e| panic!("{name}: CoAP decode failed: {e:?}"));
            Vector {
                name,
                packet,
                expected: e.get("expected_payload").cloned(),
            }
        })
        .collect()
}

fn find<'a>(all: &'a [Vector], name: &str) -> &'a Vector {
    all.iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

fn strings(p: &Packet, opt: CoapOption) -> Vec<String> {
    p.get_option(opt)
        .map(|l| {
            l.iter()
                .map(|v| String::from_utf8(v.clone()).expect("UTF-8 option"))
                .collect()
        })
        .unwrap_or_default()
}

fn uri_path(p: &Packet) -> Path {
    Path::parse(&format!("/{}", strings(p, CoapOption::UriPath).join("/"))).expect("LwM2M path")
}

fn content_format(p: &Packet) -> Option<ContentFormat> {
    let raw = p.get_first_option(CoapOption::ContentFormat)?;
    let n = raw.iter().fold(0u16, |acc, b| (acc << 8) | u16::from(*b));
    Some(ContentFormat::from_number(n).unwrap_or_else(|| panic!("unknown content format {n}")))
}

/// The (path, value) leaves of the capture's hand-decoded TLV tree.
fn tlv_leaves(nodes: &[J], parent: Path, top: bool, out: &mut Vec<(Path, J)>) {
    for n in nodes {
        let id = n["id"].as_u64().expect("id") as u16;
        let path = if top && parent.depth() >= 3 && parent.ids().last() == Some(&id) {
            parent
        } else {
            parent.child(id).expect("path depth")
        };
        match n.get("children") {
            Some(J::Array(children)) => tlv_leaves(children, path, false, out),
            _ => out.push((path, n["value"].clone())),
        }
    }
}

fn decoded_pairs(format: ContentFormat, base: Path, payload: &[u8]) -> Vec<(Path, J)> {
    let registry = ObjectRegistry::builtin();
    content::decode(format, base, payload, &registry)
        .unwrap_or_else(|e| panic!("{format} at {base}: {e}"))
        .into_iter()
        .map(|v| (v.path, v.value.to_model().to_json()))
        .collect()
}

fn expected_pairs(expected: &J, base: Path) -> Vec<(Path, J)> {
    if let Some(tree) = expected.get("tree").and_then(J::as_array) {
        let mut out = Vec::new();
        tlv_leaves(tree, base, true, &mut out);
        return out;
    }
    if let Some(resolved) = expected.get("resolved").and_then(J::as_array) {
        return resolved
            .iter()
            .map(|r| {
                (
                    Path::parse(r[0].as_str().expect("path")).expect("path"),
                    r[2].clone(),
                )
            })
            .collect();
    }
    panic!("no tree or resolved values in {expected}");
}

#[test]
fn registrations_parse_with_their_object_lists() {
    let all = vectors();
    for (name, ct) in [
        ("run1.register.register_request", 110),
        ("run2.register.register_request", 110),
        ("run3.register.register_request", 112),
    ] {
        let v = find(&all, name);
        let p = &v.packet;
        assert_eq!(p.header.get_code(), "0.02", "{name}");
        assert_eq!(strings(p, CoapOption::UriPath), ["rd"]);
        assert_eq!(content_format(p), Some(ContentFormat::LinkFormat));
        let queries = strings(p, CoapOption::UriQuery);
        let req =
            RegisterRequest::parse(queries.iter().map(String::as_str), &p.payload).expect(name);
        assert!(req.endpoint.starts_with("wakaama-vec"), "{}", req.endpoint);
        assert_eq!(req.version, Version::V1_1);
        assert_eq!(req.lifetime, Duration::from_secs(300));
        assert!(req.binding.udp && !req.binding.queue);
        assert_eq!(req.objects.content_format, Some(ct));
        let expected: Vec<Path> = v.expected.as_ref().expect("links")["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| l["uri"].as_str().expect("uri"))
            .filter(|u| *u != "/")
            .map(|u| Path::parse(u).expect("path"))
            .collect();
        assert_eq!(req.objects.paths(), expected);
        assert_eq!(req.objects.objects(), [1, 2, 3, 4, 5, 6, 7, 31024]);
    }
}

#[test]
fn reads_decode_in_every_format_the_client_used() {
    let all = vectors();
    let mut checked = 0;
    // the path each token asked for, from the latest request carrying it
    let mut asked: Vec<(Vec<u8>, Path)> = Vec::new();
    for v in &all {
        if v.name.ends_with(".request") {
            asked.retain(|(t, _)| t.as_slice() != v.packet.get_token());
            asked.push((v.packet.get_token().to_vec(), uri_path(&v.packet)));
            continue;
        }
        if !(v.name.ends_with(".response") || v.name.ends_with(".notification")) {
            continue;
        }
        let Some(format) = content_format(&v.packet) else {
            continue;
        };
        if format == ContentFormat::LinkFormat {
            continue;
        }
        let base = asked
            .iter()
            .find(|(t, _)| t.as_slice() == v.packet.get_token())
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("{}: no request with its token", v.name));
        let expected = v
            .expected
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no expected payload", v.name));
        let payload = &v.packet.payload;
        if format == ContentFormat::Text {
            let got = decoded_pairs(format, base, payload);
            assert_eq!(got.len(), 1, "{}", v.name);
            let text = expected["text"].as_str().expect("text");
            let shown = match &got[0].1 {
                J::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(shown, text, "{}", v.name);
        } else {
            assert_eq!(
                decoded_pairs(format, base, payload),
                expected_pairs(expected, base),
                "{}",
                v.name
            );
        }
        checked += 1;
    }
    // 4 TLV, 5 SenML JSON (reads, observe, notification, cancel), 3 CBOR, 7 text
    assert!(checked >= 18, "only {checked} payloads checked");
}

#[test]
fn tlv_device_object_has_typed_values() {
    let all = vectors();
    let v = find(&all, "run1.read_3_0_tlv.response");
    let got = decoded_pairs(
        ContentFormat::Tlv,
        Path::parse("/3/0").expect("path"),
        &v.packet.payload,
    );
    let get = |p: &str| {
        got.iter()
            .find(|(path, _)| path.to_string() == p)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("/3/0/0"), Some(J::from("Open Mobile Alliance")));
    assert_eq!(get("/3/0/7/0"), Some(J::from(3800)));
    assert_eq!(get("/3/0/13"), Some(J::from(3_163_182_348u64)));
    assert_eq!(get("/3/0/16"), Some(J::from("U")));
    assert_eq!(got.len(), 17);
}

#[test]
fn discover_answers_parse_as_link_format() {
    let all = vectors();
    for name in [
        "run1.discover_3_0.response",
        "run1.discover_3.response",
        "run1.discover_3_0_9_after_attrs.response",
    ] {
        let v = find(&all, name);
        assert_eq!(content_format(&v.packet), Some(ContentFormat::LinkFormat));
        let links = Link::parse_all(&v.packet.payload).expect(name);
        let expected = v.expected.as_ref().expect("links")["links"]
            .as_array()
            .expect("links")
            .clone();
        assert_eq!(links.len(), expected.len(), "{name}");
        for (link, want) in links.iter().zip(&expected) {
            assert_eq!(link.target, want["uri"].as_str().expect("uri"));
            let attrs = want["attrs"].as_object().expect("attrs");
            assert_eq!(link.params.len(), attrs.len(), "{name}");
            for (k, val) in attrs {
                assert_eq!(link.param(k), val.as_str(), "{name} {k}");
            }
        }
    }
    let after = Link::parse_all(
        &find(&all, "run1.discover_3_0_9_after_attrs.response")
            .packet
            .payload,
    )
    .expect("links");
    assert_eq!(after[0].param("pmin"), Some("1"));
    assert_eq!(after[0].param("pmax"), Some("5"));
}

#[test]
fn notifications_are_non_and_cancel_has_no_observe() {
    let all = vectors();
    for name in [
        "run1.observe_3_0_9.notification",
        "run1.observe_3_0_9_pmax.notification",
        "run1.observe_3_0_senml_json.notification",
    ] {
        let v = find(&all, name);
        assert_eq!(
            v.packet.header.get_type(),
            MessageType::NonConfirmable,
            "{name}"
        );
        assert!(v.packet.get_observe_value().is_some(), "{name}");
    }
    let n = find(&all, "run1.observe_3_0_9_pmax.notification");
    let req = find(&all, "run1.observe_3_0_9.request");
    assert_eq!(n.packet.get_token(), req.packet.get_token());
    let values = decoded_pairs(
        ContentFormat::Text,
        uri_path(&req.packet),
        &n.packet.payload,
    );
    assert_eq!(
        values,
        [(Path::parse("/3/0/9").expect("path"), J::from(50))]
    );
    let cancel = find(&all, "run1.observe_3_0_9_cancel.response");
    assert!(cancel.packet.get_observe_value().is_none());
    let json = find(&all, "run1.observe_3_0_senml_json.notification");
    let values = decoded_pairs(
        ContentFormat::SenmlJson,
        Path::parse("/3/0").expect("path"),
        &json.packet.payload,
    );
    assert!(values.contains(&(Path::parse("/3/0/9").expect("path"), J::from(42))));
}

#[test]
fn send_uses_a_zero_length_token_and_decodes() {
    let all = vectors();
    let cases = [
        (
            "run1.send_3_0_9.send_request",
            ContentFormat::SenmlJson,
            vec![("/3/0/9", J::from(42))],
        ),
        (
            "run1.send_3_0_9_and_3_0_13.send_request",
            ContentFormat::SenmlJson,
            vec![
                ("/3/0/9", J::from(42)),
                ("/3/0/13", J::from(3_163_182_376u64)),
            ],
        ),
        (
            "run3.cbor_send_3_0_9.send_request",
            ContentFormat::SenmlCbor,
            vec![("/3/0/9", J::from(100))],
        ),
    ];
    for (name, format, want) in cases {
        let p = &find(&all, name).packet;
        assert_eq!(p.header.get_code(), "0.02");
        assert_eq!(strings(p, CoapOption::UriPath), ["dp"]);
        assert!(
            p.get_token().is_empty(),
            "{name}: Wakaama sends Send with no token"
        );
        assert_eq!(content_format(p), Some(format));
        let got = decoded_pairs(format, Path::ROOT, &p.payload);
        let want: Vec<(Path, J)> = want
            .into_iter()
            .map(|(s, v)| (Path::parse(s).expect("path"), v))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn unsupported_accept_and_errors_are_bare_codes() {
    let all = vectors();
    for (name, code) in [
        ("run1.read_3_0_senml_cbor_rejected.response", "4.06"),
        ("run1.read_9999_not_found.response", "4.04"),
        ("run1.read_3_0_4_exec_resource.response", "4.05"),
        ("run1.write_3_0_0_readonly.response", "4.05"),
        ("run1.execute_3_0_0_not_exec.response", "4.05"),
    ] {
        let p = &find(&all, name).packet;
        assert_eq!(p.header.get_code(), code, "{name}");
        assert!(p.payload.is_empty(), "{name}");
    }
    // the registry refuses the same write before it would reach the device
    let registry = ObjectRegistry::builtin();
    assert!(
        registry
            .check_write(
                &Path::parse("/3/0/0").expect("path"),
                &ferrogate_sdk::Value::String("x".into())
            )
            .is_err()
    );
}

#[test]
fn the_session_replays_through_the_registration_table() {
    let all = vectors();
    let t0 = Instant::now();
    let peer: SocketAddr = "127.0.0.1:56830".parse().expect("addr");
    let mut table = RegistrationTable::<()>::new(Duration::from_secs(93));

    let reg = &find(&all, "run1.register.register_request").packet;
    let queries = strings(reg, CoapOption::UriQuery);
    let req =
        RegisterRequest::parse(queries.iter().map(String::as_str), &reg.payload).expect("register");
    let location = table
        .register(t0, peer, Security::NoSec, req)
        .expect("registered")
        .location;

    // Update: POST to the location, no query, no payload (Wakaama quirk)
    let upd = &find(&all, "run1.update_stdin.update_request").packet;
    assert_eq!(upd.header.get_code(), "0.02");
    assert_eq!(strings(upd, CoapOption::UriPath), ["rd", "w1"]);
    assert!(upd.get_option(CoapOption::UriQuery).is_none() && upd.payload.is_empty());
    let update = UpdateRequest::parse(
        strings(upd, CoapOption::UriQuery)
            .iter()
            .map(String::as_str),
        &upd.payload,
    )
    .expect("update");
    assert_eq!(update, UpdateRequest::default());
    let later = t0 + Duration::from_secs(200);
    let done = table
        .update(later, &location, peer, update)
        .expect("known location");
    assert!(!done.objects_changed);
    let reg = table.by_endpoint("wakaama-vec").expect("registered");
    assert_eq!(
        reg.lifetime,
        Duration::from_secs(300),
        "an update without lt keeps the lifetime"
    );
    assert_eq!(reg.expires_at(), later + Duration::from_secs(300));

    let dereg = &find(&all, "run1.deregister_quit.deregister_request").packet;
    assert_eq!(dereg.header.get_code(), "0.04");
    assert_eq!(strings(dereg, CoapOption::UriPath), ["rd", "w1"]);
    let (gone, _) = table
        .deregister(later, &location, peer)
        .expect("deregister");
    assert_eq!(&*gone.endpoint, "wakaama-vec");
    assert!(table.is_empty());

    // run2's client exits without de-registering: its lifetime runs out
    let reg2 = &find(&all, "run2.register.register_request").packet;
    let q2 = strings(reg2, CoapOption::UriQuery);
    table
        .register(
            t0,
            peer,
            Security::NoSec,
            RegisterRequest::parse(q2.iter().map(String::as_str), &reg2.payload).expect("register"),
        )
        .expect("registered");
    assert!(table.expire(t0 + Duration::from_secs(299)).is_empty());
    assert_eq!(table.expire(t0 + Duration::from_secs(300)).len(), 1);
}
