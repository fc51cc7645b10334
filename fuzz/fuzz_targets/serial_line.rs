//! Bytes on a serial line: every framing (delimiter, fixed, start/end,
//! length prefix with extreme offsets) splits them without panicking and
//! within `max_frame`, and every parser (key=value, JSON, NMEA) takes what
//! comes out. Input: `[framing_pick, offset_pick, bytes...]`.
#![no_main]

use ferrogate_serial::framer::{Endian, Framer, Framing};
use ferrogate_serial::parse::FrameParser;
use libfuzzer_sys::fuzz_target;

const MAX_FRAME: usize = 512;

fuzz_target!(|data: &[u8]| {
    let [pick, off, line @ ..] = data else {
        return;
    };
    let offset = match off % 4 {
        0 => i64::from(*off as i8),
        1 => -2,
        2 => i64::MAX,
        _ => i64::MIN,
    };
    let framing = match pick % 5 {
        0 => Framing::Delimiter {
            delimiter: b"\r\n".to_vec(),
        },
        1 => Framing::Fixed {
            start: vec![0x02],
            length: usize::from(*off % 64),
        },
        2 => Framing::StartEnd {
            start: vec![0x02],
            end: vec![0x03],
        },
        3 => Framing::LengthPrefix {
            start: vec![0xaa],
            width: 1,
            endian: Endian::Big,
            offset,
        },
        _ => Framing::LengthPrefix {
            start: vec![],
            width: 2,
            endian: Endian::Little,
            offset,
        },
    };
    let _ = framing.encode(line);
    let parsers = [
        FrameParser::KeyValue {
            separator: None,
            assign: "=".into(),
        },
        FrameParser::KeyValue {
            separator: Some(",".into()),
            assign: ":".into(),
        },
        FrameParser::Json,
        FrameParser::Nmea {
            require_checksum: pick & 0x80 != 0,
        },
    ];
    let mut framer = Framer::new(framing, MAX_FRAME);
    // Feed in uneven pieces, as a UART delivers them.
    for piece in line.chunks(usize::from(*pick % 7) + 1) {
        framer.push(piece);
        while let Some(frame) = framer.next_frame() {
            assert!(frame.len() <= MAX_FRAME);
            for p in &parsers {
                if let Ok(fields) = p.parse(&frame) {
                    let _ = p.lookup(&fields, "a");
                }
            }
        }
        assert!(framer.pending() <= MAX_FRAME * 2 + 64);
    }
});
