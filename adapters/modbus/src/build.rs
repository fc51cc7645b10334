//! From the `modbus` section to validated line specifications: every
//! connection, device, profile and point is checked, all problems are
//! collected with their positions, Modicon references are resolved, and
//! each serial line's load is estimated from its baud rate and frames.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferrogate_sdk::PointMeta;
use ferrogate_sdk::config::{
    BuildContext, ConfigDuration, ConfigIssue, Located, Node, Pos, Section,
};
use ferrogate_sdk::report::{DevicePolicy, PointReport, ReportKeys, ReportPolicy};

use crate::config::{
    ConnectionConfig, DeviceConfig, DialInFraming, PointConfig, ProfileConfig, TransportKind,
};
use crate::planner::{Limits, Planner, ReadRequest};
use crate::point::{Area, Order, Point, PointType, TypeName, resolve_modicon};
use crate::transport::{DialIn, Endpoint, Framing, Identity, Parity, Reconnect, SerialSettings};

/// A validated connection with its devices: what one line task runs.
#[derive(Debug, Clone)]
pub struct LineSpec {
    pub name: String,
    pub endpoint: Endpoint,
    pub timeout: Duration,
    pub gap: Duration,
    /// Typical device turnaround, for the line time estimate.
    pub response_time: Duration,
    pub reconnect: Reconnect,
    pub backoff_after: u32,
    pub backoff_max: Duration,
    pub devices: Vec<DeviceSpec>,
}

#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub name: String,
    pub pos: Pos,
    pub unit: u8,
    pub description: Option<String>,
    /// Shared by every device that uses the same profile as it is.
    pub points: Arc<[Point]>,
    /// What the device's meta message says about `points`, shared alike.
    pub point_meta: Arc<[PointMeta]>,
    /// Points grouped by poll period, shared like `points`.
    pub groups: Arc<[PollGroup]>,
    pub limits: Limits,
    /// Report by exception, applied by the runtime's stage.
    pub policy: DevicePolicy,
    pub offline_after: u32,
    pub single_register_writes: bool,
    pub verify_writes: bool,
    pub operations: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PollGroup {
    pub period: Duration,
    pub points: Vec<usize>,
    /// The requests that read `points`, before any split.
    pub plan: Arc<[ReadRequest]>,
}

const OPERATIONS: [&str; 2] = ["read", "write"];

/// Lines ready to run, with the notes `config check` prints.
pub struct Built {
    pub lines: Vec<LineSpec>,
    pub notes: Vec<Vec<String>>,
}

pub fn build(section: &Section<'_>, ctx: &BuildContext<'_>) -> Result<Built, Vec<ConfigIssue>> {
    let mut issues = section.unknown_keys(&["connection", "device"]);
    let mut connections: Vec<(Located<ConnectionConfig>, LineSpec)> = Vec::new();
    let mut names: BTreeMap<String, Pos> = BTreeMap::new();
    for node in section.list("connection") {
        let conn = match node.parse::<ConnectionConfig>() {
            Ok(c) => c,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        if let Some(first) = names.get(&conn.name) {
            issues.push(
                conn.origin
                    .issue(
                        "name",
                        format!("connection `{}` is defined twice", conn.name),
                    )
                    .with_hint(format!("the first definition is at {first}")),
            );
            continue;
        }
        names.insert(conn.name.clone(), conn.origin.field("name"));
        if let Some(spec) = line_spec(&conn, &mut issues) {
            connections.push((conn, spec));
        }
    }

    let mut devices_seen: BTreeMap<String, Pos> = BTreeMap::new();
    let mut shared = SharedMaps::default();
    let mut notes: Vec<Vec<String>> = vec![Vec::new(); connections.len()];
    for node in section.list("device") {
        let dev = match node.parse::<DeviceConfig>() {
            Ok(d) => d,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        if let Some(first) = devices_seen.get(&dev.name) {
            issues.push(
                dev.origin
                    .issue("name", format!("device `{}` is defined twice", dev.name))
                    .with_hint(format!("the first definition is at {first}")),
            );
            continue;
        }
        devices_seen.insert(dev.name.clone(), dev.origin.field("name"));
        let line = connections
            .iter()
            .position(|(c, _)| c.name == dev.connection);
        if line.is_none() && !names.contains_key(&dev.connection) {
            let known: Vec<&str> = names.keys().map(String::as_str).collect();
            issues.push(
                dev.origin
                    .issue(
                        "connection",
                        format!("unknown connection `{}`", dev.connection),
                    )
                    .with_hint(if known.is_empty() {
                        "define it with [[modbus.connection]]".to_string()
                    } else {
                        format!("defined connections: {}", known.join(", "))
                    }),
            );
        }
        let transport = line.map(|i| connections[i].0.transport);
        let mut device_notes = Vec::new();
        let found = device_spec(
            node,
            &dev,
            transport,
            ctx,
            &mut shared,
            &mut issues,
            &mut device_notes,
        );
        if let Some(spec) = found
            && let Some(i) = line
        {
            connections[i].1.devices.push(spec);
            notes[i].extend(device_notes);
        }
    }

    for (i, (conn, spec)) in connections.iter().enumerate() {
        if let Some(a) = conn.address.as_deref()
            && matches!(tcp_address(a), Ok((_, true)))
        {
            notes[i].push(format!(
                "connection `{}`: `{a}` has no port; using 502, the Modbus TCP port",
                conn.name
            ));
        }
        if let Some(serial) = spec.endpoint.serial() {
            match line_load(conn, spec, serial) {
                Ok(note) => notes[i].push(note),
                Err(mut found) => issues.append(&mut found),
            }
        }
    }

    if issues.is_empty() {
        Ok(Built {
            lines: connections.into_iter().map(|(_, s)| s).collect(),
            notes,
        })
    } else {
        Err(issues)
    }
}

/// A TCP endpoint as written in `address`: `host:port`, `host` (port 502),
/// `[v6]:port` or `[v6]`. Validated like the CoAP binds: an IPv4-looking
/// host must be an IPv4 address (`127.0.0.300` is not), a host name uses
/// name characters only, and a URL (`http://...`) or a missing host
/// (`:502`) is refused. Returns `host:port` and whether the port defaulted.
pub fn tcp_address(a: &str) -> Result<(String, bool), (String, String)> {
    let example = "e.g. address = \"10.0.0.5:502\" or \"meter.plant.local\" (port 502)";
    if a.contains("://") {
        return Err((
            format!("`{a}` is a URL; `address` is host:port"),
            example.into(),
        ));
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err((format!("`{a}`: unclosed `[`"), example.into()));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err((format!("`{v6}` is not an IPv6 address"), example.into()));
        }
        match after {
            "" => (format!("[{v6}]"), None),
            p => match p.strip_prefix(':') {
                Some(p) => (format!("[{v6}]"), Some(p)),
                None => return Err((format!("`{a}`: expected `:port` after `]`"), example.into())),
            },
        }
    } else if a.matches(':').count() > 1 {
        return Err((
            format!("`{a}`: an IPv6 address needs brackets"),
            "e.g. address = \"[fd00::5]:502\"".into(),
        ));
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (a.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err((format!("`{a}` has no host before the port"), example.into()));
    }
    if !host.starts_with('[') {
        let numeric = host.chars().all(|c| c.is_ascii_digit() || c == '.');
        if numeric && host.parse::<std::net::Ipv4Addr>().is_err() {
            return Err((format!("`{host}` is not an IPv4 address"), example.into()));
        }
        let name_chars = host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !name_chars {
            return Err((
                format!("`{host}` is not a host name or address"),
                example.into(),
            ));
        }
    }
    match port {
        None => Ok((format!("{host}:502"), true)),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok((format!("{host}:{n}"), false)),
            _ => Err((
                format!("`{a}`: `{p}` is not a port number (1-65535)"),
                example.into(),
            )),
        },
    }
}

fn line_spec(conn: &Located<ConnectionConfig>, issues: &mut Vec<ConfigIssue>) -> Option<LineSpec> {
    let before = issues.len();
    let positive = |issues: &mut Vec<ConfigIssue>, field: &str, d: Option<Duration>| {
        if d.is_some_and(|d| d.is_zero()) {
            issues.push(
                conn.origin
                    .issue(field, format!("`{field}` must be more than zero")),
            );
        }
    };
    for (field, d) in [
        ("timeout", conn.timeout),
        ("connect_timeout", conn.connect_timeout),
        ("reconnect_min", conn.reconnect_min),
        ("reconnect_max", conn.reconnect_max),
        ("backoff_max", conn.backoff_max),
    ] {
        positive(issues, field, d.map(|d| d.0));
    }
    if conn.backoff_after == Some(0) {
        issues.push(
            conn.origin
                .issue("backoff_after", "`backoff_after` must be at least 1"),
        );
    }
    let serial_only = ["baud", "parity", "data_bits", "stop_bits"];
    let dial_in_only = [
        ("listen", conn.listen.is_some()),
        ("registration", conn.registration.is_some()),
        ("peer", conn.peer.is_some()),
        ("framing", conn.framing.is_some()),
    ];
    if conn.transport != TransportKind::DialIn {
        for (field, given) in dial_in_only {
            if given {
                issues.push(conn.origin.issue(
                    field,
                    format!("`{field}` applies only to `transport = \"dial-in\"`"),
                ));
            }
        }
    }
    let endpoint = match conn.transport {
        TransportKind::DialIn => {
            for (field, given) in [
                ("address", conn.address.is_some()),
                ("port", conn.port.is_some()),
                ("baud", conn.baud.is_some()),
                ("parity", conn.parity.is_some()),
                ("data_bits", conn.data_bits.is_some()),
                ("stop_bits", conn.stop_bits.is_some()),
            ] {
                if given {
                    issues.push(
                        conn.origin
                            .issue(
                                field,
                                format!("`{field}` does not apply to a dial-in connection"),
                            )
                            .with_hint("the device connects to `listen`"),
                    );
                }
            }
            let listen = match conn
                .listen
                .as_deref()
                .map(str::parse::<std::net::SocketAddr>)
            {
                Some(Ok(a)) => a.to_string(),
                Some(Err(_)) => {
                    issues.push(
                        conn.origin
                            .issue("listen", "`listen` must be an IP address and port")
                            .with_hint("e.g. listen = \"0.0.0.0:9001\""),
                    );
                    String::new()
                }
                None => {
                    issues.push(conn.origin.issue(
                        "transport",
                        "a dial-in connection needs `listen = \"ip:port\"`",
                    ));
                    String::new()
                }
            };
            let identity = match (&conn.registration, &conn.peer) {
                (Some(r), None) if !r.is_empty() => Identity::Registration(r.as_bytes().to_vec()),
                (None, Some(p)) => match p.parse::<std::net::IpAddr>() {
                    Ok(ip) => Identity::Peer(ip),
                    Err(_) => {
                        issues.push(
                            conn.origin
                                .issue("peer", format!("`{p}` is not an IP address")),
                        );
                        Identity::Registration(Vec::new())
                    }
                },
                (Some(_), Some(_)) => {
                    issues.push(conn.origin.issue(
                        "peer",
                        "set `registration` or `peer`, not both: the device is known by one",
                    ));
                    Identity::Registration(Vec::new())
                }
                _ => {
                    issues.push(
                        conn.origin
                            .issue("transport", "a dial-in connection needs `registration` (what the device sends first) or `peer` (its source address)")
                            .with_hint("e.g. registration = \"860000000000001\" (the modem's IMEI)"),
                    );
                    Identity::Registration(Vec::new())
                }
            };
            Endpoint::DialIn(DialIn {
                listen,
                identity,
                framing: match conn.framing {
                    Some(DialInFraming::Tcp) => Framing::Tcp,
                    _ => Framing::Rtu,
                },
            })
        }
        TransportKind::Tcp | TransportKind::RtuOverTcp | TransportKind::AsciiOverTcp => {
            if conn.port.is_some() {
                issues.push(
                    conn.origin
                        .issue(
                            "port",
                            "`port` is the serial device of an `rtu` or `ascii` connection",
                        )
                        .with_hint("use `address = \"host:502\"` for TCP"),
                );
            }
            let serial_given = [
                conn.baud.is_some(),
                conn.parity.is_some(),
                conn.data_bits.is_some(),
                conn.stop_bits.is_some(),
            ];
            for (field, given) in serial_only.into_iter().zip(serial_given) {
                if given {
                    issues.push(conn.origin.issue(
                        field,
                        format!("`{field}` applies only to a serial line (`transport = \"rtu\"` or `\"ascii\"`)"),
                    ));
                }
            }
            let address = match conn.address.as_deref() {
                None => {
                    issues.push(conn.origin.issue(
                        "transport",
                        "a TCP connection needs `address = \"host:port\"`",
                    ));
                    String::new()
                }
                Some(a) if a.trim().is_empty() => {
                    issues.push(conn.origin.issue("address", "`address` is empty"));
                    String::new()
                }
                Some(a) => match tcp_address(a) {
                    Ok((address, _)) => address,
                    Err((message, hint)) => {
                        issues.push(conn.origin.issue("address", message).with_hint(hint));
                        String::new()
                    }
                },
            };
            match conn.transport {
                TransportKind::Tcp => Endpoint::Tcp { address },
                TransportKind::AsciiOverTcp => Endpoint::AsciiOverTcp { address },
                _ => Endpoint::RtuOverTcp { address },
            }
        }
        TransportKind::Rtu | TransportKind::Ascii => {
            let ascii = conn.transport == TransportKind::Ascii;
            if conn.address.is_some() {
                issues.push(
                    conn.origin
                        .issue("address", "`address` is for TCP; a serial line uses `port`")
                        .with_hint("e.g. port = \"/dev/ttyUSB0\""),
                );
            }
            let baud = conn.baud.unwrap_or(9600);
            if !(300..=4_000_000).contains(&baud) {
                issues.push(
                    conn.origin
                        .issue("baud", format!("baud rate {baud} is out of range")),
                );
            }
            // ASCII's characters are 7 bits (Modbus over serial line 2.5.2).
            let data_bits = conn.data_bits.unwrap_or(if ascii { 7 } else { 8 });
            if !(7..=8).contains(&data_bits) {
                issues.push(conn.origin.issue("data_bits", "`data_bits` must be 7 or 8"));
            }
            let stop_bits = conn.stop_bits.unwrap_or(1);
            if !(1..=2).contains(&stop_bits) {
                issues.push(conn.origin.issue("stop_bits", "`stop_bits` must be 1 or 2"));
            }
            let path = conn.port.clone().unwrap_or_else(|| {
                issues.push(
                    conn.origin
                        .issue(
                            "transport",
                            "a serial connection (`rtu`, `ascii`) needs `port`, the serial device",
                        )
                        .with_hint("e.g. port = \"/dev/ttyUSB0\""),
                );
                String::new()
            });
            let serial = SerialSettings {
                path,
                baud,
                data_bits,
                parity: conn.parity.unwrap_or(Parity::Even),
                stop_bits,
            };
            if ascii {
                Endpoint::AsciiSerial(serial)
            } else {
                Endpoint::Serial(serial)
            }
        }
    };
    let gap = match (&endpoint, conn.frame_gap) {
        (_, Some(g)) => g.0,
        (Endpoint::Serial(s), None) => {
            // 3.5 character times; fixed 1.75 ms above 19200 baud (spec 2.5.1.1).
            if s.baud > 19_200 {
                Duration::from_micros(1750)
            } else {
                Duration::from_secs_f64(3.5 * f64::from(char_bits(s)) / f64::from(s.baud))
            }
        }
        _ => Duration::ZERO,
    };
    if issues.len() > before {
        return None;
    }
    Some(LineSpec {
        name: conn.name.clone(),
        endpoint,
        timeout: conn.timeout.map_or(Duration::from_secs(1), |d| d.0),
        gap,
        response_time: conn
            .response_time
            .map_or(Duration::from_millis(10), |d| d.0),
        reconnect: Reconnect {
            connect_timeout: conn.connect_timeout.map_or(Duration::from_secs(3), |d| d.0),
            min: conn
                .reconnect_min
                .map_or(Duration::from_millis(500), |d| d.0),
            max: conn.reconnect_max.map_or(Duration::from_secs(30), |d| d.0),
        },
        backoff_after: conn.backoff_after.unwrap_or(3),
        backoff_max: conn.backoff_max.map_or(Duration::from_secs(60), |d| d.0),
        devices: Vec::new(),
    })
}

fn char_bits(s: &SerialSettings) -> u32 {
    1 + u32::from(s.data_bits) + u32::from(s.parity != Parity::None) + u32::from(s.stop_bits)
}

/// Point maps of profiles used without inline points, built once and
/// shared by every device using them (`None`: the profile has errors,
/// already reported).
#[derive(Default)]
struct SharedMaps {
    maps: BTreeMap<SharedKey, Option<PointMap>>,
    /// Poll groups by profile and the device's poll period.
    groups: BTreeMap<(SharedKey, Duration), Arc<[PollGroup]>>,
}

/// A device's points and their meta, as shared between devices.
#[derive(Clone)]
struct PointMap {
    points: Arc<[Point]>,
    meta: Arc<[PointMeta]>,
}

impl PointMap {
    fn new(points: Vec<Point>) -> Self {
        let meta = points.iter().map(Point::meta).collect();
        PointMap {
            points: points.into(),
            meta,
        }
    }
}

/// A profile and the request limits its map was checked against.
type SharedKey = (String, u16, u16);

fn device_spec(
    node: Node<'_>,
    dev: &Located<DeviceConfig>,
    transport: Option<TransportKind>,
    ctx: &BuildContext<'_>,
    shared: &mut SharedMaps,
    issues: &mut Vec<ConfigIssue>,
    notes: &mut Vec<String>,
) -> Option<DeviceSpec> {
    let before = issues.len();
    let max_unit = if transport == Some(TransportKind::Tcp) {
        255
    } else {
        247
    };
    if !(1..=max_unit).contains(&dev.unit) {
        issues.push(
            dev.origin
                .issue(
                    "unit",
                    format!("unit {} is out of range 1..={max_unit}", dev.unit),
                )
                .with_hint("unit 0 is broadcast and never answers"),
        );
    }
    let poll = dev.poll.map_or(Duration::from_secs(1), |d| d.0);
    if poll.is_zero() {
        issues.push(dev.origin.issue("poll", "`poll` must be more than zero"));
    }
    if let Some(ops) = &dev.operations {
        for (i, op) in ops.iter().enumerate() {
            if !OPERATIONS.contains(&op.as_str()) {
                issues.push(
                    dev.origin
                        .issue(
                            &format!("operations.{i}"),
                            format!("unknown operation `{op}`"),
                        )
                        .with_hint("Modbus devices support: read, write"),
                );
            }
        }
    }
    if dev.offline_after == Some(0) {
        issues.push(
            dev.origin
                .issue("offline_after", "`offline_after` must be at least 1"),
        );
    }
    let limits = Limits {
        max_gap: dev.max_gap.unwrap_or(Limits::default().max_gap),
        max_registers: dev.max_registers.unwrap_or(125),
        max_bits: dev.max_bits.unwrap_or(2000),
    };
    if !(1..=125).contains(&limits.max_registers) {
        issues.push(
            dev.origin
                .issue("max_registers", "`max_registers` must be 1..=125"),
        );
    }
    if !(1..=2000).contains(&limits.max_bits) {
        issues.push(dev.origin.issue("max_bits", "`max_bits` must be 1..=2000"));
    }

    // Points: the profile's first, then the device's own.
    let mut point_nodes: Vec<Node<'_>> = Vec::new();
    let mut profile_keys: Option<Located<ProfileConfig>> = None;
    if let Some(profile) = &dev.profile {
        match ctx.profile(profile) {
            Some(root) => {
                match root.parse::<ProfileConfig>() {
                    Ok(p) => profile_keys = Some(p),
                    Err(e) => issues.push(e.with_hint(
                        "a profile has `description`, report keys (`report_on_change`, `deadband`, ...) and [[point]] entries",
                    )),
                }
                match root.get("point") {
                    Some(points) => point_nodes.extend(points.elements()),
                    None => {
                        issues.push(root.issue(format!("profile `{profile}` has no [[point]]")))
                    }
                }
            }
            None => {
                let known: Vec<&String> = ctx.profiles.keys().collect();
                issues.push(
                    dev.origin
                        .issue("profile", format!("unknown profile `{profile}`"))
                        .with_hint(if known.is_empty() {
                            format!("create profiles/{profile}.toml")
                        } else {
                            format!(
                                "profiles found: {}",
                                known
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }),
                );
            }
        }
    }
    if let Some(points) = node.get("point") {
        point_nodes.extend(points.elements());
    }
    if point_nodes.is_empty() && dev.profile.is_none() {
        issues.push(
            dev.origin
                .issue("name", format!("device `{}` has no points", dev.name))
                .with_hint("add [[modbus.device.point]] entries or a `profile`"),
        );
    }

    let report = device_report(dev, profile_keys.as_ref(), issues, notes);
    let inline = node.get("point").is_some();
    let mut shared_key = None;
    let PointMap { points, meta } = match (&dev.profile, inline) {
        (Some(profile), false) => {
            let key = (profile.clone(), limits.max_registers, limits.max_bits);
            shared_key = Some(key.clone());
            match shared.maps.get(&key) {
                Some(map) => map.clone()?,
                None => {
                    let label = format!("profile {profile}: ");
                    let map =
                        point_map(point_nodes, &label, limits, issues, notes).map(PointMap::new);
                    shared.maps.insert(key, map.clone());
                    map?
                }
            }
        }
        _ => PointMap::new(point_map(
            point_nodes,
            &format!("{}.", dev.name),
            limits,
            issues,
            notes,
        )?),
    };
    if issues.len() > before {
        return None;
    }
    let groups = match shared_key {
        Some(key) => shared
            .groups
            .entry((key, poll))
            .or_insert_with(|| poll_groups(&points, poll, limits))
            .clone(),
        None => poll_groups(&points, poll, limits),
    };
    let policy = DevicePolicy {
        report,
        points: points
            .iter()
            .filter(|p| p.report != PointReport::default())
            .map(|p| (p.name.to_string(), p.report))
            .collect(),
        transforms: Default::default(),
    };
    Some(DeviceSpec {
        name: dev.name.clone(),
        pos: dev.origin.entry(),
        unit: dev.unit as u8,
        description: dev.description.clone(),
        points,
        point_meta: meta,
        groups,
        limits,
        policy,
        offline_after: dev.offline_after.unwrap_or(3),
        single_register_writes: dev.single_register_writes.unwrap_or(false),
        verify_writes: dev.verify_writes.unwrap_or(false),
        operations: dev.operations.clone(),
    })
}

/// The device's report-by-exception keys, checked by the SDK as every
/// adapter's are.
fn device_report(
    dev: &Located<DeviceConfig>,
    profile: Option<&Located<ProfileConfig>>,
    issues: &mut Vec<ConfigIssue>,
    notes: &mut Vec<String>,
) -> ReportPolicy {
    let p = |f: fn(&ProfileConfig) -> Option<f64>| profile.and_then(|p| f(p));
    let d = |f: fn(&ProfileConfig) -> Option<ConfigDuration>| profile.and_then(|p| f(p));
    let on_change = dev
        .report_on_change
        .or(profile.and_then(|p| p.report_on_change))
        .unwrap_or(false);
    // The device's deadband, else the profile's (one kind of it, not a mix).
    let (deadband, deadband_percent, span) =
        if dev.deadband.is_some() || dev.deadband_percent.is_some() || dev.span.is_some() {
            (dev.deadband, dev.deadband_percent, dev.span)
        } else {
            (p(|p| p.deadband), p(|p| p.deadband_percent), p(|p| p.span))
        };
    let keys = ReportKeys {
        deadband,
        deadband_percent,
        span,
        min_interval: dev.min_interval.or(d(|p| p.min_interval)).map(|d| d.0),
        max_interval: dev.max_interval.or(d(|p| p.max_interval)).map(|d| d.0),
    };
    if !on_change
        && (keys.deadband.is_some()
            || keys.deadband_percent.is_some()
            || keys.max_interval.is_some())
    {
        notes.push(format!(
            "{}: `deadband` and `max_interval` apply only with `report_on_change = true`: every poll is sent",
            dev.name
        ));
    }
    keys.device(on_change).unwrap_or_else(|errors| {
        issues.extend(errors.into_iter().map(|(key, m)| dev.origin.issue(key, m)));
        ReportPolicy::default()
    })
}

/// `points` grouped by their poll period (`poll` unless a point has its
/// own), each with its first plan.
fn poll_groups(points: &[Point], poll: Duration, limits: Limits) -> Arc<[PollGroup]> {
    let mut groups: Vec<(Duration, Vec<usize>)> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let period = p.poll.unwrap_or(poll);
        match groups.iter_mut().find(|(g, _)| *g == period) {
            Some((_, members)) => members.push(i),
            None => groups.push((period, vec![i])),
        }
    }
    let planner = Planner::new(limits);
    groups
        .into_iter()
        .map(|(period, members)| PollGroup {
            period,
            plan: planner.plan(points, &members).into(),
            points: members,
        })
        .collect()
}

/// Parse, check and resolve a list of point entries. `label` prefixes
/// notes: `meter-7.` for a device, `profile energy-meter:` for a profile.
fn point_map(
    point_nodes: Vec<Node<'_>>,
    label: &str,
    limits: Limits,
    issues: &mut Vec<ConfigIssue>,
    notes: &mut Vec<String>,
) -> Option<Vec<Point>> {
    let before = issues.len();
    let mut points: Vec<(Point, Located<PointConfig>)> = Vec::new();
    let mut point_names: BTreeMap<String, Pos> = BTreeMap::new();
    for pnode in point_nodes {
        let cfg = match pnode.parse::<PointConfig>() {
            Ok(p) => p,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        if let Some(first) = point_names.get(&cfg.name) {
            issues.push(
                cfg.origin
                    .issue(
                        "name",
                        format!("point `{}` is defined twice in {}", cfg.name, owner(label)),
                    )
                    .with_hint(format!("the first definition is at {first}")),
            );
            continue;
        }
        point_names.insert(cfg.name.clone(), cfg.origin.field("name"));
        if let Some(point) = point(&cfg, limits, issues) {
            if let Some(reference) = cfg.modicon {
                notes.push(format!(
                    "{label}{}: Modicon {reference} = {} {} (zero-based protocol address)",
                    point.name, point.area, point.address
                ));
            }
            points.push((point, cfg));
        }
    }
    check_overlaps(label, &points, issues);
    if issues.len() > before {
        return None;
    }
    // Collected in place, the Vec would keep the larger (Point, config) allocation.
    let mut points: Vec<Point> = points.into_iter().map(|(p, _)| p).collect();
    points.shrink_to_fit();
    Some(points)
}

fn point(
    cfg: &Located<PointConfig>,
    limits: Limits,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Point> {
    let before = issues.len();
    let issue = |field: &str, message: String| cfg.origin.issue(field, message);
    let (area, address) = match (cfg.address, cfg.modicon) {
        (Some(_), Some(_)) => {
            issues.push(
                issue(
                    "modicon",
                    "give either `address` or `modicon`, not both".into(),
                )
                .with_hint("`address` is zero-based; `modicon = 40001` means holding address 0"),
            );
            return None;
        }
        (None, None) => {
            issues.push(
                issue("name", format!("point `{}` has no `address`", cfg.name))
                    .with_hint("`address = 0` (zero-based) or `modicon = 40001`"),
            );
            return None;
        }
        (Some(address), None) => {
            if address > 65_535 {
                issues.push(
                    issue("address", format!("address {address} is out of range 0..=65535")).with_hint(
                        "addresses are zero-based protocol addresses; for a Modicon reference like 400001 use `modicon`",
                    ),
                );
                return None;
            }
            (cfg.area.unwrap_or(Area::Holding), address as u16)
        }
        (None, Some(reference)) => match resolve_modicon(reference) {
            Ok((area, address)) => {
                if let Some(given) = cfg.area
                    && given != area
                {
                    issues.push(issue(
                        "area",
                        format!("`area = {given:?}` contradicts Modicon {reference} ({area})")
                            .to_lowercase(),
                    ));
                }
                (area, address)
            }
            Err(e) => {
                issues.push(issue("modicon", e));
                return None;
            }
        },
    };
    let type_name = cfg.data_type.unwrap_or(if area.is_bits() {
        TypeName::Bool
    } else {
        TypeName::U16
    });
    let ty = match type_name {
        TypeName::Bool if area.is_bits() => {
            if cfg.bit.is_some() {
                issues.push(issue(
                    "bit",
                    format!("`bit` applies to registers, not to {area}s"),
                ));
            }
            PointType::Bool
        }
        TypeName::Bool => match cfg.bit {
            Some(b) if b < 16 => PointType::Bit(b),
            Some(b) => {
                issues.push(issue("bit", format!("bit {b} is out of range 0..=15")));
                PointType::Bit(0)
            }
            None => {
                issues.push(
                    issue(
                        "type",
                        format!("a bool point in {area}s needs `bit` (0..=15)"),
                    )
                    .with_hint("or use area = \"coil\" / \"discrete\""),
                );
                PointType::Bit(0)
            }
        },
        other if area.is_bits() => {
            issues.push(
                issue(
                    "type",
                    format!(
                        "{area}s hold one bit; type `{}` needs registers",
                        type_label(other)
                    ),
                )
                .with_hint("use type = \"bool\", or area = \"holding\" / \"input\""),
            );
            return None;
        }
        TypeName::U16 => PointType::U16,
        TypeName::I16 => PointType::I16,
        TypeName::U32 => PointType::U32,
        TypeName::I32 => PointType::I32,
        TypeName::U64 => PointType::U64,
        TypeName::I64 => PointType::I64,
        TypeName::F32 => PointType::F32,
        TypeName::F64 => PointType::F64,
        TypeName::String | TypeName::Bytes => {
            let length = cfg.length.unwrap_or_else(|| {
                issues.push(issue(
                    "type",
                    format!(
                        "a {} point needs `length` (registers)",
                        type_label(type_name)
                    ),
                ));
                1
            });
            if length == 0 {
                issues.push(issue("length", "`length` must be at least 1".into()));
            }
            if type_name == TypeName::String {
                PointType::String(length.max(1))
            } else {
                PointType::Bytes(length.max(1))
            }
        }
    };
    if cfg.bit.is_some() && !matches!(ty, PointType::Bit(_)) && !area.is_bits() {
        issues.push(issue(
            "bit",
            "`bit` applies only to `type = \"bool\"`".into(),
        ));
    }
    if cfg.length.is_some() && !matches!(ty, PointType::String(_) | PointType::Bytes(_)) {
        issues.push(issue(
            "length",
            "`length` applies only to string and bytes".into(),
        ));
    }
    if cfg.order.is_some() && (area.is_bits() || matches!(ty, PointType::Bool)) {
        issues.push(issue("order", "`order` does not apply to bits".into()));
    }
    let end = u32::from(address) + u32::from(ty.width());
    if end > 65_536 {
        issues.push(issue(
            "address",
            format!("the point ends at address {}, beyond 65535", end - 1),
        ));
    }
    let max = limits.max_for(area);
    if ty.width() > max {
        issues.push(issue(
            "length",
            format!(
                "the point needs {} registers; one read can carry at most {max}",
                ty.width()
            ),
        ));
    }
    let numeric = ty.is_numeric();
    for (field, set) in [
        ("scale", cfg.scale.is_some()),
        ("offset", cfg.offset.is_some()),
        ("min", cfg.min.is_some()),
        ("max", cfg.max.is_some()),
        ("deadband", cfg.deadband.is_some()),
        ("deadband_percent", cfg.deadband_percent.is_some()),
        ("span", cfg.span.is_some()),
    ] {
        if set && !numeric {
            issues.push(issue(
                field,
                format!("`{field}` applies only to numeric points"),
            ));
        }
    }
    let scale = cfg.scale.unwrap_or(1.0);
    if scale == 0.0 || !scale.is_finite() {
        issues.push(issue(
            "scale",
            "`scale` must be a finite number other than 0".into(),
        ));
    }
    let offset = cfg.offset.unwrap_or(0.0);
    if !offset.is_finite() {
        issues.push(issue("offset", "`offset` must be finite".into()));
    }
    if let (Some(lo), Some(hi)) = (cfg.min, cfg.max)
        && lo > hi
    {
        issues.push(issue(
            "min",
            format!("`min` {lo} is greater than `max` {hi}"),
        ));
    }
    if cfg.writable && !area.is_writable() {
        issues.push(issue(
            "writable",
            format!("{area}s cannot be written; only coils and holding registers can"),
        ));
    }
    if cfg.poll.is_some_and(|p| p.is_zero()) {
        issues.push(issue("poll", "`poll` must be more than zero".into()));
    }
    let keys = ReportKeys {
        deadband: cfg.deadband,
        deadband_percent: cfg.deadband_percent,
        span: cfg.span,
        min_interval: cfg.min_interval.map(|d| d.0),
        max_interval: cfg.max_interval.map(|d| d.0),
    };
    let report = keys.point().unwrap_or_else(|errors| {
        issues.extend(errors.into_iter().map(|(key, m)| issue(key, m)));
        PointReport::default()
    });
    if issues.len() > before {
        return None;
    }
    Some(Point {
        name: cfg.name.as_str().into(),
        area,
        address,
        ty,
        order: cfg.order.unwrap_or(Order::Abcd),
        scale,
        offset,
        unit: cfg.unit.clone(),
        description: cfg.description.clone(),
        writable: cfg.writable,
        min: cfg.min,
        max: cfg.max,
        poll: cfg.poll.map(|p| p.0),
        report,
    })
}

fn type_label(t: TypeName) -> &'static str {
    match t {
        TypeName::Bool => "bool",
        TypeName::U16 => "u16",
        TypeName::I16 => "i16",
        TypeName::U32 => "u32",
        TypeName::I32 => "i32",
        TypeName::U64 => "u64",
        TypeName::I64 => "i64",
        TypeName::F32 => "f32",
        TypeName::F64 => "f64",
        TypeName::String => "string",
        TypeName::Bytes => "bytes",
    }
}

/// `meter-7.` → "device `meter-7`", `profile x:` → "profile `x`".
fn owner(label: &str) -> String {
    match label.strip_prefix("profile ") {
        Some(p) => format!("profile `{}`", p.trim_end_matches([':', ' '])),
        None => format!("device `{}`", label.trim_end_matches('.')),
    }
}

/// Two points may share addresses only as different bits of one register.
fn check_overlaps(
    label: &str,
    points: &[(Point, Located<PointConfig>)],
    issues: &mut Vec<ConfigIssue>,
) {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|i| (points[*i].0.area, points[*i].0.address));
    let mut bits: BTreeSet<(Area, u16, u8)> = BTreeSet::new();
    // The point reaching furthest so far in the current area.
    let mut reach: Option<usize> = None;
    for i in order {
        let (b, b_cfg) = &points[i];
        if let PointType::Bit(bit) = b.ty
            && !bits.insert((b.area, b.address, bit))
        {
            issues.push(b_cfg.origin.issue(
                "bit",
                format!(
                    "point `{}` reads bit {bit} of {} {}, which another point of {} already reads",
                    b.name,
                    b.area,
                    b.address,
                    owner(label)
                ),
            ));
            continue;
        }
        if let Some(r) = reach
            && points[r].0.area == b.area
        {
            let (a, a_cfg) = &points[r];
            let shared_register = matches!((a.ty, b.ty), (PointType::Bit(_), PointType::Bit(_)))
                && a.address == b.address;
            if u32::from(b.address) < a.end() && !shared_register {
                issues.push(
                    b_cfg
                        .origin
                        .issue(
                            "name",
                            format!(
                                "point `{}` overlaps point `{}` in {} ({} {}..={})",
                                b.name,
                                a.name,
                                owner(label),
                                a.area,
                                a.address,
                                a.end() - 1
                            ),
                        )
                        .with_hint(format!(
                            "`{}` is defined at {}",
                            a.name,
                            a_cfg.origin.entry()
                        )),
                );
            }
            if b.end() <= a.end() {
                continue;
            }
        }
        reach = Some(i);
    }
}

/// How long one read takes on a serial line: its request and answer at
/// the baud rate, the frame gap and the device's response time.
pub fn request_time(spec: &LineSpec, serial: &SerialSettings, r: &ReadRequest) -> Duration {
    let char_time = f64::from(char_bits(serial)) / f64::from(serial.baud);
    let data = if r.area.is_bits() {
        usize::from(r.count).div_ceil(8)
    } else {
        usize::from(r.count) * 2
    };
    // Request: unit, 5 bytes of PDU, check; answer: unit, function, count,
    // data, check. ASCII sends each byte as two characters, with `:` and
    // CR LF around a frame.
    let chars = match spec.endpoint.framing() {
        Framing::Ascii => (7 * 2 + 3) + ((4 + data) * 2 + 3),
        _ => 8 + 5 + data,
    };
    Duration::from_secs_f64(chars as f64 * char_time) + spec.gap + spec.response_time
}

/// Estimate a serial line's busy time per second from its baud rate,
/// frame sizes, inter-frame gap and device response time. Err: the poll
/// periods the line cannot meet.
fn line_load(
    conn: &Located<ConnectionConfig>,
    spec: &LineSpec,
    serial: &SerialSettings,
) -> Result<String, Vec<ConfigIssue>> {
    let response_time = spec.response_time.as_secs_f64();
    let mut issues = Vec::new();
    let mut load = 0.0;
    let mut requests_total = 0usize;
    for device in &spec.devices {
        for group in device.groups.iter() {
            let requests = &group.plan;
            requests_total += requests.len();
            let cycle: f64 = requests
                .iter()
                .map(|r| request_time(spec, serial, r).as_secs_f64())
                .sum();
            let period = group.period.as_secs_f64();
            load += cycle / period;
            if cycle > period {
                issues.push(
                    ConfigIssue::at(
                        device.pos.clone(),
                        format!(
                            "device `{}`: one poll cycle takes about {:.1} ms on this line, longer than its poll period of {:?}",
                            device.name,
                            cycle * 1000.0,
                            group.period
                        ),
                    )
                    .with_hint("poll less often, raise the baud rate, or map fewer points"),
                );
            }
        }
    }
    if load > 1.0 {
        issues.push(
            conn.origin
                .issue(
                    "baud",
                    format!(
                        "serial line `{}` would need {:.0}% of its capacity at {} baud: the poll periods cannot be met",
                        spec.name,
                        load * 100.0,
                        serial.baud
                    ),
                )
                .with_hint("poll less often, raise the baud rate, or split the devices over more lines"),
        );
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(format!(
        "line {}: {} baud {}{}{}, {} device(s), {} request(s) per cycle, estimated load {:.1}% (assuming {:.0} ms device response time; a silent unit costs up to {:?} per backoff period)",
        spec.name,
        serial.baud,
        serial.data_bits,
        match serial.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        },
        serial.stop_bits,
        spec.devices.len(),
        requests_total,
        load * 100.0,
        response_time * 1000.0,
        spec.timeout
    ))
}
