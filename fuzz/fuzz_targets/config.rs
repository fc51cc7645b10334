//! The configuration loader: `gateway.toml` and one `conf.d` file (split
//! at the first NUL byte) through every adapter kind's validation. Errors
//! with positions, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("ferrogate-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(d.join("conf.d")).expect("temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let (gateway, conf) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let (Ok(gateway), Ok(conf)) = (std::str::from_utf8(gateway), std::str::from_utf8(conf)) else {
        return;
    };
    let kinds = ferrogate::kinds::all();
    for kind in &kinds {
        let _ = ferrogate_sdk::testing::build(kind.as_ref(), conf, &[]);
    }
    let d = dir();
    std::fs::write(d.join("gateway.toml"), gateway).expect("write");
    std::fs::write(d.join("conf.d/fuzz.toml"), conf).expect("write");
    let _ = ferrogate::config::load(d, &kinds);
});
