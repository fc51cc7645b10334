//! Every datagram libcoap's coap-client and coap-server exchanged
//! (tests/vectors/libcoap-client.json, see its README) decodes to what two
//! independent decoders saw, and the engine plays both sides of those
//! exchanges with libcoap's own bytes.

use std::net::SocketAddr;
use std::time::Instant;

use ferrogate_coap::block::BlockOption;
use ferrogate_coap::message::option;
use ferrogate_coap::{Code, Endpoint, EndpointConfig, Event, Frame, Kind, Request, Response};
use serde_json::Value as Json;

fn vectors() -> Vec<Json> {
    let text = include_str!("vectors/libcoap-client.json");
    match serde_json::from_str(text) {
        Ok(Json::Array(items)) => items,
        other => panic!("vector file is not an array: {other:?}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vector(name: &str) -> Vec<u8> {
    let v = vectors();
    let entry = v
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    unhex(entry["hex"].as_str().unwrap())
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Con => "CON",
        Kind::Non => "NON",
        Kind::Ack => "ACK",
        Kind::Rst => "RST",
    }
}

#[test]
fn every_datagram_decodes_like_the_reference_decoders() {
    let entries = vectors();
    assert_eq!(entries.len(), 30);
    for entry in &entries {
        let name = entry["name"].as_str().unwrap();
        let bytes = unhex(entry["hex"].as_str().unwrap());
        let d = &entry["decoded"];
        let frame = Frame::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(kind_name(frame.kind), d["type"], "{name}: type");
        let code = format!("{}.{:02}", frame.code.class(), frame.code.detail());
        assert_eq!(code, d["code"], "{name}: code");
        assert_eq!(
            u64::from(frame.mid),
            d["mid"].as_u64().unwrap(),
            "{name}: mid"
        );
        assert_eq!(
            frame.token,
            unhex(d["token"].as_str().unwrap()),
            "{name}: token"
        );
        assert_eq!(
            frame.payload,
            unhex(d["payload_hex"].as_str().unwrap()),
            "{name}: payload"
        );
        let want = d["options"].as_array().unwrap();
        assert_eq!(frame.options.len(), want.len(), "{name}: option count");
        for ((number, value), w) in frame.options.iter().zip(want) {
            assert_eq!(
                u64::from(*number),
                w[0].as_u64().unwrap(),
                "{name}: option number"
            );
            match &w[2] {
                Json::Number(n) => assert_eq!(
                    ferrogate_coap::message::decode_uint(value).map(u64::from),
                    n.as_u64(),
                    "{name}: option {number}"
                ),
                Json::String(s) if *number == option::ETAG => {
                    assert_eq!(*value, unhex(s), "{name}: ETag")
                }
                Json::String(s) => {
                    assert_eq!(value.as_slice(), s.as_bytes(), "{name}: option {number}")
                }
                other => panic!("{name}: unexpected option value {other}"),
            }
        }
        if let Some(Json::Number(cf)) = d.get("content_format") {
            let got = frame
                .option(option::CONTENT_FORMAT)
                .and_then(ferrogate_coap::message::decode_uint);
            assert_eq!(got.map(u64::from), cf.as_u64(), "{name}: content format");
        }
        if let Some(blocks) = d.get("block_options_decoded").and_then(Json::as_object) {
            let b = &blocks["Block2"];
            let got = BlockOption::decode(frame.option(option::BLOCK2).unwrap()).unwrap();
            assert_eq!(u64::from(got.num), b["num"].as_u64().unwrap(), "{name}");
            assert_eq!(got.more, b["m"].as_bool().unwrap(), "{name}");
            assert_eq!(u64::from(got.szx), b["szx"].as_u64().unwrap(), "{name}");
            assert_eq!(got.size() as u64, b["size"].as_u64().unwrap(), "{name}");
        }
    }
}

#[test]
fn observe_zero_is_a_zero_length_option() {
    let frame = Frame::parse(&vector("observe_time.request")).unwrap();
    assert_eq!(frame.option(option::OBSERVE), Some(&[][..]));
    assert_eq!(frame.to_request().unwrap().observe, Some(0));
    let cancel = Frame::parse(&vector("observe_time.cancel_request")).unwrap();
    assert_eq!(cancel.to_request().unwrap().observe, Some(1));
    assert_eq!(cancel.token, frame.token, "cancel reuses the token");
}

fn client() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn server_ep() -> Endpoint {
    Endpoint::new(EndpointConfig {
        rate_limit: None,
        ..Default::default()
    })
}

#[test]
fn engine_serves_libcoap_client_requests() {
    let now = Instant::now();
    let mut ep = server_ep();
    let request = vector("get_token2.request");
    ep.handle(now, client(), &request);
    let Some(Event::Request(incoming)) = ep.poll_event() else {
        panic!("no request event")
    };
    assert_eq!(incoming.request.path, vec!["time"]);
    // Uri-Port is passed through for the application
    assert!(
        incoming
            .request
            .options
            .iter()
            .any(|(n, _)| *n == option::URI_PORT)
    );
    ep.respond(
        now,
        incoming.handle,
        Response::new(Code::CONTENT).with_payload(0, b"Nov 26".to_vec()),
    )
    .unwrap();
    let reply = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
    let sent = Frame::parse(&request).unwrap();
    assert_eq!(
        (reply.kind, reply.mid, reply.token.clone()),
        (Kind::Ack, sent.mid, sent.token)
    );

    // a retransmission of libcoap's request gets the same reply, no event
    ep.handle(now, client(), &request);
    assert!(ep.poll_event().is_none());
    assert_eq!(
        Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap(),
        reply
    );

    // libcoap's JSON POST arrives with its content format
    ep.handle(now, client(), &vector("post_json.request"));
    let Some(Event::Request(post)) = ep.poll_event() else {
        panic!("no POST")
    };
    assert_eq!(post.request.content_format, Some(50));
    assert_eq!(post.request.payload, br#"{"temp":21.5,"unit":"Cel"}"#);
}

#[test]
fn engine_serves_libcoap_block2_requests_at_the_size_libcoap_asked() {
    let now = Instant::now();
    let mut ep = server_ep();
    let banner: Vec<u8> = (0..136).map(|i| b'a' + (i % 26) as u8).collect();
    ep.handle(now, client(), &vector("block2_index.block0_request"));
    let Some(Event::Request(incoming)) = ep.poll_event() else {
        panic!("no request")
    };
    ep.respond(
        now,
        incoming.handle,
        Response::new(Code::CONTENT).with_payload(0, banner.clone()),
    )
    .unwrap();
    let mut body = Vec::new();
    let first = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
    let b = BlockOption::decode(first.option(option::BLOCK2).unwrap()).unwrap();
    assert_eq!((b.num, b.more, b.size()), (0, true, 32));
    assert_eq!(first.uint_option(option::SIZE2), Some(136));
    body.extend(first.payload);
    for n in 1..=4 {
        // libcoap's follow-ups carry new 7-byte tokens; the cache serves them
        ep.handle(
            now,
            client(),
            &vector(&format!("block2_index.block{n}_request")),
        );
        assert!(
            ep.poll_event().is_none(),
            "block {n} went to the application"
        );
        let f = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
        let b = BlockOption::decode(f.option(option::BLOCK2).unwrap()).unwrap();
        assert_eq!((b.num, b.more), (n, n < 4));
        body.extend(f.payload);
    }
    assert_eq!(body, banner);
}

/// Rewrite a captured server datagram so it answers our request.
fn answer(captured: &[u8], mid: u16, token: &[u8]) -> Vec<u8> {
    let mut f = Frame::parse(captured).unwrap();
    f.mid = mid;
    f.token = token.to_vec();
    f.emit()
}

#[test]
fn engine_reassembles_libcoap_block2_responses() {
    let now = Instant::now();
    let server: SocketAddr = "127.0.0.1:57701".parse().unwrap();
    let mut ep = server_ep();
    let id = ep.request(now, server, Request::get("/")).unwrap();
    for n in 0..=4 {
        let sent = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
        if n > 0 {
            // our follow-up asks for the block libcoap's client asked for
            let theirs = Frame::parse(&vector(&format!("block2_index.block{n}_request"))).unwrap();
            assert_eq!(
                sent.option(option::BLOCK2),
                theirs.option(option::BLOCK2),
                "block {n}"
            );
        }
        let captured = vector(&format!("block2_index.block{n}_response"));
        ep.handle(now, server, &answer(&captured, sent.mid, &sent.token));
    }
    match ep.poll_event() {
        Some(Event::Response {
            id: got, response, ..
        }) => {
            assert_eq!(got, id);
            assert_eq!(response.payload.len(), 136);
            assert!(String::from_utf8_lossy(&response.payload).contains("libcoap"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn engine_follows_libcoap_con_notifications() {
    let now = Instant::now();
    let server: SocketAddr = "127.0.0.1:57701".parse().unwrap();
    let mut ep = server_ep();
    let id = ep.observe(now, server, Request::get("/time")).unwrap();
    let sent = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
    assert_eq!(
        sent.option(option::OBSERVE),
        Some(&[][..]),
        "Observe=0 as zero-length like libcoap"
    );
    ep.handle(
        now,
        server,
        &answer(&vector("observe_time.response"), sent.mid, &sent.token),
    );
    assert!(
        matches!(ep.poll_event(), Some(Event::Response { response, .. }) if response.observe == Some(2))
    );
    for n in 1..=4 {
        let captured = vector(&format!("observe_time.notification_{n}"));
        let mid = Frame::parse(&captured).unwrap().mid;
        ep.handle(now, server, &answer(&captured, mid, &sent.token));
        match ep.poll_event() {
            Some(Event::Notification {
                id: got, response, ..
            }) => {
                assert_eq!(got, id);
                assert_eq!(response.observe, Some(2 + n));
            }
            other => panic!("{other:?}"),
        }
        // we acknowledge exactly like libcoap's client did
        let ack = ep.poll_transmit().unwrap().datagram;
        assert_eq!(ack, vector(&format!("observe_time.empty_ack_{n}")));
    }
    ep.cancel(now, id).unwrap();
    let cancel = Frame::parse(&ep.poll_transmit().unwrap().datagram).unwrap();
    assert_eq!(cancel.uint_option(option::OBSERVE), Some(1));
    assert_eq!(cancel.token, sent.token);
}
