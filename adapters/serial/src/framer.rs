//! The serial framer: bytes in, frames out, sans-IO.
//!
//! A serial line is a byte stream with no boundaries; instruments mark their
//! messages with a delimiter, a fixed length, start/end bytes (STX/ETX) or a
//! length prefix. [`Framer`] cuts the stream into payloads according to a
//! [`Framing`], never holds more than about one maximum frame, and resyncs
//! after garbage or a frame that is too long. What it throws away is counted
//! in [`FramerStats`] so nothing disappears silently.
//!
//! It is total over arbitrary input: any bytes, split anywhere, give frames
//! or counted discards, never a panic.

/// Byte order of a length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Big,
    Little,
}

/// How messages are delimited on the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Each frame ends with `delimiter` (e.g. CR LF). Empty lines are skipped.
    Delimiter { delimiter: Vec<u8> },
    /// Frames of exactly `length` payload bytes, optionally preceded by a
    /// `start` marker that lets the framer resync.
    Fixed { start: Vec<u8>, length: usize },
    /// `start` payload `end`, such as STX … ETX.
    StartEnd { start: Vec<u8>, end: Vec<u8> },
    /// Optional `start` marker, then a 1- or 2-byte length, then the
    /// payload of `length + offset` bytes (`offset` adjusts for lengths that
    /// count the header or a trailer).
    LengthPrefix {
        start: Vec<u8>,
        width: usize,
        endian: Endian,
        offset: i64,
    },
}

impl Framing {
    /// A short name for logs and metadata.
    pub fn kind(&self) -> &'static str {
        match self {
            Framing::Delimiter { .. } => "delimiter",
            Framing::Fixed { .. } => "fixed",
            Framing::StartEnd { .. } => "start_end",
            Framing::LengthPrefix { .. } => "length_prefix",
        }
    }

    /// Bytes on the wire around a payload of `payload_len` bytes, for line
    /// load estimates.
    pub fn overhead(&self) -> usize {
        match self {
            Framing::Delimiter { delimiter } => delimiter.len(),
            Framing::Fixed { start, .. } => start.len(),
            Framing::StartEnd { start, end } => start.len() + end.len(),
            Framing::LengthPrefix { start, width, .. } => start.len() + width,
        }
    }

    /// The wire form of one payload, or `None` when this framing cannot
    /// carry it unambiguously (it contains the delimiter, has the wrong
    /// length, …). Used by test instruments and property tests.
    pub fn encode(&self, payload: &[u8]) -> Option<Vec<u8>> {
        match self {
            Framing::Delimiter { delimiter } => {
                let mut wire = payload.to_vec();
                wire.extend_from_slice(delimiter);
                (!payload.is_empty() && find(&wire, delimiter) == Some(payload.len()))
                    .then_some(wire)
            }
            Framing::Fixed { start, length } => {
                (payload.len() == *length).then(|| [start.as_slice(), payload].concat())
            }
            Framing::StartEnd { start, end } => {
                let body = [payload, end.as_slice()].concat();
                let clean = find(&body, end) == Some(payload.len())
                    && find(&body, start).is_none_or(|i| i >= payload.len() + end.len());
                clean.then(|| [start.as_slice(), &body].concat())
            }
            Framing::LengthPrefix {
                start,
                width,
                endian,
                offset,
            } => {
                let max = if *width == 1 { 0xff } else { 0xffff };
                let value = (payload.len() as i64)
                    .checked_sub(*offset)
                    .filter(|v| (0..=max).contains(v))?;
                let mut wire = start.clone();
                match (width, endian) {
                    (1, _) => wire.push(value as u8),
                    (_, Endian::Big) => wire.extend_from_slice(&(value as u16).to_be_bytes()),
                    (_, Endian::Little) => wire.extend_from_slice(&(value as u16).to_le_bytes()),
                }
                wire.extend_from_slice(payload);
                Some(wire)
            }
        }
    }
}

/// What the framer produced and threw away since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FramerStats {
    pub frames: u64,
    /// Bytes dropped: garbage before a start marker, the bodies of oversize
    /// frames, partial frames cut off by a new start marker.
    pub discarded_bytes: u64,
    /// Frames longer than the maximum (or length prefixes announcing one).
    pub oversize_frames: u64,
}

/// Cuts a byte stream into frame payloads.
#[derive(Debug, Clone)]
pub struct Framer {
    framing: Framing,
    max_frame: usize,
    buf: Vec<u8>,
    /// Inside a delimited frame already counted as oversize: drop bytes
    /// until the next delimiter.
    skipping: bool,
    stats: FramerStats,
}

impl Framer {
    /// A framer for `framing` whose payloads are at most `max_frame` bytes.
    pub fn new(framing: Framing, max_frame: usize) -> Self {
        Framer {
            framing,
            max_frame,
            buf: Vec::new(),
            skipping: false,
            stats: FramerStats::default(),
        }
    }

    pub fn framing(&self) -> &Framing {
        &self.framing
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Bytes held waiting for the rest of a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feed bytes read from the line.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Drop a partial frame (before sending a query, or after the line was
    /// lost), counting its bytes as discarded.
    pub fn reset(&mut self) {
        self.discard(self.buf.len());
        self.skipping = false;
    }

    /// The next complete payload, if one is buffered. Call until `None`
    /// after each [`push`](Self::push).
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        let frame = match self.framing.clone() {
            Framing::Delimiter { delimiter } => self.next_delimited(&delimiter),
            Framing::Fixed { start, length } => self.next_fixed(&start, length),
            Framing::StartEnd { start, end } => self.next_start_end(&start, &end),
            Framing::LengthPrefix {
                start,
                width,
                endian,
                offset,
            } => self.next_prefixed(&start, width, endian, offset),
        };
        if frame.is_some() {
            self.stats.frames += 1;
        }
        frame
    }

    fn discard(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        self.stats.discarded_bytes += n as u64;
    }

    fn take(&mut self, skip: usize, len: usize, trailer: usize) -> Vec<u8> {
        let frame = self.buf[skip..skip + len].to_vec();
        self.buf.drain(..skip + len + trailer);
        frame
    }

    fn next_delimited(&mut self, delimiter: &[u8]) -> Option<Vec<u8>> {
        loop {
            match find(&self.buf, delimiter) {
                Some(at) => {
                    if self.skipping {
                        self.skipping = false;
                        self.discard(at + delimiter.len());
                    } else if at > self.max_frame {
                        self.stats.oversize_frames += 1;
                        self.discard(at + delimiter.len());
                    } else if at == 0 {
                        self.buf.drain(..delimiter.len());
                    } else {
                        return Some(self.take(0, at, delimiter.len()));
                    }
                }
                None => {
                    // Keep what could be the beginning of a delimiter.
                    let keep = delimiter.len().saturating_sub(1);
                    if self.skipping {
                        self.discard(self.buf.len().saturating_sub(keep));
                    } else if self.buf.len() > self.max_frame + keep {
                        self.stats.oversize_frames += 1;
                        self.skipping = true;
                        self.discard(self.buf.len() - keep);
                    }
                    return None;
                }
            }
        }
    }

    /// Drop bytes up to the next `start` marker. True when the buffer now
    /// begins with it.
    fn sync_to(&mut self, start: &[u8]) -> bool {
        if start.is_empty() {
            return true;
        }
        match find(&self.buf, start) {
            Some(at) => {
                self.discard(at);
                true
            }
            None => {
                let keep = start.len() - 1;
                self.discard(self.buf.len().saturating_sub(keep));
                false
            }
        }
    }

    fn next_fixed(&mut self, start: &[u8], length: usize) -> Option<Vec<u8>> {
        if !self.sync_to(start) || self.buf.len() < start.len() + length {
            return None;
        }
        Some(self.take(start.len(), length, 0))
    }

    fn next_start_end(&mut self, start: &[u8], end: &[u8]) -> Option<Vec<u8>> {
        loop {
            if !self.sync_to(start) {
                return None;
            }
            let body = &self.buf[start.len()..];
            let end_at = find(body, end);
            let restart_at = find(body, start);
            match (end_at, restart_at) {
                (Some(e), Some(r)) if r < e => {
                    // A new start before the end: the frame in progress was cut.
                    self.discard(start.len() + r);
                }
                (None, Some(r)) => self.discard(start.len() + r),
                (Some(e), _) => {
                    if e > self.max_frame {
                        self.stats.oversize_frames += 1;
                        self.discard(start.len() + e + end.len());
                        continue;
                    }
                    return Some(self.take(start.len(), e, end.len()));
                }
                (None, None) => {
                    let keep = end.len().saturating_sub(1);
                    if body.len() > self.max_frame + keep {
                        self.stats.oversize_frames += 1;
                        // Drop the marker too, so the framer looks for the next start.
                        let n = self.buf.len() - keep;
                        self.discard(n);
                    }
                    return None;
                }
            }
        }
    }

    fn next_prefixed(
        &mut self,
        start: &[u8],
        width: usize,
        endian: Endian,
        offset: i64,
    ) -> Option<Vec<u8>> {
        loop {
            if !self.sync_to(start) {
                return None;
            }
            let header = start.len() + width;
            let prefix = self.buf.get(start.len()..header)?;
            let announced = match (prefix, endian) {
                ([b], _) => i64::from(*b),
                ([a, b], Endian::Big) => i64::from(u16::from_be_bytes([*a, *b])),
                ([a, b], Endian::Little) => i64::from(u16::from_le_bytes([*a, *b])),
                _ => return None,
            };
            // Checked: the offset comes from configuration.
            let len = announced.checked_add(offset).unwrap_or(-1);
            if len < 0 || len > self.max_frame as i64 {
                if len > 0 {
                    self.stats.oversize_frames += 1;
                }
                // Not a believable header: step one byte and look again.
                self.discard(1);
                continue;
            }
            let len = len as usize;
            if self.buf.len() < header + len {
                return None;
            }
            return Some(self.take(header, len, 0));
        }
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut Framer, input: &[u8]) -> Vec<Vec<u8>> {
        framer.push(input);
        std::iter::from_fn(|| framer.next_frame()).collect()
    }

    #[test]
    fn crlf_lines_split_anywhere() {
        let mut f = Framer::new(
            Framing::Delimiter {
                delimiter: b"\r\n".to_vec(),
            },
            16,
        );
        assert!(frames(&mut f, b"12.5 kg\r").is_empty());
        assert_eq!(
            frames(&mut f, b"\n13.0 kg\r\n\r\n"),
            [b"12.5 kg", b"13.0 kg"]
        );
        assert_eq!(f.stats().discarded_bytes, 0);
    }

    #[test]
    fn oversize_line_is_counted_once_and_the_next_line_survives() {
        let mut f = Framer::new(
            Framing::Delimiter {
                delimiter: b"\n".to_vec(),
            },
            4,
        );
        assert!(frames(&mut f, b"0123456789").is_empty());
        assert!(frames(&mut f, b"abcdef").is_empty());
        assert_eq!(frames(&mut f, b"xyz\nok\n"), [b"ok"]);
        let stats = f.stats();
        assert_eq!(stats.oversize_frames, 1);
        assert_eq!(stats.discarded_bytes, 20);
    }

    #[test]
    fn stx_etx_resyncs_after_garbage_and_cut_frames() {
        let mut f = Framer::new(
            Framing::StartEnd {
                start: vec![2],
                end: vec![3],
            },
            8,
        );
        let out = frames(&mut f, b"junk\x02half\x02W=1\x03\x02W=2\x03");
        assert_eq!(out, [b"W=1", b"W=2"]);
        assert_eq!(f.stats().discarded_bytes, 4 + 5);
    }

    #[test]
    fn extreme_length_offsets_neither_overflow_nor_frame() {
        for offset in [i64::MAX, i64::MIN] {
            let framing = Framing::LengthPrefix {
                start: vec![0xaa],
                width: 1,
                endian: Endian::Big,
                offset,
            };
            let mut f = Framer::new(framing.clone(), 256);
            f.push(&[0xaa, 0xff, 1, 2, 3]);
            assert_eq!(f.next_frame(), None, "offset {offset}");
            assert_eq!(framing.encode(b"abc"), None, "offset {offset}");
        }
    }

    #[test]
    fn length_prefix_little_endian_with_offset() {
        let framing = Framing::LengthPrefix {
            start: vec![0xaa],
            width: 2,
            endian: Endian::Little,
            offset: -2,
        };
        let wire = framing.encode(b"hello").unwrap();
        assert_eq!(wire, [0xaa, 7, 0, b'h', b'e', b'l', b'l', b'o']);
        let mut f = Framer::new(framing, 16);
        let mut input = vec![0x00, 0x13];
        input.extend_from_slice(&wire);
        assert_eq!(frames(&mut f, &input), [b"hello"]);
        assert_eq!(f.stats().discarded_bytes, 2);
    }

    #[test]
    fn length_prefix_too_long_is_oversize_and_skipped() {
        let framing = Framing::LengthPrefix {
            start: vec![],
            width: 1,
            endian: Endian::Big,
            offset: 0,
        };
        let mut f = Framer::new(framing, 4);
        assert_eq!(frames(&mut f, &[200, 2, b'o', b'k']), [b"ok"]);
        assert_eq!(f.stats().oversize_frames, 1);
        assert_eq!(f.stats().discarded_bytes, 1);
    }

    #[test]
    fn fixed_length_with_start_marker() {
        let mut f = Framer::new(
            Framing::Fixed {
                start: b"#".to_vec(),
                length: 3,
            },
            3,
        );
        assert_eq!(frames(&mut f, b"zz#abc#de"), [b"abc"]);
        assert_eq!(frames(&mut f, b"f"), [b"def"]);
        assert_eq!(f.stats().discarded_bytes, 2);
    }
}
