//! LwM2M payloads: every content format (TLV, SenML JSON/CBOR, LwM2M
//! JSON, text, opaque, CBOR, link) decoded against a base path from the
//! input is total. Input: `[format_pick, depth, ids (2 bytes each)...,
//! payload]`.
#![no_main]

use ferrogate_lwm2m::content::{self, ContentFormat};
use ferrogate_lwm2m::{ObjectRegistry, Path};
use libfuzzer_sys::fuzz_target;

const FORMATS: [u16; 10] = [0, 40, 42, 60, 110, 112, 1542, 11542, 11543, 11544];

/// The built-in object definitions, built once (they cost more than most
/// inputs).
fn builtin() -> &'static std::sync::Arc<ObjectRegistry> {
    static REGISTRY: std::sync::OnceLock<std::sync::Arc<ObjectRegistry>> =
        std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| std::sync::Arc::new(ObjectRegistry::builtin()))
}

fuzz_target!(|data: &[u8]| {
    let [pick, depth, rest @ ..] = data else {
        return;
    };
    let depth = usize::from(*depth % 5);
    if rest.len() < depth * 2 {
        return;
    }
    let (ids, payload) = rest.split_at(depth * 2);
    let ids: Vec<u16> = ids
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let Some(base) = Path::new(&ids) else {
        return;
    };
    let Some(format) = ContentFormat::from_number(FORMATS[usize::from(*pick) % FORMATS.len()])
    else {
        return;
    };
    let _ = content::decode(format, base, payload, builtin());
});
