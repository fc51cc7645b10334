//! One outbox record: a northbound MQTT message as it is stored on disk.
//!
//! Wire layout (little endian), one record after another in a segment file:
//!
//! ```text
//! magic  u16   0x6667 ("fg"), lets recovery find the next record after damage
//! len    u32   length of the body that follows the checksum
//! crc    u32   CRC-32 (IEEE) of the body
//! body:
//!   id        u64   outbox position, +1 per record, never reused
//!   accepted  u64   Unix epoch ms when the outbox accepted it (for "oldest age")
//!   seq       u64   telemetry seq of `device`, 0 when not telemetry
//!   flags     u8    bits 0-1 QoS, bit 2 retain, bit 3 correlation data present
//!   device    u16 length + UTF-8
//!   topic     u16 length + UTF-8
//!   corr      u16 length + bytes (only when flag bit 3 is set)
//!   payload   the rest
//! ```
//!
//! [`Record::parse`] is total: any byte string gives a record or a
//! [`RecordError`], never a panic.

use std::fmt;

use tokio_util::bytes::Bytes;

/// Marks the start of a record.
pub const MAGIC: u16 = 0x6667;
/// Bytes before the body: magic, length, checksum.
pub const HEADER_LEN: usize = 10;
/// Largest body accepted; anything longer is damage, not a message.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

const FLAG_RETAIN: u8 = 0b100;
const FLAG_CORRELATION: u8 = 0b1000;

/// A stored northbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub accepted_ms: u64,
    /// Telemetry sequence number of `device`; 0 for other messages.
    pub seq: u64,
    /// 0 or 1.
    pub qos: u8,
    pub retain: bool,
    /// The device the message is about; empty for gateway messages.
    pub device: String,
    pub topic: String,
    /// MQTT 5 correlation data, for answers on a request's response topic.
    pub correlation: Option<Vec<u8>>,
    /// Shared, not copied, by the record's in-flight copy and its publish.
    pub payload: Bytes,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than the header or the announced length: a torn write.
    Truncated,
    /// No magic at this position.
    BadMagic,
    /// Announced length larger than [`MAX_BODY`].
    TooLong,
    /// The checksum does not match: bit rot or a torn write.
    BadChecksum,
    /// The checksum matches but the fields do not fit the body.
    Malformed,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordError::Truncated => "truncated record",
            RecordError::BadMagic => "no record marker",
            RecordError::TooLong => "record length out of range",
            RecordError::BadChecksum => "checksum mismatch",
            RecordError::Malformed => "malformed record body",
        })
    }
}

impl Record {
    /// Appends the record's bytes to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[0; 8]); // length and checksum, filled below
        let body = out.len();
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.accepted_ms.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        let mut flags = self.qos & 0b11;
        if self.retain {
            flags |= FLAG_RETAIN;
        }
        if self.correlation.is_some() {
            flags |= FLAG_CORRELATION;
        }
        out.push(flags);
        put_short(out, self.device.as_bytes());
        put_short(out, self.topic.as_bytes());
        if let Some(c) = &self.correlation {
            put_short(out, c);
        }
        out.extend_from_slice(&self.payload);
        let len = (out.len() - body) as u32;
        let crc = crc32fast::hash(&out[body..]);
        out[start + 2..start + 6].copy_from_slice(&len.to_le_bytes());
        out[start + 6..start + 10].copy_from_slice(&crc.to_le_bytes());
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + 25
            + 2
            + self.device.len()
            + 2
            + self.topic.len()
            + self.correlation.as_ref().map_or(0, |c| 2 + c.len())
            + self.payload.len()
    }

    /// Parses the record at the start of `bytes`; returns it and the number
    /// of bytes it occupies.
    pub fn parse(bytes: &[u8]) -> Result<(Record, usize), RecordError> {
        let len = Self::check_header(bytes)?;
        let total = HEADER_LEN + len;
        let body = bytes.get(HEADER_LEN..total).ok_or(RecordError::Truncated)?;
        let crc = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        if crc32fast::hash(body) != crc {
            return Err(RecordError::BadChecksum);
        }
        Ok((Self::parse_body(body)?, total))
    }

    /// Validates magic and length; returns the body length.
    pub fn check_header(bytes: &[u8]) -> Result<usize, RecordError> {
        let header = bytes.get(..HEADER_LEN).ok_or(RecordError::Truncated)?;
        if u16::from_le_bytes([header[0], header[1]]) != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
        if len > MAX_BODY {
            return Err(RecordError::TooLong);
        }
        Ok(len)
    }

    fn parse_body(body: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader(body);
        let id = r.u64()?;
        let accepted_ms = r.u64()?;
        let seq = r.u64()?;
        let flags = r.take(1)?[0];
        let device = r.string()?;
        let topic = r.string()?;
        let correlation = if flags & FLAG_CORRELATION != 0 {
            Some(r.short()?.to_vec())
        } else {
            None
        };
        Ok(Record {
            id,
            accepted_ms,
            seq,
            qos: flags & 0b11,
            retain: flags & FLAG_RETAIN != 0,
            device,
            topic,
            correlation,
            payload: Bytes::copy_from_slice(r.0),
        })
    }
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    // Device names, topics and correlation data are far below 64 KiB; the
    // codec refuses longer ones before they reach the outbox.
    let len = bytes.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&bytes[..len]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn short(&mut self) -> Result<&'a [u8], RecordError> {
        let b = self.take(2)?;
        let n = u16::from_le_bytes([b[0], b[1]]) as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let b = self.short()?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            0u8..2,
            any::<bool>(),
            "[a-z0-9-]{0,20}",
            "[a-z0-9/+]{1,60}",
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(
                |(id, accepted_ms, seq, qos, retain, device, topic, correlation, payload)| Record {
                    id,
                    accepted_ms,
                    seq,
                    qos,
                    retain,
                    device,
                    topic,
                    correlation,
                    payload: payload.into(),
                },
            )
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(r in record()) {
            let mut buf = Vec::new();
            r.emit(&mut buf);
            prop_assert_eq!(buf.len(), r.encoded_len());
            let (back, used) = Record::parse(&buf).unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(back, r);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Record::parse(&bytes);
        }

        #[test]
        fn any_single_flip_or_cut_is_detected(r in record(), pos in any::<prop::sample::Index>(), cut in any::<bool>()) {
            let mut buf = Vec::new();
            r.emit(&mut buf);
            let i = pos.index(buf.len());
            if cut {
                buf.truncate(i);
            } else {
                buf[i] ^= 0x5a;
            }
            prop_assert!(Record::parse(&buf).is_err());
        }
    }
}
