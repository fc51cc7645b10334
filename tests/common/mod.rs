//! Shared helpers for end-to-end tests: a real mosquitto on a free port, an
//! MQTT subscriber that records what arrives, a TCP proxy the test can
//! freeze or cut, test certificates made with the openssl CLI, and waiting for a
//! condition with a deadline (never sleeping as synchronisation).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fails with a clear message if `program` is not on PATH.
pub fn require(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{program}` not found on PATH: install the Debian package `{package}` (apt-get install -y {package})")
    })
}

/// A helper process (socat, a peer) killed when the test ends, also when
/// it ends in a panic.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A free UDP port below the kernel's ephemeral range (32768 and up), for a
/// peer that binds it later: no port-0 socket of a parallel test can take it
/// in between, and no two calls in one process return the same port.
pub fn free_udp_port_below_ephemeral() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 2_000) as u16 * 2;
    (0..5_000)
        .map(|_| base + NEXT.fetch_add(1, Ordering::Relaxed) % 5_000)
        .find(|p| std::net::UdpSocket::bind(("0.0.0.0", *p)).is_ok())
        .unwrap_or_else(|| panic!("no free UDP port between {base} and {}", base + 5_000))
}

/// Polls `cond` until it holds or `timeout` passes; panics with `what`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async variant of [`wait_for`].
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A mosquitto broker started by the test, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra: String,
    child: Option<Child>,
}

impl Mosquitto {
    /// A plain broker on a free port, anonymous access allowed.
    pub fn start() -> Mosquitto {
        Self::start_with(free_port(), "")
    }

    /// A broker on `port` with extra configuration lines (TLS settings).
    pub fn start_with(port: u16, extra: &str) -> Mosquitto {
        let mut m = Mosquitto {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.to_string(),
            child: None,
        };
        m.restart();
        m
    }

    /// Starts the broker again on the same port (after [`Mosquitto::stop`]).
    pub fn restart(&mut self) {
        let bin = require("mosquitto", "mosquitto");
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                // `user root`: started as root, mosquitto would otherwise
                // drop to its own user and fail to read the test's 0700
                // temporary directories (keys, persistence).
                "{}listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 1000000\n{}\n",
                if is_root() { "user root\n" } else { "" },
                self.port,
                self.dir.path().display(),
                self.extra
            ),
        )
        .expect("write mosquitto.conf");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mosquitto");
            // Ready when the port accepts; retry if the old socket lingered.
            let ready = loop {
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    break true;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on port {}; run `mosquitto -c {}` to see why",
                self.port,
                conf.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the broker with SIGTERM: connections drop, and persistent
    /// sessions (the test subscriber's) are saved for the restart.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// Delivery QoS: the lower of the publisher's and the subscription's.
    pub qos: u8,
    pub correlation: Option<Vec<u8>>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {:?}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// An MQTT 5 subscriber (rumqttc) that records every message it receives,
/// reconnecting (with a persistent session) if the broker restarts.
pub struct Subscriber {
    pub seen: Arc<Mutex<Vec<Received>>>,
    connected: Arc<AtomicBool>,
    client: rumqttc::v5::AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes to `filter` at QoS 1 and waits for the SUBACK.
    pub async fn start(port: u16, filter: &str) -> Subscriber {
        Self::start_with(port, filter, None).await
    }

    /// Like [`Subscriber::start`], with a user name and password.
    pub async fn start_auth(port: u16, filter: &str, user: &str, password: &str) -> Subscriber {
        Self::start_with(port, filter, Some((user, password))).await
    }

    async fn start_with(port: u16, filter: &str, login: Option<(&str, &str)>) -> Subscriber {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::Packet;
        let id = format!("test-sub-{}", free_port());
        let mut opts = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_start(false)
            .set_session_expiry_interval(Some(3600))
            .set_max_packet_size(Some(10 * 1024 * 1024));
        if let Some((u, p)) = login {
            opts.set_credentials(u, p);
        }
        let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 1000);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connected = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let task = {
            let seen = seen.clone();
            let connected = connected.clone();
            let subscribed = subscribed.clone();
            let resub = client.clone();
            let filter = filter.to_string();
            tokio::spawn(async move {
                loop {
                    match el.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                            let props = p.properties.unwrap_or_default();
                            seen.lock().unwrap().push(Received {
                                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                                qos: p.qos as u8,
                                correlation: props.correlation_data.map(|b| b.to_vec()),
                            });
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(ack))) => {
                            if !ack.session_present {
                                let _ = resub.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                            }
                            connected.store(true, Ordering::SeqCst)
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(_))) => {
                            subscribed.store(true, Ordering::SeqCst)
                        }
                        Ok(_) => {}
                        Err(_) => {
                            connected.store(false, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
        };
        wait_until("subscriber SUBACK", Duration::from_secs(10), || {
            subscribed.load(Ordering::SeqCst)
        })
        .await;
        Subscriber {
            seen,
            connected,
            client,
            task,
        }
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Messages received so far on `topic`.
    pub fn on(&self, topic: &str) -> Vec<Received> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until some message on `topic` satisfies `pred`; returns it.
    pub async fn wait_for(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Received {
        let mut found = None;
        wait_until(&format!("a matching message on {topic}"), timeout, || {
            found = self.on(topic).into_iter().find(|m| pred(m));
            found.is_some()
        })
        .await;
        found.unwrap_or_else(|| unreachable!())
    }

    /// Publishes a message (for commands).
    pub async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        props: Option<rumqttc::v5::mqttbytes::v5::PublishProperties>,
    ) {
        let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
        match props {
            Some(p) => self
                .client
                .publish_with_properties(topic, qos, false, payload.to_vec(), p)
                .await
                .expect("publish"),
            None => self
                .client
                .publish(topic, qos, false, payload.to_vec())
                .await
                .expect("publish"),
        }
    }
}

impl Subscriber {
    /// Publishes a retained message (QoS 1).
    pub async fn publish_retained(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                true,
                payload.to_vec(),
            )
            .await
            .expect("publish");
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Telemetry `seq` numbers per device, in arrival order, from the
/// subscriber's messages on `{root}/devices/+/telemetry`.
pub fn seqs_by_device(msgs: &[Received]) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut out: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for m in msgs.iter().filter(|m| m.topic.ends_with("/telemetry")) {
        let j = m.json();
        let device = j["device"].as_str().unwrap_or_default().to_string();
        out.entry(device)
            .or_default()
            .push(j["seq"].as_u64().unwrap_or(0));
    }
    out
}

/// Checks that `seqs` (arrival order, duplicates allowed) never goes back
/// to an earlier new number and covers 1..=n with no gap; returns the
/// number of duplicates.
pub fn assert_complete_in_order(device: &str, seqs: &[u64], n: u64) -> usize {
    let mut next = 1;
    let mut dups = 0;
    for &s in seqs {
        if s == next {
            next += 1;
        } else if s < next {
            dups += 1; // a resend of something already seen
        } else {
            panic!(
                "device {device}: seq {s} arrived while {next} was still missing (gap or reorder)"
            );
        }
    }
    assert!(
        next > n,
        "device {device}: only 1..{} of 1..={n} arrived",
        next - 1
    );
    dups
}

/// A TCP proxy between the gateway and the broker that the test can freeze:
/// frozen, it keeps every connection open but moves no byte either way
/// (they wait in the sockets, as on a black-holed path; TCP never loses
/// bytes in the middle of a live connection), like a hung uplink; cut, it
/// closes every connection it carries, like a link that dropped.
pub struct Proxy {
    pub port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
    /// Cancelled by [`Proxy::cut`]: the connections open at that moment.
    open: Arc<Mutex<tokio_util::sync::CancellationToken>>,
    task: tokio::task::JoinHandle<()>,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (frozen, thawed) = tokio::sync::watch::channel(false);
        let open = Arc::new(Mutex::new(tokio_util::sync::CancellationToken::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = {
            let open = open.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        continue;
                    };
                    let cut = open.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(pump(ri, wo, thawed.clone(), cut.clone()));
                    tokio::spawn(pump(ro, wi, thawed.clone(), cut));
                }
            })
        };
        Proxy {
            port,
            frozen,
            open,
            task,
            connections,
        }
    }

    pub fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }

    /// Closes every connection open now (both sides see the socket close,
    /// and bytes held by a freeze are gone with it); new ones are carried
    /// as before.
    pub fn cut(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.cancel();
        *open = tokio_util::sync::CancellationToken::new();
    }
}

/// Copies bytes one way until either side closes or the connection is
/// cut; while frozen, moves nothing and keeps the socket open.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
    cut: tokio_util::sync::CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = r.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = cut.cancelled() => return,
        };
        tokio::select! {
            thawed = frozen.wait_for(|f| !f) => if thawed.is_err() { return },
            _ = cut.cancelled() => return,
        }
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // The other side closed: while frozen, that is not passed on either.
    tokio::select! {
        _ = frozen.wait_for(|f| !f) => {}
        _ = cut.cancelled() => {}
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Test PKI made with the openssl CLI: a CA, a server certificate for
/// 127.0.0.1/localhost, and a client certificate, all signed by the CA.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn generate() -> Pki {
        let openssl = require("openssl", "openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        )
        .expect("write ext");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ferrogate test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        for who in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Whether `path` is on a filesystem we mounted (for tmpfs tests).
/// Whether the test runs as root; when not, says on stderr that `what`
/// needs root and is skipped (CI runs as root and so runs it).
pub fn running_as_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: {what} needs root (CI runs it as root)");
    }
    root
}

pub fn mount_tmpfs(path: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn umount(path: &Path) {
    let _ = Command::new("umount").arg(path).status();
}

/// Starts the northbound path for `gateway` against `url` with test-friendly
/// timings; `tweak` adjusts the configs.
pub async fn start_north(
    gateway: &str,
    url: &str,
    state_dir: &Path,
    tweak: impl FnOnce(
        &mut ferrogate::north::config::MqttConfig,
        &mut ferrogate::north::config::OutboxConfig,
    ),
) -> ferrogate::north::North {
    use ferrogate::north::config::{MqttConfig, OutboxConfig};
    use ferrogate_sdk::config::ConfigDuration;
    let mut mqtt = MqttConfig {
        url: url.to_string(),
        reconnect_min: ConfigDuration(Duration::from_millis(100)),
        reconnect_max: ConfigDuration(Duration::from_millis(500)),
        ..MqttConfig::default()
    };
    let mut outbox = OutboxConfig::default();
    tweak(&mut mqtt, &mut outbox);
    ferrogate::north::North::start(
        gateway,
        &mqtt,
        &outbox,
        state_dir,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("north starts")
}

/// A telemetry message with one reading per `(point, value)`.
pub fn telemetry(device: &str, points: &[(&str, ferrogate_sdk::Value)]) -> ferrogate_sdk::Uplink {
    let ts = ferrogate_sdk::Timestamp::now();
    ferrogate_sdk::Uplink::Telemetry(ferrogate_sdk::Telemetry {
        device: device.to_string(),
        ts,
        readings: points
            .iter()
            .map(|(p, v)| ferrogate_sdk::Reading::ok(*p, v.clone(), ts))
            .collect(),
    })
}

/// A gateway in a child process (this test binary run again with
/// `--ignored --exact child_writer`), so a test can SIGKILL it.
pub struct ChildGateway {
    child: Child,
    pub stored: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
}

impl ChildGateway {
    /// `env` configures [`child_writer_main`]: NORTH_CHILD_URL, _STATE,
    /// _GATEWAY, _DEVICES, _FSYNC, _META.
    pub fn spawn(env: &[(&str, String)]) -> ChildGateway {
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--ignored",
            "--exact",
            "child_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child gateway");
        let stored = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let out = child.stdout.take().expect("stdout");
        let s = stored.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut parts = line.split_whitespace();
                if parts.next() == Some("stored") {
                    if let (Some(d), Some(n)) =
                        (parts.next(), parts.next().and_then(|n| n.parse().ok()))
                    {
                        s.lock().unwrap().insert(d.to_string(), n);
                    }
                }
            }
        });
        ChildGateway { child, stored }
    }

    pub fn stored(&self, device: &str) -> u64 {
        self.stored
            .lock()
            .unwrap()
            .get(device)
            .copied()
            .unwrap_or(0)
    }

    /// SIGKILL: no flush, no DISCONNECT, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a child gateway: sends telemetry for each device as fast as
/// the outbox takes it (1 ms apart) and prints `stored DEVICE SEQ` lines.
pub async fn child_writer_main() {
    use ferrogate_sdk::{DeviceMeta, DeviceState, DeviceStatus, Uplink, UplinkSender, Value};
    let Ok(url) = std::env::var("NORTH_CHILD_URL") else {
        return; // run as a normal (ignored) test: nothing to do
    };
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let state = PathBuf::from(var("NORTH_CHILD_STATE"));
    let devices: usize = var("NORTH_CHILD_DEVICES").parse().unwrap_or(1);
    let always = var("NORTH_CHILD_FSYNC") != "interval";
    let north = start_north(&var("NORTH_CHILD_GATEWAY"), &url, &state, |_, o| {
        o.fsync = if always {
            ferrogate::north::config::FsyncPolicy::Always
        } else {
            ferrogate::north::config::FsyncPolicy::Interval
        };
    })
    .await;
    let up = UplinkSender::new("sim", north.uplink_tx());
    let names: Vec<String> = (0..devices).map(|i| format!("d{i}")).collect();
    if var("NORTH_CHILD_META") == "1" {
        for d in &names {
            up.send(Uplink::Status(DeviceStatus {
                device: d.clone(),
                state: DeviceState::Online,
                reason: None,
                ts: ferrogate_sdk::Timestamp::now(),
            }))
            .await
            .unwrap();
            up.send(Uplink::Meta(DeviceMeta {
                device: d.clone(),
                ..Default::default()
            }))
            .await
            .unwrap();
        }
    }
    let mut last_print = Instant::now();
    loop {
        for d in &names {
            up.send(telemetry(d, &[("x", Value::Int(1))]))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        if last_print.elapsed() > Duration::from_millis(50) {
            last_print = Instant::now();
            for d in &names {
                if let Some(n) = north.last_seq(d) {
                    println!("stored {d} {n}");
                }
            }
        }
    }
}
