//! The MQTT command payload parser is total: a request or a refusal (with
//! the id when it was readable), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferrogate::north::codec::decode_request(data);
});
