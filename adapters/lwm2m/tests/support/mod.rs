//! A test LwM2M client built on ferrogate-coap's engine (through its tokio
//! driver), with an in-memory object store, and helpers to run the LwM2M
//! adapter from TOML and wait for its uplinks.
#![allow(dead_code)]

pub mod libcoap;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogate_coap::driver::{self, CoapHandle, Incoming, ObserveRelation};
use ferrogate_coap::{Code, EndpointConfig, Method, Request, Response};
use ferrogate_lwm2m::content::{self, ContentFormat};
use ferrogate_lwm2m::{Lwm2mKind, ObjectRegistry, Path, ResourceValue};
use ferrogate_sdk::testing::{self, TestHarness};
use ferrogate_sdk::{Command, Operation, Outcome, Uplink};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

/// Start the adapter built from `[lwm2m.server]` settings (`bind` is
/// filled in with a free loopback port).
pub async fn start_server(extra: &str) -> (TestHarness, SocketAddr) {
    start_server_with_owners(extra, ferrogate_sdk::DeviceOwners::default()).await
}

/// [`start_server`] in a gateway where other adapters own `owners`.
pub async fn start_server_with_owners(
    extra: &str,
    owners: ferrogate_sdk::DeviceOwners,
) -> (TestHarness, SocketAddr) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let toml = format!("[lwm2m.server]\nbind = \"{addr}\"\n{extra}\n");
    let mut built =
        testing::build(&Lwm2mKind, &toml, &[]).unwrap_or_else(|e| panic!("config: {e:?}"));
    assert_eq!(built.len(), 1);
    let mut adapter = built.remove(0);
    assert_eq!(adapter.name, "lwm2m");
    let (ctx, harness) = testing::context_with_owners("lwm2m", owners);
    tokio::spawn(async move {
        let _ = adapter.adapter.run(ctx).await;
    });
    (harness, addr)
}

/// Wait (up to [`WAIT`]) until the adapter has counted `n` refusals for
/// `reason`: it counts just after the answer leaves.
pub async fn refused(h: &TestHarness, reason: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.refusals.get(reason) < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.refusals.get(reason), n, "refusals for {reason}");
}

/// The next uplink matching `pred`, skipping others, within [`WAIT`].
pub async fn uplink(h: &mut TestHarness, what: &str, pred: impl Fn(&Uplink) -> bool) -> Uplink {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match h.uplinks.recv().await {
                Some(env) if pred(&env.uplink) => return env.uplink,
                Some(env) => seen.push(format!("{:?}", env.uplink)),
                None => panic!("uplink channel closed"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no uplink {what} within {WAIT:?}; saw:\n{}",
            seen.join("\n")
        )
    })
}

/// The value of `point` in a telemetry uplink of `device`, if it has one.
pub fn reading(u: &Uplink, device: &str, point: &str) -> Option<ferrogate_sdk::Value> {
    match u {
        Uplink::Telemetry(t) if t.device == device => t
            .readings
            .iter()
            .find(|r| &*r.point == point)
            .and_then(|r| r.value.clone().ok()),
        _ => None,
    }
}

pub fn command(device: &str, op: Operation) -> Command {
    command_within(device, op, WAIT)
}

pub fn command_within(device: &str, op: Operation, within: Duration) -> Command {
    Command {
        id: format!("cmd-{}", rand_id()),
        device: device.to_string(),
        op,
        deadline: tokio::time::Instant::now() + within,
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn protocol(
    op: &str,
    path: &str,
    value: Option<serde_json::Value>,
    args: serde_json::Value,
) -> Operation {
    Operation::Protocol {
        op: op.to_string(),
        path: Some(path.to_string()),
        value,
        args,
    }
}

pub async fn run_command(h: &TestHarness, cmd: Command) -> Outcome {
    tokio::time::timeout(WAIT + Duration::from_secs(5), h.command(cmd))
        .await
        .expect("command answered")
}

/// What the test client saw and holds.
#[derive(Default)]
pub struct Store {
    pub values: BTreeMap<Path, ResourceValue>,
    pub relations: Vec<(Path, ContentFormat, ObserveRelation)>,
    pub executed: Vec<(Path, String)>,
    pub attributes: Vec<(Path, Vec<String>)>,
    /// Every request received and every request sent, in order.
    pub log: Vec<String>,
    /// Formats the client answers reads in; others get 4.06.
    pub accepts: Vec<ContentFormat>,
}

/// An LwM2M client on the CoAP engine, over UDP on loopback.
pub struct TestClient {
    coap: CoapHandle,
    shutdown: CancellationToken,
    pub server: SocketAddr,
    pub store: Arc<Mutex<Store>>,
    pub location: Option<String>,
}

fn registry() -> ObjectRegistry {
    ObjectRegistry::builtin()
}

impl TestClient {
    pub async fn start(server: SocketAddr, values: &[(&str, ResourceValue)]) -> TestClient {
        let store = Store {
            values: values
                .iter()
                .map(|(p, v)| (Path::parse(p).expect("path"), v.clone()))
                .collect(),
            accepts: vec![
                ContentFormat::Tlv,
                ContentFormat::SenmlJson,
                ContentFormat::SenmlCbor,
                ContentFormat::Text,
            ],
            ..Store::default()
        };
        Self::with_store(server, Arc::new(Mutex::new(store))).await
    }

    async fn with_store(server: SocketAddr, store: Arc<Mutex<Store>>) -> TestClient {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind client");
        let shutdown = CancellationToken::new();
        let config = EndpointConfig {
            seed: rand_id() * 7919,
            ..EndpointConfig::default()
        };
        let (coap, incoming) = driver::spawn(socket, config, shutdown.clone());
        tokio::spawn(serve(incoming, store.clone()));
        TestClient {
            coap,
            shutdown,
            server,
            store,
            location: None,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.coap.local_addr()
    }

    fn log(&self, line: String) {
        self.store.lock().expect("store").log.push(line);
    }

    pub async fn request(&self, request: Request) -> Response {
        self.log(format!("sent {} {}", request.method, request.path_string()));
        tokio::time::timeout(WAIT, self.coap.request(self.server, request))
            .await
            .expect("server answered in time")
            .expect("server answered")
    }

    /// Register with query parameters (`lt=60`, `b=UQ`, ...) and a
    /// link-format object list. `ep` is added.
    pub async fn register(&mut self, endpoint: &str, queries: &[&str], objects: &str) -> Response {
        let mut req = Request::post("/rd")
            .with_query(format!("ep={endpoint}"))
            .with_payload(40, objects.as_bytes().to_vec());
        for q in queries {
            req = req.with_query(*q);
        }
        let response = self.request(req).await;
        if response.code == Code::CREATED {
            self.location = Some(response.location_path.join("/"));
        }
        response
    }

    pub async fn update(&self, queries: &[&str]) -> Response {
        let mut req = Request::post(&format!(
            "/{}",
            self.location.as_deref().expect("registered")
        ));
        for q in queries {
            req = req.with_query(*q);
        }
        self.request(req).await
    }

    pub async fn deregister(&self) -> Response {
        self.request(Request::delete(&format!(
            "/{}",
            self.location.as_deref().expect("registered")
        )))
        .await
    }

    /// Send (`POST /dp`) the current values of `paths` as SenML JSON.
    pub async fn send(&self, paths: &[&str]) -> Response {
        let values: Vec<(Path, ResourceValue)> = {
            let store = self.store.lock().expect("store");
            paths
                .iter()
                .map(|p| {
                    let path = Path::parse(p).expect("path");
                    (
                        path,
                        store.values.get(&path).cloned().expect("value in store"),
                    )
                })
                .collect()
        };
        let body = content::encode(ContentFormat::SenmlJson, Path::ROOT, &values).expect("encode");
        self.request(Request::post("/dp").with_payload(110, body))
            .await
    }

    /// Change a value and notify every observation covering it (NON, as
    /// Wakaama does).
    pub async fn change(&self, path: &str, value: ResourceValue) {
        let path = Path::parse(path).expect("path");
        let relations: Vec<(Path, ContentFormat, ObserveRelation)> = {
            let mut store = self.store.lock().expect("store");
            store.values.insert(path, value);
            store
                .relations
                .iter()
                .filter(|(p, _, _)| path.starts_with(p))
                .cloned()
                .collect()
        };
        for (observed, format, relation) in relations {
            let response = read_response(&self.store, observed, format);
            let _ = relation.notify(response, false).await;
        }
    }

    pub fn observed(&self) -> Vec<Path> {
        self.store
            .lock()
            .expect("store")
            .relations
            .iter()
            .map(|(p, _, _)| *p)
            .collect()
    }

    pub fn value(&self, path: &str) -> Option<ResourceValue> {
        self.store
            .lock()
            .expect("store")
            .values
            .get(&Path::parse(path).expect("path"))
            .cloned()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.store.lock().expect("store").log.clone()
    }

    /// The same client (objects, location) from a new source port, as
    /// after a NAT rebinding. Observations held by the old socket are gone.
    pub async fn rebind(self) -> TestClient {
        self.shutdown.cancel();
        self.store.lock().expect("store").relations.clear();
        let mut moved = Self::with_store(self.server, self.store.clone()).await;
        moved.location = self.location.clone();
        moved
    }

    /// Wait until `cond` holds on the store.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Store) -> bool) {
        let ok = tokio::time::timeout(WAIT, async {
            loop {
                if cond(&self.store.lock().expect("store")) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if ok.is_err() {
            panic!(
                "client: {what} did not happen within {WAIT:?}; log: {:?}",
                self.log_lines()
            );
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn read_response(store: &Mutex<Store>, path: Path, format: ContentFormat) -> Response {
    let store = store.lock().expect("store");
    let values: Vec<(Path, ResourceValue)> = store
        .values
        .iter()
        .filter(|(p, _)| p.starts_with(&path))
        .map(|(p, v)| (*p, v.clone()))
        .collect();
    if values.is_empty() {
        return Response::new(Code::NOT_FOUND);
    }
    let format = if path.depth() < 3 && format == ContentFormat::Text {
        ContentFormat::Tlv
    } else {
        format
    };
    match content::encode(format, path, &values) {
        Ok(body) => Response::new(Code::CONTENT).with_payload(format.number(), body),
        Err(_) => Response::new(Code::NOT_ACCEPTABLE),
    }
}

async fn serve(mut incoming: tokio::sync::mpsc::Receiver<Incoming>, store: Arc<Mutex<Store>>) {
    let registry = registry();
    while let Some(req) = incoming.recv().await {
        let r = &req.request;
        let path = Path::parse(&r.path_string()).unwrap_or(Path::ROOT);
        store
            .lock()
            .expect("store")
            .log
            .push(format!("got {} {}", r.method, r.path_string()));
        let accept = r
            .accept
            .map(|a| ContentFormat::from_number(a).unwrap_or(ContentFormat::Opaque));
        let accepted = |f: ContentFormat| {
            store.lock().expect("store").accepts.contains(&f) || f == ContentFormat::LinkFormat
        };
        match r.method {
            Method::Get if accept == Some(ContentFormat::LinkFormat) => {
                let links: Vec<String> = {
                    let s = store.lock().expect("store");
                    let mut l = vec![format!("<{path}>")];
                    l.extend(
                        s.values
                            .keys()
                            .filter(|p| p.starts_with(&path) && **p != path)
                            .map(|p| format!("<{p}>")),
                    );
                    l
                };
                req.responder.respond(
                    Response::new(Code::CONTENT).with_payload(40, links.join(",").into_bytes()),
                );
            }
            Method::Get => {
                let format = accept.unwrap_or(ContentFormat::Tlv);
                if !accepted(format) {
                    req.responder.respond(Response::new(Code::NOT_ACCEPTABLE));
                    continue;
                }
                let response = read_response(&store, path, format);
                if r.observe == Some(0) && response.code == Code::CONTENT {
                    if let Some(relation) = req.responder.accept_observe(response).await {
                        let mut s = store.lock().expect("store");
                        s.relations.retain(|(p, _, _)| *p != path);
                        s.relations.push((path, format, relation));
                    }
                } else {
                    if r.observe == Some(1) {
                        store
                            .lock()
                            .expect("store")
                            .relations
                            .retain(|(p, _, _)| *p != path);
                    }
                    req.responder.respond(response);
                }
            }
            Method::Fetch => {
                let format = accept.unwrap_or(ContentFormat::SenmlJson);
                let names = ferrogate_lwm2m::senml::parse_json(&r.payload)
                    .map(|recs| ferrogate_lwm2m::senml::resolve(&recs))
                    .unwrap_or_default();
                let values: Vec<(Path, ResourceValue)> = {
                    let s = store.lock().expect("store");
                    names
                        .iter()
                        .filter_map(|n| Path::parse(&n.name).ok())
                        .flat_map(|p| {
                            s.values
                                .iter()
                                .filter(move |(q, _)| q.starts_with(&p))
                                .map(|(q, v)| (*q, v.clone()))
                                .collect::<Vec<_>>()
                        })
                        .collect()
                };
                let body = content::encode(format, Path::ROOT, &values).unwrap_or_default();
                req.responder
                    .respond(Response::new(Code::CONTENT).with_payload(format.number(), body));
            }
            Method::Put if r.payload.is_empty() => {
                store
                    .lock()
                    .expect("store")
                    .attributes
                    .push((path, r.query.clone()));
                req.responder.respond(Response::new(Code::CHANGED));
            }
            Method::Put | Method::Post
                if path.depth() == 2 || (r.method == Method::Put && path.depth() >= 3) =>
            {
                let format = r
                    .content_format
                    .and_then(ContentFormat::from_number)
                    .unwrap_or(ContentFormat::Tlv);
                match content::decode(format, path, &r.payload, &registry) {
                    Ok(values) => {
                        let writable = values.iter().all(|v| {
                            registry
                                .resource(&v.path)
                                .is_none_or(|d| d.operations.write)
                        });
                        if !writable {
                            req.responder
                                .respond(Response::new(Code::METHOD_NOT_ALLOWED));
                            continue;
                        }
                        let mut s = store.lock().expect("store");
                        for v in values {
                            s.values.insert(v.path, v.value);
                        }
                        drop(s);
                        req.responder.respond(Response::new(Code::CHANGED));
                    }
                    Err(_) => req.responder.respond(Response::new(Code::BAD_REQUEST)),
                }
            }
            Method::Post if path.depth() == 3 => {
                let args = String::from_utf8_lossy(&r.payload).into_owned();
                store.lock().expect("store").executed.push((path, args));
                req.responder.respond(Response::new(Code::CHANGED));
            }
            Method::Post if path.depth() == 1 => {
                let format = r
                    .content_format
                    .and_then(ContentFormat::from_number)
                    .unwrap_or(ContentFormat::Tlv);
                let next = {
                    let s = store.lock().expect("store");
                    (0u16..)
                        .find(|i| {
                            !s.values
                                .keys()
                                .any(|p| p.object() == path.object() && p.instance() == Some(*i))
                        })
                        .unwrap_or(0)
                };
                let base = path.child(next).expect("instance");
                let decoded = content::decode(format, path, &r.payload, &registry)
                    .or_else(|_| content::decode(format, base, &r.payload, &registry));
                match decoded {
                    Ok(values) => {
                        let inst = values
                            .first()
                            .and_then(|v| v.path.instance())
                            .unwrap_or(next);
                        let mut s = store.lock().expect("store");
                        for v in values {
                            s.values.insert(v.path, v.value);
                        }
                        drop(s);
                        let mut response = Response::new(Code::CREATED);
                        response.location_path =
                            vec![path.object().unwrap_or(0).to_string(), inst.to_string()];
                        req.responder.respond(response);
                    }
                    Err(_) => req.responder.respond(Response::new(Code::BAD_REQUEST)),
                }
            }
            Method::Delete if path.depth() == 2 => {
                let mut s = store.lock().expect("store");
                let before = s.values.len();
                s.values.retain(|p, _| !p.starts_with(&path));
                let code = if s.values.len() < before {
                    Code::DELETED
                } else {
                    Code::NOT_FOUND
                };
                drop(s);
                req.responder.respond(Response::new(code));
            }
            _ => req
                .responder
                .respond(Response::new(Code::METHOD_NOT_ALLOWED)),
        }
    }
}
