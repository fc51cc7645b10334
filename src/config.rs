//! Gateway configuration: one directory holding `gateway.toml` (gateway id,
//! MQTT, outbox, control socket, metrics, logging), `conf.d/*.toml` (adapter
//! and device definitions, one top-level table per protocol) and
//! `profiles/*.toml` (reusable device profiles).
//!
//! [`load`] reads all of it, lets each [`AdapterKind`] validate and build its
//! section, and returns every problem found (not only the first), each with
//! `file:line:col`, a message and where possible a hint. The `[[report]]`
//! table (report by exception for devices of any adapter) is read by
//! [`report_table`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferrogate_sdk::config::{
    BuildContext, ConfigDuration, ConfigIssue, Node, Pos, Section, SourceFile,
};
use ferrogate_sdk::{AdapterKind, BuiltAdapter};
use serde::Deserialize;

mod report_table;

use crate::north::config::{ConfigProblem, MqttConfig, OutboxConfig};
use crate::router::CommandsConfig;
use crate::sparkplug::config::SparkplugConfig;

/// The top-level keys of `gateway.toml`.
const GATEWAY_KEYS: &[&str] = &[
    "gateway_id",
    "state_dir",
    "mqtt",
    "outbox",
    "control",
    "metrics",
    "log",
    "supervisor",
    "commands",
    "sparkplug",
];

/// `gateway.toml`, fully parsed.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Names this gateway on MQTT (`ferrogate/{gateway_id}/...`).
    pub gateway_id: String,
    /// Where the outbox and sequence numbers live.
    pub state_dir: PathBuf,
    pub mqtt: MqttConfig,
    pub outbox: OutboxConfig,
    pub control: ControlConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub supervisor: SupervisorConfig,
    pub commands: CommandsConfig,
    pub sparkplug: SparkplugConfig,
}

/// `[control]`: the local control socket the CLI talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix socket path.
    #[serde(default = "default_control_socket")]
    pub socket: PathBuf,
    /// File mode of the socket; group members may use the CLI.
    #[serde(default = "default_control_mode")]
    pub mode: u32,
}

fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/ferrogate/control.sock")
}
fn default_control_mode() -> u32 {
    0o660
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: default_control_socket(),
            mode: default_control_mode(),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` to serve `/metrics` on; loopback by default. Empty disables.
    #[serde(default = "default_metrics_bind")]
    pub bind: String,
}

fn default_metrics_bind() -> String {
    "127.0.0.1:9464".into()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind: default_metrics_bind(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `info,ferrogate_modbus=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
        }
    }
}

/// `[supervisor]`: adapter restart backoff.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    #[serde(default = "default_restart_min")]
    pub restart_backoff_min: ConfigDuration,
    #[serde(default = "default_restart_max")]
    pub restart_backoff_max: ConfigDuration,
    /// An adapter whose loop has not made progress for this long is stalled:
    /// the systemd watchdog pings stop and status names it.
    #[serde(default = "default_stall_after")]
    pub stall_after: ConfigDuration,
}

fn default_restart_min() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(1))
}
fn default_restart_max() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(60))
}
fn default_stall_after() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(30))
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            restart_backoff_min: default_restart_min(),
            restart_backoff_max: default_restart_max(),
            stall_after: default_stall_after(),
        }
    }
}

/// Everything `load` produced: the gateway settings and the built adapters.
pub struct LoadedConfig {
    pub gateway: GatewayConfig,
    pub adapters: Vec<BuiltAdapter>,
    /// Facts for the integrator (resolved addresses, line loads).
    pub notes: Vec<String>,
    /// Every file that was read.
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for LoadedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedConfig")
            .field("gateway", &self.gateway)
            .field(
                "adapters",
                &self.adapters.iter().map(|a| &a.name).collect::<Vec<_>>(),
            )
            .field("files", &self.files)
            .finish()
    }
}

/// Read, validate and build the configuration in `dir`. Starts no I/O
/// besides reading the files.
pub fn load(dir: &Path, kinds: &[Box<dyn AdapterKind>]) -> Result<LoadedConfig, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let gateway_file = read_file(&dir.join("gateway.toml"), &mut issues);
    let conf_files = read_dir_files(&dir.join("conf.d"), &mut issues);
    let profile_files: Vec<SourceFile> = profile_dirs(dir)
        .iter()
        .flat_map(|d| read_dir_files(d, &mut issues))
        .collect();

    let gateway_doc = gateway_file
        .as_ref()
        .and_then(|f| keep_ok(f.parse(), &mut issues));
    let conf_docs: Vec<_> = conf_files
        .iter()
        .map(|f| keep_ok(f.parse(), &mut issues))
        .collect();
    let profile_docs: Vec<_> = profile_files
        .iter()
        .map(|f| keep_ok(f.parse(), &mut issues))
        .collect();

    let gateway = match (&gateway_file, &gateway_doc) {
        (Some(file), Some(doc)) => parse_gateway(Node::new(file, doc), dir, &mut issues),
        _ => None,
    };

    let mut ctx = profile_context(&profile_files, &profile_docs);
    if let Some(g) = &gateway {
        ctx.state_dir = Some(g.state_dir.as_path());
    }

    let roots: Vec<Node<'_>> = conf_files
        .iter()
        .zip(&conf_docs)
        .filter_map(|(f, d)| d.as_ref().map(|d| Node::new(f, d)))
        .collect();
    let known: Vec<&str> = kinds
        .iter()
        .map(|k| k.key())
        .chain([report_table::KEY])
        .collect();
    for root in &roots {
        for (key, pos) in root.keys() {
            if !known.contains(&key) {
                issues.push(
                    ConfigIssue::at(pos, format!("unknown adapter kind `{key}`")).with_hint(
                        format!(
                            "conf.d files hold one table per protocol: {}",
                            known.join(", ")
                        ),
                    ),
                );
            }
        }
    }

    let mut adapters = Vec::new();
    for kind in kinds {
        let parts: Vec<Node<'_>> = roots.iter().filter_map(|r| r.get(kind.key())).collect();
        if parts.is_empty() {
            continue;
        }
        match kind.build(&Section::new(kind.key(), parts), &ctx) {
            Ok(built) => adapters.extend(built),
            Err(found) => issues.extend(found),
        }
    }
    issues.extend(check_devices(&adapters));
    let mut report_notes = Vec::new();
    report_table::apply(&roots, &mut adapters, &mut issues, &mut report_notes);

    let files = gateway_file
        .iter()
        .chain(&conf_files)
        .chain(&profile_files)
        .map(|f| f.path().to_path_buf())
        .collect();
    let profile_notes: Vec<String> = ctx
        .used_profiles()
        .into_iter()
        .map(|(name, pos)| format!("profile `{name}` from {}", pos.file.display()))
        .collect();
    match gateway {
        Some(gateway) if issues.is_empty() => {
            let notes = adapters
                .iter()
                .flat_map(|a| a.notes.clone())
                .chain(report_notes)
                .chain(profile_notes)
                .collect();
            Ok(LoadedConfig {
                gateway,
                adapters,
                notes,
                files,
            })
        }
        _ => {
            issues.sort_by(|a, b| a.pos.cmp(&b.pos));
            Err(issues)
        }
    }
}

/// Run `f` on the `key` section of `dir`'s `conf.d/` with the profiles in
/// reach, as [`load`] hands it to an adapter kind (for diagnostics that
/// need more than the built adapters, such as `ferrogate modbus plan`).
/// Files that cannot be read or parsed are errors.
pub fn with_section<T>(
    dir: &Path,
    key: &'static str,
    f: impl FnOnce(&Section<'_>, &BuildContext<'_>) -> T,
) -> Result<T, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let conf_files = read_dir_files(&dir.join("conf.d"), &mut issues);
    let profile_files: Vec<SourceFile> = profile_dirs(dir)
        .iter()
        .flat_map(|d| read_dir_files(d, &mut issues))
        .collect();
    let conf_docs: Vec<_> = conf_files
        .iter()
        .map(|f| keep_ok(f.parse(), &mut issues))
        .collect();
    let profile_docs: Vec<_> = profile_files
        .iter()
        .map(|f| keep_ok(f.parse(), &mut issues))
        .collect();
    if !issues.is_empty() {
        return Err(issues);
    }
    let ctx = profile_context(&profile_files, &profile_docs);
    let parts: Vec<Node<'_>> = conf_files
        .iter()
        .zip(&conf_docs)
        .filter_map(|(f, d)| d.as_ref().map(|d| Node::new(f, d)))
        .filter_map(|root| root.get(key))
        .collect();
    Ok(f(&Section::new(key, parts), &ctx))
}

/// A build context holding the profiles by file stem: the first
/// directory on the search path that has one wins.
fn profile_context<'a>(
    files: &'a [SourceFile],
    docs: &'a [Option<toml::Spanned<toml::de::DeValue<'a>>>],
) -> BuildContext<'a> {
    let mut ctx = BuildContext::default();
    for (file, doc) in files.iter().zip(docs) {
        if let (Some(doc), Some(stem)) = (doc, file.path().file_stem()) {
            ctx.profiles
                .entry(stem.to_string_lossy().into_owned())
                .or_insert_with(|| Node::new(file, doc));
        }
    }
    ctx
}

/// Where profiles are found, in order (the first file with a name wins):
/// the config directory's `profiles/`, then the directories of
/// `FERROGATE_PROFILE_PATH` (colon-separated) when it is set, otherwise
/// the ones the package ships in [`SHIPPED_PROFILES`].
pub fn profile_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![dir.join("profiles")];
    match std::env::var_os("FERROGATE_PROFILE_PATH") {
        Some(path) => {
            dirs.extend(std::env::split_paths(&path).filter(|p| !p.as_os_str().is_empty()))
        }
        None => dirs.push(PathBuf::from(SHIPPED_PROFILES)),
    }
    dirs
}

/// The profiles the .deb installs.
pub const SHIPPED_PROFILES: &str = "/usr/share/ferrogate/profiles";

fn keep_ok<T>(r: Result<T, Vec<ConfigIssue>>, issues: &mut Vec<ConfigIssue>) -> Option<T> {
    r.map_err(|e| issues.extend(e)).ok()
}

fn read_file(path: &Path, issues: &mut Vec<ConfigIssue>) -> Option<SourceFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(SourceFile::new(path, text)),
        Err(e) => {
            issues.push(ConfigIssue {
                pos: None,
                message: format!("cannot read {}: {e}", path.display()),
                hint: Some("a config directory holds gateway.toml, conf.d/*.toml and profiles/*.toml; see config/gateway.toml for a reference".into()),
            });
            None
        }
    }
}

/// Files in `conf.d/` and `profiles/` that are not read because they do
/// not end in `.toml` (`meters.yaml`, `plant.toml.bak`), for `config check`
/// and the daemon's start to say so rather than ignore them silently.
pub fn ignored_files(dir: &Path) -> Vec<PathBuf> {
    let mut ignored: Vec<PathBuf> = ["conf.d", "profiles"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "toml"))
        .collect();
    ignored.sort();
    ignored
}

/// The `*.toml` files of a directory, sorted by name; a missing directory is empty.
fn read_dir_files(dir: &Path, issues: &mut Vec<ConfigIssue>) -> Vec<SourceFile> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            issues.push(ConfigIssue {
                pos: None,
                message: format!("cannot read directory {}: {e}", dir.display()),
                hint: None,
            });
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| read_file(p, issues)).collect()
}

fn parse_gateway(
    root: Node<'_>,
    dir: &Path,
    issues: &mut Vec<ConfigIssue>,
) -> Option<GatewayConfig> {
    for (key, pos) in root.keys() {
        if !GATEWAY_KEYS.contains(&key) {
            issues.push(
                ConfigIssue::at(pos, format!("unknown key `{key}` in gateway.toml")).with_hint(
                    format!(
                        "expected one of: {}; adapters and devices go in conf.d/*.toml",
                        GATEWAY_KEYS.join(", ")
                    ),
                ),
            );
        }
    }
    let start = issues.len();
    let gateway_id = match root.get("gateway_id") {
        None => {
            issues.push(
                root.issue("missing `gateway_id`")
                    .with_hint("add e.g. gateway_id = \"site-a-gw1\""),
            );
            None
        }
        Some(node) => match node.as_str() {
            None => {
                issues.push(node.issue("`gateway_id` must be a string"));
                None
            }
            Some(id) => match topic_level_problem(id) {
                Some(problem) => {
                    issues.push(node.issue(format!("invalid gateway_id `{id}`: {problem}")));
                    None
                }
                None => Some(id.to_string()),
            },
        },
    };
    let state_dir = match root.get("state_dir") {
        None => PathBuf::from("/var/lib/ferrogate"),
        Some(node) => match node.as_str() {
            Some(s) => dir.join(s),
            None => {
                issues.push(node.issue("`state_dir` must be a string (a directory path)"));
                PathBuf::new()
            }
        },
    };
    let mqtt = table_or_default::<MqttConfig>(root, "mqtt", issues);
    let outbox = table_or_default::<OutboxConfig>(root, "outbox", issues);
    let control = table_or_default::<ControlConfig>(root, "control", issues);
    let metrics = table_or_default::<MetricsConfig>(root, "metrics", issues);
    let log = table_or_default::<LogConfig>(root, "log", issues);
    let supervisor = table_or_default::<SupervisorConfig>(root, "supervisor", issues);
    let commands = table_or_default::<CommandsConfig>(root, "commands", issues);
    if let (Some(c), Some(node)) = (&commands, root.get("commands")) {
        if c.default_timeout > c.max_timeout {
            issues.push(node.issue("default_timeout is greater than max_timeout"));
        }
        if c.queue_depth == 0 || c.in_flight == 0 {
            issues.push(node.issue("queue_depth and in_flight must be at least 1"));
        }
    }
    if let (Some(s), Some(node)) = (&supervisor, root.get("supervisor")) {
        if s.restart_backoff_min > s.restart_backoff_max {
            issues.push(node.issue("restart_backoff_min is greater than restart_backoff_max"));
        }
    }
    if let (Some(m), Some(node)) = (&mqtt, root.get("mqtt")) {
        issues.extend(locate(node, m.validate()));
    }
    if let (Some(o), Some(node)) = (&outbox, root.get("outbox")) {
        issues.extend(locate(node, o.validate()));
    }
    let sparkplug = table_or_default::<SparkplugConfig>(root, "sparkplug", issues);
    if let (Some(sp), Some(node)) = (&sparkplug, root.get("sparkplug")) {
        issues.extend(locate(node, sp.validate()));
        let inherits_tls = mqtt.as_ref().is_some_and(|m| m.url.starts_with("mqtts://"));
        if sp.enabled && sp.url.is_none() && inherits_tls {
            issues.push(
                node.issue(
                    "the Sparkplug session has no TLS yet and would use the mqtts:// [mqtt] url",
                )
                .with_hint("set sparkplug.url to a plain mqtt:// listener"),
            );
        }
    }
    if issues.len() > start {
        return None;
    }
    Some(GatewayConfig {
        gateway_id: gateway_id?,
        state_dir,
        mqtt: mqtt?,
        outbox: outbox?,
        control: control?,
        metrics: metrics?,
        log: log?,
        supervisor: supervisor?,
        commands: commands?,
        sparkplug: sparkplug?,
    })
}

/// Turn the north side's field-path problems into positioned issues.
fn locate(table: Node<'_>, problems: Vec<ConfigProblem>) -> Vec<ConfigIssue> {
    problems
        .into_iter()
        .map(|problem| {
            let at = problem
                .field
                .split('.')
                .try_fold(table, |n, key| n.get(key))
                .unwrap_or(table);
            at.issue(problem.message)
        })
        .collect()
}

fn table_or_default<T: serde::de::DeserializeOwned + Default>(
    root: Node<'_>,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    match root.get(key) {
        None => Some(T::default()),
        Some(node) => node
            .parse::<T>()
            .map(|l| l.value)
            .map_err(|e| issues.push(e))
            .ok(),
    }
}

/// Why a name cannot be one MQTT topic level, if it cannot.
fn topic_level_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains(['/', '+', '#']) {
        Some("it must not contain `/`, `+` or `#` (it becomes an MQTT topic level)")
    } else if name.chars().any(char::is_control) {
        Some("it must not contain control characters")
    } else {
        None
    }
}

/// Device names are unique across the whole gateway and valid topic levels.
fn check_devices(adapters: &[BuiltAdapter]) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut seen: BTreeMap<&str, &Pos> = BTreeMap::new();
    for adapter in adapters {
        for (name, pos) in &adapter.devices {
            if let Some(problem) = topic_level_problem(name) {
                issues.push(ConfigIssue::at(
                    pos.clone(),
                    format!("invalid device name `{name}`: {problem}"),
                ));
            }
            match seen.get(name.as_str()) {
                Some(first) => issues.push(
                    ConfigIssue::at(pos.clone(), format!("duplicate device name `{name}`"))
                        .with_hint(format!("`{name}` is already defined at {first}; device names are unique across all adapters")),
                ),
                None => {
                    seen.insert(name, pos);
                }
            }
        }
    }
    issues
}
