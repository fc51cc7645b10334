//! Ingest bodies: every content format's decoder (text, JSON, CBOR, SenML
//! JSON and CBOR) is total. First byte picks the format.
#![no_main]

use ferrogate_coap::{payload, senml};
use ferrogate_sdk::Timestamp;
use libfuzzer_sys::fuzz_target;

const FORMATS: [Option<u16>; 8] = [
    None,
    Some(0),
    Some(50),
    Some(60),
    Some(110),
    Some(112),
    Some(41),
    Some(11542),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(pick) % FORMATS.len()];
    let point = (pick & 0x80 != 0).then_some("temp");
    let _ = payload::decode(format, body, point, Timestamp(1_700_000_000_000));
    let _ = senml::decode_json(body);
    let _ = senml::decode_cbor(body);
});
