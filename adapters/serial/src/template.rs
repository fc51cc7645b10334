//! Command templates: `"SET {value:.1}\r"` rendered with a validated value.
//!
//! A template is literal bytes (with the same escapes as other byte strings)
//! and `{value}` placeholders with an optional format: `[0][width][.prec][x|X]`
//! (`{value:.1}` one decimal, `{value:05}` zero-padded to 5, `{value:02X}`
//! upper hex). `{{` and `}}` are literal braces.

use ferrogate_sdk::Value;

use crate::bytes::unescape;
use crate::parse::PointType;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Format {
    zero: bool,
    width: usize,
    precision: Option<usize>,
    hex: Option<bool>, // Some(upper)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Vec<u8>),
    Value(Format),
}

/// A parsed command template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Parse `text` for values of type `ty`; the error says what is wrong.
    pub fn parse(text: &str, ty: PointType) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err("unmatched `}`; write `}}` for a literal brace".into()),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => inner.push(c),
                            None => return Err("unclosed `{`".into()),
                        }
                    }
                    let (name, spec) = inner.split_once(':').unwrap_or((&inner, ""));
                    if name.trim() != "value" {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}`; the written value is `{{value}}`"
                        ));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(unescape(&literal)?));
                        literal.clear();
                    }
                    segments.push(Segment::Value(parse_format(spec, ty)?));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(unescape(&literal)?));
        }
        if !segments.iter().any(|s| matches!(s, Segment::Value(_))) && ty != PointType::Bool {
            // A fixed command (e.g. "TARE\r") is fine only as a trigger.
            return Err("the template has no `{value}` placeholder".into());
        }
        Ok(Template { segments })
    }

    /// The bytes to send for `value` (already of the command's type).
    pub fn render(&self, value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(bytes) => out.extend_from_slice(bytes),
                Segment::Value(format) => out.extend_from_slice(render(value, format).as_bytes()),
            }
        }
        out
    }

    /// The longest rendering, for line load estimates (a number is at most
    /// ~24 characters).
    pub fn max_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(b) => b.len(),
                Segment::Value(f) => f.width.max(24),
            })
            .sum()
    }
}

fn parse_format(spec: &str, ty: PointType) -> Result<Format, String> {
    let mut f = Format::default();
    let mut rest = spec.trim();
    if let Some(r) = rest.strip_suffix('x') {
        f.hex = Some(false);
        rest = r;
    } else if let Some(r) = rest.strip_suffix('X') {
        f.hex = Some(true);
        rest = r;
    }
    if let Some(r) = rest
        .strip_prefix('0')
        .filter(|r| !r.is_empty() && !r.starts_with('.'))
    {
        f.zero = true;
        rest = r;
    }
    let (width, precision) = match rest.split_once('.') {
        Some((w, p)) => (w, Some(p)),
        None => (rest, None),
    };
    let bad = || format!("bad format `{spec}`: expected [0][width][.precision][x|X]");
    if !width.is_empty() {
        f.width = width.parse().map_err(|_| bad())?;
        if f.width > 64 {
            return Err(bad());
        }
    }
    if let Some(p) = precision {
        let p: usize = p.parse().map_err(|_| bad())?;
        if p > 17 {
            return Err(bad());
        }
        if ty != PointType::F64 {
            return Err(format!(
                "precision `.{p}` needs a command of type f64, not {}",
                ty.name()
            ));
        }
        f.precision = Some(p);
    }
    if f.hex.is_some() && !matches!(ty, PointType::I64 | PointType::U64) {
        return Err(format!(
            "hex format needs an integer command, not {}",
            ty.name()
        ));
    }
    Ok(f)
}

fn render(value: &Value, f: &Format) -> String {
    let w = f.width;
    match (value, f.hex, f.precision) {
        (Value::Int(i), Some(upper), _) => {
            let digits = if upper {
                format!("{:X}", i.unsigned_abs())
            } else {
                format!("{:x}", i.unsigned_abs())
            };
            let sign = if *i < 0 { "-" } else { "" };
            pad(&format!("{sign}{digits}"), f)
        }
        (Value::UInt(u), Some(true), _) if f.zero => format!("{u:0w$X}"),
        (Value::UInt(u), Some(true), _) => format!("{u:w$X}"),
        (Value::UInt(u), Some(false), _) if f.zero => format!("{u:0w$x}"),
        (Value::UInt(u), Some(false), _) => format!("{u:w$x}"),
        (Value::Float(x), _, Some(p)) if f.zero => format!("{x:0w$.p$}"),
        (Value::Float(x), _, Some(p)) => format!("{x:w$.p$}"),
        (Value::Bool(b), _, _) => pad(if *b { "1" } else { "0" }, f),
        (Value::Int(i), _, _) if f.zero => format!("{i:0w$}"),
        (Value::UInt(u), _, _) if f.zero => format!("{u:0w$}"),
        (Value::Float(x), _, _) if f.zero => format!("{x:0w$}"),
        (other, _, _) => format!("{:>w$}", other.to_string()),
    }
}

fn pad(text: &str, f: &Format) -> String {
    let w = f.width;
    if f.zero {
        match text.strip_prefix('-') {
            Some(digits) => format!("-{digits:0>width$}", width = w.saturating_sub(1)),
            None => format!("{text:0>w$}"),
        }
    } else {
        format!("{text:>w$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, ty: PointType, v: Value) -> String {
        String::from_utf8(Template::parse(t, ty).unwrap().render(&v)).unwrap()
    }

    #[test]
    fn formats() {
        assert_eq!(
            render("SET {value:.1}\\r", PointType::F64, Value::Float(21.25)),
            "SET 21.2\r"
        );
        assert_eq!(
            render("SP{value:06.2}\r", PointType::F64, Value::Float(-1.5)),
            "SP-01.50\r"
        );
        assert_eq!(
            render("A{value:04}", PointType::I64, Value::Int(-7)),
            "A-007"
        );
        assert_eq!(
            render("H{value:02X}", PointType::U64, Value::UInt(10)),
            "H0A"
        );
        assert_eq!(
            render("H{value:04x}", PointType::I64, Value::Int(-10)),
            "H-00a"
        );
        assert_eq!(
            render("{{{value}}}", PointType::String, Value::String("x".into())),
            "{x}"
        );
        assert_eq!(
            render("RELAY {value}\n", PointType::Bool, Value::Bool(true)),
            "RELAY 1\n"
        );
        assert_eq!(
            render("TARE\r", PointType::Bool, Value::Bool(true)),
            "TARE\r"
        );
    }

    #[test]
    fn template_errors_say_what_is_wrong() {
        let err = |t: &str, ty| Template::parse(t, ty).unwrap_err();
        assert!(err("SET {val}", PointType::F64).contains("unknown placeholder"));
        assert!(err("SET {value:.1}", PointType::I64).contains("precision"));
        assert!(err("SET {value:x}", PointType::F64).contains("hex"));
        assert!(err("SET {value", PointType::F64).contains("unclosed"));
        assert!(err("SET }", PointType::F64).contains("unmatched"));
        assert!(err("SET\\q{value}", PointType::F64).contains("escape"));
        assert!(err("SET", PointType::F64).contains("no `{value}`"));
        assert!(err("{value:abc}", PointType::F64).contains("bad format"));
    }
}
