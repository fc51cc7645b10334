//! Application data units: the MBAP header of Modbus TCP, the RTU frame
//! (unit, PDU, CRC-16) used on serial lines and RTU-over-TCP, and the
//! ASCII frame (`:`, hex pairs, LRC, CR LF) of `ascii` and
//! `ascii-over-tcp`. Pure: bytes in, frames out. RTU frames are delimited
//! by their expected length, so [`rtu_frame_len`] tells the reader how many
//! bytes a frame needs; ASCII frames by their LF ([`ascii_frame_end`]).

/// Length of the MBAP header (Modbus Messaging on TCP/IP, section 3.1.3).
pub const MBAP_LEN: usize = 7;

/// A Modbus TCP ADU for `pdu`.
pub fn emit_tcp(transaction: u16, unit: u8, pdu: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&transaction.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    out.push(unit);
    out.extend_from_slice(pdu);
}

/// A parsed MBAP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mbap {
    pub transaction: u16,
    pub unit: u8,
    /// Bytes of PDU that follow the header.
    pub pdu_len: usize,
}

/// Parse an MBAP header; the protocol id must be 0 and the length must
/// leave room for a PDU no larger than the 253 bytes Modbus allows.
pub fn parse_mbap(header: &[u8; MBAP_LEN]) -> Result<Mbap, String> {
    let transaction = u16::from_be_bytes([header[0], header[1]]);
    let protocol = u16::from_be_bytes([header[2], header[3]]);
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if protocol != 0 {
        return Err(format!("protocol id {protocol} is not Modbus (0)"));
    }
    if !(2..=254).contains(&length) {
        return Err(format!("MBAP length {length} is out of range"));
    }
    Ok(Mbap {
        transaction,
        unit: header[6],
        pdu_len: length - 1,
    })
}

/// CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for b in bytes {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// An RTU frame for `pdu`: unit, PDU, CRC low byte first.
pub fn emit_rtu(unit: u8, pdu: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.push(unit);
    out.extend_from_slice(pdu);
    let crc = crc16(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// How long the RTU response frame starting at `buf[0]` is, once enough of
/// it has arrived to tell (`None`: read more). Err for a function code the
/// master never asks for: the line carries garbage.
pub fn rtu_frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(&function) = buf.get(1) else {
        return Ok(None);
    };
    match function {
        f if f & 0x80 != 0 => Ok(Some(5)),
        1..=4 => Ok(buf.get(2).map(|count| 5 + usize::from(*count))),
        5 | 6 | 15 | 16 => Ok(Some(8)),
        other => Err(format!("unexpected function code {other} on the line")),
    }
}

/// Check a complete RTU frame's CRC and split it into unit and PDU.
pub fn parse_rtu(frame: &[u8]) -> Result<(u8, &[u8]), String> {
    if frame.len() < 4 {
        return Err(format!("RTU frame of {} bytes is too short", frame.len()));
    }
    let (body, crc) = frame.split_at(frame.len() - 2);
    let received = u16::from_le_bytes([crc[0], crc[1]]);
    let computed = crc16(body);
    if received != computed {
        return Err(format!(
            "CRC mismatch (received {received:04x}, computed {computed:04x})"
        ));
    }
    Ok((body[0], &body[1..]))
}

/// LRC of Modbus ASCII (Modbus over serial line, section 2.5.2.2): the
/// two's complement of the byte sum of unit and PDU.
pub fn lrc(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// An ASCII frame for `pdu`: `:`, unit, PDU and LRC as uppercase hex
/// pairs, CR LF.
pub fn emit_ascii(unit: u8, pdu: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let lrc = pdu
        .iter()
        .fold(unit, |s, b| s.wrapping_add(*b))
        .wrapping_neg();
    out.push(b':');
    for b in std::iter::once(unit)
        .chain(pdu.iter().copied())
        .chain([lrc])
    {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xF)]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Where the ASCII frame in `buf` ends (one past its LF), once its LF has
/// arrived; `None`: read more.
pub fn ascii_frame_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

/// Check one ASCII frame (`:` to LF; bytes before the `:` are line noise
/// and skipped) and decode it into `out`: returns the unit, `out` holds
/// the PDU.
pub fn parse_ascii(frame: &[u8], out: &mut Vec<u8>) -> Result<u8, String> {
    let start = frame
        .iter()
        .position(|&b| b == b':')
        .ok_or("ASCII frame without its `:`")?;
    let body = frame[start + 1..]
        .strip_suffix(b"\r\n")
        .ok_or("ASCII frame does not end in CR LF")?;
    if body.len() % 2 != 0 || body.len() < 6 {
        return Err(format!(
            "ASCII frame of {} hex characters: expected an even number, at least 6",
            body.len()
        ));
    }
    let nibble = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(format!(
                "`{}` is not a hex digit in an ASCII frame",
                c.escape_ascii()
            )),
        }
    };
    out.clear();
    for pair in body.chunks_exact(2) {
        out.push(nibble(pair[0])? << 4 | nibble(pair[1])?);
    }
    let Some(received) = out.pop() else {
        return Err("empty ASCII frame".into());
    };
    let computed = lrc(out);
    if received != computed {
        return Err(format!(
            "LRC mismatch (received {received:02x}, computed {computed:02x})"
        ));
    }
    let unit = out.remove(0);
    Ok(unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_of_a_spec_example() {
        // Read holding registers 0x006B x3 from unit 0x11: CRC 0x8776 (76 87 on the wire).
        let mut out = Vec::new();
        emit_rtu(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03], &mut out);
        assert_eq!(out, [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]);
    }

    #[test]
    fn rtu_lengths_and_corruption() {
        assert_eq!(rtu_frame_len(&[1]), Ok(None));
        assert_eq!(rtu_frame_len(&[1, 3]), Ok(None));
        assert_eq!(rtu_frame_len(&[1, 3, 4]), Ok(Some(9)));
        assert_eq!(rtu_frame_len(&[1, 0x83]), Ok(Some(5)));
        assert_eq!(rtu_frame_len(&[1, 6]), Ok(Some(8)));
        assert!(rtu_frame_len(&[1, 0x2B]).is_err());
        let mut frame = Vec::new();
        emit_rtu(7, &[3, 2, 0, 9], &mut frame);
        assert_eq!(parse_rtu(&frame), Ok((7, &[3u8, 2, 0, 9][..])));
        frame[3] ^= 1;
        assert!(parse_rtu(&frame).is_err());
    }

    #[test]
    fn mbap_checks() {
        let mut out = Vec::new();
        emit_tcp(0x1234, 9, &[3, 0, 0, 0, 1], &mut out);
        let header: [u8; 7] = out[..7].try_into().unwrap();
        assert_eq!(
            parse_mbap(&header),
            Ok(Mbap {
                transaction: 0x1234,
                unit: 9,
                pdu_len: 5
            })
        );
        assert!(parse_mbap(&[0, 1, 0, 1, 0, 6, 1]).is_err());
        assert!(parse_mbap(&[0, 1, 0, 0, 1, 6, 1]).is_err());
        assert!(parse_mbap(&[0, 1, 0, 0, 0, 1, 1]).is_err());
    }

    #[test]
    fn ascii_of_a_spec_example() {
        // Read holding registers 0x006B x3 from unit 0x11 (spec 2.5.2.1):
        // LRC = -(0x11+0x03+0x6B+0x03) = 0x7E.
        let mut out = Vec::new();
        emit_ascii(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03], &mut out);
        assert_eq!(out, b":1103006B00037E\r\n");
        let mut pdu = Vec::new();
        assert_eq!(ascii_frame_end(&out[..5]), None);
        assert_eq!(ascii_frame_end(&out), Some(out.len()));
        assert_eq!(parse_ascii(&out, &mut pdu), Ok(0x11));
        assert_eq!(pdu, [0x03, 0x00, 0x6B, 0x00, 0x03]);
        // Lower case and leading noise are read; a wrong LRC, a missing
        // CR, an odd count and a non-hex character are not.
        assert_eq!(parse_ascii(b"\0\0:1103006b00037e\r\n", &mut pdu), Ok(0x11));
        assert!(
            parse_ascii(b":1103006B00037F\r\n", &mut pdu)
                .unwrap_err()
                .contains("LRC")
        );
        assert!(parse_ascii(b":1103006B00037E\n", &mut pdu).is_err());
        assert!(parse_ascii(b":1103006B00037\r\n", &mut pdu).is_err());
        assert!(parse_ascii(b":11030G6B00037E\r\n", &mut pdu).is_err());
        assert!(parse_ascii(b"1103006B00037E\r\n", &mut pdu).is_err());
    }

    proptest! {
        #[test]
        fn ascii_roundtrip(unit in any::<u8>(), pdu in proptest::collection::vec(any::<u8>(), 1..253)) {
            let mut frame = Vec::new();
            emit_ascii(unit, &pdu, &mut frame);
            let mut out = Vec::new();
            prop_assert_eq!(parse_ascii(&frame, &mut out), Ok(unit));
            prop_assert_eq!(out, pdu);
        }

        #[test]
        fn rtu_roundtrip(unit in any::<u8>(), pdu in proptest::collection::vec(any::<u8>(), 1..253)) {
            let mut frame = Vec::new();
            emit_rtu(unit, &pdu, &mut frame);
            prop_assert_eq!(parse_rtu(&frame), Ok((unit, &pdu[..])));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = rtu_frame_len(&bytes);
            let _ = parse_rtu(&bytes);
            let _ = ascii_frame_end(&bytes);
            let _ = parse_ascii(&bytes, &mut Vec::new());
            if bytes.len() >= 7 {
                let header: [u8; 7] = bytes[..7].try_into().unwrap();
                let _ = parse_mbap(&header);
            }
        }
    }
}
