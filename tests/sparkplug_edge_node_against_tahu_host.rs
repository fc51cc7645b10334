//! The Sparkplug B edge node, live: the real daemon with a pymodbus slave,
//! a real mosquitto, and a host (tests/peers/sparkplug_host.py) that
//! decodes every message with Eclipse Tahu's generated protobuf code (from
//! mqtt-spb-wrapper) and with pysparkplug, never with ours.

mod common;
mod daemon;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Mosquitto;
use daemon::{ConfigDir, Daemon, Slave};
use serde_json::Value as Json;

const WAIT: Duration = Duration::from_secs(20);
const NODE: &str = "gw-spb";

/// The Python host: every decoded message in arrival order.
struct Host {
    child: Child,
    stdin: ChildStdin,
    messages: Arc<Mutex<Vec<Json>>>,
    acks: mpsc::Receiver<()>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    fn start(port: u16) -> Host {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/sparkplug_host.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with mqtt-spb-wrapper and pysparkplug (scripts/test installs them)");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "READY",
            "the Sparkplug host did not start (pip install mqtt-spb-wrapper pysparkplug?)"
        );
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (ack_tx, acks) = mpsc::channel();
        let sink = messages.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if line == "OK" {
                    let _ = ack_tx.send(());
                } else if let Ok(json) = serde_json::from_str::<Json>(&line) {
                    sink.lock().unwrap().push(json);
                }
            }
        });
        Host {
            stdin: child.stdin.take().unwrap(),
            child,
            messages,
            acks,
        }
    }

    /// Sends a command and waits until the broker has the message.
    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.acks
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("host did not publish `{command}`"));
    }

    fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    fn since(&self, from: usize) -> Vec<Json> {
        self.messages.lock().unwrap()[from..].to_vec()
    }

    /// The first message at or after index `from` that `pred` accepts,
    /// with its index.
    fn wait(&self, what: &str, from: usize, pred: impl Fn(&Json) -> bool) -> (usize, Json) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = self
                .since(from)
                .into_iter()
                .enumerate()
                .find(|(_, m)| pred(m))
            {
                return (from + found.0, found.1);
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the host saw {:#?}",
                self.since(from)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn is(kind: &'static str, topic_end: &'static str) -> impl Fn(&Json) -> bool {
    move |m| m["type"] == kind && m["topic"].as_str().is_some_and(|t| t.ends_with(topic_end))
}

fn metric<'a>(message: &'a Json, name: &str) -> &'a Json {
    message["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no metric {name} in {message:#}"))
}

fn decoded_by_pysparkplug(message: &Json) {
    assert_eq!(
        message["pysparkplug"], "ok",
        "pysparkplug refused {message:#}"
    );
}

/// A Modbus meter: a writable u16 setpoint, an i16 temperature and a point
/// the slave does not have.
fn meter(port: u16) -> String {
    format!(
        r#"
[[modbus.connection]]
name = "plant"
transport = "tcp"
address = "127.0.0.1:{port}"
timeout = "500ms"

[[modbus.device]]
name = "meter"
connection = "plant"
unit = 1
poll = "200ms"

[[modbus.device.point]]
name = "setpoint"
area = "holding"
address = 0
type = "u16"
writable = true
min = 0
max = 500
unit = "C"

[[modbus.device.point]]
name = "temp"
area = "input"
address = 0
type = "i16"

[[modbus.device.point]]
name = "missing"
area = "holding"
address = 50
type = "u16"
"#
    )
}

fn slave() -> Slave {
    // ir 0 = 65531: -5 as an i16.
    daemon::pymodbus_slave(
        serde_json::json!({"tcp": 0, "units": {"1": {"hr": [10], "ir": [65531]}}}),
    )
}

fn config(broker: u16, slave: u16, sparkplug: &str) -> ConfigDir {
    let config = ConfigDir::new(NODE, broker, "5", &meter(slave));
    let path = config.path().join("gateway.toml");
    let mut gateway = std::fs::read_to_string(&path).unwrap();
    gateway.push_str(&format!(
        "\n[sparkplug]\nenabled = true\ngroup_id = \"plant\"\n{sparkplug}\n"
    ));
    std::fs::write(&path, gateway).unwrap();
    config
}

/// The daemon's Sparkplug status, from `ferrogate --json status`.
fn sparkplug_status(config: &ConfigDir) -> Json {
    let out = Command::new(daemon::binary())
        .arg("--socket")
        .arg(config.path().join("control.sock"))
        .args(["--json", "status"])
        .output()
        .unwrap();
    let json: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    json["result"]["sparkplug"].clone()
}

/// Waits until the Sparkplug status satisfies `pred`; returns it.
fn wait_status(config: &ConfigDir, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
    let mut last = Json::Null;
    common::wait_for(what, WAIT, || {
        last = sparkplug_status(config);
        pred(&last)
    });
    last
}

fn held(status: &Json) -> u64 {
    status["held"].as_u64().unwrap_or(0)
}

/// Node-scope messages (everything but NDEATH and STATE) carry seq
/// 0-255 in order: each is the one before plus one, an NBIRTH starts at 0.
fn assert_seq_continuity(messages: &[Json]) {
    let mut last: Option<u64> = None;
    for m in messages {
        let kind = m["type"].as_str().unwrap_or("");
        if !matches!(kind, "NBIRTH" | "DBIRTH" | "DDATA" | "DDEATH" | "NDATA") {
            continue;
        }
        let seq = m["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {m:#}"));
        if kind == "NBIRTH" {
            assert_eq!(seq, 0, "{m:#}");
        } else if let Some(prev) = last {
            assert_eq!(seq, (prev + 1) % 256, "seq gap after {prev}: {m:#}");
        }
        last = Some(seq);
    }
}

#[test]
fn births_data_commands_death_and_historical_replay_as_tahu_decodes_them() {
    let mut slave = slave();
    let mut broker = Mosquitto::start_with(common::free_port(), "queue_qos0_messages true");
    let mut host = Host::start(broker.port);
    let config = config(broker.port, slave.port, "");
    let mut gw = Daemon::start(config.path());

    // NBIRTH: seq 0, bdSeq 0 on the first start, Node Control/Rebirth.
    let (_, nbirth) = host.wait("NBIRTH", 0, is("NBIRTH", NODE));
    decoded_by_pysparkplug(&nbirth);
    assert_eq!(nbirth["topic"], format!("spBv1.0/plant/NBIRTH/{NODE}"));
    assert_eq!(nbirth["seq"], 0);
    assert_eq!(metric(&nbirth, "bdSeq")["value"], 0);
    assert_eq!(metric(&nbirth, "bdSeq")["datatype"], 4, "Int64");
    let rebirth = metric(&nbirth, "Node Control/Rebirth");
    assert_eq!(
        (rebirth["value"].clone(), rebirth["datatype"].clone()),
        (false.into(), 11.into())
    );
    assert_eq!(nbirth["retain"], false);

    // DBIRTH: every point, its datatype, unit and writability.
    let (_, dbirth) = host.wait("DBIRTH", 0, is("DBIRTH", "/meter"));
    decoded_by_pysparkplug(&dbirth);
    let setpoint = metric(&dbirth, "setpoint");
    assert_eq!(setpoint["datatype"], 6, "UInt16: {dbirth:#}");
    assert_eq!(setpoint["properties"]["engUnit"], "C");
    assert_eq!(setpoint["properties"]["readOnly"], false);
    assert_eq!(setpoint["properties"]["engHigh"], 500.0);
    assert_eq!(metric(&dbirth, "temp")["datatype"], 2, "Int16");
    assert_eq!(metric(&dbirth, "temp")["properties"]["readOnly"], true);

    // DDATA values equal to the slave's registers, as both decoders read them.
    let (at, ddata) = host.wait("DDATA with temp", 0, |m| {
        is("DDATA", "/meter")(m)
            && m["metrics"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|x| x["name"] == "temp"))
    });
    decoded_by_pysparkplug(&ddata);
    let registers = slave.get(1, 4, 0, 1);
    assert_eq!(registers, [65531]);
    assert_eq!(metric(&ddata, "temp")["value"], -5, "{ddata:#}");
    assert_eq!(ddata["pysparkplug_values"]["temp"], -5, "{ddata:#}");
    assert_eq!(
        metric(&ddata, "setpoint")["value"],
        slave.get(1, 3, 0, 1)[0]
    );
    // A failed read: null, with its quality (Bad_DeviceFailure, exception 2).
    let missing = metric(&ddata, "missing");
    assert_eq!(missing["is_null"], true, "{ddata:#}");
    assert_eq!(missing["properties"]["Quality"], 12, "{ddata:#}");
    host.wait("a few more DDATA", at + 1, is("DDATA", "/meter"));

    // NCMD Rebirth: a new NBIRTH (seq 0, same bdSeq) and the DBIRTH.
    let before = host.count();
    host.send(&format!("rebirth plant {NODE}"));
    let (at, reborn) = host.wait("NBIRTH after Rebirth", before, is("NBIRTH", NODE));
    assert_eq!(reborn["seq"], 0);
    assert_eq!(metric(&reborn, "bdSeq")["value"], 0);
    host.wait("DBIRTH after Rebirth", at, is("DBIRTH", "/meter"));

    // DCMD write: the slave has it, and a DDATA reports the confirmed value.
    let before = host.count();
    host.send(&format!("dcmd plant {NODE} meter setpoint 6 65"));
    host.wait("DDATA with the written setpoint", before, |m| {
        is("DDATA", "/meter")(m)
            && m["metrics"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|x| x["name"] == "setpoint" && x["value"] == 65)
            })
    });
    assert_eq!(
        slave.get(1, 3, 0, 1),
        [65],
        "the slave holds the written value"
    );

    // Garbage on NCMD and DCMD: refused, logged, and the node carries on.
    host.send(&format!("raw spBv1.0/plant/NCMD/{NODE} ffffffff0a"));
    host.send(&format!("raw spBv1.0/plant/DCMD/{NODE}/meter 0a02"));
    let before = host.count();
    host.wait(
        "DDATA after garbage commands",
        before,
        is("DDATA", "/meter"),
    );
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the daemon survived"
    );
    let status = sparkplug_status(&config);
    assert_eq!(status["connected"], true, "{status:#}");
    assert_eq!(status["bd_seq"], 0, "{status:#}");
    assert_eq!(status["rebirth_requests"], 1, "{status:#}");
    assert_eq!(status["node_births"], 2, "{status:#}");
    assert_eq!(status["commands_refused"], 2, "{status:#}");
    assert_eq!(status["primary_host"], "not configured", "{status:#}");
    assert_seq_continuity(&host.since(0));

    // kill -9: the broker publishes the will, NDEATH with the NBIRTH's bdSeq.
    let before = host.count();
    gw.signal("KILL");
    gw.wait_exit(WAIT).expect("killed");
    let (_, ndeath) = host.wait("NDEATH will", before, is("NDEATH", NODE));
    decoded_by_pysparkplug(&ndeath);
    assert_eq!(metric(&ndeath, "bdSeq")["value"], 0);

    // A restart: bdSeq goes up by one.
    let before = host.count();
    let _gw = Daemon::start(config.path());
    let (_, nbirth) = host.wait("NBIRTH after restart", before, is("NBIRTH", NODE));
    assert_eq!(metric(&nbirth, "bdSeq")["value"], 1);
    host.wait("DDATA after restart", before, is("DDATA", "/meter"));

    // The broker goes away; telemetry meanwhile is held and sent after the
    // next births with is_historical and its original timestamps. The
    // host's session is persistent, so it misses nothing either.
    broker.stop();
    let cut_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let before = host.count();
    // Polls while the broker is down are held.
    let status = wait_status(&config, "3 polls held during the outage", |s| {
        s["connected"] == false && held(s) >= 3
    });
    assert_eq!(status["connected"], false, "{status:#}");
    broker.restart();
    let (at, nbirth) = host.wait("NBIRTH after the outage", before, is("NBIRTH", NODE));
    // One more per CONNECT sent: failed attempts during the outage count.
    let bd_seq = metric(&nbirth, "bdSeq")["value"].as_u64().unwrap();
    assert!(bd_seq >= 2, "a new connection, a new bdSeq: {nbirth:#}");
    let (_, historical) = host.wait("historical DDATA", at, |m| {
        is("DDATA", "/meter")(m)
            && m["metrics"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|x| x["is_historical"] == true))
    });
    decoded_by_pysparkplug(&historical);
    let temp = metric(&historical, "temp");
    assert_eq!(temp["value"], -5);
    assert!(
        temp["timestamp"].as_u64().unwrap() >= cut_ms.saturating_sub(1000)
            && temp["timestamp"].as_u64().unwrap() < historical["timestamp"].as_u64().unwrap(),
        "the reading keeps the time it was taken during the outage: {historical:#}"
    );
    assert_seq_continuity(&host.since(at));
}

#[test]
fn with_a_primary_host_the_node_publishes_only_while_it_is_online() {
    let slave = slave();
    let broker = Mosquitto::start_with(common::free_port(), "queue_qos0_messages true");
    let mut host = Host::start(broker.port);
    let config = config(
        broker.port,
        slave.port,
        "primary_host_id = \"scada\"\naliases = true",
    );
    let mut gw = Daemon::start(config.path());

    // Nothing before the host's STATE says online: once connected, the
    // node holds three more polls and publishes nothing.
    let connected = wait_status(&config, "the Sparkplug session", |s| s["connected"] == true);
    let status = wait_status(&config, "3 polls held after connecting", |s| {
        held(s) >= held(&connected) + 3
    });
    assert_eq!(status["primary_host"], "unknown", "{status:#}");
    assert!(
        host.since(0).iter().all(|m| m["type"] == "STATE"),
        "published before the primary host was online: {:#?}",
        host.since(0)
    );
    host.send("state scada true 1000");
    let (at, nbirth) = host.wait("NBIRTH once the host is online", 0, is("NBIRTH", NODE));
    decoded_by_pysparkplug(&nbirth);
    let (_, dbirth) = host.wait("DBIRTH", at, is("DBIRTH", "/meter"));
    decoded_by_pysparkplug(&dbirth);
    assert!(
        metric(&dbirth, "temp")["alias"].is_u64(),
        "aliases on: {dbirth:#}"
    );
    // Aliased DDATA, resolved by pysparkplug through the DBIRTH.
    let (_, ddata) = host.wait("DDATA", at, is("DDATA", "/meter"));
    decoded_by_pysparkplug(&ddata);
    assert!(ddata["metrics"][0]["name"].is_null(), "{ddata:#}");
    assert_eq!(ddata["pysparkplug_values"]["temp"], -5, "{ddata:#}");

    // Host offline: the node holds; back online: rebirth, then held data
    // as historical.
    host.send("state scada false 2000");
    // Once the node saw it, it holds what it reads: a poll held marks
    // the end of what it published before, three more publish nothing.
    let offline = wait_status(&config, "the node to see the host offline", |s| {
        s["primary_host"] == "offline"
    });
    wait_status(&config, "a poll held", |s| held(s) > held(&offline));
    let settled = host.count();
    let status = wait_status(&config, "3 more polls held", |s| {
        held(s) >= held(&offline) + 4
    });
    assert_eq!(status["primary_host"], "offline", "{status:#}");
    assert!(
        host.since(settled).iter().all(|m| m["type"] == "STATE"),
        "published while the primary host was offline: {:#?}",
        host.since(settled)
    );
    host.send("state scada true 3000");
    let (at, _) = host.wait("NBIRTH on the host's return", settled, is("NBIRTH", NODE));
    let (_, historical) = host.wait("historical DDATA", at, |m| {
        is("DDATA", "/meter")(m)
            && m["metrics"]
                .as_array()
                .is_some_and(|ms| ms.iter().all(|x| x["is_historical"] == true))
    });
    decoded_by_pysparkplug(&historical);

    // A clean stop: NDEATH published before DISCONNECT (the broker drops
    // the will on a DISCONNECT, so this one is the node's own).
    let before = host.count();
    gw.signal("TERM");
    gw.wait_exit(WAIT).expect("stopped");
    let (_, ndeath) = host.wait("NDEATH on a clean stop", before, is("NDEATH", NODE));
    assert_eq!(metric(&ndeath, "bdSeq")["value"], 0);
}
