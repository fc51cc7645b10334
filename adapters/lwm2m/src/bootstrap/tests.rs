//! The bootstrap core against a client on the sans-IO CoAP engine, on a
//! fake clock: the whole sequence, refusals, a client that stops answering
//! and a client that asks again halfway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogate_coap::{Code, Endpoint, EndpointConfig, Event, Method, Request, Response};

use super::*;

const SERVER: &str = "10.0.0.1:5783";
const CLIENT: &str = "10.0.0.2:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn account() -> Account {
    Account {
        server_uri: "coaps://10.0.0.1:5684".into(),
        security: Security::Psk {
            identity: b"meter-1".to_vec(),
            key: vec![1, 2, 3, 4],
        },
        short_server_id: 9,
        lifetime: 120,
        binding: "U".into(),
    }
}

/// How the fake client answers the bootstrap server.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// Answers everything; its bootstrap account is Security instance 0.
    Answers,
    /// Answers nothing after its bootstrap request.
    Silent,
    /// Refuses Bootstrap-Write with 4.00.
    RefusesWrites,
}

struct World {
    server: BootstrapServer,
    client: Endpoint,
    behaviour: Client,
    requests: Vec<Request>,
    responses: Vec<Response>,
    outputs: Vec<Output>,
}

impl World {
    fn new(accounts: Accounts, behaviour: Client) -> World {
        let config = BootstrapConfig {
            session_timeout: Duration::from_secs(30),
            max_sessions: 1,
            ..BootstrapConfig::default()
        };
        World {
            server: BootstrapServer::new(config, Arc::new(accounts)),
            client: Endpoint::new(EndpointConfig {
                seed: 3,
                ..EndpointConfig::default()
            }),
            behaviour,
            requests: Vec::new(),
            responses: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                self.server.handle(now, addr(CLIENT), &t.datagram);
                moved = true;
            }
            while let Some(t) = self.server.poll_transmit() {
                self.client.handle(now, addr(SERVER), &t.datagram);
                moved = true;
            }
            while let Some(event) = self.client.poll_event() {
                moved = true;
                match event {
                    Event::Request(incoming) => {
                        self.requests.push(incoming.request.clone());
                        let answer = match (self.behaviour, incoming.request.method) {
                            (Client::Silent, _) => continue,
                            (_, Method::Get) => Response::new(Code::CONTENT).with_payload(
                                40,
                                b"</>;lwm2mv=1.1,</0/0>;uri=\"coap://bs\",</0/1>;ssid=3;uri=\"coap://old\",</1/0>;ssid=3"
                                    .to_vec(),
                            ),
                            (_, Method::Delete) => Response::new(Code::DELETED),
                            (Client::RefusesWrites, Method::Put) => Response::new(Code::BAD_REQUEST),
                            _ => Response::new(Code::CHANGED),
                        };
                        self.client
                            .respond(now, incoming.handle, answer)
                            .expect("respond");
                    }
                    Event::Response { response, .. } => self.responses.push(response),
                    Event::Failed { .. } => {}
                    other => panic!("unexpected client event {other:?}"),
                }
            }
            while let Some(out) = self.server.poll_output() {
                self.outputs.push(out);
            }
            if !moved {
                return;
            }
        }
    }

    fn ask(&mut self, now: Instant, ep: &str) {
        self.client
            .request(
                now,
                addr(SERVER),
                Request::post("/bs").with_query(format!("ep={ep}")),
            )
            .expect("request");
        self.pump(now);
    }

    fn summary(&self) -> Vec<String> {
        self.requests
            .iter()
            .map(|r| format!("{:?} {}", r.method, r.path_string()))
            .collect()
    }
}

fn one(ep: &str) -> Accounts {
    let mut accounts = Accounts::default();
    accounts
        .by_endpoint
        .insert(ep.to_string(), Arc::new(account()));
    accounts
}

#[test]
fn a_known_client_is_given_its_account_and_finished() {
    let mut w = World::new(one("meter-1"), Client::Answers);
    let now = Instant::now();
    w.ask(now, "meter-1");
    assert_eq!(w.responses[0].code, Code::CHANGED);
    assert_eq!(
        w.summary(),
        [
            "Get /0",
            "Delete /0",
            "Delete /1",
            "Put /0/1",
            "Put /1/0",
            "Post /bs"
        ],
        "discover, delete, write the first free Security instance (0 is the bootstrap account), finish"
    );
    // a 1.1 client (its Discover says so) is written SenML JSON
    assert_eq!(w.requests[3].content_format, Some(110));
    let body = String::from_utf8(w.requests[3].payload.clone()).expect("utf-8");
    assert!(body.contains("coaps://10.0.0.1:5684"), "{body}");
    assert_eq!(
        w.outputs,
        [Output::Bootstrapped {
            endpoint: "meter-1".into(),
            peer: addr(CLIENT),
            server_uri: "coaps://10.0.0.1:5684".into()
        }]
    );
    assert_eq!(w.server.sessions(), 0);
}

#[test]
fn unknown_and_badly_named_endpoints_are_refused_before_any_state() {
    let mut w = World::new(one("meter-1"), Client::Answers);
    let now = Instant::now();
    w.ask(now, "meter-2");
    w.ask(now, "bad/name");
    w.client
        .request(now, addr(SERVER), Request::post("/bs"))
        .expect("request");
    w.pump(now);
    let codes: Vec<Code> = w.responses.iter().map(|r| r.code).collect();
    assert_eq!(codes, [Code::BAD_REQUEST; 3]);
    assert!(
        w.requests.is_empty(),
        "nothing was sent to a refused client"
    );
    assert_eq!(
        w.outputs,
        [
            Output::Refused {
                reason: "unknown_endpoint"
            },
            Output::Refused { reason: "bad_name" },
            Output::Refused { reason: "bad_name" },
        ]
    );
    assert_eq!(w.server.sessions(), 0);
}

#[test]
fn a_default_account_serves_every_other_endpoint() {
    let accounts = Accounts {
        default: Some(Arc::new(account())),
        ..Accounts::default()
    };
    let mut w = World::new(accounts, Client::Answers);
    w.ask(Instant::now(), "anyone");
    assert!(matches!(w.outputs[..], [Output::Bootstrapped { .. }]));
}

#[test]
fn a_silent_client_fails_at_the_time_limit_and_frees_its_slot() {
    let mut w = World::new(one("meter-1"), Client::Silent);
    let start = Instant::now();
    w.ask(start, "meter-1");
    assert_eq!(w.server.sessions(), 1);
    while w.outputs.is_empty() {
        let now = w
            .server
            .poll_timeout()
            .expect("a deadline while a session is open");
        assert!(
            now <= start + Duration::from_secs(30),
            "failed by the session limit"
        );
        w.server.handle_timeout(now);
        w.pump(now);
    }
    assert!(
        matches!(&w.outputs[..], [Output::Failed { endpoint, reason, .. }]
            if endpoint == "meter-1" && reason.contains("Bootstrap-Discover")),
        "{:?}",
        w.outputs
    );
    assert_eq!(w.server.sessions(), 0);
}

#[test]
fn a_refused_write_is_tried_in_the_other_format_then_fails_with_the_step_and_code() {
    let mut w = World::new(one("meter-1"), Client::RefusesWrites);
    w.ask(Instant::now(), "meter-1");
    assert!(
        matches!(&w.outputs[..], [Output::Failed { reason, .. }]
            if reason.contains("Security instance") && reason.contains("4.00")),
        "{:?}",
        w.outputs
    );
    let formats: Vec<Option<u16>> = w
        .requests
        .iter()
        .filter(|r| r.method == Method::Put)
        .map(|r| r.content_format)
        .collect();
    assert_eq!(formats, [Some(110), Some(11542)], "tried once more in TLV");
    assert!(!w.summary().contains(&"Post /bs".to_string()));
}

#[test]
fn beyond_the_session_cap_a_client_is_told_to_retry() {
    let mut w = World::new(one("meter-1"), Client::Silent);
    let now = Instant::now();
    w.ask(now, "meter-1");
    let mut other = Endpoint::new(EndpointConfig {
        seed: 4,
        ..EndpointConfig::default()
    });
    other
        .request(
            now,
            addr(SERVER),
            Request::post("/bs").with_query("ep=meter-1"),
        )
        .expect("request");
    let t = other.poll_transmit().expect("datagram");
    w.server.handle(now, addr("10.0.0.3:1"), &t.datagram);
    let answer = w.server.poll_transmit().expect("answer");
    other.handle(now, addr(SERVER), &answer.datagram);
    let code = std::iter::from_fn(|| other.poll_event()).find_map(|e| match e {
        Event::Response { response, .. } => Some(response.code),
        _ => None,
    });
    assert_eq!(code, Some(Code::SERVICE_UNAVAILABLE));
    assert_eq!(w.server.sessions(), 1);
}
