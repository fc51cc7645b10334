//! OMA object definition XML (`object_dir` files) is total: an error or
//! objects, never a panic.
#![no_main]

use ferrogate_lwm2m::ObjectRegistry;
use libfuzzer_sys::fuzz_target;

/// The built-in object definitions, built once (they cost more than most
/// inputs).
fn builtin() -> &'static std::sync::Arc<ObjectRegistry> {
    static REGISTRY: std::sync::OnceLock<std::sync::Arc<ObjectRegistry>> =
        std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| std::sync::Arc::new(ObjectRegistry::builtin()))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut registry = ObjectRegistry::clone(builtin());
        let _ = registry.load_xml(text);
    }
});
