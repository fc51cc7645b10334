//! Log output: plain text on stderr with a tracing filter from the config
//! (`RUST_LOG` overrides it).

use tracing_subscriber::EnvFilter;

/// Install the global subscriber once; later calls are ignored.
pub fn init(level: &str) {
    // The embedded demo broker logs every probe connection as an error.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},rumqttd=off")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
