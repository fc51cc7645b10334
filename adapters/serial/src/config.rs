//! The `[[serial.device]]` configuration: its TOML shape, and its validation
//! into a [`Device`] ready to run (compiled regexes, parsed templates, a
//! framing, a checked poll budget).
//!
//! Every problem is reported with the file:line:col of the value at fault.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrogate_sdk::config::{ConfigDuration, ConfigIssue, Located, Node, Origin};
use regex::bytes::Regex;
use serde::Deserialize;

use crate::bytes::ByteString;
use crate::framer::{Endian, Framing};
use crate::nmea;
use crate::parse::{FrameParser, PointType};
use crate::template::Template;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    #[default]
    None,
    Software,
    Hardware,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum ModeToml {
    #[default]
    #[serde(alias = "free-running")]
    FreeRunning,
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum FramingKind {
    #[default]
    Delimiter,
    Fixed,
    StartEnd,
    LengthPrefix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EndianToml {
    Big,
    Little,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ParserKind {
    Regex,
    KeyValue,
    Json,
    Nmea,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FramingToml {
    #[serde(default)]
    kind: FramingKind,
    delimiter: Option<ByteString>,
    length: Option<usize>,
    start: Option<ByteString>,
    end: Option<ByteString>,
    prefix_bytes: Option<usize>,
    endian: Option<EndianToml>,
    length_offset: Option<i64>,
    max_frame: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParserToml {
    kind: ParserKind,
    pattern: Option<String>,
    separator: Option<String>,
    assign: Option<String>,
    require_checksum: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointToml {
    name: String,
    source: Option<String>,
    #[serde(rename = "type")]
    data_type: Option<String>,
    scale: Option<f64>,
    offset: Option<f64>,
    unit: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandToml {
    name: String,
    template: String,
    #[serde(rename = "type")]
    data_type: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    reply: Option<String>,
    error_reply: Option<String>,
    timeout: Option<ConfigDuration>,
    unit: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceToml {
    name: String,
    port: String,
    #[serde(default = "default_baud")]
    baud: u32,
    #[serde(default = "default_data_bits")]
    data_bits: u8,
    #[serde(default)]
    parity: Parity,
    #[serde(default = "default_stop_bits")]
    stop_bits: u8,
    #[serde(default)]
    flow_control: FlowControl,
    #[serde(default)]
    mode: ModeToml,
    poll: Option<ConfigDuration>,
    query: Option<ByteString>,
    timeout: Option<ConfigDuration>,
    offline_after: Option<u32>,
    silence_timeout: Option<ConfigDuration>,
    reopen_min: Option<ConfigDuration>,
    reopen_max: Option<ConfigDuration>,
    error_report_interval: Option<ConfigDuration>,
    #[serde(default)]
    allow_raw_send: bool,
    description: Option<String>,
    #[serde(default)]
    framing: FramingToml,
    parser: ParserToml,
    #[serde(default)]
    point: Vec<PointToml>,
    #[serde(default)]
    command: Vec<CommandToml>,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

/// Line settings of a serial port.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSettings {
    /// Device path; prefer stable `/dev/serial/by-id/…` links.
    pub path: String,
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub flow_control: FlowControl,
}

impl PortSettings {
    /// Bits on the wire per character: start + data + parity + stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// Time to transfer `bytes` characters at this baud rate.
    pub fn transfer_time(&self, bytes: usize) -> Duration {
        let bits = bytes as f64 * f64::from(self.bits_per_char());
        Duration::from_secs_f64(bits / f64::from(self.baud.max(1)))
    }
}

/// Whether the device talks on its own or answers queries.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    FreeRunning,
    Poll { period: Duration, query: Vec<u8> },
}

/// One point read from frames.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    pub name: String,
    /// Capture name, key, JSON key or pointer, NMEA field.
    pub source: String,
    pub ty: PointType,
    pub scale: f64,
    pub offset: f64,
    pub unit: Option<String>,
    pub description: Option<String>,
}

/// A writable point: a template sent when it is written.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub name: String,
    pub template: Template,
    pub ty: PointType,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// A reply matching this confirms the write.
    pub reply: Option<Regex>,
    /// A reply matching this is a device refusal.
    pub error_reply: Option<Regex>,
    pub timeout: Duration,
    pub unit: Option<String>,
    pub description: Option<String>,
}

/// A validated device, ready to run.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    pub port: PortSettings,
    pub mode: Mode,
    /// How long to wait for a reply to a query or a read.
    pub timeout: Duration,
    /// Consecutive unanswered polls before the device is reported offline.
    pub offline_after: u32,
    /// Free-running: no frame for this long reports the device offline
    /// (the port is open but the instrument went quiet).
    pub silence_timeout: Option<Duration>,
    pub reopen_min: Duration,
    pub reopen_max: Duration,
    /// At most one parse/framing error event per interval.
    pub error_report_interval: Duration,
    pub allow_raw_send: bool,
    pub description: Option<String>,
    pub framing: Framing,
    pub max_frame: usize,
    pub parser: FrameParser,
    pub points: Vec<PointSpec>,
    pub commands: Vec<CommandSpec>,
}

impl Device {
    pub fn command(&self, name: &str) -> Option<&CommandSpec> {
        self.commands.iter().find(|c| c.name == name)
    }

    /// Wire time of one poll exchange: the query plus the longest reply.
    pub fn poll_exchange_time(&self) -> Option<Duration> {
        match &self.mode {
            Mode::Poll { query, .. } => Some(
                self.port
                    .transfer_time(query.len() + self.max_frame + self.framing.overhead()),
            ),
            Mode::FreeRunning => None,
        }
    }
}

const MAX_FRAME_LIMIT: usize = 64 * 1024;

/// Parse and validate one `[[serial.device]]` entry. Every issue found is
/// returned.
pub fn device(node: &Node<'_>) -> Result<(Device, Origin), Vec<ConfigIssue>> {
    let located: Located<DeviceToml> = node.parse().map_err(|e| vec![e])?;
    let Located { value: t, origin } = located;
    let mut issues = Vec::new();
    let o = &origin;

    if t.name.trim().is_empty() || t.name.contains('/') {
        issues.push(o.issue("name", "device name must be non-empty and contain no `/`"));
    }
    if t.port.trim().is_empty() {
        issues.push(
            o.issue("port", "port path is empty")
                .with_hint("use a stable path such as /dev/serial/by-id/usb-FTDI_…-if00-port0"),
        );
    }
    if t.baud == 0 || t.baud > 4_000_000 {
        issues.push(o.issue("baud", format!("baud rate {} is not usable", t.baud)));
    }
    if !(5..=8).contains(&t.data_bits) {
        issues.push(o.issue("data_bits", "data_bits must be 5, 6, 7 or 8"));
    }
    if !(1..=2).contains(&t.stop_bits) {
        issues.push(o.issue("stop_bits", "stop_bits must be 1 or 2"));
    }
    let port = PortSettings {
        path: t.port.clone(),
        baud: t.baud,
        data_bits: t.data_bits,
        parity: t.parity,
        stop_bits: t.stop_bits,
        flow_control: t.flow_control,
    };

    let timeout = t.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(1));
    if timeout.is_zero() {
        issues.push(o.issue("timeout", "timeout must be more than zero"));
    }
    let reopen_min = t
        .reopen_min
        .map(|d| d.0)
        .unwrap_or(Duration::from_millis(500));
    let reopen_max = t.reopen_max.map(|d| d.0).unwrap_or(Duration::from_secs(30));
    if reopen_min.is_zero() || reopen_max < reopen_min {
        issues.push(o.issue(
            "reopen_max",
            "reopen_min must be more than zero and at most reopen_max",
        ));
    }

    let (framing, max_frame) = framing(&t.framing, o, &mut issues);
    let parser = parser(&t.parser, o, &mut issues);
    let points = points(&t, parser.as_ref(), o, &mut issues);
    let commands = commands(&t, timeout, o, &mut issues);

    let mode = match (t.mode, &t.poll, &t.query) {
        (ModeToml::FreeRunning, None, None) => Some(Mode::FreeRunning),
        (ModeToml::FreeRunning, _, _) => {
            let field = if t.poll.is_some() { "poll" } else { "query" };
            issues.push(
                o.issue(field, "`poll` and `query` apply only to mode = \"poll\"")
                    .with_hint("set mode = \"poll\", or remove them for a free-running instrument"),
            );
            None
        }
        (ModeToml::Poll, Some(period), Some(query)) if !period.is_zero() && !query.0.is_empty() => {
            Some(Mode::Poll {
                period: period.0,
                query: query.0.clone(),
            })
        }
        (ModeToml::Poll, _, _) => {
            issues.push(
                o.issue(
                    "mode",
                    "mode = \"poll\" needs a non-zero `poll` period and a non-empty `query`",
                )
                .with_hint("e.g. poll = \"1s\" and query = \"READ\\r\\n\""),
            );
            None
        }
    };

    if t.mode == ModeToml::Poll && t.silence_timeout.is_some() {
        issues.push(
            o.issue(
                "silence_timeout",
                "`silence_timeout` applies to free-running devices",
            )
            .with_hint("a polled device goes offline after `offline_after` unanswered polls"),
        );
    }
    if t.silence_timeout.is_some_and(|d| d.is_zero()) {
        issues.push(o.issue("silence_timeout", "silence_timeout must be more than zero"));
    }
    let (Some(framing), Some(parser), Some(mode)) = (framing, parser, mode) else {
        return Err(issues);
    };
    let device = Device {
        name: t.name.clone(),
        port,
        mode,
        timeout,
        offline_after: t.offline_after.unwrap_or(3).max(1),
        silence_timeout: t.silence_timeout.map(|d| d.0),
        reopen_min,
        reopen_max,
        error_report_interval: t
            .error_report_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        allow_raw_send: t.allow_raw_send,
        description: t.description.clone(),
        framing,
        max_frame,
        parser,
        points,
        commands,
    };
    check_poll_budget(&device, o, &mut issues);
    if issues.is_empty() {
        Ok((device, origin))
    } else {
        Err(issues)
    }
}

fn framing(t: &FramingToml, o: &Origin, issues: &mut Vec<ConfigIssue>) -> (Option<Framing>, usize) {
    let max_frame = t.max_frame.unwrap_or(256);
    if max_frame == 0 || max_frame > MAX_FRAME_LIMIT {
        issues.push(o.issue(
            "framing.max_frame",
            format!("max_frame must be 1..={MAX_FRAME_LIMIT} bytes"),
        ));
    }
    let bytes = |b: &Option<ByteString>| b.as_ref().map(|b| b.0.clone()).unwrap_or_default();
    let unused = |fields: &[(&str, bool)], kind: &str, issues: &mut Vec<ConfigIssue>| {
        for (field, present) in fields {
            if *present {
                issues.push(o.issue(
                    &format!("framing.{field}"),
                    format!("`{field}` does not apply to framing kind \"{kind}\""),
                ));
            }
        }
    };
    let framing = match t.kind {
        FramingKind::Delimiter => {
            unused(
                &[
                    ("length", t.length.is_some()),
                    ("start", t.start.is_some()),
                    ("end", t.end.is_some()),
                    ("prefix_bytes", t.prefix_bytes.is_some()),
                    ("endian", t.endian.is_some()),
                    ("length_offset", t.length_offset.is_some()),
                ],
                "delimiter",
                issues,
            );
            let delimiter = t
                .delimiter
                .as_ref()
                .map(|d| d.0.clone())
                .unwrap_or(b"\r\n".to_vec());
            if delimiter.is_empty() {
                issues.push(o.issue("framing.delimiter", "delimiter is empty"));
                return (None, max_frame);
            }
            Framing::Delimiter { delimiter }
        }
        FramingKind::Fixed => {
            unused(
                &[
                    ("delimiter", t.delimiter.is_some()),
                    ("end", t.end.is_some()),
                    ("prefix_bytes", t.prefix_bytes.is_some()),
                    ("endian", t.endian.is_some()),
                    ("length_offset", t.length_offset.is_some()),
                ],
                "fixed",
                issues,
            );
            let Some(length) = t.length.filter(|l| *l > 0 && *l <= max_frame) else {
                issues.push(o.issue(
                    "framing.length",
                    "fixed framing needs `length`, 1..=max_frame payload bytes",
                ));
                return (None, max_frame);
            };
            Framing::Fixed {
                start: bytes(&t.start),
                length,
            }
        }
        FramingKind::StartEnd => {
            unused(
                &[
                    ("delimiter", t.delimiter.is_some()),
                    ("length", t.length.is_some()),
                    ("prefix_bytes", t.prefix_bytes.is_some()),
                    ("endian", t.endian.is_some()),
                    ("length_offset", t.length_offset.is_some()),
                ],
                "start_end",
                issues,
            );
            let (start, end) = (bytes(&t.start), bytes(&t.end));
            if start.is_empty() || end.is_empty() || start == end {
                issues.push(
                    o.issue(
                        "framing.start",
                        "start_end framing needs distinct, non-empty `start` and `end`",
                    )
                    .with_hint("STX/ETX: start = 0x02, end = 0x03"),
                );
                return (None, max_frame);
            }
            Framing::StartEnd { start, end }
        }
        FramingKind::LengthPrefix => {
            unused(
                &[
                    ("delimiter", t.delimiter.is_some()),
                    ("length", t.length.is_some()),
                    ("end", t.end.is_some()),
                ],
                "length_prefix",
                issues,
            );
            let offset = t.length_offset.unwrap_or(0);
            if !(-MAX_LENGTH_OFFSET..=MAX_LENGTH_OFFSET).contains(&offset) {
                issues.push(o.issue(
                    "framing.length_offset",
                    format!(
                        "length_offset {offset} is out of range: a prefix of at most 2 bytes \
                         needs at most ±{MAX_LENGTH_OFFSET}"
                    ),
                ));
                return (None, max_frame);
            }
            let width = t.prefix_bytes.unwrap_or(1);
            if width != 1 && width != 2 {
                issues.push(o.issue("framing.prefix_bytes", "prefix_bytes must be 1 or 2"));
                return (None, max_frame);
            }
            Framing::LengthPrefix {
                start: bytes(&t.start),
                width,
                endian: match t.endian {
                    Some(EndianToml::Little) => Endian::Little,
                    _ => Endian::Big,
                },
                offset,
            }
        }
    };
    (Some(framing), max_frame)
}

/// The largest `length_offset` that can make sense with a 1- or 2-byte
/// length prefix.
const MAX_LENGTH_OFFSET: i64 = 0xffff;

fn parser(t: &ParserToml, o: &Origin, issues: &mut Vec<ConfigIssue>) -> Option<FrameParser> {
    let only = |field: &str, present: bool, kind: &str, issues: &mut Vec<ConfigIssue>| {
        if present {
            issues.push(o.issue(
                &format!("parser.{field}"),
                format!("`{field}` does not apply to parser kind \"{kind}\""),
            ));
        }
    };
    match t.kind {
        ParserKind::Regex => {
            only("separator", t.separator.is_some(), "regex", issues);
            only("assign", t.assign.is_some(), "regex", issues);
            only(
                "require_checksum",
                t.require_checksum.is_some(),
                "regex",
                issues,
            );
            let Some(pattern) = &t.pattern else {
                issues.push(
                    o.issue("parser", "regex parser needs `pattern` with named captures")
                        .with_hint(r#"pattern = '^(?P<weight>[-+]?[0-9.]+) kg$'"#),
                );
                return None;
            };
            match Regex::new(pattern) {
                Ok(re) if re.capture_names().flatten().next().is_some() => {
                    Some(FrameParser::Regex(re))
                }
                Ok(_) => {
                    issues.push(
                        o.issue("parser.pattern", "pattern has no named capture")
                            .with_hint("name each value: (?P<name>…)"),
                    );
                    None
                }
                Err(e) => {
                    issues.push(o.issue("parser.pattern", format!("invalid regex: {e}")));
                    None
                }
            }
        }
        ParserKind::KeyValue => {
            only("pattern", t.pattern.is_some(), "key_value", issues);
            only(
                "require_checksum",
                t.require_checksum.is_some(),
                "key_value",
                issues,
            );
            let assign = t.assign.clone().unwrap_or_else(|| "=".into());
            if assign.is_empty() || t.separator.as_deref() == Some("") {
                issues.push(o.issue("parser", "`assign` and `separator` must not be empty"));
                return None;
            }
            Some(FrameParser::KeyValue {
                separator: t.separator.clone(),
                assign,
            })
        }
        ParserKind::Json => {
            for (field, present) in [
                ("pattern", t.pattern.is_some()),
                ("separator", t.separator.is_some()),
                ("assign", t.assign.is_some()),
                ("require_checksum", t.require_checksum.is_some()),
            ] {
                only(field, present, "json", issues);
            }
            Some(FrameParser::Json)
        }
        ParserKind::Nmea => {
            for (field, present) in [
                ("pattern", t.pattern.is_some()),
                ("separator", t.separator.is_some()),
                ("assign", t.assign.is_some()),
            ] {
                only(field, present, "nmea", issues);
            }
            Some(FrameParser::Nmea {
                require_checksum: t.require_checksum.unwrap_or(true),
            })
        }
    }
}

fn points(
    t: &DeviceToml,
    parser: Option<&FrameParser>,
    o: &Origin,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<PointSpec> {
    let is_nmea = matches!(parser, Some(FrameParser::Nmea { .. }));
    if t.point.is_empty() && is_nmea {
        // A GPS receiver needs no point list: every GGA/RMC field.
        return nmea::FIELDS[..nmea::GPS_FIELDS]
            .iter()
            .map(|(name, ty, unit)| PointSpec {
                name: name.to_string(),
                source: name.to_string(),
                ty: PointType::parse(ty).unwrap_or(PointType::F64),
                scale: 1.0,
                offset: 0.0,
                unit: unit.map(str::to_string),
                description: None,
            })
            .collect();
    }
    if t.point.is_empty() {
        issues.push(o.issue("parser", "the device has no [[serial.device.point]]"));
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, p) in t.point.iter().enumerate() {
        let at = |field: &str| format!("point.{i}.{field}");
        if let Some(first) = seen.insert(p.name.as_str(), i) {
            issues.push(
                o.issue(&at("name"), format!("duplicate point `{}`", p.name))
                    .with_hint(format!(
                        "first defined at {}",
                        o.field(&format!("point.{first}.name"))
                    )),
            );
        }
        let source = p.source.clone().unwrap_or_else(|| p.name.clone());
        let known = match parser {
            Some(FrameParser::Regex(re)) => re.capture_names().flatten().any(|n| n == source),
            // a named field, an XDR transducer (`TEMP`) or a raw field
            // (`MWV.3`)
            Some(FrameParser::Nmea { .. }) => {
                nmea::FIELDS.iter().any(|(n, _, _)| *n == source)
                    || source == crate::parse::NMEA_SENTENCE
                    || nmea::is_transducer_name(&source)
                    || nmea::field_index(&source).is_some()
            }
            _ => true,
        };
        if !known {
            let choices: Vec<String> = match parser {
                Some(FrameParser::Regex(re)) => {
                    re.capture_names().flatten().map(str::to_string).collect()
                }
                _ => nmea::FIELDS
                    .iter()
                    .map(|(n, _, _)| n.to_string())
                    .chain([
                        "an XDR transducer name such as TEMP".to_string(),
                        "a raw field TYPE.N such as MWV.3".to_string(),
                    ])
                    .collect(),
            };
            let field = if p.source.is_some() {
                at("source")
            } else {
                at("name")
            };
            issues.push(
                o.issue(
                    &field,
                    format!("no field `{source}` in what the parser produces"),
                )
                .with_hint(format!("available: {}", choices.join(", "))),
            );
        }
        let default_type = if is_nmea {
            nmea::FIELDS
                .iter()
                .find(|(n, _, _)| *n == source)
                .map(|(_, ty, _)| *ty)
                .unwrap_or("f64")
        } else {
            "f64"
        };
        let type_name = p.data_type.as_deref().unwrap_or(default_type);
        let Some(ty) = PointType::parse(type_name) else {
            issues.push(
                o.issue(&at("type"), format!("unknown type `{type_name}`"))
                    .with_hint("one of: bool, i64, u64, f64, string"),
            );
            continue;
        };
        let scaled = p.scale.is_some() || p.offset.is_some();
        if scaled && ty != PointType::F64 {
            let field = if p.scale.is_some() {
                at("scale")
            } else {
                at("offset")
            };
            issues.push(o.issue(&field, "scale and offset need type = \"f64\""));
        }
        let scale = p.scale.unwrap_or(1.0);
        let offset = p.offset.unwrap_or(0.0);
        if !scale.is_finite() || scale == 0.0 || !offset.is_finite() {
            issues.push(o.issue(
                &at("scale"),
                "scale must be finite and non-zero, offset finite",
            ));
        }
        out.push(PointSpec {
            name: p.name.clone(),
            source,
            ty,
            scale,
            offset,
            unit: p.unit.clone(),
            description: p.description.clone(),
        });
    }
    out
}

fn commands(
    t: &DeviceToml,
    default_timeout: Duration,
    o: &Origin,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<CommandSpec> {
    let mut out: Vec<CommandSpec> = Vec::new();
    for (i, c) in t.command.iter().enumerate() {
        let at = |field: &str| format!("command.{i}.{field}");
        if t.point.iter().any(|p| p.name == c.name) || out.iter().any(|k| k.name == c.name) {
            issues.push(o.issue(
                &at("name"),
                format!("`{}` is already a point or command of this device", c.name),
            ));
        }
        let type_name = c.data_type.as_deref().unwrap_or("f64");
        let Some(ty) = PointType::parse(type_name) else {
            issues.push(
                o.issue(&at("type"), format!("unknown type `{type_name}`"))
                    .with_hint("one of: bool, i64, u64, f64, string"),
            );
            continue;
        };
        let template = Template::parse(&c.template, ty)
            .map_err(|e| issues.push(o.issue(&at("template"), format!("command template: {e}"))))
            .ok();
        if (c.min.is_some() || c.max.is_some()) && !ty.is_numeric() {
            issues.push(o.issue(&at("min"), "min/max apply to numeric commands only"));
        }
        if matches!((c.min, c.max), (Some(min), Some(max)) if min > max) {
            issues.push(o.issue(&at("max"), "max is below min"));
        }
        let mut regex = |field: &str, pattern: &Option<String>| {
            pattern.as_ref().and_then(|p| match Regex::new(p) {
                Ok(re) => Some(re),
                Err(e) => {
                    issues.push(o.issue(&at(field), format!("invalid regex: {e}")));
                    None
                }
            })
        };
        let reply = regex("reply", &c.reply);
        let error_reply = regex("error_reply", &c.error_reply);
        let Some(template) = template else {
            continue;
        };
        out.push(CommandSpec {
            name: c.name.clone(),
            template,
            ty,
            min: c.min,
            max: c.max,
            reply,
            error_reply,
            timeout: c.timeout.map(|d| d.0).unwrap_or(default_timeout),
            unit: c.unit.clone(),
            description: c.description.clone(),
        });
    }
    out
}

/// A poll period shorter than one query and the longest reply take on the
/// wire can never be kept.
fn check_poll_budget(device: &Device, o: &Origin, issues: &mut Vec<ConfigIssue>) {
    let (Mode::Poll { period, query }, Some(exchange)) =
        (&device.mode, device.poll_exchange_time())
    else {
        return;
    };
    if exchange > *period {
        issues.push(
            o.issue(
                "poll",
                format!(
                    "poll period {} ms is shorter than one exchange at {} baud: a {}-byte query and a reply of up to {} bytes take {} ms at {} bits per character",
                    period.as_millis(),
                    device.port.baud,
                    query.len(),
                    device.max_frame + device.framing.overhead(),
                    exchange.as_millis(),
                    device.port.bits_per_char(),
                ),
            )
            .with_hint("raise `poll`, raise `baud`, or lower `framing.max_frame` to the real reply size"),
        );
    }
}

/// Line load for `config check`.
pub fn load_note(device: &Device) -> Option<String> {
    let (Mode::Poll { period, .. }, Some(exchange)) = (&device.mode, device.poll_exchange_time())
    else {
        return None;
    };
    Some(format!(
        "serial/{}: worst-case poll exchange {:.1} ms every {} ms at {} baud ({:.0}% of the line)",
        device.name,
        exchange.as_secs_f64() * 1000.0,
        period.as_millis(),
        device.port.baud,
        100.0 * exchange.as_secs_f64() / period.as_secs_f64(),
    ))
}
