//! The real datagrams of an Eclipse Wakaama client, fed to the server core:
//! its Register is accepted and answered with a location, the read format is
//! chosen from what it announced (SenML JSON for the default build, SenML
//! CBOR for the CBOR build), its Sends (zero-length token, CON) become
//! telemetry, its bare Update (no lt, no payload) is accepted, and its
//! De-register takes the device offline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ferrogate_coap::message::option;
use ferrogate_coap::{Code, Frame, Kind};
use ferrogate_lwm2m::server::{Lwm2mServer, Output, ServerConfig};
use ferrogate_lwm2m::{ObjectRegistry, PathPattern};
use ferrogate_sdk::{DeviceState, Uplink, Value};
use serde_json::Value as J;

fn datagram(name: &str) -> Vec<u8> {
    let doc: Vec<J> =
        serde_json::from_str(include_str!("vectors/wakaama-session.json")).expect("json");
    let entry = doc
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    let hex = entry["hex"].as_str().expect("hex");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The Wakaama datagram with its registration location `rd/w1` (the
/// capture harness's) replaced by ours.
fn at_location(name: &str, location: &[String]) -> Vec<u8> {
    let mut frame = Frame::parse(&datagram(name)).expect("frame");
    frame.options.retain(|(n, _)| *n != option::URI_PATH);
    for seg in location.iter().rev() {
        frame
            .options
            .insert(0, (option::URI_PATH, seg.clone().into_bytes()));
    }
    frame.emit()
}

struct Run {
    server: Lwm2mServer,
    peer: SocketAddr,
    outputs: Vec<Output>,
}

impl Run {
    fn new() -> Run {
        Run::with(ServerConfig {
            auto_observe: vec![PathPattern::parse("/3/0/9").expect("pattern")],
            ..ServerConfig::default()
        })
    }

    fn with(config: ServerConfig) -> Run {
        Run {
            server: Lwm2mServer::new(config, Arc::new(ObjectRegistry::builtin())),
            peer: "127.0.0.1:56830".parse().expect("addr"),
            outputs: Vec::new(),
        }
    }

    /// Feed a datagram; everything the server sends back, parsed.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.server.handle(Instant::now(), self.peer, bytes);
        let mut out = Vec::new();
        while let Some(t) = self.server.poll_transmit() {
            assert_eq!(t.peer, self.peer);
            out.push(Frame::parse(&t.datagram).expect("server emits valid CoAP"));
        }
        while let Some(o) = self.server.poll_output() {
            self.outputs.push(o);
        }
        out
    }

    fn reply_to(frames: &[Frame], token: &[u8]) -> Frame {
        frames
            .iter()
            .find(|f| f.kind == Kind::Ack && f.token == token)
            .cloned()
            .expect("piggybacked answer")
    }
}

fn register(run: &mut Run, name: &str) -> (Vec<String>, Vec<Frame>) {
    let bytes = datagram(name);
    let request = Frame::parse(&bytes).expect("frame");
    let frames = run.feed(&bytes);
    let ack = Run::reply_to(&frames, &request.token);
    assert_eq!(ack.code, Code::CREATED);
    assert_eq!(ack.mid, request.mid);
    let location = ack.to_response().location_path;
    assert_eq!(location.first().map(String::as_str), Some("rd"));
    (location, frames)
}

#[test]
fn default_build_session() {
    let mut run = Run::new();
    let (location, frames) = register(&mut run, "run1.register.register_request");
    // auto-observe of /3/0/9 asks for SenML JSON, the ct the client announced
    let observe = frames
        .iter()
        .find(|f| f.kind == Kind::Con)
        .expect("observe request");
    let request = observe.to_request().expect("request");
    assert_eq!(request.path, ["3", "0", "9"]);
    assert_eq!(request.observe, Some(0));
    assert_eq!(request.accept, Some(110));
    assert!(run.outputs.iter().any(|o| matches!(o, Output::Uplink(Uplink::Status(s)) if s.device == "wakaama-vec" && s.state == DeviceState::Online)));
    let meta = run.outputs.iter().find_map(|o| match o {
        Output::Uplink(Uplink::Meta(m)) => Some(m.clone()),
        _ => None,
    });
    let meta = meta.expect("meta");
    assert_eq!(
        meta.attributes["objects"]
            .as_array()
            .expect("objects")
            .len(),
        12
    );
    assert!(meta.points.iter().any(|p| p.name == "device.battery_level"));

    // Send, CON with a zero-length token
    for name in [
        "run1.send_3_0_9.send_request",
        "run1.send_3_0_9_and_3_0_13.send_request",
    ] {
        let bytes = datagram(name);
        let request = Frame::parse(&bytes).expect("frame");
        assert!(request.token.is_empty());
        let ack = Run::reply_to(&run.feed(&bytes), &[]);
        assert_eq!(ack.code, Code::CHANGED, "{name}");
    }
    let sent: Vec<(String, Value)> = run
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Uplink(Uplink::Telemetry(t)) => Some(
                t.readings
                    .iter()
                    .map(|r| (r.point.to_string(), r.value.clone().expect("value")))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        sent,
        [
            ("device.battery_level".to_string(), Value::Int(42)),
            ("device.battery_level".to_string(), Value::Int(42)),
            ("device.current_time".to_string(), Value::Int(3_163_182_376)),
        ]
    );

    // the bare Update (no lt, no payload) is accepted
    let update = at_location("run1.update_stdin.update_request", &location);
    let token = Frame::parse(&update).expect("frame").token;
    assert_eq!(
        Run::reply_to(&run.feed(&update), &token).code,
        Code::CHANGED
    );
    assert_eq!(
        run.server
            .registrations()
            .by_endpoint("wakaama-vec")
            .map(|r| r.lifetime.as_secs()),
        Some(300)
    );

    // De-register
    let dereg = at_location("run1.deregister_quit.deregister_request", &location);
    let token = Frame::parse(&dereg).expect("frame").token;
    assert_eq!(Run::reply_to(&run.feed(&dereg), &token).code, Code::DELETED);
    assert!(run.outputs.iter().any(|o| matches!(o, Output::Uplink(Uplink::Status(s)) if s.state == DeviceState::Offline && s.reason.as_deref() == Some("deregistered"))));
    assert!(run.server.registrations().is_empty());
}

#[test]
fn cbor_build_session() {
    let mut run = Run::new();
    let (location, frames) = register(&mut run, "run3.register.register_request");
    let observe = frames
        .iter()
        .find(|f| f.kind == Kind::Con)
        .expect("observe request");
    assert_eq!(
        observe.to_request().expect("request").accept,
        Some(112),
        "ct=112 announced: read in SenML CBOR"
    );
    let bytes = datagram("run3.cbor_send_3_0_9.send_request");
    assert_eq!(Run::reply_to(&run.feed(&bytes), &[]).code, Code::CHANGED);
    assert!(run.outputs.iter().any(|o| matches!(o, Output::Uplink(Uplink::Telemetry(t))
        if t.readings.iter().any(|r| &*r.point == "device.battery_level" && r.value == Ok(Value::Int(100))))));
    let dereg = at_location("run3.cbor_deregister_quit.deregister_request", &location);
    let token = Frame::parse(&dereg).expect("frame").token;
    assert_eq!(Run::reply_to(&run.feed(&dereg), &token).code, Code::DELETED);
}

#[test]
fn path_naming_names_points_by_path_with_a_device_prefix() {
    let mut run = Run::with(ServerConfig {
        naming: ferrogate_lwm2m::PointNaming::Path,
        device_prefix: "lwm2m-".into(),
        ..ServerConfig::default()
    });
    register(&mut run, "run1.register.register_request");
    let bytes = datagram("run1.send_3_0_9_and_3_0_13.send_request");
    assert_eq!(Run::reply_to(&run.feed(&bytes), &[]).code, Code::CHANGED);
    let telemetry = run
        .outputs
        .iter()
        .find_map(|o| match o {
            Output::Uplink(Uplink::Telemetry(t)) => Some(t.clone()),
            _ => None,
        })
        .expect("telemetry");
    assert_eq!(telemetry.device, "lwm2m-wakaama-vec");
    let points: Vec<&str> = telemetry.readings.iter().map(|r| &*r.point).collect();
    assert_eq!(points, ["3/0/9", "3/0/13"]);
}
