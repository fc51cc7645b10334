//! The Block1/Block2 option value (RFC 7959 §2.2): block number, more flag
//! and size exponent.

use crate::message::{decode_uint, encode_uint};

/// One Block1 or Block2 option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOption {
    /// Block number (at most 2^20 - 1).
    pub num: u32,
    /// More blocks follow (M bit).
    pub more: bool,
    /// Size exponent: the block size is `16 << szx`. 7 (BERT) is not valid
    /// over UDP.
    pub szx: u8,
}

impl BlockOption {
    pub const MAX_NUM: u32 = (1 << 20) - 1;

    /// Decode an option value; `None` for more than 3 bytes or SZX 7.
    pub fn decode(bytes: &[u8]) -> Option<BlockOption> {
        if bytes.len() > 3 {
            return None;
        }
        let v = decode_uint(bytes)?;
        let szx = (v & 0x7) as u8;
        if szx == 7 {
            return None;
        }
        Some(BlockOption {
            num: v >> 4,
            more: v & 0x8 != 0,
            szx,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_uint((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx & 0x7))
    }

    /// Block size in bytes.
    pub fn size(&self) -> usize {
        size_of_szx(self.szx)
    }

    /// Byte offset of this block in the body.
    pub fn offset(&self) -> usize {
        self.num as usize * self.size()
    }
}

/// `16 << szx`.
pub fn size_of_szx(szx: u8) -> usize {
    16usize << szx.min(6)
}

/// The largest SZX whose block size is at most `bytes` (at least 0).
pub fn szx_for(bytes: usize) -> u8 {
    (0u8..=6)
        .rev()
        .find(|s| size_of_szx(*s) <= bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libcoap_block2_values() {
        // From the libcoap capture: Block2=1 is num 0, SZX 1 (32 bytes);
        // Block2=65 is num 4, M=0, SZX 1.
        let first = BlockOption::decode(&[1]).unwrap();
        assert_eq!((first.num, first.more, first.size()), (0, false, 32));
        let last = BlockOption::decode(&[65]).unwrap();
        assert_eq!((last.num, last.more, last.size()), (4, false, 32));
        assert_eq!(BlockOption::decode(&[0x0f]), None);
        assert_eq!(BlockOption::decode(&[1, 2, 3, 4]), None);
    }

    #[test]
    fn round_trip() {
        for num in [0, 1, 15, 16, 4095, BlockOption::MAX_NUM] {
            for more in [false, true] {
                for szx in 0..7 {
                    let b = BlockOption { num, more, szx };
                    assert_eq!(BlockOption::decode(&b.encode()), Some(b));
                }
            }
        }
        assert_eq!(szx_for(1024), 6);
        assert_eq!(szx_for(1000), 5);
        assert_eq!(szx_for(3), 0);
    }
}
