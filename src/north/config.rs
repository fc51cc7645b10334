//! The `[mqtt]` and `[outbox]` tables of `gateway.toml`: typed, documented,
//! with every default in [`defaults`], and [`MqttConfig::validate`] /
//! [`OutboxConfig::validate`] checks that `ferrogate config check` reports.

use std::path::PathBuf;
use std::time::Duration;

use ferrogate_sdk::config::ConfigDuration;
use serde::Deserialize;

/// Every default of the northbound configuration, in one place.
pub mod defaults {
    use super::*;

    /// A broker on the same box.
    pub fn url() -> String {
        "mqtt://127.0.0.1:1883".into()
    }
    /// MQTT keep-alive. 30 s notices a dead link within about a minute
    /// without measurable traffic on a metered uplink.
    pub fn keep_alive() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(30))
    }
    /// QoS 1: every message is acknowledged, which the outbox relies on.
    pub fn qos() -> u8 {
        1
    }
    pub fn reconnect_min() -> ConfigDuration {
        ConfigDuration(Duration::from_millis(500))
    }
    pub fn reconnect_max() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(30))
    }
    /// 1 MiB, far above rumqttc's 10 KiB default: a device's meta or a
    /// serial frame can exceed 10 KiB, and the broker's own limit applies anyway.
    pub fn max_packet_size() -> u32 {
        1024 * 1024
    }
    /// A publish without PUBACK for this long means the uplink hangs: the
    /// session drops the connection and reconnects.
    pub fn ack_timeout() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(20))
    }
    /// Unacknowledged publishes on the wire at once.
    pub fn session_expiry() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(3600))
    }
    pub fn inflight() -> u16 {
        256
    }
    /// 128 MiB: about 500k typical telemetry messages (~250 bytes), days of
    /// a busy site's data, and small next to a gateway's flash.
    pub fn max_bytes() -> u64 {
        128 * 1024 * 1024
    }
    /// 4 MiB segments: dropping or deleting one is a single unlink, and a
    /// full outbox drops at most ~3% of its content at once.
    pub fn segment_bytes() -> u64 {
        4 * 1024 * 1024
    }
    pub fn fsync() -> FsyncPolicy {
        FsyncPolicy::Always
    }
    pub fn fsync_interval() -> ConfigDuration {
        ConfigDuration(Duration::from_millis(200))
    }
    pub fn commit_delay() -> ConfigDuration {
        ConfigDuration(Duration::from_millis(2))
    }
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum MqttVersion {
    /// MQTT 5: response topics and correlation data for command replies.
    #[default]
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1, for older brokers.
    #[serde(rename = "3.1.1")]
    V311,
}

/// The `[mqtt]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port`, `mqtts://host:port` (TLS), or `"embedded"` (the
    /// runtime starts an in-process broker and hands the session its
    /// `mqtt://127.0.0.1:<port>`). Default `mqtt://127.0.0.1:1883`.
    #[serde(default = "defaults::url")]
    pub url: String,
    /// `"5"` (default) or `"3.1.1"`.
    #[serde(default)]
    pub version: MqttVersion,
    /// MQTT client id; default `ferrogate-{gateway_id}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Topic root; default `ferrogate/{gateway_id}`.
    #[serde(default)]
    pub topic_root: Option<String>,
    /// Keep-alive interval; default 30s.
    #[serde(default = "defaults::keep_alive")]
    pub keep_alive: ConfigDuration,
    /// User name for broker authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (trailing newline ignored). Never logged.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password. Never logged.
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS settings, used with `mqtts://`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// QoS of northbound publishes: 1 (default; the outbox then removes a
    /// message only after its PUBACK) or 0 (no acknowledgement: a message
    /// leaves the outbox once written to the socket).
    #[serde(default = "defaults::qos")]
    pub qos: u8,
    /// First reconnect delay; doubled per failed attempt up to
    /// `reconnect_max`, with ±20% jitter. Default 500ms.
    #[serde(default = "defaults::reconnect_min")]
    pub reconnect_min: ConfigDuration,
    /// Longest reconnect delay; default 30s.
    #[serde(default = "defaults::reconnect_max")]
    pub reconnect_max: ConfigDuration,
    /// Largest MQTT packet sent or received, in bytes; default 1 MiB.
    #[serde(default = "defaults::max_packet_size")]
    pub max_packet_size: u32,
    /// Longest wait for a PUBACK before the link is declared hung and the
    /// connection is replaced; default 20s.
    #[serde(default = "defaults::ack_timeout")]
    pub ack_timeout: ConfigDuration,
    /// Maximum unacknowledged publishes on the wire; default 256.
    #[serde(default = "defaults::inflight")]
    pub inflight: u16,
    /// How long the broker keeps the gateway's session (its subscription
    /// and the commands published meanwhile) across a disconnect or
    /// restart; `"0s"` for a clean session (commands published while the
    /// gateway is away are then lost). Default 1h. MQTT 3.1.1 brokers keep
    /// a persistent session until their own expiry.
    #[serde(default = "defaults::session_expiry")]
    pub session_expiry: ConfigDuration,
    /// MQTT 5 response topics a request may name; others are refused with
    /// `bad_request`. Default `{topic_root}/responses/`.
    #[serde(default)]
    pub response_topic_prefix: Option<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: defaults::url(),
            version: MqttVersion::default(),
            client_id: None,
            topic_root: None,
            keep_alive: defaults::keep_alive(),
            username: None,
            password_file: None,
            password_env: None,
            tls: None,
            qos: defaults::qos(),
            reconnect_min: defaults::reconnect_min(),
            reconnect_max: defaults::reconnect_max(),
            max_packet_size: defaults::max_packet_size(),
            ack_timeout: defaults::ack_timeout(),
            inflight: defaults::inflight(),
            response_topic_prefix: None,
            session_expiry: defaults::session_expiry(),
        }
    }
}

/// The `[mqtt.tls]` table. PEM files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) the broker's certificate must chain to. Default:
    /// the system bundle `/etc/ssl/certs/ca-certificates.crt`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mutual TLS (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PKCS#8, PKCS#1 or SEC1) for mutual TLS.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The system CA bundle used when `ca_file` is not set.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl TlsConfig {
    pub fn ca_path(&self) -> PathBuf {
        self.ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE))
    }
}

/// A problem found by `validate`: the dotted path of the field inside its
/// table (e.g. `tls.ca_file`), for the runtime to turn into a position, and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub field: &'static str,
    pub message: String,
}

impl ConfigProblem {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        ConfigProblem {
            field,
            message: message.into(),
        }
    }
}

/// Where the broker is, from `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerAddr {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub fn parse(url: &str) -> Result<BrokerAddr, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "unsupported broker url `{url}`: expected mqtt://host:port, mqtts://host:port or \"embedded\""
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') {
            // The url is logged and shown by `status`: a password in it
            // would leak. The url itself is not repeated here for that reason.
            return Err(
                "credentials in the broker url are not accepted (the url is logged): \
                 set mqtt.username and mqtt.password_file or mqtt.password_env"
                    .into(),
            );
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("unterminated [ in broker url `{url}`"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, parse_port(p, url)?),
                None => (h, default_port),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, parse_port(p, url)?),
                None => (rest, default_port),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("missing or invalid host in broker url `{url}`"));
        }
        Ok(BrokerAddr {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

fn parse_port(p: &str, url: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .map_err(|_| format!("invalid port `{p}` in broker url `{url}`"))
}

impl MqttConfig {
    /// Checks that need more than the types: url form, QoS, backoff order,
    /// readable and parseable certificate files, credentials.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.url != "embedded" {
            match BrokerAddr::parse(&self.url) {
                Ok(addr) => {
                    if !addr.tls && self.tls.is_some() {
                        out.push(ConfigProblem::new(
                            "tls",
                            "[mqtt.tls] is set but the url is mqtt://; use mqtts:// to connect with TLS",
                        ));
                    }
                    if addr.tls {
                        out.extend(self.validate_tls());
                    }
                }
                Err(e) => out.push(ConfigProblem::new("url", e)),
            }
        }
        if self.qos > 1 {
            out.push(ConfigProblem::new(
                "qos",
                format!("qos {} is not supported: use 1 (default) or 0", self.qos),
            ));
        }
        if self.reconnect_min.0 > self.reconnect_max.0 {
            out.push(ConfigProblem::new(
                "reconnect_min",
                "reconnect_min is larger than reconnect_max",
            ));
        }
        if self.keep_alive.0 < Duration::from_secs(1)
            || self.keep_alive.0 > Duration::from_secs(65535)
        {
            out.push(ConfigProblem::new(
                "keep_alive",
                "keep_alive must be between 1s and 65535s",
            ));
        }
        if self.max_packet_size < 1024 {
            out.push(ConfigProblem::new(
                "max_packet_size",
                "max_packet_size below 1024 bytes cannot carry a device's meta",
            ));
        }
        if self.inflight == 0 {
            out.push(ConfigProblem::new(
                "inflight",
                "inflight must be at least 1",
            ));
        }
        if let Some(prefix) = &self.response_topic_prefix {
            if prefix.is_empty() || prefix.contains(['+', '#', '\0']) {
                out.push(ConfigProblem::new(
                    "response_topic_prefix",
                    "response_topic_prefix must be a non-empty topic without wildcards",
                ));
            }
        }
        if self.ack_timeout.0 < Duration::from_millis(100) {
            out.push(ConfigProblem::new(
                "ack_timeout",
                "ack_timeout below 100ms would drop healthy connections",
            ));
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            out.push(ConfigProblem::new(
                "password_env",
                "set either password_file or password_env, not both",
            ));
        }
        if let Some(p) = &self.password_file {
            if let Err(e) = ferrogate_sdk::config::read_named_file(p, super::MAX_PASSWORD_FILE) {
                out.push(ConfigProblem::new(
                    "password_file",
                    format!("cannot read password file {}: {e}", p.display()),
                ));
            }
        }
        if (self.password_file.is_some() || self.password_env.is_some()) && self.username.is_none()
        {
            out.push(ConfigProblem::new(
                "username",
                "a password is configured but no username",
            ));
        }
        if let Some(root) = &self.topic_root {
            if root.is_empty() || root.contains(['+', '#']) || root.ends_with('/') {
                out.push(ConfigProblem::new(
                    "topic_root",
                    "topic_root must be non-empty, without wildcards (+, #) or a trailing /",
                ));
            }
        }
        out
    }

    fn validate_tls(&self) -> Vec<ConfigProblem> {
        let tls = self.tls.clone().unwrap_or_default();
        let mut out = Vec::new();
        if let Err(e) = super::tls::load_roots(&tls.ca_path()) {
            out.push(ConfigProblem::new("tls.ca_file", e.to_string()));
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) => out.push(ConfigProblem::new(
                "tls.cert_file",
                "cert_file is set without key_file (mutual TLS needs both)",
            )),
            (None, Some(_)) => out.push(ConfigProblem::new(
                "tls.key_file",
                "key_file is set without cert_file (mutual TLS needs both)",
            )),
            (Some(cert), Some(key)) => {
                if let Err(e) = super::tls::load_certs(cert) {
                    out.push(ConfigProblem::new("tls.cert_file", e.to_string()));
                }
                if let Err(e) = super::tls::load_key(key) {
                    out.push(ConfigProblem::new("tls.key_file", e.to_string()));
                }
            }
            (None, None) => {}
        }
        out
    }
}

/// When the outbox forces written records to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// A message counts as accepted (and may be published) only after it is
    /// on disk. Appends are group-committed: one fsync covers every message
    /// that arrived meanwhile. Survives a power cut with nothing lost.
    Always,
    /// Written at once, fsynced every `fsync_interval`. A process crash loses
    /// nothing (the kernel has the data); a power cut or kernel crash can lose
    /// up to `fsync_interval` of accepted messages.
    Interval,
}

/// The `[outbox]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Disk space the outbox may use, in bytes; when full the oldest
    /// messages are dropped and counted. Default 128 MiB.
    #[serde(default = "defaults::max_bytes")]
    pub max_bytes: u64,
    /// Size of one segment file, in bytes; the unit of deletion. Default 4 MiB.
    #[serde(default = "defaults::segment_bytes")]
    pub segment_bytes: u64,
    /// `"always"` (default) or `"interval"`.
    #[serde(default = "defaults::fsync")]
    pub fsync: FsyncPolicy,
    /// fsync period with `fsync = "interval"`; default 200ms.
    #[serde(default = "defaults::fsync_interval")]
    pub fsync_interval: ConfigDuration,
    /// How long the writer waits for more messages once one arrived, so a
    /// burst (every device polled on one tick) is one group commit and one
    /// fsync instead of dozens. Adds at most this much latency; default
    /// 2ms, "0s" commits whatever is there at once.
    #[serde(default = "defaults::commit_delay")]
    pub commit_delay: ConfigDuration,
    /// Maximum publishes per second, so draining a backlog (after an outage
    /// or a restart) does not trip a cloud broker's rate limit. Live data
    /// keeps being accepted meanwhile and is sent after the older messages
    /// of its device. Unset (default): as fast as the broker acknowledges.
    #[serde(default)]
    pub replay_rate: Option<u32>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: defaults::max_bytes(),
            segment_bytes: defaults::segment_bytes(),
            fsync: defaults::fsync(),
            fsync_interval: defaults::fsync_interval(),
            commit_delay: defaults::commit_delay(),
            replay_rate: None,
        }
    }
}

impl OutboxConfig {
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.segment_bytes < 64 * 1024 {
            out.push(ConfigProblem::new(
                "segment_bytes",
                "segment_bytes must be at least 65536",
            ));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            out.push(ConfigProblem::new(
                "max_bytes",
                format!(
                    "max_bytes must be at least two segments ({} bytes)",
                    2 * self.segment_bytes
                ),
            ));
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval.0.is_zero() {
            out.push(ConfigProblem::new(
                "fsync_interval",
                "fsync_interval must be above 0; use fsync = \"always\" instead",
            ));
        }
        if self.commit_delay.0 > Duration::from_secs(1) {
            out.push(ConfigProblem::new(
                "commit_delay",
                "commit_delay above 1s holds every message that long; a few ms groups a burst",
            ));
        }
        if self.replay_rate == Some(0) {
            out.push(ConfigProblem::new(
                "replay_rate",
                "replay_rate 0 would never publish; remove it for no limit",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = BrokerAddr::parse("mqtt://broker.local:1884").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("broker.local", 1884, false)
        );
        let a = BrokerAddr::parse("mqtts://broker.local").unwrap();
        assert_eq!((a.port, a.tls), (8883, true));
        let a = BrokerAddr::parse("mqtt://[::1]:1883").unwrap();
        assert_eq!(a.host, "::1");
        assert!(BrokerAddr::parse("http://x").is_err());
        assert!(BrokerAddr::parse("mqtt://:1883").is_err());
        assert!(BrokerAddr::parse("mqtt://h:99999").is_err());
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_repeating_them() {
        for url in ["mqtt://user:s3cret@broker:1883", "mqtts://user@broker"] {
            let e = BrokerAddr::parse(url).unwrap_err();
            assert!(e.contains("password_file"), "{e}");
            assert!(!e.contains("s3cret") && !e.contains("user@"), "{e}");
            let cfg = MqttConfig {
                url: url.into(),
                ..Default::default()
            };
            let problems = cfg.validate();
            assert_eq!(problems.len(), 1, "config check refuses {url}");
            assert_eq!(problems[0].field, "url");
        }
    }

    #[test]
    fn endless_files_are_refused_with_a_clear_error() {
        let cfg: MqttConfig = toml::from_str(
            "url = \"mqtts://h\"\nusername = \"u\"\npassword_file = \"/dev/zero\"\n[tls]\nca_file = \"/dev/zero\"\n",
        )
        .unwrap();
        let problems = cfg.validate();
        let fields: Vec<_> = problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["tls.ca_file", "password_file"], "{problems:?}");
        for p in &problems {
            assert!(p.message.contains("larger than"), "{p:?}");
        }
    }

    #[test]
    fn defaults_are_valid_and_mistakes_are_found() {
        assert!(MqttConfig::default().validate().is_empty());
        assert!(OutboxConfig::default().validate().is_empty());
        let cfg: MqttConfig = toml::from_str(
            "url = \"mqtts://h\"\nqos = 2\nversion = \"3.1.1\"\n[tls]\nca_file = \"/nonexistent/ca.pem\"\ncert_file = \"/x\"\n",
        )
        .unwrap();
        let fields: Vec<_> = cfg.validate().iter().map(|p| p.field).collect();
        assert_eq!(fields, ["tls.ca_file", "tls.cert_file", "qos"]);
        assert!(toml::from_str::<MqttConfig>("version = \"4\"").is_err());
        assert!(toml::from_str::<MqttConfig>("urll = \"x\"").is_err());
        let ob: OutboxConfig = toml::from_str("max_bytes = 100000\nfsync = \"interval\"").unwrap();
        assert_eq!(ob.validate()[0].field, "max_bytes");
        let ob: OutboxConfig = toml::from_str("commit_delay = \"5s\"").unwrap();
        let fields: Vec<_> = ob.validate().iter().map(|p| p.field).collect();
        assert_eq!(fields, ["commit_delay"]);
        let ob: OutboxConfig = toml::from_str("commit_delay = \"0s\"").unwrap();
        assert!(ob.validate().is_empty());
    }
}
