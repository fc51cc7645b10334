//! Hexadecimal text: the one decoder and encoder for keys, identities,
//! opaque values and journal records, wherever they are written as hex.

/// Bytes from hex digits, two per byte, either case, nothing else (a
/// caller that allows separators such as `:` or spaces removes them
/// first). `None` for an odd count or any other character.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn digit(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

/// Lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_either_case_and_refuses_anything_else() {
        assert_eq!(decode("0aFF"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("abc"), None, "odd count");
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("0a ff"), None, "separators are the caller's");
        assert_eq!(decode("+1"), None, "no signs");
        assert_eq!(decode("é0"), None);
    }

    #[test]
    fn encode_is_the_inverse() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(encode(&bytes), "00017f80ff");
        assert_eq!(decode(&encode(&bytes)).as_deref(), Some(&bytes[..]));
    }
}
