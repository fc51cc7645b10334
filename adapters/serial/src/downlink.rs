//! What goes down the line and how the device's answer is judged: write
//! validation against a command's type and range, confirmation by reply
//! pattern, raw-send payloads. Pure functions, no I/O.

use ferrogate_sdk::{CommandError, ErrorCode, Value};

use crate::config::{CommandSpec, Device};
use crate::parse;

/// Check a written value against its command: known, writable, right type,
/// in range. Returns the value converted to the command's type.
pub fn validate_write(device: &Device, name: &str, value: &Value) -> Result<Value, CommandError> {
    let Some(spec) = device.command(name) else {
        return Err(if device.points.iter().any(|p| p.name == name) {
            CommandError::new(ErrorCode::NotWritable, format!("`{name}` is read-only"))
        } else {
            CommandError::new(
                ErrorCode::UnknownPoint,
                format!("{} has no point `{name}`", device.name),
            )
        });
    };
    let typed = parse::coerce(value, spec.ty)
        .map_err(|e| CommandError::new(ErrorCode::InvalidValue, format!("`{name}`: {e}")))?;
    if let Some(x) = typed.as_f64().filter(|_| spec.ty.is_numeric()) {
        let below = spec.min.is_some_and(|min| x < min);
        let above = spec.max.is_some_and(|max| x > max);
        if below || above {
            return Err(CommandError::new(
                ErrorCode::OutOfRange,
                format!(
                    "`{name}` = {typed} is outside {}..={}",
                    spec.min.map(|m| m.to_string()).unwrap_or_default(),
                    spec.max.map(|m| m.to_string()).unwrap_or_default()
                ),
            ));
        }
    }
    Ok(typed)
}

pub enum Reply {
    Confirmed,
    Refused,
    Other,
}

pub fn judge_reply(spec: &CommandSpec, frame: &[u8]) -> Reply {
    if spec
        .error_reply
        .as_ref()
        .is_some_and(|re| re.is_match(frame))
    {
        Reply::Refused
    } else if spec.reply.as_ref().is_none_or(|re| re.is_match(frame)) {
        Reply::Confirmed
    } else {
        Reply::Other
    }
}

/// The bytes of a raw send: `value` as text, or `args.hex`.
pub fn raw_payload(
    value: Option<&serde_json::Value>,
    args: &serde_json::Value,
) -> Result<Vec<u8>, String> {
    if let Some(hex) = args.get("hex").and_then(serde_json::Value::as_str) {
        return crate::bytes::ByteString::parse(&format!("0x{hex}")).map(|b| b.0);
    }
    match value {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.as_bytes().to_vec()),
        _ => Err("send needs a non-empty string `value` or `args.hex`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, PortSettings};
    use crate::framer::Framing;
    use crate::parse::{FrameParser, PointType};
    use crate::template::Template;
    use regex::bytes::Regex;
    use std::time::Duration;

    fn device() -> Device {
        Device {
            name: "oven".into(),
            port: PortSettings {
                path: "/dev/null".into(),
                baud: 9600,
                data_bits: 8,
                parity: crate::config::Parity::None,
                stop_bits: 1,
                flow_control: crate::config::FlowControl::None,
            },
            mode: Mode::FreeRunning,
            timeout: Duration::from_secs(1),
            offline_after: 3,
            silence_timeout: None,
            reopen_min: Duration::from_millis(100),
            reopen_max: Duration::from_secs(1),
            error_report_interval: Duration::from_secs(1),
            allow_raw_send: false,
            description: None,
            framing: Framing::Delimiter {
                delimiter: b"\r".to_vec(),
            },
            max_frame: 64,
            parser: FrameParser::Json,
            points: vec![crate::config::PointSpec {
                name: "pv".into(),
                source: "pv".into(),
                ty: PointType::F64,
                scale: 1.0,
                offset: 0.0,
                unit: None,
                description: None,
            }],
            commands: vec![CommandSpec {
                name: "count".into(),
                template: Template::parse("C{value}\r", PointType::U64).unwrap(),
                ty: PointType::U64,
                min: Some(1.0),
                max: Some(10.0),
                reply: Some(Regex::new("^OK").unwrap()),
                error_reply: Some(Regex::new("^ERR").unwrap()),
                timeout: Duration::from_secs(1),
                unit: None,
                description: None,
            }],
        }
    }

    #[test]
    fn writes_are_checked_like_any_write() {
        let d = device();
        let code = |name: &str, v: Value| validate_write(&d, name, &v).unwrap_err().code;
        assert_eq!(
            validate_write(&d, "count", &Value::Float(3.0)),
            Ok(Value::UInt(3))
        );
        assert_eq!(code("count", Value::Float(3.5)), ErrorCode::InvalidValue);
        assert_eq!(code("count", Value::Int(-1)), ErrorCode::InvalidValue);
        assert_eq!(code("count", Value::Int(11)), ErrorCode::OutOfRange);
        assert_eq!(code("pv", Value::Int(1)), ErrorCode::NotWritable);
        assert_eq!(code("nope", Value::Int(1)), ErrorCode::UnknownPoint);
    }

    #[test]
    fn replies_are_judged_by_pattern() {
        let d = device();
        let spec = &d.commands[0];
        assert!(matches!(judge_reply(spec, b"OK 3"), Reply::Confirmed));
        assert!(matches!(judge_reply(spec, b"ERR 2"), Reply::Refused));
        assert!(matches!(judge_reply(spec, b"pv=3"), Reply::Other));
    }

    #[test]
    fn raw_payloads() {
        assert_eq!(
            raw_payload(Some(&serde_json::json!("R\r")), &serde_json::json!({})),
            Ok(b"R\r".to_vec())
        );
        assert_eq!(
            raw_payload(None, &serde_json::json!({"hex": "0d0a"})),
            Ok(b"\r\n".to_vec())
        );
        assert!(raw_payload(None, &serde_json::json!({})).is_err());
        assert!(raw_payload(Some(&serde_json::json!(5)), &serde_json::json!(null)).is_err());
        assert!(raw_payload(None, &serde_json::json!({"hex": "zz"})).is_err());
    }
}
