//! 20,000 registrations with random names from one network (the loopback's
//! /24), lifetime 30 s, on the server core with a fake clock: the server
//! takes at most `max_registrations_per_network` of them, refuses the rest
//! with 5.03 (counted), forgets every one `forget_after` after it expired
//! (device gone, retained topics cleared), and a client on another network
//! registered before the flood keeps working throughout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use ferrogate_coap::{Code, Endpoint, EndpointConfig, Event, Method, Request, Response};
use ferrogate_lwm2m::ObjectRegistry;
use ferrogate_lwm2m::server::{Job, Lwm2mServer, Output, ServerConfig};
use ferrogate_sdk::{Command, Operation, Uplink};

const SERVER: &str = "10.0.0.1:5683";
const CLIENT: &str = "10.0.0.2:40000";
const FLOOD: u32 = 20_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

/// A Register datagram as any CoAP stack would send it.
fn register_datagram(ep: &str, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    p.add_option(CoapOption::UriQuery, format!("ep={ep}").into_bytes());
    p.add_option(CoapOption::UriQuery, b"lt=30".to_vec());
    p.payload = b"</3/0>".to_vec();
    p.to_bytes().expect("encode")
}

/// Random-looking endpoint names (splitmix64 of the index).
fn name(i: u32) -> String {
    let mut z = u64::from(i).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("flood-{:016x}", z ^ (z >> 31))
}

/// The established client: answers GETs with "77", everything else 2.04.
fn pump_client(server: &mut Lwm2mServer, client: &mut Endpoint, now: Instant) -> Vec<Response> {
    let mut responses = Vec::new();
    loop {
        let mut moved = false;
        while let Some(t) = client.poll_transmit() {
            server.handle(now, addr(CLIENT), &t.datagram);
            moved = true;
        }
        while let Some(t) = server.poll_transmit() {
            if t.peer == addr(CLIENT) {
                client.handle(now, addr(SERVER), &t.datagram);
                moved = true;
            }
        }
        while let Some(event) = client.poll_event() {
            match event {
                Event::Request(incoming) => {
                    let answer = match incoming.request.method {
                        Method::Get => Response::new(Code::CONTENT).with_payload(0, b"77".to_vec()),
                        _ => Response::new(Code::CHANGED),
                    };
                    client
                        .respond(now, incoming.handle, answer)
                        .expect("respond");
                }
                Event::Response { response, .. } => responses.push(response),
                _ => {}
            }
            moved = true;
        }
        if !moved {
            return responses;
        }
    }
}

#[derive(Default)]
struct Tally {
    refused: BTreeMap<&'static str, u64>,
    forgotten: u64,
    completed: Vec<(u64, bool)>,
}

fn drain(server: &mut Lwm2mServer, tally: &mut Tally) {
    while let Some(out) = server.poll_output() {
        match out {
            Output::Refused { reason } => *tally.refused.entry(reason).or_default() += 1,
            Output::Uplink(Uplink::Forgotten(_)) => tally.forgotten += 1,
            Output::Completed { key, outcome } => tally.completed.push((key, outcome.is_ok())),
            Output::Uplink(_) => {}
        }
    }
}

fn read_battery(key: u64, now: Instant) -> Job {
    let deadline = now + Duration::from_secs(30);
    Job {
        key,
        command: Command {
            id: format!("r{key}"),
            device: "steady".into(),
            op: Operation::Read {
                points: vec!["device.battery_level".into()],
            },
            deadline: tokio::time::Instant::from_std(deadline),
        },
        deadline,
    }
}

#[test]
fn twenty_thousand_registrations_are_capped_forgotten_and_harm_no_one() {
    let config = ServerConfig {
        forget_after: Duration::from_secs(60),
        ..ServerConfig::default()
    };
    let mut server = Lwm2mServer::new(config, Arc::new(ObjectRegistry::builtin()));
    let mut client = Endpoint::new(EndpointConfig::default());
    let mut tally = Tally::default();
    let t0 = Instant::now();

    client
        .request(
            t0,
            addr(SERVER),
            Request::post("/rd")
                .with_query("ep=steady")
                .with_query("lt=3600")
                .with_payload(40, b"</3/0>".to_vec()),
        )
        .expect("register");
    let r = pump_client(&mut server, &mut client, t0);
    assert_eq!(r.first().map(|r| r.code), Some(Code::CREATED));

    // the flood: one registration a millisecond from 127.0.0.1-200
    let mut flood_end = t0;
    for i in 0..FLOOD {
        let now = t0 + Duration::from_millis(u64::from(i));
        let peer = SocketAddr::from(([127, 0, 0, (i % 200 + 1) as u8], 20_000 + (i / 200) as u16));
        server.handle(now, peer, &register_datagram(&name(i), i as u16));
        while server.poll_transmit().is_some() {}
        drain(&mut server, &mut tally);
        flood_end = now;
        if i == FLOOD / 2 {
            // mid-flood, the established client is served
            server.command(now, read_battery(1, now));
            pump_client(&mut server, &mut client, now);
            drain(&mut server, &mut tally);
        }
    }
    let taken = server.registrations().len() - 1;
    assert_eq!(taken, 10_000, "max_registrations_per_network");
    assert_eq!(
        tally.refused.get("too_many_from_network").copied(),
        Some(u64::from(FLOOD) - 10_000)
    );

    // every flood registration expires after 30 s and is forgotten 60 s later
    let mut now = flood_end;
    let forgotten_by = flood_end + Duration::from_secs(30 + 60 + 1);
    while now < forgotten_by {
        now += Duration::from_secs(1);
        server.handle_timeout(now);
        pump_client(&mut server, &mut client, now);
        drain(&mut server, &mut tally);
    }
    assert_eq!(
        server.registrations().len(),
        1,
        "only the established client"
    );
    assert_eq!(server.registrations().departed_len(), 0);
    assert_eq!(tally.forgotten, 10_000, "each one's device is forgotten");

    // and the established client still answers
    server.command(now, read_battery(2, now));
    pump_client(&mut server, &mut client, now);
    drain(&mut server, &mut tally);
    assert_eq!(tally.completed, [(1, true), (2, true)]);
}
