//! What a Modbus slave sends back: MBAP headers, RTU frames on a line
//! (length, CRC) and response PDUs to every kind of request are total.
//! Input: `[request_pick, count, bytes...]`.
#![no_main]

use ferrogate_modbus::frame::{self, MBAP_LEN};
use ferrogate_modbus::pdu::{self, Request};
use ferrogate_modbus::point::Area;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [pick, count, wire @ ..] = data else {
        return;
    };
    if let Some(header) = wire.get(..MBAP_LEN) {
        let header: [u8; MBAP_LEN] = header.try_into().expect("7 bytes");
        let _ = frame::parse_mbap(&header);
    }
    if let Ok(Some(len)) = frame::rtu_frame_len(wire) {
        if let Some(f) = wire.get(..len) {
            let _ = frame::parse_rtu(f);
        }
    }
    let count = u16::from(*count).max(1);
    let area = [Area::Coil, Area::Discrete, Area::Input, Area::Holding][usize::from(pick % 4)];
    let request = match pick / 4 % 5 {
        0 => Request::Read {
            area,
            start: 0,
            count,
        },
        1 => Request::WriteCoil {
            address: 1,
            value: true,
        },
        2 => Request::WriteRegister {
            address: 1,
            value: 7,
        },
        3 => Request::WriteCoils {
            start: 0,
            values: vec![true; usize::from(count)],
        },
        _ => Request::WriteRegisters {
            start: 0,
            data: vec![0; usize::from(count) * 2],
        },
    };
    let _ = pdu::parse_response(&request, wire);
    let _ = request.response_len();
});
