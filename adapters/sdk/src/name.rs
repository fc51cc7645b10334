//! Device names that arrive from the network (an LwM2M endpoint name, a
//! CoAP ingest path segment) become MQTT topic levels, log fields and
//! directory keys. This module is the one check they pass before any of
//! that: a bounded length and a character set that every MQTT broker
//! accepts inside one topic level and that reads the same in a log line.
//!
//! Allowed: ASCII letters and digits and `- _ . : @ ~ =`, 1 to
//! [`MAX_NAME_LEN`] bytes. That covers LwM2M's URN endpoint names
//! (`urn:imei:490154203237518`, `urn:dev:ops:0004A3-sensor-1`) and the
//! names integrators write in configs. Refused, among others: `/` (a topic
//! level separator), `+` and `#` (MQTT wildcards), spaces, every control
//! character (mosquitto disconnects a client publishing one in a topic),
//! and all non-ASCII (bidi overrides and look-alikes).

use std::fmt;

/// Longest device name accepted from the network, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a name from the network was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong {
        len: usize,
    },
    /// The first character outside the allowed set and its byte offset.
    Character {
        ch: char,
        at: usize,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "empty name"),
            NameError::TooLong { len } => {
                write!(
                    f,
                    "name is {len} bytes long, at most {MAX_NAME_LEN} allowed"
                )
            }
            NameError::Character { ch, at } => write!(
                f,
                "character {} at byte {at} is not allowed in a device name \
                 (letters, digits and - _ . : @ ~ = only)",
                ch.escape_unicode()
            ),
        }
    }
}

impl std::error::Error for NameError {}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '~' | '=')
}

/// Checks a device name that came from the network.
pub fn check_device_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    match name.char_indices().find(|&(_, c)| !allowed(c)) {
        Some((at, ch)) => Err(NameError::Character { ch, at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_in_use_pass() {
        for name in [
            "urn:imei:490154203237518",
            "urn:dev:ops:0004A3-sensor-1",
            "meter_7",
            "lab-1.floor~2@site=a",
        ] {
            assert_eq!(check_device_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn topic_breaking_and_invisible_characters_are_refused() {
        for (name, at) in [
            ("x\u{1}y", 1),
            ("a/b", 1),
            ("+", 0),
            ("dev#", 3),
            ("two words", 3),
            ("x\0", 1),
            ("ab\u{202e}c", 2),
            ("caf\u{e9}", 3),
            ("tab\t", 3),
        ] {
            match check_device_name(name) {
                Err(NameError::Character { at: got, .. }) => assert_eq!(got, at, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert_eq!(check_device_name(""), Err(NameError::Empty));
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            check_device_name(&long),
            Err(NameError::TooLong {
                len: MAX_NAME_LEN + 1
            })
        );
        assert_eq!(check_device_name(&long[1..]), Ok(()));
    }

    #[test]
    fn refusals_name_the_character() {
        let e = check_device_name("x\u{1}y").unwrap_err().to_string();
        assert!(e.contains("\\u{1}") && e.contains("byte 1"), "{e}");
    }
}
