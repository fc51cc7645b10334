//! The sans-IO server core driven with a fake clock against a client built
//! on the sans-IO CoAP engine: lifetimes and queue-mode deadlines are exact
//! to the instant, with no socket and no sleep.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogate_coap::{Code, Endpoint, EndpointConfig, Event, Method, Request, Response};
use ferrogate_lwm2m::ObjectRegistry;
use ferrogate_lwm2m::server::{Job, Lwm2mServer, Output, ServerConfig};
use ferrogate_sdk::{Command, DeviceState, ErrorCode, Operation, Uplink, Value};

const SERVER: &str = "10.0.0.1:5683";
const CLIENT: &str = "10.0.0.2:40000";

struct World {
    server: Lwm2mServer,
    client: Endpoint,
    outputs: Vec<Output>,
    client_requests: Vec<Request>,
    /// How the client answers a FETCH (Composite-Read): with this code, or
    /// never (`None`, as Wakaama does after its empty ACK).
    fetch_answer: Option<Code>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

impl World {
    fn new() -> World {
        let config = ServerConfig {
            awake_window: Duration::from_secs(10),
            ..ServerConfig::default()
        };
        World {
            server: Lwm2mServer::new(config, Arc::new(ObjectRegistry::builtin())),
            client: Endpoint::new(EndpointConfig {
                seed: 7,
                ..EndpointConfig::default()
            }),
            outputs: Vec::new(),
            client_requests: Vec::new(),
            fetch_answer: Some(Code::CONTENT),
        }
    }

    /// Move datagrams both ways until both sides are quiet; the client
    /// answers every request 2.04/2.05. Returns the client's responses.
    fn pump(&mut self, now: Instant) -> Vec<Response> {
        let mut responses = Vec::new();
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                self.server.handle(now, addr(CLIENT), &t.datagram);
                moved = true;
            }
            while let Some(t) = self.server.poll_transmit() {
                assert_eq!(t.peer, addr(CLIENT));
                self.client.handle(now, addr(SERVER), &t.datagram);
                moved = true;
            }
            while let Some(event) = self.client.poll_event() {
                match event {
                    Event::Request(incoming) => {
                        let answer = match (incoming.request.method, self.fetch_answer) {
                            (Method::Get, _) => {
                                Response::new(Code::CONTENT).with_payload(0, b"77".to_vec())
                            }
                            (Method::Fetch, Some(code)) => Response::new(code),
                            (Method::Fetch, None) => {
                                self.client_requests.push(incoming.request.clone());
                                moved = true;
                                continue;
                            }
                            _ => Response::new(Code::CHANGED),
                        };
                        self.client_requests.push(incoming.request.clone());
                        self.client
                            .respond(now, incoming.handle, answer)
                            .expect("respond");
                    }
                    Event::Response { response, .. } => responses.push(response),
                    other => panic!("unexpected client event {other:?}"),
                }
                moved = true;
            }
            while let Some(out) = self.server.poll_output() {
                self.outputs.push(out);
            }
            if !moved {
                return responses;
            }
        }
    }

    fn client_request(&mut self, now: Instant, request: Request) -> Response {
        self.client
            .request(now, addr(SERVER), request)
            .expect("request");
        let mut r = self.pump(now);
        assert_eq!(r.len(), 1, "{r:?}");
        r.remove(0)
    }

    fn statuses(&self) -> Vec<(DeviceState, String)> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Uplink(Uplink::Status(s)) => {
                    Some((s.state, s.reason.clone().unwrap_or_default()))
                }
                _ => None,
            })
            .collect()
    }

    fn completed(&self, key: u64) -> Option<&ferrogate_sdk::Outcome> {
        self.outputs.iter().find_map(|o| match o {
            Output::Completed { key: k, outcome } if *k == key => Some(outcome),
            _ => None,
        })
    }
}

fn register(queries: &[&str]) -> Request {
    let mut r = Request::post("/rd")
        .with_query("ep=fake-1")
        .with_payload(40, b"</3/0>,</3311/0>".to_vec());
    for q in queries {
        r = r.with_query(*q);
    }
    r
}

fn job(key: u64, deadline: Instant) -> Job {
    Job {
        key,
        command: Command {
            id: format!("c{key}"),
            device: "fake-1".into(),
            op: Operation::Write {
                values: BTreeMap::from([("light_control.dimmer".to_string(), Value::Int(10))]),
            },
            deadline: tokio::time::Instant::from_std(deadline),
        },
        deadline,
    }
}

#[test]
fn lifetime_expires_exactly_when_it_runs_out() {
    let mut w = World::new();
    let t0 = Instant::now();
    let created = w.client_request(t0, register(&["lt=60"]));
    assert_eq!(created.code, Code::CREATED);
    assert_eq!(
        w.statuses(),
        [(DeviceState::Online, "registered".to_string())]
    );

    // an update at 50 s moves the expiry to 110 s
    let location = format!("/{}", created.location_path.join("/"));
    assert_eq!(
        w.client_request(t0 + Duration::from_secs(50), Request::post(&location))
            .code,
        Code::CHANGED
    );
    w.server.handle_timeout(t0 + Duration::from_secs(109));
    w.pump(t0 + Duration::from_secs(109));
    assert!(!w.statuses().iter().any(|(s, _)| *s == DeviceState::Offline));
    assert!(
        w.server
            .poll_timeout()
            .is_some_and(|t| t <= t0 + Duration::from_secs(110))
    );
    w.server.handle_timeout(t0 + Duration::from_secs(110));
    w.pump(t0 + Duration::from_secs(110));
    assert_eq!(
        w.statuses().last(),
        Some(&(DeviceState::Offline, "lifetime expired".to_string()))
    );
    assert!(w.server.registrations().is_empty());
}

#[test]
fn queue_mode_holds_until_update_and_expires_at_the_deadline() {
    let mut w = World::new();
    let t0 = Instant::now();
    let created = w.client_request(t0, register(&["lt=3600", "b=UQ"]));
    let location = format!("/{}", created.location_path.join("/"));

    // 20 s later the client is asleep (awake window 10 s): commands wait
    let asleep = t0 + Duration::from_secs(20);
    w.server
        .command(asleep, job(1, asleep + Duration::from_secs(5)));
    w.server
        .command(asleep, job(2, asleep + Duration::from_secs(60)));
    w.pump(asleep);
    assert!(
        w.client_requests.is_empty(),
        "nothing is sent to a sleeping client"
    );
    assert_eq!(w.server.registrations().held_count("fake-1"), 2);
    assert!(
        w.server
            .poll_timeout()
            .is_some_and(|t| t <= asleep + Duration::from_secs(5))
    );

    w.server.handle_timeout(asleep + Duration::from_secs(5));
    w.pump(asleep + Duration::from_secs(5));
    assert_eq!(
        w.completed(1)
            .expect("job 1 answered")
            .as_ref()
            .unwrap_err()
            .code,
        ErrorCode::Timeout
    );
    assert!(w.completed(2).is_none());

    // the client wakes up: the held write goes out and is confirmed
    let wake = asleep + Duration::from_secs(30);
    assert_eq!(
        w.client_request(wake, Request::post(&location)).code,
        Code::CHANGED
    );
    assert_eq!(w.client_requests.len(), 1);
    assert_eq!(w.client_requests[0].method, Method::Put);
    assert_eq!(w.client_requests[0].path, ["3311", "0", "5851"]);
    let done = w
        .completed(2)
        .expect("job 2 answered")
        .as_ref()
        .expect("ok");
    assert_eq!(done.get("light_control.dimmer"), Some(&Value::Int(10)));

    // within the awake window a command is sent at once
    w.server.command(
        wake + Duration::from_secs(1),
        job(3, wake + Duration::from_secs(60)),
    );
    w.pump(wake + Duration::from_secs(1));
    assert!(w.completed(3).expect("job 3 answered").is_ok());
}

#[test]
fn several_commands_to_one_client_all_complete() {
    let mut w = World::new();
    let t0 = Instant::now();
    w.client_request(t0, register(&["lt=3600"]));
    for key in 10..20 {
        w.server.command(t0, job(key, t0 + Duration::from_secs(60)));
    }
    // the engine paces them as CoAP allows (NSTART); every one is answered
    w.pump(t0);
    let mut now = t0;
    while (10..20).any(|k| w.completed(k).is_none()) && now < t0 + Duration::from_secs(30) {
        now += Duration::from_millis(100);
        w.server.handle_timeout(now);
        w.pump(now);
    }
    for key in 10..20 {
        assert!(
            w.completed(key)
                .unwrap_or_else(|| panic!("job {key} unanswered"))
                .is_ok()
        );
    }
    assert_eq!(w.client_requests.len(), 10);
}

#[test]
fn a_client_with_an_alternate_root_path_is_addressed_below_it() {
    let mut w = World::new();
    let t0 = Instant::now();
    let reg = Request::post("/rd")
        .with_query("ep=fake-1")
        .with_payload(40, b"</lwm2m>;rt=\"oma.lwm2m\",</lwm2m/3311/0>".to_vec());
    assert_eq!(w.client_request(t0, reg).code, Code::CREATED);
    w.server.command(t0, job(1, t0 + Duration::from_secs(60)));
    w.pump(t0);
    assert_eq!(w.client_requests[0].path, ["lwm2m", "3311", "0", "5851"]);
    assert!(w.completed(1).expect("answered").is_ok());
}

fn read(key: u64, deadline: Instant, points: &[&str]) -> Job {
    let mut j = job(key, deadline);
    j.command.op = Operation::Read {
        points: points.iter().map(|p| p.to_string()).collect(),
    };
    j
}

fn methods(w: &World) -> Vec<Method> {
    w.client_requests.iter().map(|r| r.method).collect()
}

const TWO_POINTS: &[&str] = &["device.battery_level", "light_control.dimmer"];

#[test]
fn a_composite_read_left_unanswered_falls_back_to_gets_and_is_remembered() {
    let mut w = World::new();
    w.fetch_answer = None;
    let t0 = Instant::now();
    w.client_request(t0, register(&["lt=600", "lwm2m=1.1"]));
    w.server
        .command(t0, read(1, t0 + Duration::from_secs(30), TWO_POINTS));
    w.pump(t0);
    assert_eq!(methods(&w), [Method::Fetch]);
    assert!(w.completed(1).is_none());
    // the wait for an answer ends at composite_wait (1 s), not the deadline
    assert!(
        w.server
            .poll_timeout()
            .is_some_and(|t| t <= t0 + Duration::from_secs(1))
    );
    let waited = t0 + Duration::from_secs(1);
    w.server.handle_timeout(waited);
    w.pump(waited);
    assert_eq!(methods(&w), [Method::Fetch, Method::Get, Method::Get]);
    let values = w.completed(1).expect("answered").clone().expect("ok");
    assert_eq!(values.get("device.battery_level"), Some(&Value::Int(77)));
    assert_eq!(values.get("light_control.dimmer"), Some(&Value::Int(77)));

    // the next read goes straight to GETs
    w.client_requests.clear();
    w.server.command(
        waited,
        read(2, waited + Duration::from_secs(30), TWO_POINTS),
    );
    w.pump(waited);
    assert_eq!(methods(&w), [Method::Get, Method::Get]);
    assert!(w.completed(2).is_some_and(|o| o.is_ok()));
}

#[test]
fn a_composite_read_refused_falls_back_to_gets_at_once() {
    for code in [Code::METHOD_NOT_ALLOWED, Code::NOT_FOUND, Code::BAD_REQUEST] {
        let mut w = World::new();
        w.fetch_answer = Some(code);
        let t0 = Instant::now();
        w.client_request(t0, register(&["lt=600", "lwm2m=1.1"]));
        w.server
            .command(t0, read(1, t0 + Duration::from_secs(30), TWO_POINTS));
        w.pump(t0);
        assert_eq!(
            methods(&w),
            [Method::Fetch, Method::Get, Method::Get],
            "{code}"
        );
        let values = w.completed(1).expect("answered").clone().expect("ok");
        assert_eq!(values.len(), 2, "{code}: {values:?}");
    }
}

/// Every datagram the server sends towards `victim` while time runs
/// `for_secs` seconds with nothing coming back: (datagrams, bytes).
fn sent_towards(
    server: &mut Lwm2mServer,
    victim: SocketAddr,
    t0: Instant,
    for_secs: u64,
) -> (usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    for s in 0..=for_secs {
        let now = t0 + Duration::from_secs(s);
        server.handle_timeout(now);
        while let Some(t) = server.poll_transmit() {
            assert_eq!(t.peer, victim);
            n += 1;
            bytes += t.datagram.len();
        }
    }
    (n, bytes)
}

/// A Register from a spoofed source (the victim), sent by an attacker's
/// CoAP endpoint: announcing `instances` temperature instances.
fn spoofed_register(server: &mut Lwm2mServer, victim: SocketAddr, now: Instant, instances: u16) {
    let links: Vec<String> = (0..instances).map(|i| format!("</3303/{i}>")).collect();
    // one datagram, as the attack sent it (not block-wise)
    let mut attacker = Endpoint::new(EndpointConfig {
        max_payload: 4096,
        ..EndpointConfig::default()
    });
    attacker
        .request(
            now,
            addr(SERVER),
            Request::post("/rd")
                .with_query("ep=victim")
                .with_query("lt=600")
                .with_payload(40, links.join(",").into_bytes()),
        )
        .expect("request");
    while let Some(t) = attacker.poll_transmit() {
        server.handle(now, victim, &t.datagram);
    }
}

fn auto_observing_server() -> Lwm2mServer {
    let config = ServerConfig {
        auto_observe: vec![ferrogate_lwm2m::PathPattern::parse("/3303/*/5700").expect("pattern")],
        ..ServerConfig::default()
    };
    Lwm2mServer::new(config, Arc::new(ObjectRegistry::builtin()))
}

#[test]
fn a_spoofed_register_draws_a_bounded_answer() {
    let victim = addr("10.0.0.66:5683");
    let t0 = Instant::now();

    // 120 instances: refused with one datagram (was 601 datagrams, 17 KB)
    let mut server = auto_observing_server();
    spoofed_register(&mut server, victim, t0, 120);
    let (n, bytes) = sent_towards(&mut server, victim, t0, 300);
    assert_eq!(n, 1, "only the 4.00");
    assert!(bytes < 100, "{bytes} bytes");
    assert!(server.registrations().is_empty());
    let refused: Vec<_> = std::iter::from_fn(|| server.poll_output())
        .filter(|o| {
            matches!(
                o,
                Output::Refused {
                    reason: "too_many_instances"
                }
            )
        })
        .collect();
    assert_eq!(refused.len(), 1);

    // 64 instances from a source that never answers: the 2.01 and one
    // observation request with its retransmissions (RFC 7252: 4)
    let mut server = auto_observing_server();
    spoofed_register(&mut server, victim, t0, 64);
    let (n, bytes) = sent_towards(&mut server, victim, t0, 300);
    assert!(n <= 1 + 5, "{n} datagrams, {bytes} bytes");
    assert!(bytes < 600, "{n} datagrams, {bytes} bytes");
}

#[test]
fn a_confirmed_client_gets_every_auto_observation_one_con_at_a_time() {
    let mut w = World::new();
    w.server = auto_observing_server();
    let t0 = Instant::now();
    let created = w.client_request(
        t0,
        Request::post("/rd")
            .with_query("ep=fake-1")
            .with_query("lt=600")
            .with_payload(40, b"</3303/0>,</3303/1>,</3303/2>".to_vec()),
    );
    assert_eq!(created.code, Code::CREATED);
    // the first observation's answer confirmed the source; the others
    // followed, each after the previous one's answer (NSTART = 1)
    let observed: Vec<String> = w
        .client_requests
        .iter()
        .filter(|r| r.observe == Some(0))
        .map(|r| r.path.join("/"))
        .collect();
    assert_eq!(observed, ["3303/0/5700", "3303/1/5700", "3303/2/5700"]);
}
