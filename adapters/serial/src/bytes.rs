//! Byte strings written in TOML: delimiters, start/end markers, queries.
//!
//! TOML basic strings already turn `"\r\n"` into CR LF, but integrators also
//! write literal strings (`'\r\n'`), doubled escapes (`"\\r\\n"`), hex
//! (`"0x0d0a"`) or a single byte as an integer (`start = 0x02`). All of these
//! become the same bytes here, with an error that names the bad escape.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Bytes given in the configuration, after escapes were resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ByteString(pub Vec<u8>);

impl ByteString {
    /// Resolve `\r \n \t \0 \\ \xHH` escapes, or a whole `0x…` hex string.
    pub fn parse(text: &str) -> Result<ByteString, String> {
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            return parse_hex(hex).map(ByteString);
        }
        unescape(text).map(ByteString)
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

/// Resolve `\r \n \t \0 \\ \xHH` escapes in `text`.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('0') => out.push(0),
            Some('\\') => out.push(b'\\'),
            Some('x') => {
                let hi = chars.next();
                let lo = chars.next();
                match (hi.and_then(hex_digit), lo.and_then(hex_digit)) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err("`\\x` must be followed by two hex digits".into()),
                }
            }
            Some(other) => {
                return Err(format!(
                    "unknown escape `\\{other}`; use \\r \\n \\t \\0 \\\\ or \\xHH"
                ));
            }
            None => return Err("a lone `\\` ends the string; write `\\\\`".into()),
        }
    }
    Ok(out)
}

fn hex_digit(c: char) -> Option<u8> {
    c.to_digit(16).map(|d| d as u8)
}

fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<char> = hex.chars().filter(|c| *c != ' ' && *c != '_').collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err(format!(
            "hex bytes `0x{hex}` need an even, non-zero number of digits"
        ));
    }
    digits
        .chunks(2)
        .map(|pair| match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(format!("`0x{hex}` is not hex")),
        })
        .collect()
}

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ByteVisitor;
        impl Visitor<'_> for ByteVisitor {
            type Value = ByteString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string such as \"\\r\\n\" or \"0x02\", or a byte value 0..=255")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteString, E> {
                ByteString::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteString, E> {
                u8::try_from(v)
                    .map(|b| ByteString(vec![b]))
                    .map_err(|_| E::custom(format!("byte value {v} is outside 0..=255")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteString, E> {
                u8::try_from(v)
                    .map(|b| ByteString(vec![b]))
                    .map_err(|_| E::custom(format!("byte value {v} is outside 0..=255")))
            }
        }
        d.deserialize_any(ByteVisitor)
    }
}

/// Bytes for logs and events: printable ASCII as is, the rest as `\xHH`,
/// cut at `limit` bytes.
pub fn printable(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(limit) {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e if b != b'\\' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > limit {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_hex_and_plain_text() {
        assert_eq!(ByteString::parse("\\r\\n").unwrap().0, b"\r\n");
        assert_eq!(ByteString::parse("\r\n").unwrap().0, b"\r\n");
        assert_eq!(ByteString::parse("0x020d").unwrap().0, [2, 0x0d]);
        assert_eq!(ByteString::parse("R\\x03").unwrap().0, b"R\x03");
        assert!(
            ByteString::parse("\\q")
                .unwrap_err()
                .contains("unknown escape")
        );
        assert!(ByteString::parse("0x0").is_err());
        assert!(ByteString::parse("\\x4").is_err());
        assert!(ByteString::parse("end\\").is_err());
    }

    #[test]
    fn printable_escapes_control_bytes() {
        assert_eq!(printable(b"A\r\n\x02", 10), "A\\r\\n\\x02");
        assert_eq!(printable(b"ABCDEF", 3), "ABC…");
    }
}
