//! One datagram: `Frame::parse` is total, and what it accepts emits and
//! parses back to the same frame.
#![no_main]

use ferrogate_coap::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::parse(data) {
        let again = Frame::parse(&frame.emit()).expect("an emitted frame parses");
        assert_eq!(again, frame);
        let _ = frame.to_request();
    }
});
