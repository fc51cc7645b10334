//! Modbus TCP slaves at scale: one process listens on `count` consecutive
//! ports, each a slave with `registers` holding (= input) registers,
//! answering FC03/FC04 with a minimal MBAP/PDU codec of its own.
//!
//! Register values: every register changes each second (so a gateway
//! reporting on change still sends them), and the last four registers hold
//! the time of the response in microseconds since the Unix epoch (u64,
//! big-endian words). A subscriber decodes them to measure the latency from
//! the device's answer to the MQTT delivery.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::BenchError;

/// Registers at the end of the map holding the response time (µs).
pub const STAMP_REGISTERS: u16 = 4;

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Modbus exception codes we answer with.
const ILLEGAL_FUNCTION: u8 = 1;
const ILLEGAL_DATA_ADDRESS: u8 = 2;
const ILLEGAL_DATA_VALUE: u8 = 3;

/// A read request's PDU, checked: function 3 or 4, start, quantity.
#[derive(Debug, PartialEq, Eq)]
struct ReadRequest {
    function: u8,
    start: u16,
    quantity: u16,
}

/// Parses the PDU after the MBAP header; `Err(code)` is the exception.
fn parse_pdu(pdu: &[u8]) -> Result<ReadRequest, (u8, u8)> {
    let function = *pdu.first().ok_or((0, ILLEGAL_FUNCTION))?;
    if function != 3 && function != 4 {
        return Err((function, ILLEGAL_FUNCTION));
    }
    let [_, a, b, c, d] = pdu else {
        return Err((function, ILLEGAL_DATA_VALUE));
    };
    let quantity = u16::from_be_bytes([*c, *d]);
    if quantity == 0 || quantity > 125 {
        return Err((function, ILLEGAL_DATA_VALUE));
    }
    Ok(ReadRequest {
        function,
        start: u16::from_be_bytes([*a, *b]),
        quantity,
    })
}

/// The value of register `addr` of a map of `registers` at `now_us`.
fn register(addr: u16, registers: u16, port_seed: u16, now_us: u64) -> u16 {
    let stamp_at = registers.saturating_sub(STAMP_REGISTERS);
    if addr >= stamp_at {
        let word = (addr - stamp_at) as u32; // 0 = most significant
        (now_us >> (48 - 16 * word)) as u16
    } else {
        let second = (now_us / 1_000_000) as u16;
        second.wrapping_add(addr).wrapping_add(port_seed)
    }
}

/// Builds the whole response frame (MBAP + PDU) for one request frame.
fn respond(header: &[u8; 7], pdu: &[u8], registers: u16, port_seed: u16, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&header[..4]); // transaction id, protocol id
    let body_at = out.len();
    out.extend_from_slice(&[0, 0, header[6]]); // length (patched), unit
    match parse_pdu(pdu) {
        Ok(r) if u32::from(r.start) + u32::from(r.quantity) <= u32::from(registers) => {
            let now = now_us();
            out.push(r.function);
            out.push((r.quantity * 2) as u8);
            for a in r.start..r.start + r.quantity {
                out.extend_from_slice(&register(a, registers, port_seed, now).to_be_bytes());
            }
        }
        Ok(r) => out.extend_from_slice(&[r.function | 0x80, ILLEGAL_DATA_ADDRESS]),
        Err((f, code)) => out.extend_from_slice(&[f | 0x80, code]),
    }
    let len = (out.len() - body_at - 2) as u16;
    out[body_at..body_at + 2].copy_from_slice(&len.to_be_bytes());
}

async fn serve_connection(mut s: TcpStream, registers: u16, port_seed: u16) {
    let _ = s.set_nodelay(true);
    let mut header = [0u8; 7];
    let mut pdu = [0u8; 253];
    let mut out = Vec::with_capacity(260);
    loop {
        if s.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u16::from_be_bytes([header[4], header[5]]) as usize;
        // length counts the unit id plus the PDU
        if !(2..=254).contains(&len) {
            return;
        }
        let pdu = &mut pdu[..len - 1];
        if s.read_exact(pdu).await.is_err() {
            return;
        }
        respond(&header, pdu, registers, port_seed, &mut out);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Listens on 127.0.0.1:`base_port` .. `base_port + count` and serves
/// until the process ends.
pub async fn run(base_port: u16, count: u16, registers: u16) -> Result<(), BenchError> {
    for i in 0..count {
        let port = base_port + i;
        let l = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| BenchError::Io(format!("bind 127.0.0.1:{port}"), e))?;
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve_connection(s, registers, i));
            }
        });
    }
    println!(
        "ready {count} slaves on 127.0.0.1:{base_port}..{}",
        base_port + count - 1
    );
    std::future::pending::<()>().await;
    Ok(())
}

/// Decodes the response time from the last four register values.
pub fn stamp_from(words: [u64; 4]) -> u64 {
    words.iter().fold(0, |acc, w| (acc << 16) | (w & 0xffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fc03_answers_the_registers_with_the_stamp_at_the_end() {
        let header = [0, 7, 0, 0, 0, 6, 1];
        let mut out = Vec::new();
        respond(&header, &[3, 0, 0, 0, 10], 10, 0, &mut out);
        assert_eq!(&out[..9], &[0, 7, 0, 0, 0, 23, 1, 3, 20]);
        let words: Vec<u64> = out[9..]
            .chunks(2)
            .map(|c| u64::from(u16::from_be_bytes([c[0], c[1]])))
            .collect();
        let stamp = stamp_from([words[6], words[7], words[8], words[9]]);
        assert!(now_us().abs_diff(stamp) < 10_000_000, "{stamp}");
    }

    #[test]
    fn bad_requests_get_exceptions() {
        let header = [0, 1, 0, 0, 0, 6, 1];
        let mut out = Vec::new();
        respond(&header, &[3, 0, 8, 0, 10], 10, 0, &mut out);
        assert_eq!(&out[6..], &[1, 0x83, ILLEGAL_DATA_ADDRESS]);
        respond(&header, &[6, 0, 0, 0, 1], 10, 0, &mut out);
        assert_eq!(&out[6..], &[1, 0x86, ILLEGAL_FUNCTION]);
        respond(&header, &[3, 0], 10, 0, &mut out);
        assert_eq!(&out[6..], &[1, 0x83, ILLEGAL_DATA_VALUE]);
    }
}
