//! Modbus application PDUs (function code + data) for the functions the
//! adapter uses: requests are emitted, responses are parsed and checked
//! against the request they answer (Modbus Application Protocol v1.1b3,
//! section 6). Parsing is total: anything malformed is an error.

use std::fmt;

use crate::point::Area;

/// A request the master sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// FC01/02/03/04.
    Read { area: Area, start: u16, count: u16 },
    /// FC05.
    WriteCoil { address: u16, value: bool },
    /// FC06.
    WriteRegister { address: u16, value: u16 },
    /// FC15.
    WriteCoils { start: u16, values: Vec<bool> },
    /// FC16; `data` holds the registers' wire bytes.
    WriteRegisters { start: u16, data: Vec<u8> },
}

impl Request {
    pub fn function(&self) -> u8 {
        match self {
            Request::Read { area, .. } => area.read_function(),
            Request::WriteCoil { .. } => 5,
            Request::WriteRegister { .. } => 6,
            Request::WriteCoils { .. } => 15,
            Request::WriteRegisters { .. } => 16,
        }
    }

    /// Append the PDU to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.function());
        match self {
            Request::Read { start, count, .. } => {
                out.extend_from_slice(&start.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
            }
            Request::WriteCoil { address, value } => {
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(if *value { &[0xFF, 0x00] } else { &[0, 0] });
            }
            Request::WriteRegister { address, value } => {
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            Request::WriteCoils { start, values } => {
                out.extend_from_slice(&start.to_be_bytes());
                out.extend_from_slice(&(values.len() as u16).to_be_bytes());
                let packed = pack_bits(values);
                out.push(packed.len() as u8);
                out.extend_from_slice(&packed);
            }
            Request::WriteRegisters { start, data } => {
                out.extend_from_slice(&start.to_be_bytes());
                out.extend_from_slice(&((data.len() / 2) as u16).to_be_bytes());
                out.push(data.len() as u8);
                out.extend_from_slice(data);
            }
        }
    }

    /// Length of the PDU of a normal response to this request.
    pub fn response_len(&self) -> usize {
        match self {
            Request::Read { area, count, .. } => {
                let count = usize::from(*count);
                2 + if area.is_bits() {
                    count.div_ceil(8)
                } else {
                    count * 2
                }
            }
            _ => 5,
        }
    }
}

/// Pack bits LSB-first into bytes, as FC01/02/15 carry them.
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, bit) in bits.iter().enumerate() {
        if *bit {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// A Modbus exception code with its name from the spec (section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception(pub u8);

impl Exception {
    pub const ILLEGAL_DATA_ADDRESS: Exception = Exception(2);

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "illegal function",
            2 => "illegal data address",
            3 => "illegal data value",
            4 => "server device failure",
            5 => "acknowledge",
            6 => "server device busy",
            8 => "memory parity error",
            10 => "gateway path unavailable",
            11 => "gateway target device failed to respond",
            _ => "unknown exception",
        }
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exception {} ({})", self.0, self.name())
    }
}

/// Why a response PDU is not the answer to its request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("{0}")]
    Exception(Exception),
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// A checked response: for reads, the data bytes (packed bits or register
/// wire bytes); for writes, nothing beyond the confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Data(Vec<u8>),
    Written,
}

/// Parse `pdu` as the response to `request`.
pub fn parse_response(request: &Request, pdu: &[u8]) -> Result<Response, ResponseError> {
    let malformed = |m: String| Err(ResponseError::Malformed(m));
    let Some((&function, body)) = pdu.split_first() else {
        return malformed("empty PDU".into());
    };
    let expected = request.function();
    if function == expected | 0x80 {
        return match body.first() {
            Some(&code) => Err(ResponseError::Exception(Exception(code))),
            None => malformed("exception response without a code".into()),
        };
    }
    if function != expected {
        return malformed(format!(
            "function code {function} in the answer to function code {expected}"
        ));
    }
    if pdu.len() != request.response_len() {
        return malformed(format!(
            "{} bytes in the answer to function code {expected}, expected {}",
            pdu.len(),
            request.response_len()
        ));
    }
    match request {
        Request::Read { .. } => {
            let count = usize::from(body[0]);
            if count != body.len() - 1 {
                return malformed(format!(
                    "byte count {count} but {} data bytes",
                    body.len() - 1
                ));
            }
            Ok(Response::Data(body[1..].to_vec()))
        }
        _ => {
            let mut echo = Vec::with_capacity(5);
            request.emit(&mut echo);
            // FC05/06 echo the request; FC15/16 echo address and quantity.
            if body[..4] != echo[1..5] {
                return malformed("the write confirmation does not echo the request".into());
            }
            Ok(Response::Written)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn read_holding_roundtrip() {
        let req = Request::Read {
            area: Area::Holding,
            start: 0x6B,
            count: 3,
        };
        let mut pdu = Vec::new();
        req.emit(&mut pdu);
        assert_eq!(pdu, [0x03, 0x00, 0x6B, 0x00, 0x03]);
        let resp = [0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64];
        assert_eq!(
            parse_response(&req, &resp).unwrap(),
            Response::Data(vec![0x02, 0x2B, 0, 0, 0, 0x64])
        );
    }

    #[test]
    fn exceptions_and_malformed_answers() {
        let req = Request::Read {
            area: Area::Input,
            start: 8,
            count: 1,
        };
        assert_eq!(
            parse_response(&req, &[0x84, 0x02]),
            Err(ResponseError::Exception(Exception(2)))
        );
        assert_eq!(
            Exception(2).to_string(),
            "exception 2 (illegal data address)"
        );
        assert!(parse_response(&req, &[0x04, 0x02, 0x00]).is_err());
        assert!(parse_response(&req, &[0x03, 0x02, 0x00, 0x01]).is_err());
        assert!(parse_response(&req, &[0x04, 0x03, 0x00, 0x01]).is_err());
        let write = Request::WriteRegister {
            address: 1,
            value: 3,
        };
        assert_eq!(
            parse_response(&write, &[6, 0, 1, 0, 3]).unwrap(),
            Response::Written
        );
        assert!(parse_response(&write, &[6, 0, 1, 0, 4]).is_err());
    }

    #[test]
    fn coils_pack_lsb_first() {
        let req = Request::WriteCoils {
            start: 19,
            values: vec![
                true, false, true, true, false, false, true, true, true, false,
            ],
        };
        let mut pdu = Vec::new();
        req.emit(&mut pdu);
        assert_eq!(pdu, [0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01]);
        assert_eq!(
            parse_response(&req, &[0x0F, 0x00, 0x13, 0x00, 0x0A]).unwrap(),
            Response::Written
        );
    }

    proptest! {
        #[test]
        fn arbitrary_responses_never_panic(pdu in proptest::collection::vec(any::<u8>(), 0..300), fc in 0usize..5, count in 1u16..130) {
            let requests = [
                Request::Read { area: Area::Coil, start: 0, count },
                Request::Read { area: Area::Holding, start: 0, count },
                Request::WriteCoil { address: 0, value: true },
                Request::WriteRegister { address: 0, value: 1 },
                Request::WriteRegisters { start: 0, data: vec![0; 4] },
            ];
            let _ = parse_response(&requests[fc], &pdu);
        }

        #[test]
        fn register_reads_roundtrip(data in proptest::collection::vec(any::<u8>(), 1..=125).prop_map(|mut v| { if v.len() % 2 == 1 { v.pop(); } v }).prop_filter("nonempty", |v| !v.is_empty())) {
            let req = Request::Read { area: Area::Holding, start: 0, count: (data.len() / 2) as u16 };
            let mut pdu = vec![3, data.len() as u8];
            pdu.extend_from_slice(&data);
            prop_assert_eq!(parse_response(&req, &pdu).unwrap(), Response::Data(data));
        }
    }
}
